"""What the diffusers backbones share, so that each backbone file imports only from here:
the contract (re-exported from core.backends.base) and `register`, loading through the real
`from_pretrained` path with hub-cache arguments, the img2img/txt2img pipeline pair,
request validation, scheduler choice, square resizing and the pipeline call.

A backbone module subclasses `DiffusersBackend`, gives it a spec and overrides the few
hooks that differ (prompt encoding, load options, extra checks). Nothing here imports
torch or diffusers at import time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.backends import register
from core.backends.base import (CONTROL_SCALE, GUIDANCE, NEGATIVE_PROMPT, STEPS, STRENGTH, Backend, BackendSpec,
                                Control, PromptHandling)
from core.errors import ModelLoadError, RequestError
from core.models.dtypes import torch_dtype
from core.types import GENERATION_MODES

SD21_HUB_ID = "stabilityai/stable-diffusion-2-1"
"""Stable Diffusion 2.1, the backbone and the base several others build on."""

# Scheduler names a request may give, and the diffusers classes they stand for.
SCHEDULERS: dict[str, str] = {
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
}
UNET_SCHEDULERS = ("ddim", "euler", "euler_a", "dpm++")
TRAIN_TIMESTEPS = 1000
"""Timesteps every supported scheduler was trained with: no run can take more steps."""


def scheduler_control(choices: tuple[str, ...] = UNET_SCHEDULERS) -> Control:
    """The scheduler dropdown over `choices` (SCHEDULERS keys)."""
    return Control("scheduler", "Scheduler", "dropdown", choices=tuple(choices))

# -- the loaded pipeline pair -------------------------------------------------------------
@dataclass(eq=False)
class LoadedPipeline:
    """The pipelines of one loaded backbone, one per generation mode, sharing every model
    (UNet/transformer, VAE, text encoders): memory is paid once.

    Attribute access falls through to the first pipeline, so `pipe.unet`, `pipe.vae`,
    `pipe.tokenizer`, `pipe.transformer`, `pipe.device` work as on a diffusers pipeline.
    `to(...)` moves the shared models (hence every pipeline of the pair)."""

    backbone: str
    source: Any  # core.backends.sources.Source
    pipes: dict[str, Any]
    device_name: str = "cpu"
    dtype_name: str = "float32"
    load_options: dict = field(default_factory=dict)
    snapshot: str | None = None  # the folder the weights were read from
    default_scheduler: Any = None
    _schedulers: dict = field(default_factory=dict, repr=False)

    def for_mode(self, mode: str):
        """The diffusers pipeline for `mode` ("img2img" or "txt2img")."""
        if mode not in self.pipes:
            raise RequestError(f"{self.backbone} has no {mode} pipeline; it supports {', '.join(self.pipes)}.")
        return self.pipes[mode]

    @property
    def primary(self):
        """The pipeline the pair was loaded as (text-to-image)."""
        return next(iter(self.pipes.values()))

    def to(self, *args, **kwargs) -> "LoadedPipeline":
        """Move the shared models like `DiffusionPipeline.to` and return self."""
        self.primary.to(*args, **kwargs)
        self.device_name = str(self.primary.device)
        self.dtype_name = str(self.primary.dtype).replace("torch.", "")
        return self

    def scheduler_for(self, name: str | None):
        """The scheduler named `name` (a SCHEDULERS key), built once from the default
        scheduler's config; the default scheduler for None."""
        if name is None:
            return self.default_scheduler
        if name not in self._schedulers:
            import diffusers

            cls = getattr(diffusers, SCHEDULERS[name])
            if type(self.default_scheduler) is cls:
                self._schedulers[name] = self.default_scheduler
            else:
                self._schedulers[name] = cls.from_config(self.default_scheduler.config)
        return self._schedulers[name]

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("pipes", "_schedulers"):
            raise AttributeError(name)
        return getattr(self.primary, name)


