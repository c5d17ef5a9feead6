"""Captioners: turn one satellite tile (and what the labels say about it) into a sentence.

Every captioner follows the same three-step contract, the one transformers pipelines use:

    preprocess(image, context) -> batch     # numpy/PIL -> model inputs (prompt filled in)
    forward(batch)             -> output    # the model call (generate); nothing else
    postprocess(output, context) -> str     # decode, strip special tokens and whitespace

`caption(image, context)` runs the three in order. `image` is an H×W×3 uint8 RGB array,
`context` a `CaptionContext` (scene id, phase, disaster, disaster type, building counts).

Captioners that need weights (`needs_model = True`) are loaded through the one GPU owner,
`core.models.manager.ModelManager`:

    with manager.use(captioner.model_key, captioner.loader, spec_dtype=captioner.spec_dtype) as bundle:
        captioner.bind(bundle)
        text = captioner.caption(image, context)

so that diffusion models leave the GPU first. Without a manager, `captioner.load()` loads
the model directly (on CUDA when torch sees one, else on the CPU in float32).

The registry (`CAPTIONERS`, `get_captioner`) imports model code lazily: importing this
module imports neither torch nor transformers.

`TemplateCaptioner` needs no weights: it writes a short deterministic sentence from the
phase, disaster type and building counts. It is the default when no model is available and
the baseline that model captions are compared with; its sentences stay far below the 77
positions of a CLIP text encoder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import LabError
from core.types import DAMAGE_CLASSES, PHASES


# ------------------------------------------------------------------------------ context
@dataclass(frozen=True)
class CaptionContext:
    """What is known about the image being captioned.

    phase: "pre" or "post". disaster: the xBD disaster name ("hurricane-florence") or None.
    disaster_type: one of core.types.DISASTER_TYPES ("flooding", "wind", ...) or None.
    counts: buildings per damage class as `Label.counts()` gives them ("no-damage",
    "minor-damage", "major-damage", "destroyed", "un-classified", "total"), or None.
    """

    scene_id: str
    phase: str
    disaster: str | None = None
    disaster_type: str | None = None
    counts: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"phase must be 'pre' or 'post', got {self.phase!r}.")


# Disaster types as a noun phrase, for sentences ("after a flood").
_EVENT_PHRASES: dict[str, str] = {
    "flooding": "a flood",
    "wind": "a wind storm",
    "fire": "a wildfire",
    "earthquake": "an earthquake",
    "volcano": "a volcanic eruption",
    "tsunami": "a tsunami",
}


def event_phrase(disaster_type: str | None) -> str:
    """`disaster_type` as a noun phrase with an article ("a flood"); "a disaster" when
    unknown. Types outside the xBD six are used as given ("a landslide")."""
    if not disaster_type:
        return "a disaster"
    phrase = _EVENT_PHRASES.get(disaster_type.strip().lower())
    if phrase is not None:
        return phrase
    word = disaster_type.strip().replace("-", " ").replace("_", " ")
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


# ------------------------------------------------------------------------------ contract
@dataclass
class ModelBundle:
    """A loaded model with what it needs to run (tokenizer or processor).

    `to(device)` moves the model and returns the bundle, so `ModelManager` can move it
    between the GPU and its CPU cache; the manager counts the bytes of `model`.
    """

    model: Any
    processor: Any = None
    extra: dict = field(default_factory=dict)

    def to(self, device: Any) -> "ModelBundle":
        to = getattr(self.model, "to", None)
        if callable(to):
            moved = to(device)
            if moved is not None:
                self.model = moved
        return self

    @property
    def device(self) -> Any:
        """The model's device (torch.device), or "cpu" when it has none."""
        return getattr(self.model, "device", "cpu")


