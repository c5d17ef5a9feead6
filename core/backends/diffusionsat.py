"""DiffusionSat backbones: `diffusionsat` (img2img, txt2img) and `diffusionsat-controlnet`.

DiffusionSat is SD 2.1 fine-tuned with a 7-value metadata vector (core.data.metadata): the
caller fills `request.metadata` (from the scene with `scene_metadata`, or NO_METADATA for
"no metadata"); None is refused here. The ControlNet backbone also takes the condition
(pre-event) image's metadata from `request.options["cond_metadata"]` (7 values; zeros when
absent). Everything else (validation, schedulers, prompts past 75 tokens, the pipeline
pair) is SD 2.1's (core.backends.sd21 / common). The models and pipelines live in
diffusionsat_models / diffusionsat_pipeline and are imported only by `load` and `run`.

Sources: a hub id (from the local Hugging Face cache, like every backbone) or a local folder
in one of the layouts listed in core.backends.diffusionsat_pipeline (pipeline folder,
training output with checkpoint-<step>/unet/, checkpoint folder, UNet folder). The official
weights are Zenodo zips of such folders; `DEFAULT_HUB_ID` is an unofficial re-upload.
`components_base` (SD 2.1's text encoder, tokenizer, VAE, scheduler, used when a folder
holds only a UNet) and, for the ControlNet, `diffusionsat_base` (used when its folder is
neither beside nor inside a DiffusionSat base) are attributes the application may set.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from core.backends.common import (CONTROL_SCALE, GUIDANCE, NEGATIVE_PROMPT, SD21_HUB_ID, STEPS, STRENGTH,
                                  UNET_SCHEDULERS, BackendSpec, ClipWindowPrompts, DiffusersBackend, LoadedPipeline,
                                  pipeline_for, register, scheduler_control, set_scheduler, step_callback_kwargs,
                                  torch_dtype, validate_common)
from core.data.metadata import FIELDS, NO_METADATA
from core.errors import ModelNotAvailable, RequestError

DEFAULT_HUB_ID = "BiliSakura/DiffusionSat-Single-512"
NUM_METADATA = 7
# Normalised values lie in 0..1000 (years 1980-2100); gsd is m/px x 1000 and may exceed it.
_UPPER = {"gsd": None}

NOTES = (
    "DiffusionSat (Khanna et al., ICLR 2024): SD 2.1 fine-tuned on fMoW, SpaceNet and Satlas with the "
    "metadata [lon, lat, gsd, cloud cover, year, month, day], normalised to 0..1000 (from the scene's "
    "labels). Official weights: zips of diffusers folders on Zenodo (community 'diffusionsat'; 512 px "
    "model: record 13751498, folder finetune_sd21_sn-satlas-fmow_snr5_md7norm_bs64 with "
    "checkpoint-<step>/unet/): unzip and give the folder. The default hub id is an unofficial re-upload. "
    "512 px, 20 steps, guidance 7.5; the unconditional half of guidance gets the empty prompt and zero "
    "metadata."
)
CONTROLNET_NOTES = (
    "DiffusionSat with a ControlNet on the pre-event tile (fed in [0, 1]) and on both images' metadata: "
    "request.metadata for the post-event target, options['cond_metadata'] for the pre-event tile (zeros "
    "when absent). No xBD ControlNet was published: train one, then give the folder holding controlnet/ "
    "(beside or inside a DiffusionSat base). Authors' xBD captions: 'a satellite image after being "
    "affected by a {disaster_type} natural disaster'."
)


def check_metadata(values, what: str = "metadata") -> tuple[float, ...]:
    """The 7 normalised values as floats; RequestError for anything else, in particular for
    raw values passed by mistake (a negative longitude, a year such as 2022)."""
    try:
        vec = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise RequestError(f"DiffusionSat {what} must be 7 numbers, got {values!r}.") from None
    if len(vec) != NUM_METADATA:
        raise RequestError(f"DiffusionSat {what} has 7 values [{', '.join(FIELDS)}], got {len(vec)}.")
    for name, v in zip(FIELDS, vec):
        upper = _UPPER.get(name, 1000.0)
        if not math.isfinite(v) or v < 0 or (upper is not None and v > upper):
            raise RequestError(
                f"DiffusionSat {what}: {name} = {v:g} is not a normalised value (0..1000). Give normalised "
                "values (core.data.metadata.encode_metadata turns degrees, m/px and dates into them), or all "
                "zeros for no metadata.")
    return vec


class DiffusionSatBackend(ClipWindowPrompts, DiffusersBackend):
    """DiffusionSat: SD 2.1's pipeline pair with a metadata-conditioned UNet."""

    default_scheduler_class = "DDIMScheduler"
    has_safety_checker_slot = True
    controlnet: bool = False
    options: tuple[str, ...] = ()
    schedulers = UNET_SCHEDULERS

    def __init__(self, spec: BackendSpec | None = None) -> None:
        super().__init__(spec)
        self.components_base: str | None = SD21_HUB_ID
        self.diffusionsat_base: str | None = DEFAULT_HUB_ID

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="diffusionsat",
            label="DiffusionSat (SD 2.1 + metadata)",
            hub_id=DEFAULT_HUB_ID,
            modes=("img2img", "txt2img"),
            dtype="fp16",
            vram_gb=4.0,
            needs_metadata=True,
            attention="unet",
            defaults={"mode": "img2img", "steps": 20, "guidance": 7.5, "strength": 0.8, "size": 512,
                      "scheduler": "ddim"},
            controls=(STEPS, GUIDANCE, STRENGTH, NEGATIVE_PROMPT, scheduler_control()),
            tokenizers=("clip",),
            notes=NOTES,
        )

    def with_models_dir(self, models_dir) -> "DiffusionSatBackend":
        """A copy borrowing SD 2.1's components from `models_dir/sd21/` (for folders holding
        only a UNet) and, for the ControlNet, its DiffusionSat base from
        `models_dir/diffusionsat/`, where those folders exist."""
        if models_dir is None:
            return self
        local = Path(models_dir).expanduser()
        clone = copy.copy(self)
        if (local / "sd21").is_dir():
            clone.components_base = str(local / "sd21")
        if self.controlnet and (local / "diffusionsat").is_dir():
            clone.diffusionsat_base = str(local / "diffusionsat")
        return clone

    # -- validation ---------------------------------------------------------------------
    def validate(self, request, *, init_image=None, control_image=None) -> None:
        """SD 2.1's checks, plus the metadata vector(s) and, for the ControlNet, the
        condition image."""
        validate_common(self.spec, request, init_image=init_image,
                        control_image=None if self.controlnet else control_image,
                        size_multiple=self.size_multiple, schedulers=self.schedulers, options=self.options)
        self.metadata_of(request)
        if self.controlnet and control_image is None:
            raise RequestError(f"{self.spec.label} needs the condition image (the pre-event tile).")

    def metadata_of(self, request) -> dict:
        """`metadata` (and `cond_metadata` for the ControlNet) of `request`, checked."""
        if request.metadata is None:
            raise RequestError(f"{self.spec.label} needs the metadata vector: fill request.metadata from the scene "
                               "(core.data.metadata.scene_metadata) or pass NO_METADATA for none.")
        out = {"metadata": check_metadata(request.metadata)}
        if self.controlnet:
            out["cond_metadata"] = check_metadata((request.options or {}).get("cond_metadata", NO_METADATA),
                                                  "cond_metadata")
        return out

    # -- loading ------------------------------------------------------------------------
    def _locate(self, text: str) -> str:
        """The local folder of a hub id (cache only, like every backbone: no download here)."""
        from core.backends.sources import as_source, require_ready

        src = as_source(text)
        if src.kind == "folder":
            return src.path_or_id
        return require_ready(self.spec, src).where

    def layout(self, source):
        """Where the UNet, the other components and the ControlNet of `source` are
        (a diffusionsat_pipeline.Layout); ModelNotAvailable when nothing fits."""
        from core.backends.diffusionsat_pipeline import resolve_source
        from core.backends.sources import as_source

        src = as_source(source)
        folder = self._locate(str(src)) if src.kind == "hub" else src.path_or_id
        return resolve_source(folder, controlnet=self.controlnet, components_base=self.components_base,
                              diffusionsat_base=self.diffusionsat_base if self.controlnet else None,
                              locate=self._locate)

    def readiness(self, source):
        """A core.backends.sources.Readiness for `source` that knows DiffusionSat's layouts
        (the generic check wants model_index.json, which training folders lack)."""
        from core.backends.sources import Readiness

        try:
            layout = self.layout(source)
        except ModelNotAvailable as err:
            return Readiness(False, str(source), None, str(err))
        return Readiness(True, layout.unet, None)

    def load(self, source: Any, *, device: str = "cpu", dtype: Any = None, **load_options) -> LoadedPipeline:
        """The txt2img and img2img pipelines of `source` on `device` in `dtype` (fp32 on CPU),
        every weight matched (ModelLoadError otherwise)."""
        from core.backends.diffusionsat_pipeline import load_pipeline, sibling_pipeline
        from core.backends.sources import as_source

        src = as_source(source)
        layout = self.layout(src)
        dt = torch_dtype(dtype, device)
        primary = load_pipeline(layout, device=device, dtype=dt)
        self.configure(primary)
        pipes = {"txt2img": primary}
        pipes["img2img"] = sibling_pipeline(primary, "img2img")
        pipes = {mode: pipes[mode] for mode in ("txt2img", "img2img") if mode in self.spec.modes}
        for p in pipes.values():
            p.set_progress_bar_config(disable=True)
        loaded = LoadedPipeline(backbone=self.spec.id, source=src, pipes=pipes, device_name=str(device),
                                dtype_name=str(dt).replace("torch.", ""), load_options=dict(load_options),
                                snapshot=layout.unet, default_scheduler=primary.scheduler)
        loaded.layout = layout.as_record()
        return loaded

    # -- running ------------------------------------------------------------------------
    def run(self, pipe, request, *, init_image=None, control_image=None, generators: list,
            callback=None) -> list:
        """PIL images for `request`, one per generator (image i uses generators[i])."""
        self.validate(request, init_image=init_image, control_image=control_image)
        if not generators:
            raise RequestError("No generators given: one per image is needed.")
        metadata = self.metadata_of(request)
        p = pipeline_for(pipe, request.mode)
        set_scheduler(pipe, p, request.scheduler)
        kwargs = dict(
            num_inference_steps=int(request.steps), guidance_scale=float(request.guidance),
            generator=list(generators), num_images_per_prompt=len(generators), output_type="pil",
            metadata=[metadata["metadata"]], **self.prompt_kwargs(p, request, p._execution_device),
        )
        if request.mode == "txt2img":
            kwargs.update(height=int(request.size), width=int(request.size))
        else:
            kwargs.update(image=init_image, strength=float(request.strength))
        if self.controlnet:
            kwargs.update(cond_metadata=[metadata["cond_metadata"]],
                          controlnet_conditioning_scale=float(request.control_scale))
            if request.mode == "txt2img":
                kwargs["image"] = control_image
            else:
                kwargs.update(control_image=control_image, height=int(request.size), width=int(request.size))
        kwargs.update(step_callback_kwargs(callback))
        import torch

        with torch.inference_mode():
            return list(p(**kwargs).images)