def pipeline_for(pipe, mode: str):
    """The diffusers pipeline to call for `mode`: from a LoadedPipeline pair, or `pipe`
    itself when it is a single pipeline."""
    return pipe.for_mode(mode) if isinstance(pipe, LoadedPipeline) else pipe


def set_scheduler(pipe, p, name: str | None) -> None:
    """Give pipeline `p` (of `pipe`, a LoadedPipeline or a bare pipeline) the scheduler
    `name` (a SCHEDULERS key; None = the backbone's default)."""
    if isinstance(pipe, LoadedPipeline):
        p.scheduler = pipe.scheduler_for(name or None)
    elif name:
        import diffusers

        cls = getattr(diffusers, SCHEDULERS[name])
        if type(p.scheduler) is not cls:
            p.scheduler = cls.from_config(p.scheduler.config)


def image_at_size(image, size: int):
    """`image` (PIL or uint8 array) as an RGB PIL image of size × size, resized with
    LANCZOS when it differs; None stays None."""
    if image is None:
        return None
    import numpy as np
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image))
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.LANCZOS)
    return image


def hub_kwargs(src) -> dict:
    """`from_pretrained` arguments that read a hub source from the local cache only (no
    download: that is `sources.download`'s job); {} for a local folder."""
    if src.kind != "hub":
        return {}
    from core.backends.sources import hub_cache_dir

    return {"revision": src.revision, "cache_dir": str(hub_cache_dir()), "local_files_only": True}


def step_callback_kwargs(callback) -> dict:
    """The pipeline-call arguments that install `callback` (a diffusers
    `callback_on_step_end`, optionally naming its `tensor_inputs`); {} for None."""
    if callback is None:
        return {}
    return {"callback_on_step_end": callback,
            "callback_on_step_end_tensor_inputs": list(getattr(callback, "tensor_inputs", ["latents"]))}


# -- validation ---------------------------------------------------------------------------
def denoising_steps(steps: int, strength: float) -> int:
    """Denoising steps diffusers' img2img pipelines run: int(steps * strength), at most steps."""
    return min(int(steps * strength), steps)


def validate_common(spec: BackendSpec, request, *, init_image=None, control_image=None,
                    size_multiple: int = 8, max_steps: int | None = None,
                    schedulers: tuple[str, ...] = (), options: tuple[str, ...] = ()) -> None:
    """Refuse (RequestError) what a plain diffusers backbone cannot do with `request`:
    unknown mode, size not a multiple of `size_multiple`, steps < 1 (or > max_steps),
    strength outside (0, 1], an img2img strength that leaves no denoising step, negative
    guidance, an unknown scheduler or option, a missing pre-event tile in img2img, a
    control image it has no use for."""
    name = spec.label
    if request.backbone != spec.id:
        raise RequestError(f"This request is for {request.backbone!r}, not for {spec.id!r}.")
    if request.mode not in GENERATION_MODES:
        raise RequestError(f"Unknown mode {request.mode!r}; use one of {', '.join(GENERATION_MODES)}.")
    if request.mode not in spec.modes:
        raise RequestError(f"{name} cannot do {request.mode}; it supports {', '.join(spec.modes)}.")
    size = int(request.size)
    if size < size_multiple or size % size_multiple:
        raise RequestError(f"{name} needs a size that is a positive multiple of {size_multiple} px (got {size}); "
                           f"try {max(size_multiple, round(size / size_multiple) * size_multiple)}.")
    steps = int(request.steps)
    if steps < 1:
        raise RequestError(f"Steps must be at least 1 (got {steps}).")
    if max_steps is not None and steps > max_steps:
        raise RequestError(f"{name} was distilled for 1–{max_steps} steps (got {steps}); use {max_steps} or fewer.")
    if steps > TRAIN_TIMESTEPS:
        raise RequestError(f"Steps must be at most {TRAIN_TIMESTEPS}, the timesteps {name}'s scheduler was trained "
                           f"with (got {steps}); 20–50 is usual.")
    guidance = float(request.guidance)
    if not (math.isfinite(guidance) and guidance >= 0):
        raise RequestError(f"Guidance must be a number, 0 or more (got {request.guidance!r}).")
    _refuse_unused_fields(spec, request)
    if int(request.num_images) < 1:
        raise RequestError(f"num_images must be at least 1 (got {request.num_images}).")
    if request.mode == "img2img":
        strength = float(request.strength)
        if not 0 < strength <= 1:
            raise RequestError(f"Strength must be in (0, 1] for img2img (got {strength:g}): 0 would return the "
                               "pre-event tile unchanged, 1 ignores it.")
        runs = denoising_steps(steps, strength)
        if runs < 1:
            raise RequestError(_no_step_message(name, steps, strength, max_steps))
        if init_image is None:
            raise RequestError(f"{name} img2img needs the pre-event tile: pick a scene, or switch to txt2img.")
    if control_image is not None:
        raise RequestError(f"{name} takes no control image.")
    if request.scheduler is not None and request.scheduler not in schedulers:
        raise RequestError(f"{name} cannot use scheduler {request.scheduler!r}; choose one of "
                           f"{', '.join(schedulers)} (or leave it empty for {spec.defaults.get('scheduler')}).")
    unknown = sorted(set(request.options or {}) - set(options))
    if unknown:
        allowed = ", ".join(options) if options else "none"
        raise RequestError(f"{name} does not understand option(s) {', '.join(unknown)}; it accepts: {allowed}.")


