"""The backbones one app or CLI process offers: which are registered, where each loads
from, whether its files are on disk, and its tokenizers for token counts.

`Backbones` is built once from Settings (models folder, test backbones on or off) and
handed to the services that need backbones; nothing here loads a diffusion model.
"""

from __future__ import annotations

import threading
from pathlib import Path


class Backbones:
    """The registry as this process sees it.

    models_dir: a folder of local model folders, one per backbone id (None: hub ids only).
    test_backbones: also offer the tiny random test backbones (plumbing checks only)."""

    def __init__(self, *, models_dir: Path | None = None, test_backbones: bool = False) -> None:
        self.models_dir = models_dir
        self.test_backbones = test_backbones
        self._tokenizers: dict[str, dict] = {}
        self._configured: dict[str, object] = {}
        self._lock = threading.Lock()

    def specs(self) -> list:
        """Specs of the backbones the user may pick, in registration order (tiny test ones
        only when enabled)."""
        from core import backends

        if self.test_backbones:
            import core.backends.tiny  # noqa: F401  (registers the tiny test backbones)
        return backends.available(include_test_only=self.test_backbones)

    def get(self, backbone_id: str):
        """The backend `backbone_id` as configured for this process's models folder (see
        Backend.with_models_dir); LabError naming the known ids otherwise."""
        from core import backends

        self.specs()
        with self._lock:
            if backbone_id not in self._configured:
                self._configured[backbone_id] = backends.get(backbone_id).with_models_dir(self.models_dir)
            return self._configured[backbone_id]

    def source(self, backbone_id: str):
        """Where `backbone_id` loads from: a folder under models_dir, else its hub id."""
        from core.backends.sources import resolve_source

        return resolve_source(self.get(backbone_id).spec, models_dir=self.models_dir)

    def readiness(self, backbone_id: str):
        """Whether a backbone can load without the network (a sources.Readiness), without
        downloading anything."""
        return self.get(backbone_id).readiness(self.source(backbone_id))

    def tokenizers(self, backbone_id: str) -> dict | None:
        """The backbone's tokenizers by encoder name ("clip", "clip2", "t5"), loaded once
        from its folder or cache; None while its files are not on disk."""
        from core.generation.prompts import TOKENIZER_ATTRIBUTES

        with self._lock:
            if backbone_id in self._tokenizers:
                return self._tokenizers[backbone_id]
        state = self.readiness(backbone_id)
        if not state.ready:
            return None
        from transformers import AutoTokenizer

        root = Path(state.where)
        found = {name: AutoTokenizer.from_pretrained(root / TOKENIZER_ATTRIBUTES[name])
                 for name in self.get(backbone_id).spec.tokenizers
                 if (root / TOKENIZER_ATTRIBUTES[name]).is_dir()}
        with self._lock:
            return self._tokenizers.setdefault(backbone_id, found)

    def token_report(self, backbone_id: str, prompt: str, negative: str = "") -> dict | None:
        """Token counts per text encoder of `backbone_id` (see prompts.token_report), using
        only its tokenizers; None when its files are not on disk yet."""
        from types import SimpleNamespace

        from core.generation.prompts import TOKENIZER_ATTRIBUTES, token_report

        spec = self.get(backbone_id).spec
        tokenizers = self.tokenizers(backbone_id)
        if tokenizers is None:
            return None
        holder = SimpleNamespace(**{TOKENIZER_ATTRIBUTES[n]: t for n, t in tokenizers.items()})
        return token_report(holder, spec.tokenizers, prompt, negative, chunked="t5" not in spec.tokenizers)


__all__ = ["Backbones"]
