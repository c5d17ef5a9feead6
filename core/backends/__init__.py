"""The backbone registry: one module per backbone, each registering one `Backend`.

A new backbone is one file (a `Backend` subclass from core.backends.common, registered with
`register`) plus one line in BACKEND_MODULES. The contract lives in core.backends.base.

Importing this package imports no torch or diffusers: backend modules import them inside
`load` and `run`. `available()` fills the UI's dropdowns; the UI renders a spec's declared
controls and capabilities, never anything keyed by backbone names.
"""

from __future__ import annotations

import importlib

from core.backends.base import Backend, BackendSpec, Control, PromptHandling
from core.errors import LabError

# Modules that register user-facing backbones, imported on first use of the registry.
BACKEND_MODULES: tuple[str, ...] = (
    "core.backends.sd21",
    "core.backends.sdxl_turbo",
    "core.backends.sdxl_base",
    "core.backends.sd3",
    "core.backends.diffusionsat",
    "core.backends.controlnet",
    "core.backends.instruct_pix2pix",
)


_REGISTRY: dict[str, Backend] = {}
_loaded = False


def register(backend: Backend) -> Backend:
    """Add `backend` to the registry under its spec's id and return it."""
    _REGISTRY[backend.spec.id] = backend
    return backend


def _load_modules() -> None:
    global _loaded
    if _loaded:
        return
    for name in BACKEND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency, not an unwritten module
                raise
    _loaded = True


def get(backend_id: str) -> Backend:
    """The backend registered as `backend_id`; a clear error listing the known ids."""
    _load_modules()
    if backend_id not in _REGISTRY:
        known = ", ".join(sorted(s.id for s in available(include_test_only=True))) or "none"
        raise LabError(f"Unknown backbone {backend_id!r}. Known backbones: {known}.")
    return _REGISTRY[backend_id]


def available(*, include_test_only: bool = False) -> list[BackendSpec]:
    """Specs of the registered backbones, in registration order; tiny test models only
    when asked for."""
    _load_modules()
    return [b.spec for b in _REGISTRY.values() if include_test_only or not b.spec.test_only]


__all__ = ["BACKEND_MODULES", "Backend", "BackendSpec", "Control", "PromptHandling", "available", "get", "register"]
