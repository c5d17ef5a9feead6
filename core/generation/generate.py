"""One generation: request in, images and a reproducible record out.

`generate` does not load models, write runs or hold GPU locks: the caller passes a loaded
pipeline (from the model manager) and stores the result (in the run store).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

import numpy as np

from core.errors import GenerationCancelled, RequestError
from core.io import jsonable_or_text
from core.generation.progress import CancelToken, StepCallback
from core.generation.seeds import generators_for, seeds_for
from core.types import GenerationRequest, GenerationResult

def prepare_image(image: np.ndarray, size: int):
    """`image` (H, W, 3 uint8, or H, W grey, or H, W, 4) as an RGB PIL image of size × size,
    resized with LANCZOS when it differs."""
    from core.backends.common import image_at_size

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise RequestError(f"Images must be uint8 arrays (got {arr.dtype}).")
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise RequestError(f"Images must be H×W×3 arrays (got shape {arr.shape}).")
    return image_at_size(arr[..., :3], size)


def _describe_source(pipe, source) -> dict | str | None:
    src = source if source is not None else getattr(pipe, "source", None)
    if src is not None:
        return src.to_dict() if hasattr(src, "to_dict") else str(src)
    config = getattr(pipe, "config", None)
    name = getattr(config, "_name_or_path", None) if config is not None else None
    return {"kind": "unknown", "path_or_id": name, "revision": None} if name else None


def _scheduler_record(p) -> dict | None:
    scheduler = getattr(p, "scheduler", None)
    if scheduler is None:
        return None
    return {"class": type(scheduler).__name__, "config": jsonable_or_text(dict(getattr(scheduler, "config", {})))}


def _to_uint8(image) -> np.ndarray:
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return arr


def build_record(request: GenerationRequest, *, backend, pipe, seeds: list[int], callback: StepCallback | None,
                 seconds: float, source=None, init_size: tuple[int, int] | None = None) -> dict:
    """Everything needed to make the images again: backbone, model source and the folder it
    was read from, pipeline and scheduler (class + config), resolved parameters, seeds,
    prompts, options, per-encoder token counts, device/dtype and library versions."""
    from core.generation.prompts import token_report

    spec = backend.spec
    p = backend.pipeline_used(pipe, request)
    handling = backend.prompt_handling(pipe, request)
    tokens = token_report(p, spec.tokenizers, request.prompt, request.negative_prompt, chunked=handling.clip_windows)
    if "t5" in tokens and handling.t5 == "dropped":
        tokens["t5"] = {"used": False, "dropped": True}
    img2img = request.mode == "img2img"
    record = {
        "backbone": spec.id,
        "backbone_label": spec.label,
        "mode": request.mode,
        "source": _describe_source(pipe, source),
        "weights_folder": getattr(pipe, "snapshot", None),
        "pipeline": type(p).__name__,
        "scheduler": _scheduler_record(p),
        "steps": int(request.steps),
        "denoising_steps": callback.total if callback is not None else None,
        "guidance": float(request.guidance),
        "strength": float(request.strength) if img2img else None,
        "size": int(request.size),
        "init_image_size": list(init_size) if (img2img and init_size) else None,
        "init_resize": "PIL LANCZOS to size×size" if img2img else None,
        "seeds": list(seeds),
        "num_images": int(request.num_images),
        "generator": "torch.Generator('cpu').manual_seed(seed) per image",
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "prompt_handling": handling.as_record(),
        "token_counts": tokens,
        "options": jsonable_or_text(dict(request.options or {})),
        "metadata": list(request.metadata) if request.metadata is not None else None,
        "scene_id": request.scene_id,
        "device": str(getattr(p, "device", "")) or None,
        "dtype": str(getattr(p, "dtype", "")).replace("torch.", "") or None,
        "seconds": round(float(seconds), 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record["request"] = jsonable_or_text(dataclasses.asdict(request))  # what was asked, to ask it again
    load_options = getattr(pipe, "load_options", None)
    if load_options:
        record["load_options"] = jsonable_or_text(load_options)
    return record


def generate(request: GenerationRequest, *, backend, pipe, init_image: np.ndarray | None = None,
             control_image: np.ndarray | None = None, on_step=None, preview_every: int = 0,
             cancel: CancelToken | None = None, source=None) -> GenerationResult:
    """Run `request` on a loaded `pipe` of `backend` and return uint8 images with a record.

    init_image: the pre-event tile (H, W, 3 uint8), resized to request.size with LANCZOS;
        required for img2img, ignored for txt2img.
    control_image: for backbones conditioned on a control image, resized likewise.
    on_step(step, total): called after every denoising step; with `preview_every` = N > 0
        it is also given `preview=` (uint8 RGB) every N steps and at the last step.
    cancel: a CancelToken; once cancelled the pipeline stops after its current step and
        GenerationCancelled is raised.
    source: where the model came from, when `pipe` does not say itself.
    Raises RequestError (before any work) for what the backbone cannot do."""
    t0 = time.perf_counter()
    spec = backend.spec
    if request.backbone != spec.id:
        raise RequestError(f"This request is for {request.backbone!r}, but the {spec.id!r} backbone was given.")
    img2img = request.mode == "img2img"
    if img2img and init_image is None:
        raise RequestError(f"{spec.label} img2img needs the pre-event tile: pick a scene, or switch to txt2img.")
    # before any work, the size included
    backend.validate(request, init_image=init_image if img2img else None, control_image=control_image)
    init = prepare_image(init_image, int(request.size)) if img2img else None
    control = prepare_image(control_image, int(request.size)) if control_image is not None else None
    seeds = seeds_for(request)
    if cancel is not None and cancel.cancelled:
        raise GenerationCancelled("Generation cancelled before it started; nothing was made.")
    callback = StepCallback(on_step, preview_every=preview_every, cancel=cancel)
    images = backend.run(pipe, request, init_image=init, control_image=control,
                         generators=generators_for(seeds), callback=callback)
    if callback.interrupted or (cancel is not None and cancel.cancelled):
        raise GenerationCancelled(
            f"Generation cancelled after {callback.steps_run} of {callback.total or '?'} steps; "
            "nothing was saved.")
    arrays = [_to_uint8(im) for im in images]
    seconds = time.perf_counter() - t0
    init_size = tuple(np.asarray(init_image).shape[:2][::-1]) if img2img else None
    record = build_record(request, backend=backend, pipe=pipe, seeds=seeds, callback=callback,
                          seconds=seconds, source=source, init_size=init_size)
    return GenerationResult(request=request, images=arrays, seeds=seeds, record=record, seconds=seconds)
