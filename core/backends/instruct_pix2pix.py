"""InstructPix2Pix (`timbrooks/instruct-pix2pix`): edits the pre-event tile by following
an instruction ("flood the streets", "burn the houses down") instead of describing the
target image.

The UNet sees the noisy latents next to the latents of the input image (8 input channels).
Two guidance scales: `guidance` pulls towards the instruction, `image_guidance` towards the
input tile (diffusers applies both only when guidance > 1 and image_guidance >= 1; below
that it switches classifier-free guidance off altogether, so image_guidance < 1 is refused).
Generation always starts from noise beside the input image: there is no SDEdit strength,
so `strength` must stay 1. The output size is the input's: the tile is given at the
request size. Prompts past 75 CLIP tokens are encoded by 75-token windows.

diffusers' InstructPix2Pix pipeline does not check the interrupt flag that cancelling sets,
so `run` stops it from the step callback by raising GenerationCancelled.
"""

from __future__ import annotations

from typing import Any

from core.backends.common import (GUIDANCE, NEGATIVE_PROMPT, STEPS, UNET_SCHEDULERS, BackendSpec, ClipWindowPrompts,
                                  Control, DiffusersBackend, LoadedPipeline, hub_kwargs, image_at_size, pipeline_for,
                                  register, scheduler_control, set_scheduler, step_callback_kwargs, torch_dtype,
                                  validate_common)
from core.errors import GenerationCancelled, ModelLoadError, RequestError

HUB_ID = "timbrooks/instruct-pix2pix"
IMAGE_GUIDANCE = Control("image_guidance", "Image guidance", "slider", 1.0, 3.0, 0.1,
                         info="How closely the result keeps to the pre-event tile (1 = no extra pull).")

NOTES = (
    "The prompt is an instruction, e.g. 'flood the streets' or 'make the houses look destroyed by fire', "
    "not a description of the result. image_guidance (default 1.5, at least 1) keeps the output close to the "
    "pre-event tile; guidance follows the instruction (at most 1 switches both guidances off). It always starts "
    "from noise next to the tile: strength stays 1. Trained on SD 1.5 edits of photos, not satellite images."
)


