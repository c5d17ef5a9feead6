"""Stable Diffusion 2.1 (`stabilityai/stable-diffusion-2-1`): SDEdit img2img from the
pre-event tile, and txt2img. v-prediction UNet, DDIM scheduler (enforced at load), 512 px.

Prompts longer than 75 CLIP tokens are encoded whole, by 75-token windows
(core.generation.prompts.encode_long_prompt_sd), instead of being cut.
"""

from __future__ import annotations

from core.backends import BackendSpec, register
from core.backends.common import ClipWindowPrompts, DiffusersBackend


class SD21Backend(ClipWindowPrompts, DiffusersBackend):
    """SD 2.1 through diffusers' StableDiffusion(Img2Img)Pipeline."""

    default_scheduler_class = "DDIMScheduler"
    has_safety_checker_slot = True

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="sd21",
            label="Stable Diffusion 2.1",
            hub_id="stabilityai/stable-diffusion-2-1",
            modes=("img2img", "txt2img"),
            dtype="fp16",
            vram_gb=4.0,
            attention="unet",
            defaults={"mode": "img2img", "steps": 50, "guidance": 7.5, "strength": 0.8, "size": 512,
                      "scheduler": "ddim"},
            controls=("steps", "guidance", "strength", "seed", "negative_prompt", "scheduler"),
            tokenizers=("clip",),
            notes="SDEdit img2img from the pre-event tile (strength 0.8 = mostly re-imagined). "
                  "v-prediction, DDIM. Prompts past 75 CLIP tokens are encoded in 75-token windows.",
        )


SD21 = register(SD21Backend())
