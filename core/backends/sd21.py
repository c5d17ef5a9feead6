"""Stable Diffusion 2.1 (`stabilityai/stable-diffusion-2-1`): SDEdit img2img from the
pre-event tile, and txt2img. v-prediction UNet, DDIM scheduler (enforced at load), 512 px.

Prompts longer than 75 CLIP tokens are encoded whole, by 75-token windows
(core.generation.prompts.encode_long_prompt_sd), instead of being cut.
"""

from __future__ import annotations

from core.backends.common import (GUIDANCE, NEGATIVE_PROMPT, SD21_HUB_ID, STEPS, STRENGTH, BackendSpec,
                                  ClipWindowPrompts, DiffusersBackend, register, scheduler_control)


class SD21Backend(ClipWindowPrompts, DiffusersBackend):
    """SD 2.1 through diffusers' StableDiffusion(Img2Img)Pipeline."""

    default_scheduler_class = "DDIMScheduler"
    has_safety_checker_slot = True

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="sd21",
            label="Stable Diffusion 2.1",
            hub_id=SD21_HUB_ID,
            modes=("img2img", "txt2img"),
            dtype="fp16",
            vram_gb=4.0,
            attention="unet",
            defaults={"mode": "img2img", "steps": 50, "guidance": 7.5, "strength": 0.8, "size": 512,
                      "scheduler": "ddim"},
            controls=(STEPS, GUIDANCE, STRENGTH, NEGATIVE_PROMPT, scheduler_control()),
            tokenizers=("clip",),
            notes="SDEdit img2img from the pre-event tile (strength 0.8 = mostly re-imagined). "
                  "v-prediction, DDIM. Prompts past 75 CLIP tokens are encoded in 75-token windows.",
        )


SD21 = register(SD21Backend())
