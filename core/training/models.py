"""The frozen base a ControlNet trains on, and the ControlNet it starts from.

`load_base` reads the base's tokenizer, text encoder, VAE, UNet and noise schedule from
where the `sd21` or `diffusionsat` backbone would load them (its folder under the models
folder, the Hugging Face cache, or `--base-model`), refusing with the backbone's own "not on
this machine" message. `new_controlnet` starts the ControlNet from the UNet as both
references do: diffusers' `ControlNetModel.from_unet` for SD 2.1, `SatControlNet.from_unet`
(metadata MLPs copied) for DiffusionSat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelNotAvailable
from core.training.options import TrainingError, TrainOptions


@dataclass
class Base:
    kind: str  # "sd21" or "diffusionsat"
    source: str  # what base_model.txt records: a folder or a hub id
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any  # DDPM, for adding noise in training
    scheduler_config: dict  # the base's own scheduler config, for validation images

    @property
    def uses_metadata(self) -> bool:
        return bool(getattr(self.unet.config, "use_metadata", False))

    @property
    def size_multiple(self) -> int:
        """Image sides the UNet takes: the VAE's factor 8 times the UNet's downsamplings."""
        return 8 * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def frozen(self, device, dtype) -> "Base":
        """The models frozen (no gradients, eval mode) on `device` in `dtype`."""
        for model in (self.text_encoder, self.vae, self.unet):
            model.requires_grad_(False)
            model.eval()
            model.to(device) if model.dtype == dtype else model.to(device, dtype=dtype)
        return self


def base_source(backbones, options: TrainOptions) -> str:
    """Where the base loads from; ModelNotAvailable (saying how to get it) when it is not
    on disk."""
    backend = backbones.get(options.base)
    source = options.base_model or backbones.source(options.base)
    state = backend.readiness(source)
    if not state.ready:
        raise ModelNotAvailable(f"The base {backend.spec.label} is not on this machine, so nothing can be trained "
                                f"on it. {state.missing}")
    return str(source)


def load_base(backbones, options: TrainOptions) -> Base:
    """The base's parts in fp32 on the CPU (the trainer casts and moves them)."""
    source = base_source(backbones, options)
    if options.base == "diffusionsat":
        return _diffusionsat_base(backbones, source)
    return _sd21_base(backbones, source)


def _sd21_base(backbones, source: str) -> Base:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = backbones.get("sd21").readiness(source).where
    try:
        scheduler_config = dict(DDPMScheduler.load_config(folder, subfolder="scheduler"))
        return Base(
            kind="sd21", source=source,
            tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
            vae=AutoencoderKL.from_pretrained(folder, subfolder="vae"),
            unet=UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
            noise_scheduler=DDPMScheduler.from_config(scheduler_config),
            scheduler_config=scheduler_config)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"The SD 2.1 base in {folder} could not be read: {err}") from err


def _diffusionsat_base(backbones, source: str) -> Base:
    from diffusers import DDPMScheduler

    from core.backends.diffusionsat_models import sat_unet_class
    from core.backends.diffusionsat_pipeline import load_components, load_model_strict

    layout = backbones.get("diffusionsat").layout(source)
    unet = load_model_strict(sat_unet_class(), layout.unet, layout.unet_subfolder, None, "DiffusionSat UNet")
    parts = load_components(layout.components, None)
    scheduler_config = dict(parts["scheduler"].config)
    return Base(kind="diffusionsat", source=source, tokenizer=parts["tokenizer"], text_encoder=parts["text_encoder"],
                vae=parts["vae"], unet=unet, noise_scheduler=DDPMScheduler.from_config(scheduler_config),
                scheduler_config=scheduler_config)


def new_controlnet(base: Base):
    """A ControlNet initialised from the base UNet (trainable, fp32, on the CPU)."""
    if base.kind == "diffusionsat":
        from core.backends.diffusionsat_models import sat_controlnet_class

        controlnet = sat_controlnet_class().from_unet(base.unet)
    else:
        from diffusers import ControlNetModel

        controlnet = ControlNetModel.from_unet(base.unet)
    return controlnet.float().train()


def validation_pipeline(base: Base, controlnet):
    """The app's own ControlNet pipeline over the training models (no copies), with DDIM."""
    from diffusers import DDIMScheduler

    parts = dict(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
                 controlnet=controlnet, scheduler=DDIMScheduler.from_config(base.scheduler_config),
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if base.kind == "diffusionsat":
        from core.backends.diffusionsat_pipeline import pipeline_classes

        pipe = pipeline_classes()["DiffusionSatControlNetPipeline"](**parts)
    else:
        from diffusers import StableDiffusionControlNetPipeline

        pipe = StableDiffusionControlNetPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def validation_backend(base: Base):
    """The backend whose `run` makes the validation images: the one the output loads as."""
    from core.backends import get

    return get("diffusionsat-controlnet" if base.kind == "diffusionsat" else "controlnet")


def check_resolution(base: Base, resolution: int) -> None:
    if resolution % base.size_multiple:
        near = max(base.size_multiple, round(resolution / base.size_multiple) * base.size_multiple)
        raise TrainingError(f"--resolution must be a multiple of {base.size_multiple} for this base "
                            f"(got {resolution}); try {near}.")


def write_base_hint(folder: Path, source: str) -> None:
    """`folder/base_model.txt`: the base the ControlNet was trained on, which both ControlNet
    backbones read to load it on the right base."""
    from core.backends.controlnet import BASE_HINT_FILE
    from core.io import atomic_write_text

    value = str(Path(source).resolve()) if Path(source).expanduser().is_dir() else source
    atomic_write_text(Path(folder) / BASE_HINT_FILE, f"# the base this ControlNet was trained on\n{value}\n")
