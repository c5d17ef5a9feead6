"""Stable Diffusion 3 medium (`stabilityai/stable-diffusion-3-medium-diffusers`): MMDiT
transformer, FlowMatch Euler scheduler (shift 3), two CLIP encoders (77 tokens) and a T5
encoder (256 tokens, `max_sequence_length=256`). img2img default strength 0.6.

Option `drop_t5` (request.options): run without the T5 encoder, as the course did. Loading
with `drop_t5=True` (`backend.load(..., drop_t5=True)`, what `load_kwargs(request)` asks
for) skips T5 entirely, about 10–12 GB less memory, and a T5 download is then not needed.
A pipeline loaded with T5 can still run a drop_t5 request (T5 is set aside for that call);
one loaded without T5 cannot run a request that wants it.

Sizes must be multiples of 16 (VAE factor 8 × patch 2); height and width are always passed,
img2img included (without them SD3 img2img returns half-size images).
"""

from __future__ import annotations

from contextlib import contextmanager

from core.backends.common import (GUIDANCE, NEGATIVE_PROMPT, STEPS, STRENGTH, BackendSpec, Control, DiffusersBackend,
                                  PromptHandling, pipeline_for, register)
from core.errors import RequestError

T5_COMPONENTS = ("text_encoder_3", "tokenizer_3")
DROP_T5 = Control("drop_t5", "Run without T5 (about 10–12 GB less memory)", "checkbox", option=True,
                  info="As the course did: only the two CLIP encoders read the prompt.")


class SD3Backend(DiffusersBackend):
    """SD3 through diffusers' StableDiffusion3(Img2Img)Pipeline."""

    size_multiple = 16
    schedulers = ("flow_euler",)
    options = ("drop_t5",)

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="sd3",
            label="Stable Diffusion 3 medium",
            hub_id="stabilityai/stable-diffusion-3-medium-diffusers",
            modes=("img2img", "txt2img"),
            dtype="fp16",
            vram_gb=16.0,
            attention="joint",
            defaults={"mode": "img2img", "steps": 28, "guidance": 7.0, "strength": 0.6, "size": 1024,
                      "scheduler": "flow_euler", "options": {"drop_t5": False}},
            controls=(STEPS, GUIDANCE, STRENGTH, NEGATIVE_PROMPT, DROP_T5),
            tokenizers=("clip", "clip2", "t5"),
            notes="FlowMatch Euler, shift 3. CLIP encoders read 77 tokens, T5 256. drop_t5 "
                  "(request option) runs without T5: about 10–12 GB less (vram_gb is with T5). "
                  "Sizes are multiples of 16.",
        )

    @staticmethod
    def drops_t5(request) -> bool:
        """Whether `request` asks to run without T5."""
        return bool((request.options or {}).get("drop_t5", False))

    def load_kwargs(self, request) -> dict:
        return {"drop_t5": True} if self.drops_t5(request) else {}

    def skipped_components(self, **load_options) -> tuple[str, ...]:
        return T5_COMPONENTS if load_options.get("drop_t5") else ()

    def from_pretrained_kwargs(self, **load_options) -> dict:
        return {name: None for name in self.skipped_components(**load_options)}

    def prompt_kwargs(self, p, request, device) -> dict:
        from core.generation.prompts import T5_MAX_SEQUENCE_LENGTH

        return {"prompt": request.prompt, "negative_prompt": request.negative_prompt or None,
                "max_sequence_length": T5_MAX_SEQUENCE_LENGTH}

    def call_kwargs(self, p, request) -> dict:
        return {"height": request.size, "width": request.size}

    def prompt_handling(self, pipe, request) -> PromptHandling:
        dropped = self.drops_t5(request) or getattr(pipe, "text_encoder_3", None) is None
        return PromptHandling(t5="dropped" if dropped else "used")

    def run(self, pipe, request, *, init_image=None, control_image=None, generators: list, callback=None) -> list:
        self.validate(request, init_image=init_image, control_image=control_image)
        p = pipeline_for(pipe, request.mode)
        if not self.drops_t5(request) and getattr(p, "text_encoder_3", None) is None:
            raise RequestError("This SD3 pipeline was loaded without T5 (drop_t5); load it again with T5 "
                               "to run a request that uses it, or set drop_t5.")
        with _without_t5(p, self.drops_t5(request)):
            return super().run(pipe, request, init_image=init_image, control_image=control_image,
                               generators=generators, callback=callback)


@contextmanager
def _without_t5(p, drop: bool):
    """Set T5 aside on pipeline `p` for one call when `drop` (no-op when already absent)."""
    saved = {name: getattr(p, name, None) for name in T5_COMPONENTS}
    if not drop or saved["text_encoder_3"] is None:
        yield
        return
    try:
        for name in T5_COMPONENTS:
            setattr(p, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(p, name, value)


SD3 = register(SD3Backend())