def _refuse_unused_fields(spec: BackendSpec, request) -> None:
    """RequestError for a field set on a backbone that cannot use it (DiffusionSat metadata
    on another backbone, a ControlNet scale or an image guidance it does not declare)."""
    from core.types import GenerationRequest

    if request.metadata is not None and not spec.needs_metadata:
        raise RequestError(f"{spec.label} is not conditioned on metadata: leave metadata empty, or use a "
                           "DiffusionSat backbone.")
    defaults = GenerationRequest(backbone=spec.id, prompt="")
    for name in ("control_scale", "image_guidance"):
        if name not in spec.control_names and getattr(request, name) != getattr(defaults, name):
            raise RequestError(f"{spec.label} has no {name.replace('_', ' ')}: leave it at "
                               f"{getattr(defaults, name):g}.")


def _no_step_message(name: str, steps: int, strength: float, max_steps: int | None) -> str:
    min_strength = math.ceil(100 / steps) / 100
    while denoising_steps(steps, min_strength) < 1:
        min_strength = round(min_strength + 0.01, 2)
    fix = f"use strength ≥ {min_strength:g}"
    n = max(1, math.ceil(1 / strength) - 1)
    while denoising_steps(n, strength) < 1:
        n += 1
    if max_steps is None or n <= max_steps:
        fix += f" or at least {n} steps"
    elif max_steps is not None:
        fix += f" (at most {max_steps} steps, so strength ≥ {math.ceil(100 / max_steps) / 100:g} at {max_steps} steps)"
    return (f"{name} img2img runs int(steps × strength) denoising steps: {steps} steps at strength "
            f"{strength:g} runs {denoising_steps(steps, strength)} denoising steps; {fix}.")


