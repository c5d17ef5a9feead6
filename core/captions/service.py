"""The captions capability: the shared caption store, machine captioning of a dataset's
tiles (with T5 summaries fitted to a backbone's 77 CLIP tokens), and a scene's current
caption. The app and the CLI both call this service."""

from __future__ import annotations

import threading
from pathlib import Path

from core.errors import LabError

T5_HUB_ID = "google-t5/t5-large"


class CaptionService:
    """Captions of one work folder.

    store_path: the SQLite file of the caption store (opened on first use);
    models: the process's ModelManager (captioners and T5 share the GPU with diffusion);
    backbones: a core.backends.catalog.Backbones, for the CLIP tokenizer summaries must fit;
    models_dir: the folder of local model folders (a `t5/` folder there is used for T5)."""

    def __init__(self, store_path: Path, *, models, backbones, models_dir: Path | None = None) -> None:
        self.store_path = Path(store_path)
        self.models = models
        self.backbones = backbones
        self.models_dir = models_dir
        self._store = None
        self._lock = threading.Lock()

    @property
    def store(self):
        """The caption store, shared by every user of the app (opened on first use)."""
        from core.captions.store import CaptionStore

        with self._lock:
            if self._store is None:
                self._store = CaptionStore(self.store_path)
            return self._store

    def scene_caption(self, scene, phase: str = "post") -> str | None:
        """The current caption of one of the scene's images, or None."""
        path = scene.image(phase)
        record = self.store.get(path.name) if path is not None else None
        return record.text if record is not None and record.text else None

    def caption_scenes(self, index, scenes, captioner_id: str, *, phases=("pre", "post"),
                       summarise_for: str | None = None, progress=None, cancel=None):
        """Machine-caption the scenes' tiles into the store (resuming: tiles this captioner
        already did are skipped). With `summarise_for` (a backbone id), T5 summaries are
        shortened until that backbone's CLIP tokenizer counts at most 77 tokens.
        Returns the batch report."""
        from core.captions.batch import caption_scenes
        from core.captions.captioners import get_captioner

        captioner = get_captioner(captioner_id)
        summariser = clip_tokenizer = None
        if summarise_for:
            clip_tokenizer = self._clip_tokenizer(summarise_for)
            summariser = self._summariser()
        return caption_scenes(index, scenes, captioner, store=self.store, phases=tuple(phases),
                              summariser=summariser, clip_tokenizer=clip_tokenizer, manager=self.models,
                              progress=progress, cancel=cancel)

    def _clip_tokenizer(self, backbone_id: str):
        tokenizers = self.backbones.tokenizers(backbone_id)
        if not tokenizers or "clip" not in tokenizers:
            raise LabError(f"To fit summaries to 77 CLIP tokens, {backbone_id}'s tokenizer must be on "
                           "disk: download that backbone first, or summarise for another one.")
        return tokenizers["clip"]

    def _summariser(self):
        from core.captions.t5 import T5Summariser

        local = Path(self.models_dir) / "t5" if self.models_dir else None
        source = str(local) if local is not None and local.is_dir() else T5_HUB_ID
        return T5Summariser(source, manager=self.models)


__all__ = ["CaptionService", "T5_HUB_ID"]
