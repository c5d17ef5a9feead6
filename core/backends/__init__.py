"""The backbone registry: one module per backbone, each registering one `Backend`.

Importing this package imports no torch or diffusers: backend modules import them inside
`load` and `run`. `available()` fills the UI's dropdowns; the UI enables controls from a
spec's capabilities, never from backbone names.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from core.errors import LabError

# Modules that register user-facing backbones, imported on first use of the registry.
BACKEND_MODULES: tuple[str, ...] = (
    "core.backends.sd21",
    "core.backends.sdxl_turbo",
    "core.backends.sd3",
    "core.backends.diffusionsat",
    "core.backends.controlnet",
    "core.backends.instruct_pix2pix",
)


@dataclass(frozen=True)
class BackendSpec:
    """What a backbone is and can do.

    id: stable value used in requests, runs and the CLI (e.g. "sd21").
    label: what the UI shows.
    hub_id: default model source (a Hugging Face id); None when the user must give a folder.
    modes: subset of core.types.GENERATION_MODES.
    dtype: dtype on a GPU ("fp16" or "bf16"); the CPU always runs fp32.
    vram_gb: rough peak GPU memory at 512 px in `dtype`, for the readiness table.
    needs_metadata: conditioned on DiffusionSat's 7-value metadata.
    needs_control_image: conditioned on the pre-event tile through a ControlNet.
    attention: "unet" (cross-attention layers), "joint" (SD3's joint attention) or None.
    defaults: default request fields (steps, guidance, strength, size, scheduler, ...).
    controls: request fields the UI shows for this backbone.
    tokenizers: text encoders whose token counts the UI shows ("clip", "clip2", "t5").
    test_only: a tiny random model for tests; hidden unless explicitly enabled.
    """

    id: str
    label: str
    hub_id: str | None
    modes: tuple[str, ...]
    dtype: str = "fp16"
    vram_gb: float = 0.0
    needs_metadata: bool = False
    needs_control_image: bool = False
    attention: str | None = "unet"
    defaults: dict = field(default_factory=dict)
    controls: tuple[str, ...] = ("steps", "guidance", "strength", "seed", "negative_prompt")
    tokenizers: tuple[str, ...] = ("clip",)
    test_only: bool = False
    notes: str = ""


class Backend(Protocol):
    """One backbone: a spec, a loader and a runner with the same arguments for all."""

    spec: BackendSpec

    def load(self, source: str | Path, *, device: str, dtype: Any) -> Any:
        """The pipeline from a hub id or a local folder, on `device` in `dtype`."""

    def run(self, pipe: Any, request, *, init_image, control_image, generators: list,
            callback: Callable | None) -> list:
        """PIL images for `request` (one per generator). `init_image`/`control_image` are
        PIL images at the request size or None; `callback` is a diffusers
        `callback_on_step_end` function or None."""


_REGISTRY: dict[str, Backend] = {}
_loaded = False


def register(backend: Backend) -> Backend:
    """Add a backend (usable as a class decorator on an instance factory or directly)."""
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
