"""SDXL Turbo (`stabilityai/sdxl-turbo`): adversarially distilled SDXL for 1–4 steps at
guidance 0, 512 px, fp16 weights (the `fp16` variant files when loading fp16 from the hub).

img2img runs `int(steps × strength)` denoising steps, so steps × strength must reach 1:
"2 steps at strength 0.4" would run none, and is refused with the fix. Long prompts are
encoded whole by 75-token windows through both CLIP encoders
(core.generation.prompts.encode_long_prompt_sdxl).
"""

from __future__ import annotations

from core.backends.common import STRENGTH, BackendSpec, Control, DiffusersBackend, SDXLClipWindowPrompts, register

TURBO_STEPS = Control("steps", "Steps", "slider", 1, 4, 1, info="Distilled for 1–4 steps.")


class SDXLTurboBackend(SDXLClipWindowPrompts, DiffusersBackend):
    """SDXL Turbo through diffusers' StableDiffusionXL(Img2Img)Pipeline."""

    max_steps = 4

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="sdxl-turbo",
            label="SDXL Turbo",
            hub_id="stabilityai/sdxl-turbo",
            modes=("img2img", "txt2img"),
            dtype="fp16",
            vram_gb=8.0,
            attention="unet",
            defaults={"mode": "img2img", "steps": 2, "guidance": 0.0, "strength": 0.5, "size": 512,
                      "scheduler": "euler_a"},
            controls=(TURBO_STEPS, STRENGTH),
            tokenizers=("clip", "clip2"),
            notes="1–4 steps, guidance 0 (no negative prompt). img2img needs steps × strength ≥ 1. "
                  "Prompts past 75 CLIP tokens are encoded in 75-token windows.",
        )


SDXL_TURBO = register(SDXLTurboBackend())