class Captioner:
    """Base of every captioner: preprocess -> forward -> postprocess.

    Subclasses set `id` (stable, stored with each caption), `label` (for people),
    `needs_model`, and for model captioners `model_key` (the ModelManager key), `source`
    (hub id or local folder), `spec_dtype` and `loader(device, dtype)`.
    """

    id: str = ""
    label: str = ""
    needs_model: bool = False
    spec_dtype: str = "fp32"
    on_token: Callable[[int], bool] | None = None
    """Set by a captioning worker (core.captions.worker) around a request: captioners that
    generate token by token call it with the count so far; True means stop (cancelled)."""

    def __init__(self) -> None:
        self.bundle: ModelBundle | None = None

    # -- model -----------------------------------------------------------------------
    @property
    def model_key(self) -> str:
        """The ModelManager key of this captioner's model."""
        return f"captioner:{self.id}:{getattr(self, 'source', '')}"

    @property
    def model_name(self) -> str:
        """What is stored as the caption's `model`: the id, plus the source for models."""
        source = getattr(self, "source", None)
        return f"{self.id}:{source}" if source else self.id

    def loader(self, device: Any, dtype: Any) -> ModelBundle:  # pragma: no cover - overridden
        """Load the model on `device` in `dtype`; overridden by model captioners."""
        raise NotImplementedError(f"{type(self).__name__} has no model to load.")

    def bind(self, bundle: ModelBundle) -> "Captioner":
        """Use `bundle` (what `loader` returned, possibly moved by the manager)."""
        self.bundle = bundle
        return self

    def load(self, device: str | None = None) -> "Captioner":
        """Load the model without a ModelManager (CUDA when available, else CPU float32)
        and bind it. A no-op for captioners without weights."""
        if not self.needs_model:
            return self
        import torch

        from core.models.dtypes import torch_dtype

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch_dtype(self.spec_dtype, device) if str(device).startswith("cuda") else torch.float32
        return self.bind(self.loader(str(device), dtype).to(device))

    def check_ready(self, models_dir=None) -> None:
        """Raise ModelNotAvailable (what to do included) when this captioner's weights are
        not on disk; a no-op for captioners without weights. Looks at disk only.
        `models_dir`: the app's models folder, named in the message."""
        source = getattr(self, "source", None)
        if self.needs_model and source:
            require_on_disk(source, self.label or self.id, local=local_folder_clause(self.id, models_dir))

    def _require_bundle(self) -> ModelBundle:
        if self.bundle is None:
            raise RuntimeError(
                f"The {self.label or self.id} captioner has no model yet: call load() or run it "
                "inside manager.use(captioner.model_key, captioner.loader) and bind() the result.")
        return self.bundle

    # -- contract --------------------------------------------------------------------
    def prompt(self, context: CaptionContext) -> str | None:
        """The text prompt sent with the image (None for captioners without one)."""
        return None

    def preprocess(self, image: Any, context: CaptionContext) -> Any:
        raise NotImplementedError

    def forward(self, batch: Any) -> Any:
        raise NotImplementedError

    def postprocess(self, output: Any, context: CaptionContext) -> str:
        raise NotImplementedError

    def caption(self, image: Any, context: CaptionContext) -> str:
        """The caption of `image`: preprocess, forward, postprocess."""
        return self.postprocess(self.forward(self.preprocess(image, context)), context)


def require_on_disk(source: str, label: str, local: str) -> None:
    """Raise ModelNotAvailable, with what to do, unless `source` (a hub id, or a local
    folder) is on disk: a folder with config.json and weights, or a hub id in the local
    Hugging Face cache. Looks at disk only (no network), so an offline machine gets the
    curated message of the diffusion backbones (`core.backends.sources.fixes`) instead of
    transformers' "couldn't connect" one. `local`: where a local folder of the model goes
    (a clause such as "put the model folder at models/t5"), for the message."""
    from types import SimpleNamespace

    from core.backends.sources import as_source, cache_folder_for, fixes, readiness
    from core.errors import ModelNotAvailable

    src = as_source(source)
    state = readiness(SimpleNamespace(label=label), src)
    if state.ready:
        return
    if src.kind == "folder":
        raise ModelNotAvailable(
            f"{label}: the folder {src.path_or_id} does not hold the model (it needs config.json and the "
            f"weights, *.safetensors or *.bin, as `save_pretrained` writes them). Copy the model there, or {local}.")
    repo = src.path_or_id
    rev = f" at revision {src.revision}" if src.revision else ""
    where = "is incomplete in" if state.size_bytes else "is not in"
    raise ModelNotAvailable(f"{label}: {repo}{rev} is not on disk: it {where} the Hugging Face cache "
                            f"({cache_folder_for(repo)}), and nothing is downloaded while captioning. "
                            + fixes(repo, local))