# -- the backend --------------------------------------------------------------------------
class DiffusersBackend(Backend):
    """A backbone run by a stock diffusers text-to-image / image-to-image pipeline pair.

    Subclasses set `spec` (via `default_spec()`), and may override `size_multiple`,
    `max_steps`, `schedulers`, `options`, `load_kwargs`, `from_pretrained_kwargs`,
    `prompt_kwargs` and `call_kwargs`."""

    size_multiple: int = 8
    max_steps: int | None = None
    schedulers: tuple[str, ...] = UNET_SCHEDULERS
    options: tuple[str, ...] = ()
    default_scheduler_class: str | None = None  # enforced at load when set (e.g. DDIM for SD 2.1)
    has_safety_checker_slot: bool = False

    def __init__(self, spec: BackendSpec | None = None) -> None:
        self.spec = spec or self.default_spec()

    @classmethod
    def default_spec(cls) -> BackendSpec:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    # -- validation ---------------------------------------------------------------------
    def validate(self, request, *, init_image=None, control_image=None) -> None:
        """Raise RequestError when this backbone cannot run `request` as asked."""
        validate_common(self.spec, request, init_image=init_image, control_image=control_image,
                        size_multiple=self.size_multiple, max_steps=self.max_steps,
                        schedulers=self.schedulers, options=self.options)

    # -- loading ------------------------------------------------------------------------
    def skipped_components(self, **load_options) -> tuple[str, ...]:
        """Pipeline components not loaded under `load_options`."""
        return ()

    def from_pretrained_kwargs(self, **load_options) -> dict:
        """Extra keyword arguments for `from_pretrained` under `load_options`."""
        if self.has_safety_checker_slot:
            # SD 1.x/2.x pipelines have a safety-checker slot and warn unless told explicitly
            # that it is empty; SD 2.1 ships without one.
            return {"safety_checker": None, "requires_safety_checker": False}
        return {}

    def load(self, source: Any, *, device: str = "cpu", dtype: Any = None, **load_options) -> LoadedPipeline:
        """The txt2img and img2img pipelines from a hub id (cache only: use
        `sources.download` first) or a local folder, on `device` in `dtype` (fp32 on CPU).

        Raises ModelNotAvailable when the files are not on disk, ModelLoadError when they
        are but cannot be loaded."""
        from core.backends.sources import as_source, require_ready

        src = as_source(source)
        state = require_ready(self.spec, src, skip=self.skipped_components(**load_options))
        dt = torch_dtype(dtype, device)
        kwargs: dict[str, Any] = {"dtype": dt, **self.from_pretrained_kwargs(**load_options), **hub_kwargs(src)}
        if src.kind == "hub" and str(dt) == "torch.float16" and self.spec.dtype == "fp16" \
                and _has_variant(Path(state.where), "fp16"):
            kwargs["variant"] = "fp16"
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

        try:
            txt2img = AutoPipelineForText2Image.from_pretrained(src.path_or_id, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError) as err:
            raise ModelLoadError(f"Could not load {self.spec.label} from {src}: {err}") from err
        self.configure(txt2img)
        txt2img.to(device)
        pipes = {}
        if "txt2img" in self.spec.modes:
            pipes["txt2img"] = txt2img
        if "img2img" in self.spec.modes:
            pipes["img2img"] = AutoPipelineForImage2Image.from_pipe(txt2img)
        for p in pipes.values():
            p.set_progress_bar_config(disable=True)
        return LoadedPipeline(
            backbone=self.spec.id, source=src, pipes=pipes, device_name=str(device),
            dtype_name=str(dt).replace("torch.", ""),
            load_options=dict(load_options), snapshot=state.where, default_scheduler=txt2img.scheduler,
        )

    def configure(self, pipe) -> None:
        """Set the backbone's default scheduler on a freshly loaded pipeline when the
        checkpoint ships another one."""
        if self.default_scheduler_class and type(pipe.scheduler).__name__ != self.default_scheduler_class:
            import diffusers

            cls = getattr(diffusers, self.default_scheduler_class)
            pipe.scheduler = cls.from_config(pipe.scheduler.config)

    # -- running ------------------------------------------------------------------------
    def prompt_kwargs(self, p, request, device) -> dict:
        """Prompt arguments of the pipeline call (text, or embeddings for long prompts)."""
        return {"prompt": request.prompt, "negative_prompt": request.negative_prompt or None}

    def call_kwargs(self, p, request) -> dict:
        """Mode-specific arguments besides prompts, image, generators and callback."""
        if request.mode == "txt2img":
            return {"height": request.size, "width": request.size}
        return {}

    def run(self, pipe, request, *, init_image=None, control_image=None, generators: list,
            callback=None) -> list:
        """PIL images for `request`, one per generator (see core.backends.Backend)."""
        self.validate(request, init_image=init_image, control_image=control_image)
        if not generators:
            raise RequestError("No generators given: one per image is needed.")
        p = pipeline_for(pipe, request.mode)
        set_scheduler(pipe, p, request.scheduler)
        device = p._execution_device
        kwargs = dict(
            num_inference_steps=int(request.steps),
            guidance_scale=float(request.guidance),
            generator=list(generators),
            num_images_per_prompt=len(generators),
            output_type="pil",
            **self.prompt_kwargs(p, request, device),
            **self.call_kwargs(p, request),
        )
        if request.mode == "img2img":
            # One copy of the tile per image: each is VAE-encoded with its own generator
            # (SD3's img2img cannot expand a single image to a list of generators).
            kwargs.update(image=[init_image] * len(generators), strength=float(request.strength))
        kwargs.update(step_callback_kwargs(callback))
        import torch

        with torch.inference_mode():
            return list(p(**kwargs).images)


