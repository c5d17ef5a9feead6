"""The backbones one app or CLI process offers: which are registered, where each loads
from, whether its files are on disk, and its tokenizers for token counts.

`Backbones` is built once from Settings (models folder, test backbones on or off) and
handed to the services that need backbones; nothing here loads a diffusion model.
"""

from __future__ import annotations

import copy
import json
import threading
from dataclasses import replace
from pathlib import Path

_IMPORT_LOCK = threading.Lock()
TRAINED_PREFIX = "trained-"
"""Backbone ids of the ControlNets trained from the app: `trained-<run folder name>`."""
TRAINED_ON = {"sd21": ("controlnet", "SD 2.1"), "diffusionsat": ("diffusionsat-controlnet", "DiffusionSat")}


class Backbones:
    """The registry as this process sees it.

    models_dir: a folder of local model folders, one per backbone id (None: hub ids only).
    test_backbones: also offer the tiny random test backbones (plumbing checks only).
    trained_dir: where the app's training runs go; each finished one is offered as the
        backbone `trained-<name>` (looked up on every call: no restart needed)."""

    def __init__(self, *, models_dir: Path | None = None, test_backbones: bool = False,
                 trained_dir: Path | None = None) -> None:
        self.models_dir = models_dir
        self.test_backbones = test_backbones
        self.trained_dir = Path(trained_dir) if trained_dir is not None else None
        self._tokenizers: dict[str, dict] = {}
        self._configured: dict[str, object] = {}
        self._trained_seen: dict[Path, tuple] = {}  # run folder -> (training.json stat, backend or None)
        self._lock = threading.Lock()

    def specs(self) -> list:
        """Specs of the backbones the user may pick, in registration order (tiny test ones
        only when enabled)."""
        from core import backends

        if self.test_backbones:
            import core.backends.tiny  # noqa: F401  (registers the tiny test backbones)
        return backends.available(include_test_only=self.test_backbones) + [b.spec for b in self._trained().values()]

    def _trained(self) -> dict:
        """{backbone id: backend} of the finished training runs under trained_dir: the
        `controlnet` or `diffusionsat-controlnet` backend under a spec of their own. A run's
        training.json is read again only when it changed."""
        found: dict = {}
        if self.trained_dir is None or not self.trained_dir.is_dir():
            return found
        seen: dict = {}
        for folder in sorted(self.trained_dir.iterdir()):
            try:
                info = (folder / "training.json").stat()
            except OSError:
                continue
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            cached = self._trained_seen.get(folder)
            backend = cached[1] if cached is not None and cached[0] == stamp else self._trained_backend(folder)
            seen[folder] = (stamp, backend)
            if backend is not None:
                found[backend.spec.id] = backend
        self._trained_seen = seen
        return found

    def _trained_backend(self, folder: Path):
        """The backend of one training run folder, or None while it is not a finished run."""
        from core import backends

        try:
            record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record.get("status") != "finished" or record.get("base") not in TRAINED_ON:
            return None
        template_id, base_label = TRAINED_ON[record["base"]]
        template = backends.get(template_id).with_models_dir(self.models_dir)
        backend = copy.copy(template)
        backend.spec = replace(
            template.spec, id=TRAINED_PREFIX + folder.name, hub_id=None,
            label=f"{folder.name} (your ControlNet on {base_label}, {record.get('step', '?')} steps)",
            notes=f"A ControlNet trained in this app, in {folder}. " + template.spec.notes)
        backend.trained_folder = folder
        return backend

    def get(self, backbone_id: str):
        """The backend `backbone_id` as configured for this process's models folder (see
        Backend.with_models_dir); LabError naming the known ids otherwise."""
        from core import backends

        if backbone_id.startswith(TRAINED_PREFIX):
            trained = self._trained()
            if backbone_id in trained:
                return trained[backbone_id]
        self.specs()
        with self._lock:
            if backbone_id not in self._configured:
                self._configured[backbone_id] = backends.get(backbone_id).with_models_dir(self.models_dir)
            return self._configured[backbone_id]

    def source(self, backbone_id: str):
        """Where `backbone_id` loads from: a folder under models_dir, else its hub id."""
        from core.backends.sources import as_source, resolve_source

        backend = self.get(backbone_id)
        if getattr(backend, "trained_folder", None) is not None:
            return as_source(str(backend.trained_folder))
        return resolve_source(backend.spec, models_dir=self.models_dir)

    def readiness(self, backbone_id: str):
        """Whether a backbone can load without the network (a sources.Readiness), without
        downloading anything."""
        return self.get(backbone_id).readiness(self.source(backbone_id))

    def tokenizers(self, backbone_id: str) -> dict | None:
        """The backbone's tokenizers by encoder name ("clip", "clip2", "t5"): its own, loaded
        once from its folder or cache, when its files are on disk; for a CLIP encoder whose
        files are not (yet) there, the standard CLIP tokenizer (`prompts.standard_clip_tokenizer`:
        the same vocabulary, so the same counts). T5 only from its files. None when there is
        nothing to count with (a test backbone without its files, or no CLIP vocabulary)."""
        from core.generation.prompts import TOKENIZER_ATTRIBUTES

        with self._lock:
            if backbone_id in self._tokenizers:
                return self._tokenizers[backbone_id]
        from core.errors import LabError

        spec = self.get(backbone_id).spec
        try:
            state = self.readiness(backbone_id)
        except LabError:  # no source at all yet (a local-only backbone without its folder)
            state = None
        if state is None or not state.ready:
            return self._standard_clip(spec, {}) or None  # not cached: the files may arrive
        with _IMPORT_LOCK:  # transformers' lazy module fails when threads import from it at once
            from transformers import AutoTokenizer

        root = Path(state.where)
        found = {name: AutoTokenizer.from_pretrained(root / TOKENIZER_ATTRIBUTES[name])
                 for name in spec.tokenizers
                 if (root / TOKENIZER_ATTRIBUTES[name]).is_dir()}
        with self._lock:
            return self._tokenizers.setdefault(backbone_id, self._standard_clip(spec, found))

    @staticmethod
    def _standard_clip(spec, found: dict) -> dict:
        """`found` with the standard CLIP tokenizer for the spec's CLIP encoders it lacks.
        Not for test backbones, whose tiny tokenizers have a vocabulary of their own."""
        if spec.test_only or all(name in found for name in spec.tokenizers if name.startswith("clip")):
            return found
        from core.generation.prompts import standard_clip_tokenizer

        standard = standard_clip_tokenizer()
        if standard is None:
            return found
        return {**{name: standard for name in spec.tokenizers if name.startswith("clip")}, **found}

    def token_report(self, backbone_id: str, prompt: str, negative: str = "") -> dict | None:
        """Token counts per text encoder of `backbone_id` (see prompts.token_report), using
        only `tokenizers` (no model is loaded); an encoder with nothing to count with yet
        (T5 before its files are on disk) is ``{"used": True, "needs_files": True}``. None
        when there is nothing to count with at all."""
        from types import SimpleNamespace

        from core.generation.prompts import TOKENIZER_ATTRIBUTES, token_report

        spec = self.get(backbone_id).spec
        tokenizers = self.tokenizers(backbone_id)
        if tokenizers is None:
            return None
        holder = SimpleNamespace(**{TOKENIZER_ATTRIBUTES[n]: t for n, t in tokenizers.items()})
        report = token_report(holder, spec.tokenizers, prompt, negative, chunked="t5" not in spec.tokenizers)
        for name in spec.tokenizers:
            if name not in tokenizers:
                report[name] = {"used": True, "needs_files": True}
        return report


__all__ = ["Backbones"]