class DiffusionSatControlNetBackend(DiffusionSatBackend):
    """DiffusionSat + a ControlNet conditioned on the pre-event tile and both metadata vectors."""

    controlnet = True
    options = ("cond_metadata",)

    @classmethod
    def default_spec(cls) -> BackendSpec:
        return BackendSpec(
            id="diffusionsat-controlnet",
            label="DiffusionSat + ControlNet (pre-event tile)",
            hub_id=None,
            modes=("txt2img", "img2img"),
            dtype="fp16",
            vram_gb=5.5,
            needs_metadata=True,
            needs_control_image=True,
            attention="unet",
            defaults={"mode": "txt2img", "steps": 20, "guidance": 7.5, "strength": 0.8, "size": 512,
                      "scheduler": "ddim", "control_scale": 1.0},
            controls=(STEPS, GUIDANCE, STRENGTH, NEGATIVE_PROMPT, scheduler_control(), CONTROL_SCALE),
            tokenizers=("clip",),
            notes=CONTROLNET_NOTES,
        )


DIFFUSIONSAT = register(DiffusionSatBackend())
DIFFUSIONSAT_CONTROLNET = register(DiffusionSatControlNetBackend())

__all__ = ["DIFFUSIONSAT", "DIFFUSIONSAT_CONTROLNET", "DiffusionSatBackend", "DiffusionSatControlNetBackend",
           "check_metadata", "DEFAULT_HUB_ID"]