class InstructPix2PixBackend(ClipWindowPrompts, DiffusersBackend):
    """InstructPix2Pix through diffusers' StableDiffusionInstructPix2PixPipeline."""

    default_scheduler_class = None  # keep the checkpoint's (Euler Ancestral)
    has_safety_checker_slot = True
    schedulers = UNET_SCHEDULERS

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="instruct-pix2pix",
            label="InstructPix2Pix",
            hub_id=HUB_ID,
            modes=("img2img",),
            dtype="fp16",
            vram_gb=4.0,
            attention="unet",
            defaults={"mode": "img2img", "steps": 20, "guidance": 7.5, "image_guidance": 1.5, "strength": 1.0,
                      "size": 512, "scheduler": "euler_a"},
            controls=(STEPS, GUIDANCE, IMAGE_GUIDANCE, NEGATIVE_PROMPT, scheduler_control()),
            tokenizers=("clip",),
            notes=NOTES,
        )

    # -- validation ---------------------------------------------------------------------
    def validate(self, request, *, init_image=None, control_image=None) -> None:
        """RequestError when this backbone cannot run `request`: the checks every diffusers
        backbone makes, plus strength 1 and image_guidance >= 1."""
        validate_common(self.spec, request, init_image=init_image, control_image=control_image,
                        size_multiple=self.size_multiple, schedulers=self.schedulers, options=self.options)
        if float(request.strength) != 1.0:
            raise RequestError(
                f"{self.spec.label} always starts from noise next to the pre-event tile, so strength does not "
                f"apply: leave it at 1 (got {float(request.strength):g}). Use image_guidance to stay closer to "
                "the tile.")
        image_guidance = float(request.image_guidance)
        if not image_guidance >= 1.0:
            raise RequestError(
                f"image_guidance must be at least 1 (got {image_guidance:g}): below 1 diffusers switches "
                "classifier-free guidance off altogether, the instruction's included. 1 = no extra pull towards "
                "the tile; 1.5 is the usual value.")

    # -- loading ------------------------------------------------------------------------
    def load(self, source: Any, *, device: str = "cpu", dtype: Any = None, **load_options) -> LoadedPipeline:
        """The pipeline from a hub id (cache only: use `sources.download` first) or a local
        folder, on `device` in `dtype` (fp32 on CPU).

        Raises ModelNotAvailable when the files are not on disk, ModelLoadError when they
        are but cannot be loaded (e.g. the folder holds a plain SD pipeline)."""
        from core.backends.sources import as_source, require_ready

        src = as_source(source)
        state = require_ready(self.spec, src)
        dt = torch_dtype(dtype, device)
        kwargs: dict[str, Any] = {"torch_dtype": dt, **self.from_pretrained_kwargs(), **hub_kwargs(src)}
        from diffusers import StableDiffusionInstructPix2PixPipeline

        try:
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(src.path_or_id, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
            raise ModelLoadError(f"Could not load {self.spec.label} from {src}: {err}") from err
        channels = pipe.unet.config.in_channels
        if channels != 8:
            raise ModelLoadError(
                f"{src} is not an InstructPix2Pix model: its UNet takes {channels} input channels, "
                "InstructPix2Pix needs 8 (noisy latents + latents of the input image). "
                f"Use {HUB_ID} or a folder saved from it.")
        self.configure(pipe)
        pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return LoadedPipeline(
            backbone=self.spec.id, source=src, pipes={"img2img": pipe}, device_name=str(device),
            dtype_name=str(dt).replace("torch.", ""), snapshot=state.where, default_scheduler=pipe.scheduler,
        )

    # -- running ------------------------------------------------------------------------
    def attention_cfg(self, request):
        """Under guidance the batch is [text and image, image only, neither] (see diffusers'
        InstructPix2Pix pipeline): the recorder keeps the first third."""
        from core.attention.record import FIRST_OF_THREE

        return FIRST_OF_THREE if request.guidance > 1 and request.image_guidance >= 1 else False

    def run(self, pipe, request, *, init_image=None, control_image=None, generators: list,
            callback=None) -> list:
        """PIL images for `request` (one per generator): the pre-event tile edited by the
        instruction in `request.prompt`."""
        self.validate(request, init_image=init_image, control_image=control_image)
        if not generators:
            raise RequestError("No generators given: one per image is needed.")
        size = int(request.size)
        p = pipeline_for(pipe, request.mode)
        set_scheduler(pipe, p, request.scheduler)
        kwargs: dict[str, Any] = dict(
            # No height/width: this pipeline takes the size of `image`, given at the request size.
            image=image_at_size(init_image, size),
            num_inference_steps=int(request.steps),
            guidance_scale=float(request.guidance),
            image_guidance_scale=float(request.image_guidance),
            generator=list(generators),
            num_images_per_prompt=len(generators),
            output_type="pil",
            **self.prompt_kwargs(p, request, p._execution_device),
        )
        kwargs.update(step_callback_kwargs(_StopOnInterrupt(callback) if callback is not None else None))
        import torch

        p._interrupt = False
        try:
            with torch.inference_mode():
                return list(p(**kwargs).images)
        finally:
            p._interrupt = False


class _StopOnInterrupt:
    """Wraps a `callback_on_step_end`: after it runs, raise GenerationCancelled if it set
    the pipeline's interrupt flag (this pipeline never reads the flag itself)."""

    def __init__(self, callback) -> None:
        self.callback = callback
        self.tensor_inputs = list(getattr(callback, "tensor_inputs", ["latents"]))

    def __call__(self, pipe, step_index: int, timestep, callback_kwargs: dict) -> dict:
        out = self.callback(pipe, step_index, timestep, callback_kwargs)
        if getattr(pipe, "_interrupt", False):
            total = getattr(pipe, "_num_timesteps", None) or "?"
            raise GenerationCancelled(f"Generation cancelled after {step_index + 1} of {total} steps; "
                                      "nothing was saved.")
        return out


INSTRUCT_PIX2PIX = register(InstructPix2PixBackend())
