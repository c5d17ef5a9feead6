"""The captions capability: the shared caption store, machine captioning of a dataset's
tiles (with T5 summaries fitted to a backbone's 77 CLIP tokens), a scene's current
caption, the tiles of a selection, a person's edits (only of images a dataset or an
imported file knows), and caption files in and out (the course's captions.jsonl, a
ControlNet metadata.jsonl). The app and the CLI both call this service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

from core.data.names import parse_name, scene_id_for
from core.errors import DataError, LabError

T5_HUB_ID = "google-t5/t5-large"
EXPORT_KINDS: tuple[str, ...] = ("captions", "controlnet")
"""What `CaptionService.export_path` names: a course captions.jsonl, a ControlNet metadata.jsonl."""
AUTOSAVE_PAUSE_SECONDS = 5.0
"""Autosaves by one person less than this far apart make one history entry (a pause in
typing longer than this starts a new one)."""
NO_CAPTION = "no caption yet"
"""The status filter of `CaptionService.image_names` for images with no stored caption."""


class CaptionService:
    """Captions of one work folder.

    store_path: the SQLite file of the caption store (opened on first use);
    models: the process's ModelManager (captioners and T5 share the GPU with diffusion);
    backbones: a core.backends.catalog.Backbones, for the CLIP tokenizer summaries must fit;
    models_dir: the folder of local model folders (a `t5/` folder there is used for T5);
    exports_dir: where `export_path` names exports (default: `exports/` beside the store)."""

    def __init__(self, store_path: Path, *, models, backbones, models_dir: Path | None = None,
                 exports_dir: Path | None = None) -> None:
        self.store_path = Path(store_path)
        self.exports_dir = Path(exports_dir) if exports_dir is not None else self.store_path.parent / "exports"
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

    # -- a person's edits ---------------------------------------------------------------------
    def save_edit(self, image: str, text: str, *, author: str, expected_version: int | None = None,
                  index=None, coalesce_seconds: float = 0):
        """Save `author`'s `text` as the caption of `image` (see `CaptionStore.save_edit`:
        durable, refused with ConflictError when someone saved after `expected_version`;
        `coalesce_seconds`: autosaves by one author with shorter pauses make one history
        entry). Only for an image `check_image` accepts; returns the new record."""
        self.check_image(image, index)
        return self.store.save_edit(image, text, author=author, expected_version=expected_version,
                                    coalesce_seconds=coalesce_seconds)

    def check_image(self, image: str, index=None) -> None:
        """Refuse (CaptionStoreError) an image name that neither the store (a caption made or
        imported for it) nor `index` (a DatasetIndex; None = the store alone) knows: a path,
        a typo, another dataset's tile."""
        from core.captions.store import CaptionStoreError

        if isinstance(image, str) and image and self.store.get(image) is not None:
            return
        if index is not None and self.in_index(index, image):
            return
        where = f"the dataset {index.root}" if index is not None and getattr(index, "root", None) else "the dataset"
        raise CaptionStoreError(f"{image!r} is not a tile of {where} nor of an imported captions file, so its "
                                "caption was not saved. Pick a tile from the list (or import the captions file "
                                "that names it) and type the caption there.")

    @staticmethod
    def in_index(index, image: str) -> bool:
        """Whether `image` is the file name of a pre or post image of a scene of `index`."""
        parsed = parse_name(image) if isinstance(image, str) else None
        if parsed is None or parsed.kind != "image":
            return False
        try:
            scene = index.get(scene_id_for(parsed))
        except DataError:
            return False
        return any(p is not None and p.name == image for p in (scene.pre_image, scene.post_image))

    # -- which tiles ------------------------------------------------------------------------
    def image_names(self, scenes, phases: Iterable[str] = ("pre", "post"), *,
                    status: str | None = None) -> list[str]:
        """The image file names of `scenes` for each of `phases` (scene by scene, absent files
        left out), keeping only those whose caption has `status` (one of
        `core.captions.store.STATUSES`, or `NO_CAPTION` for images with none; None = any)."""
        from core.captions.store import STATUSES

        if status is not None and status != NO_CAPTION and status not in STATUSES:
            raise LabError(f"Unknown caption status {status!r}; use one of {', '.join(STATUSES)} "
                           f"or {NO_CAPTION!r}.")
        phases = tuple(phases)
        names = [s.image(p).name for s in scenes for p in phases if s.image(p)]
        if status is None:
            return names
        records = {r.image: r for r in self.store.list(images=names)}
        if status == NO_CAPTION:
            return [n for n in names if n not in records]
        return [n for n in names if n in records and records[n].status == status]

    @staticmethod
    def scenes_of(index, images: Iterable[str]) -> list:
        """The scenes of `index` (in its order) that any of these image file names belong to."""
        wanted = {scene_id_for(parsed) for parsed in map(parse_name, images) if parsed is not None}
        return [s for s in index.scenes if s.scene_id in wanted]

    @staticmethod
    def phases_of(images: Iterable[str]) -> tuple[str, ...]:
        """The phases ("pre", "post") these image file names have, sorted."""
        return tuple(sorted({parsed.phase for parsed in map(parse_name, images) if parsed is not None}))

    @staticmethod
    def locate(index, image: str) -> tuple:
        """(scene, phase) of an image file name in `index`; DataError when no scene has it."""
        parsed = parse_name(image)
        scene = index.get(scene_id_for(parsed) if parsed is not None else None)
        phase = "pre" if scene.pre_image is not None and scene.pre_image.name == image else "post"
        return scene, phase

    def next_not_reviewed(self, images: list[str], current: str | None) -> str | None:
        """The first image after `current` in `images` (wrapping round, `current` last)
        whose caption is not ``reviewed``; None when every one is."""
        start = images.index(current) + 1 if current in images else 0
        records = {r.image: r for r in self.store.list(images=images)}
        for candidate in images[start:] + images[:start]:
            record = records.get(candidate)
            if record is None or record.status != "reviewed":
                return candidate
        return None

    # -- files in and out ------------------------------------------------------------------
    def import_course(self, path: Path | str, *, author: str = "import"):
        """Import the course's captions.jsonl (see `core.captions.formats.import_course_jsonl`);
        returns its ImportReport. A person's edited or reviewed text is never overwritten."""
        from core.captions.formats import import_course_jsonl

        return import_course_jsonl(self.store, path, author=author)

    def export_course(self, path: Path | str, *, images: Iterable[str] | None = None) -> int:
        """Write every caption (or those of `images`) as the course's captions.jsonl; returns
        the number of lines."""
        from core.captions.formats import export_course_jsonl

        return export_course_jsonl(self.store, path, images=images)

    def export_controlnet(self, path: Path | str, index, scenes=None, *,
                          relative_to: Path | str | None = None) -> tuple[int, int]:
        """Write a diffusers ControlNet training metadata.jsonl for `scenes` of `index` (None =
        all): post tile, pre tile and caption per scene. Returns (lines written, scenes
        skipped for lacking a caption or a pre/post pair). Paths are relative to
        `relative_to`, or as the index has them when None."""
        from core.captions.formats import controlnet_pairs, export_controlnet_metadata

        pairs, skipped = controlnet_pairs(self.store, index, scenes, relative_to=relative_to)
        return export_controlnet_metadata(path, pairs), skipped

    def export_path(self, kind: str, *, when: float | None = None) -> Path:
        """Where an export of `kind` (one of `EXPORT_KINDS`) made at `when` (seconds since the
        epoch; None = now) goes: `<exports_dir>/<kind>-YYYYmmdd-HHMMSS.jsonl`, local time.
        The folder is created by the export that writes there."""
        if kind not in EXPORT_KINDS:
            raise LabError(f"Unknown export {kind!r}; use one of {', '.join(EXPORT_KINDS)}.")
        return self.exports_dir / f"{kind}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(when))}.jsonl"

    # -- machine captions ------------------------------------------------------------------
    def caption_scenes(self, index, scenes, captioner_id: str, *, phases=("pre", "post"),
                       summarise_for: str | None = None, progress=None, cancel=None, shard=None):
        """Machine-caption the scenes' tiles into the store (resuming: tiles this captioner
        already did are skipped). With `summarise_for` (a backbone id), T5 summaries are
        shortened until that backbone's CLIP tokenizer counts at most 77 tokens.
        Returns the batch report."""
        from core.captions.batch import caption_scenes
        from core.captions.captioners import get_captioner

        captioner = get_captioner(captioner_id, **self._local_source(captioner_id))
        captioner.check_ready(self.models_dir)  # before anything leaves the GPU or any tile is read
        summariser = clip_tokenizer = None
        if summarise_for:
            clip_tokenizer = self._clip_tokenizer(summarise_for)
            summariser = self._summariser()
            summariser.check_ready(self.models_dir)
        return caption_scenes(index, scenes, captioner, store=self.store, phases=tuple(phases),
                              summariser=summariser, clip_tokenizer=clip_tokenizer, manager=self.models,
                              progress=progress, cancel=cancel, shard=shard)

    def _clip_tokenizer(self, backbone_id: str):
        tokenizers = self.backbones.tokenizers(backbone_id)
        if not tokenizers or "clip" not in tokenizers:
            raise LabError(f"To fit summaries to 77 CLIP tokens, {backbone_id}'s tokenizer must be on disk "
                           "(or, for a CLIP backbone, open_clip_torch installed, whose CLIP vocabulary it "
                           "shares): download that backbone, install the requirements, or summarise for "
                           "another one.")
        return tokenizers["clip"]

    def _local_source(self, captioner_id: str) -> dict:
        """{"source": folder} when the models folder holds `captioner_id`'s model in a folder
        named after the id (`models/qwen2-vl`) or its hub id (`models/Qwen--Qwen2-VL-2B-Instruct`
        or `models/Qwen/Qwen2-VL-2B-Instruct`), else {} (its hub id)."""
        if not self.models_dir:
            return {}
        from core.captions.captioners import get_captioner

        default = getattr(get_captioner(captioner_id), "source", None)
        if not default:
            return {}
        root = Path(self.models_dir).expanduser()
        for name in (captioner_id, default.replace("/", "--"), default):
            if (root / name).is_dir():
                return {"source": str(root / name)}
        return {}

    def _summariser(self):
        from core.captions.t5 import T5Summariser

        local = Path(self.models_dir) / "t5" if self.models_dir else None
        source = str(local) if local is not None and local.is_dir() else T5_HUB_ID
        return T5Summariser(source, manager=self.models)


__all__ = ["AUTOSAVE_PAUSE_SECONDS", "EXPORT_KINDS", "NO_CAPTION", "CaptionService", "T5_HUB_ID"]
