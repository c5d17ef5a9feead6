"""Tiny RANDOM models in the real layouts of the backbones, built from configs in code (no
download): the test suite's models and a no-GPU dry run of the app. Their pictures are
noise: they check plumbing, never quality.

`build_all(models_dir)` writes `models_dir/tiny-sd21`, `tiny-sdxl-turbo`, `tiny-sd3`,
`tiny-controlnet` and `tiny-instruct-pix2pix`, where the test-only backbones of
core.backends.tiny (offered with XBDLAB_TEST_BACKBONES=1) find them. `sd` and `controlnet`
hold the builders; torch, diffusers and transformers are imported inside them.
"""

from __future__ import annotations

from pathlib import Path


def build_all(models_dir: Path) -> dict[str, Path]:
    """Write every tiny test backbone under `models_dir`; {backbone id: folder}."""
    from core.backends.tiny_models import controlnet, sd

    return {**sd.build_tiny_models(models_dir), **controlnet.build_tiny_models(models_dir)}


__all__ = ["build_all"]