def local_folder_clause(name: str, models_dir=None) -> str:
    """How to use a local folder instead, for `require_on_disk` messages: the folder `name`
    in the app's models folder (`models_dir` when known; --models or XBDLAB_MODELS_DIR)."""
    what = "save the model (config.json and its weights, as `save_pretrained` writes them) in "
    if models_dir is not None:
        from pathlib import Path

        return what + f"{Path(models_dir).expanduser() / name}"
    return what + (f"a folder named `{name}` inside the app's models folder (start the app with "
                   "--models FOLDER or set XBDLAB_MODELS_DIR)")


def to_pil(image: Any):
    """An RGB PIL image from an H×W×3 uint8 array (or a PIL image, returned as RGB)."""
    from PIL import Image
    import numpy as np

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an H×W×3 RGB image, got an array of shape {array.shape}.")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    return Image.fromarray(array[..., :3], mode="RGB")


def clean_text(text: str, special_tokens: tuple[str, ...] = ()) -> str:
    """`text` without the given special tokens, with runs of whitespace made one space."""
    for token in special_tokens:
        if token:
            text = text.replace(token, " ")
    return " ".join(text.split())


# ------------------------------------------------------------------------------ template
def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class TemplateCaptioner(Captioner):
    """A sentence from the labels, no model: phase, disaster type and building counts.

    pre:  "A satellite image of a town before a flood, with 42 buildings."
    post: "A satellite image after a flood: 42 buildings, 5 destroyed, 3 with major damage,
           4 with minor damage, 30 undamaged."
    Classes with no building are left out; without counts the building part is left out.
    Deterministic; at most about 40 CLIP tokens.
    """

    id = "template"
    label = "Template (from labels, no model)"
    needs_model = False

    def preprocess(self, image: Any, context: CaptionContext) -> CaptionContext:
        return context

    def forward(self, batch: CaptionContext) -> str:
        event = event_phrase(batch.disaster_type)
        counts = batch.counts or None
        total = None
        if counts is not None:
            total = counts.get("total")
            if total is None:
                total = sum(int(counts.get(k, 0)) for k in DAMAGE_CLASSES)
        if batch.phase == "pre":
            text = f"A satellite image of a town before {event}"
            if total is not None:
                text += f", with {_plural(int(total), 'building')}"
            return text + "."
        text = f"A satellite image after {event}"
        if total is None:
            return text + "."
        parts = [_plural(int(total), "building")]
        for key, words in (("destroyed", "destroyed"), ("major-damage", "with major damage"),
                           ("minor-damage", "with minor damage"), ("no-damage", "undamaged")):
            n = int(counts.get(key, 0) or 0)
            if n and total:
                parts.append(f"{n} {words}")
        return f"{text}: {', '.join(parts)}."

    def postprocess(self, output: str, context: CaptionContext) -> str:
        return clean_text(output)


# ------------------------------------------------------------------------------ registry
# id -> ("module:Class", keyword arguments). Model code is imported on first use only.
_REGISTRY: dict[str, tuple[str, dict]] = {
    "template": ("core.captions.captioners:TemplateCaptioner", {}),
    "cogvlm2": ("core.captions.cogvlm2:make_cogvlm2", {}),  # in its own environment when needed
    "cogvlm2-int4": ("core.captions.cogvlm2:make_cogvlm2", {"int4": True}),
    "qwen2-vl": ("core.captions.native_vlm:NativeVLMCaptioner", {}),
}

CAPTIONERS: tuple[str, ...] = tuple(_REGISTRY)
"""Ids of the captioners `get_captioner` knows."""

DEFAULT_CAPTIONER = "template"


def get_captioner(captioner_id: str, **options: Any) -> Captioner:
    """A new captioner for `captioner_id` (one of CAPTIONERS); `options` go to its
    constructor (e.g. `source=` a local folder or hub mirror id). Loads no weights."""
    entry = _REGISTRY.get(captioner_id)
    if entry is None:
        raise LabError(f"Unknown captioner {captioner_id!r}; choose one of {', '.join(CAPTIONERS)}.")
    target, defaults = entry
    module_name, class_name = target.split(":")
    cls: Callable[..., Captioner] = getattr(importlib.import_module(module_name), class_name)
    return cls(**{**defaults, **options})
