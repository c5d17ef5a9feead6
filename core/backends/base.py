"""The backend contract every backbone follows.

- `BackendSpec`: what a backbone is and can do (id, label, hub id, modes, dtype, VRAM,
  capabilities, defaults, the `Control`s the UI shows, its text encoders).
- `Control`: one request field (or option) a backbone lets the user set, with the widget
  the UI renders for it. The UI builds its widgets from these, never from backbone names.
- `PromptHandling`: how a prompt reached the text encoders in one generation, as data.
- `Backend`: the base class. `load` and `run` are abstract; every other hook has a
  documented default, so callers never probe a backend with hasattr.

Nothing here imports torch, diffusers or gradio.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

CONTROL_KINDS = ("slider", "checkbox", "dropdown", "text")


@dataclass(frozen=True)
class Control:
    """One setting a backbone exposes.

    name: the GenerationRequest field it sets ("steps", "guidance", ...), or the
        `request.options` key when `option` is true ("drop_t5").
    label: what the UI shows next to it.
    kind: "slider" (minimum, maximum, step), "checkbox", "dropdown" (choices) or "text".
    info: a short hint shown under the widget ("" for none).
    Its default value is the spec's `defaults[name]` (`defaults["options"][name]` for
    options)."""

    name: str
    label: str
    kind: str = "slider"
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str, ...] = ()
    option: bool = False
    info: str = ""

    def __post_init__(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ValueError(f"Control kind must be one of {', '.join(CONTROL_KINDS)} (got {self.kind!r}).")


# The controls most backbones share; a backbone may declare its own variant (another range).
STEPS = Control("steps", "Steps", "slider", 1, 100, 1)
GUIDANCE = Control("guidance", "Guidance", "slider", 0, 15, 0.5)
STRENGTH = Control("strength", "Strength (img2img)", "slider", 0.05, 1.0, 0.05,
                   info="1 = start from noise")
NEGATIVE_PROMPT = Control("negative_prompt", "Negative prompt", "text")
CONTROL_SCALE = Control("control_scale", "ControlNet scale", "slider", 0.0, 2.0, 0.05,
                        info="How strongly the pre-event tile steers the image: 1 is how it was trained.")


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
    controls: the settings the UI shows for this backbone (besides prompt, mode, size,
        seed and image count, which every backbone takes).
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
    controls: tuple[Control, ...] = (STEPS, GUIDANCE, STRENGTH, NEGATIVE_PROMPT)
    tokenizers: tuple[str, ...] = ("clip",)
    test_only: bool = False
    notes: str = ""

    @property
    def control_names(self) -> tuple[str, ...]:
        """The names of `controls`, in order."""
        return tuple(c.name for c in self.controls)

    def default_for(self, control: Control) -> Any:
        """The default value of `control` for this backbone (None when the spec has none)."""
        if control.option:
            return (self.defaults.get("options") or {}).get(control.name)
        return self.defaults.get(control.name)


@dataclass(frozen=True)
class PromptHandling:
    """How the prompt of one generation reached the text encoders.

    clip_windows: CLIP prompts past 75 tokens were encoded in 75-token windows and
        concatenated (nothing cut), instead of being truncated at 77.
    pooled_from_first_window: with windows, the pooled embedding (SDXL) came from the first.
    t5: None when the backbone has no T5 encoder; "used" (up to 256 tokens) or "dropped".
    """

    clip_windows: bool = False
    pooled_from_first_window: bool = False
    t5: str | None = None

    def summary(self) -> str:
        """The same, in words."""
        parts = ["clip: 75-token windows encoded separately and concatenated" if self.clip_windows
                 else "clip: up to 77 tokens"]
        if self.pooled_from_first_window:
            parts.append("pooled from the first window")
        if self.t5 == "used":
            parts.append("T5 up to 256 tokens")
        elif self.t5 == "dropped":
            parts.append("T5 dropped")
        return "; ".join(parts)

    def as_record(self) -> dict:
        """JSON-ready fields plus the summary, for run records."""
        return {"clip_windows": self.clip_windows, "pooled_from_first_window": self.pooled_from_first_window,
                "t5": self.t5, "summary": self.summary()}


class Backend(ABC):
    """One backbone: a spec, a loader and a runner with the same arguments for all.

    Subclasses must set `spec` and implement `load` and `run`; the other hooks have
    defaults that suit a plain diffusers pipeline."""

    spec: BackendSpec

    @abstractmethod
    def load(self, source: Any, *, device: str = "cpu", dtype: Any = None, **load_options) -> Any:
        """The pipeline from `source` (a hub id already in the local cache, or a local
        folder) on `device` in `dtype` (fp32 on the CPU). `load_options` are what
        `load_kwargs(request)` returned. Raises ModelNotAvailable when the files are not on
        disk, ModelLoadError when they are but cannot be loaded."""

    @abstractmethod
    def run(self, pipe: Any, request, *, init_image=None, control_image=None, generators: list,
            callback: Callable | None = None) -> list:
        """PIL images for `request`, one per generator. `init_image`/`control_image` are
        PIL images at the request size or None; `callback` is a diffusers
        `callback_on_step_end` function or None."""

    def validate(self, request, *, init_image=None, control_image=None) -> None:
        """Raise RequestError, before any work, when this backbone cannot run `request`.
        Default: the request names this backbone and one of its modes."""
        from core.errors import RequestError

        if request.backbone != self.spec.id:
            raise RequestError(f"This request is for {request.backbone!r}, not for {self.spec.id!r}.")
        if request.mode not in self.spec.modes:
            raise RequestError(f"{self.spec.label} cannot do {request.mode}; it supports {', '.join(self.spec.modes)}.")

    def readiness(self, source: Any):
        """Whether `source` loads from disk now, without downloading (a
        core.backends.sources.Readiness). Default: the generic check of a diffusers folder
        or hub cache entry."""
        from core.backends.sources import readiness

        return readiness(self.spec, source)

    def with_models_dir(self, models_dir) -> "Backend":
        """This backend with what it borrows from other backbones (e.g. SD 2.1's text
        encoder and VAE for a DiffusionSat folder holding only a UNet) pointed at the local
        folders under `models_dir` that exist (`models_dir/sd21/`, ...), so it works offline
        with local folders only. A configured copy; the registered backend is not changed.
        Default: self (nothing borrowed)."""
        return self

    def load_kwargs(self, request) -> dict:
        """Options of `request` that change what `load` must do, passed to `load` (a model
        manager keys its cache by them). Default: {}."""
        return {}

    def pipeline_used(self, pipe: Any, request) -> Any:
        """The diffusers pipeline `run` calls for `request`, recorded with each run.
        Default: the loaded pipeline of the request's mode."""
        return pipe.for_mode(request.mode) if hasattr(pipe, "for_mode") else pipe

    def prompt_handling(self, pipe: Any, request) -> PromptHandling:
        """How `request`'s prompt reaches the text encoders. Default: as text, one CLIP
        encoder, cut at 77 tokens."""
        return PromptHandling()

    def attention_cfg(self, request) -> Any:
        """How the denoiser's batch is stacked for `request`, for the attention recorder:
        True when guidance doubles it as [unconditional, conditional], False when it is all
        conditional (core.attention.record.FIRST_OF_THREE for a three-way batch).
        Default: guidance above 1 doubles it."""
        return request.guidance > 1


__all__ = ["Backend", "BackendSpec", "CONTROL_KINDS", "CONTROL_SCALE", "Control", "GUIDANCE", "NEGATIVE_PROMPT", "PromptHandling",
           "STEPS", "STRENGTH"]