class ClipWindowPrompts:
    """Prompt handling of one-CLIP-encoder backbones (the SD 1.x/2.x family): prompts past
    75 tokens are encoded in 75-token windows and concatenated instead of being cut."""

    def prompt_kwargs(self, p, request, device) -> dict:
        from core.generation.prompts import encode_long_prompt_sd, needs_chunking

        if not needs_chunking(p, request.prompt, request.negative_prompt):
            return super().prompt_kwargs(p, request, device)
        embeds, negative = encode_long_prompt_sd(p, request.prompt, request.negative_prompt, device)
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative}

    def prompt_handling(self, pipe, request) -> PromptHandling:
        from core.generation.prompts import needs_chunking

        return PromptHandling(clip_windows=needs_chunking(pipeline_for(pipe, request.mode), request.prompt,
                                                          request.negative_prompt))


class SDXLClipWindowPrompts:
    """Prompt handling of the two-CLIP-encoder SDXL family: prompts past 75 tokens are
    encoded in 75-token windows through both encoders and concatenated; the pooled
    embedding comes from the first window."""

    def prompt_kwargs(self, p, request, device) -> dict:
        from core.generation.prompts import encode_long_prompt_sdxl, needs_chunking

        if not needs_chunking(p, request.prompt, request.negative_prompt):
            return super().prompt_kwargs(p, request, device)
        embeds, negative, pooled, negative_pooled = encode_long_prompt_sdxl(
            p, request.prompt, request.negative_prompt or None, device)
        return {"prompt_embeds": embeds, "negative_prompt_embeds": negative,
                "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}

    def prompt_handling(self, pipe, request) -> PromptHandling:
        from core.generation.prompts import needs_chunking

        windows = needs_chunking(pipeline_for(pipe, request.mode), request.prompt, request.negative_prompt)
        return PromptHandling(clip_windows=windows, pooled_from_first_window=windows)


def _has_variant(folder: Path, variant: str) -> bool:
    """Whether the denoiser of a pipeline folder has `variant` weights (e.g. *.fp16.safetensors)."""
    for sub in ("unet", "transformer"):
        d = folder / sub
        if d.is_dir() and any(f".{variant}." in p.name or f".{variant}-" in p.name for p in d.iterdir()):
            return True
    return False


__all__ = ["CONTROL_SCALE", "GUIDANCE", "NEGATIVE_PROMPT", "SCHEDULERS", "SD21_HUB_ID", "STEPS", "STRENGTH", "UNET_SCHEDULERS",
           "Backend", "BackendSpec", "ClipWindowPrompts", "Control", "DiffusersBackend", "LoadedPipeline",
           "PromptHandling", "SDXLClipWindowPrompts", "denoising_steps", "hub_kwargs", "image_at_size", "pipeline_for", "register",
           "scheduler_control", "set_scheduler", "step_callback_kwargs", "torch_dtype", "validate_common"]
