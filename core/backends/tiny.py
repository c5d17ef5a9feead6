"""Test-only backbones: tiny RANDOM models in the layouts of SD 2.1, SDXL Turbo and SD3.

Importing this module registers `tiny-sd21`, `tiny-sdxl-turbo`, `tiny-sd3`, `tiny-controlnet`
and `tiny-instruct-pix2pix` (it is not in
BACKEND_MODULES, so nothing registers them by default). They are the real backends (same
load, validation and run code) under another spec: `test_only=True` (hidden from
`available()` unless include_test_only), no hub id, small defaults (64 px, 2 steps).

They load from a local folder: `core/backends/tiny_models/sd.py` builds the folders
(`build_tiny_models(models_dir)` writes `models_dir/tiny-sd21`, ... which
`core.backends.sources.resolve_source(spec, None, models_dir=models_dir)` finds). Their
images are noise: they test plumbing, never quality.
"""

from __future__ import annotations

from dataclasses import replace

from core.backends import available, register

available()  # register the real backbones first, so they keep their order in the dropdowns

from core.backends.controlnet import ControlNetBackend  # noqa: E402
from core.backends.instruct_pix2pix import InstructPix2PixBackend  # noqa: E402
from core.backends.sd3 import SD3Backend  # noqa: E402
from core.backends.sd21 import SD21Backend  # noqa: E402
from core.backends.sdxl_turbo import SDXLTurboBackend  # noqa: E402


def _tiny(backend_cls, backbone_id: str, label: str, **defaults):
    real = backend_cls.default_spec()
    spec = replace(
        real, id=backbone_id, label=label, hub_id=None, test_only=True, dtype="fp32", vram_gb=0.05,
        defaults={**real.defaults, "steps": 2, "size": 64, **defaults},
        notes=f"Tiny random model with the layout of {real.label}, for tests only: it makes noise.",
    )
    return register(backend_cls(spec))


TINY_SD21 = _tiny(SD21Backend, "tiny-sd21", "Tiny random SD 2.1 (tests)")
TINY_SDXL_TURBO = _tiny(SDXLTurboBackend, "tiny-sdxl-turbo", "Tiny random SDXL Turbo (tests)")
TINY_SD3 = _tiny(SD3Backend, "tiny-sd3", "Tiny random SD3 (tests)")

TINY_CONTROLNET = _tiny(ControlNetBackend, "tiny-controlnet", "Tiny random ControlNet on SD 2.1 (tests)")
TINY_INSTRUCT_PIX2PIX = _tiny(InstructPix2PixBackend, "tiny-instruct-pix2pix", "Tiny random InstructPix2Pix (tests)")

TINY_BACKENDS = (TINY_SD21, TINY_SDXL_TURBO, TINY_SD3, TINY_CONTROLNET, TINY_INSTRUCT_PIX2PIX)
