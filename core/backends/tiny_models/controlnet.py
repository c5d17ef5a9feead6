"""Tiny, randomly initialised ControlNet and InstructPix2Pix models for tests and dry runs (no downloads).

Both are built from the tiny SD 2.1-style pipeline of `core.backends.tiny_models.sd` (same offline CLIP
tokenizer, text encoder and VAE), saved with `save_pretrained` and meant to be reloaded
through the backends' real `load()`. The pictures they make are noise: they test plumbing.

- `tiny_random_controlnet_folder()`: a folder laid out like a user's trained ControlNet
  next to its base model:
      <root>/tiny-controlnet/controlnet/      ControlNetModel (config.json + weights),
                                              made with ControlNetModel.from_unet
      <root>/tiny-controlnet/base_model.txt   "../tiny-sd21": the base pipeline folder
      <root>/tiny-sd21/                       the tiny SD 2.1-style pipeline
  Some of its weights are re-initialised (`_make_condition_matter`) so that, unlike a freshly
  made ControlNet, the condition image visibly changes the output.
- `tiny_random_instruct_pix2pix_folder()`: a StableDiffusionInstructPix2PixPipeline folder
  whose UNet takes 8 input channels (4 noisy latents + 4 latents of the input image) and
  an Euler Ancestral scheduler with epsilon prediction, like timbrooks/instruct-pix2pix.

`register_tiny()` adds the test-only backbones `tiny-controlnet` and
`tiny-instruct-pix2pix` to the registry (hidden from `available()` unless asked for).
"""

from __future__ import annotations

import threading
from pathlib import Path

from core.backends.tiny_models.sd import _cached, _process_root, tiny_random_sd21_folder

TINY_IDS = ("tiny-controlnet", "tiny-instruct-pix2pix")
SEED = 0

_lock = threading.Lock()
_built: dict[str, Path] = {}


def _make_condition_matter(controlnet, scale: float = 0.3) -> None:
    """Make the condition image matter in a fresh random ControlNet.

    A new ControlNet's output convolutions are zero, so it adds nothing to the UNet; and
    with PyTorch's default init the eight convolutions of its conditioning embedding shrink
    the image signal until the biases dominate, so every condition image gives about the
    same residuals. Here: He-initialised embedding convolutions without biases, and small
    random output convolutions (a trained ControlNet has both)."""
    import torch

    with torch.no_grad():
        for module in controlnet.controlnet_cond_embedding.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                module.bias.zero_()
        for conv in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]:
            conv.weight.normal_(0.0, scale)
            conv.bias.normal_(0.0, scale)


# -- ControlNet ---------------------------------------------------------------------------
def build_tiny_random_controlnet(folder: Path, base: Path) -> Path:
    """Save a tiny random ControlNet, made from the UNet of the tiny SD pipeline in `base`,
    as `folder/controlnet/`, and `folder/base_model.txt` naming `base` relative to `folder`."""
    import os

    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    folder = Path(folder)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel.from_pretrained(Path(base) / "unet")
    # Four conditioning-embedding levels bring a 64 px condition down to the 8 px latent.
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    _make_condition_matter(controlnet)
    controlnet.save_pretrained(folder / "controlnet")
    relative = os.path.relpath(Path(base).resolve(), folder.resolve())
    (folder / "base_model.txt").write_text(relative + "\n", encoding="utf-8")  # written last
    return folder


def tiny_random_controlnet_folder(root: Path | None = None) -> Path:
    """Folder of the tiny random ControlNet (`root/tiny-controlnet`, with the tiny SD 2.1
    base as `root/tiny-sd21`), built once per process and root."""
    root = Path(root) if root is not None else _process_root()
    base = tiny_random_sd21_folder(root)
    with _lock:
        folder = root / "tiny-controlnet"
        key = str(folder.resolve())
        if key not in _built and not (folder / "base_model.txt").exists():
            build_tiny_random_controlnet(folder, base)
        _built[key] = folder
        return folder


# -- InstructPix2Pix ----------------------------------------------------------------------
def build_tiny_random_instruct_pix2pix(folder: Path, base: Path) -> Path:
    """Save a tiny random InstructPix2Pix pipeline to `folder`: the text encoder, tokenizer
    and VAE of the tiny SD pipeline in `base`, a fresh UNet with 8 input channels."""
    import torch
    from diffusers import (EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
                           StableDiffusionPipeline, UNet2DConditionModel)

    sd = StableDiffusionPipeline.from_pretrained(base)
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel.from_config({**sd.unet.config, "in_channels": 8})
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=sd.vae, text_encoder=sd.text_encoder, tokenizer=sd.tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return Path(folder)


def tiny_random_instruct_pix2pix_folder(root: Path | None = None) -> Path:
    """Folder of the tiny random InstructPix2Pix pipeline (`root/tiny-instruct-pix2pix`),
    built once per process and root."""
    base = tiny_random_sd21_folder(root)
    return _cached("tiny-instruct-pix2pix", root, lambda folder: build_tiny_random_instruct_pix2pix(folder, base))


BUILDERS = {
    "tiny-controlnet": tiny_random_controlnet_folder,
    "tiny-instruct-pix2pix": tiny_random_instruct_pix2pix_folder,
}


def build_tiny_models(models_dir: Path, ids: tuple[str, ...] = TINY_IDS) -> dict[str, Path]:
    """Write the tiny random models as `models_dir/<id>` (the layout
    `core.backends.sources.resolve_source` looks for) and return {backbone id: folder}."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    return {i: BUILDERS[i](models_dir) for i in ids}


# -- test-only backbones ------------------------------------------------------------------
def register_tiny() -> tuple:
    """The test-only `tiny-controlnet` and `tiny-instruct-pix2pix` backends (registered by
    core.backends.tiny): the real backends under a hidden spec, 64 px, 2 steps."""
    from core.backends.tiny import TINY_CONTROLNET, TINY_INSTRUCT_PIX2PIX

    return TINY_CONTROLNET, TINY_INSTRUCT_PIX2PIX
