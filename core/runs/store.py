"""Run folders: every generated, baseline or uploaded image with its record and scores.

Layout of one run::

    <root>/<run_id>/image.png     lossless PNG; params also in its tEXt chunk "parameters"
    <root>/<run_id>/run.json      run_id, kind, backbone, scene_id, data_root, params,
                                  created (ISO, UTC), versions
    <root>/<run_id>/scores.json   list of score entries, one per distinct settings dict

A run is assembled in a hidden temporary folder and renamed into place, and every JSON
file is written to a temporary file and ``os.replace``-d, so a crash leaves either the old
state or the new one, never half a file; an OS error while writing (a full disk, a
read-only folder) is a SaveError saying what happened and what to do. Folders whose
run.json cannot be read are skipped by :meth:`RunStore.list` and reported in
:attr:`RunStore.problems`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, PngImagePlugin

from core.errors import RunError, SaveError
from core.io import TMP_PREFIX, atomic_write_text, dumps, library_versions
from core.types import Problem, Scores

RUN_KINDS: tuple[str, ...] = ("generation", "baseline", "upload")
IMAGE_FILE = "image.png"
RECORD_FILE = "run.json"
SCORES_FILE = "scores.json"
PNG_PARAMS_KEY = "parameters"
_SCORES_LOCK = threading.Lock()


# ------------------------------------------------------------------------------ helpers
def _slug(text: str, max_len: int = 40) -> str:
    """Filesystem-safe fragment: ASCII letters, digits and '-' (anything else becomes '-',
    so '_' stays free to separate the parts of a run id and no '..' can appear)."""
    s = re.sub(r"[^A-Za-z0-9-]+", "-", str(text)).strip("-")
    return s[:max_len].strip("-") or "x"


def new_run_id(kind: str, backbone: str, scene_id: str | None, when: datetime) -> str:
    """``<UTC time to µs>_<kind>_<backbone>_<scene>_<6 hex>``: sorts by creation time."""
    stamp = when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    scene = _slug(scene_id) if scene_id else "no-scene"
    return f"{stamp}_{_slug(kind)}_{_slug(backbone)}_{scene}_{secrets.token_hex(3)}"


def _clean_params(params: Mapping) -> dict:
    """params as a JSON round-tripped dict; RunError when they cannot be stored."""
    if not isinstance(params, Mapping):
        raise RunError(f"params must be a dict; got {type(params).__name__}.")
    try:
        return json.loads(dumps(dict(params)))
    except (TypeError, ValueError) as exc:
        raise RunError(
            f"The run's params cannot be stored as JSON ({exc}); pass numbers, strings, "
            "lists and dicts (NaN and infinity are not allowed)."
        ) from exc


def _as_pil_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise RunError(
            f"A run image must be a uint8 H x W x 3 array or a PIL image; got "
            f"{arr.dtype} {arr.shape}. Convert floats in [0, 1] with "
            "(x * 255).round().astype(np.uint8)."
        )
    return Image.fromarray(arr, mode="RGB")


def _settings_key(settings: Mapping | None) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------- Run
class Run:
    """One run folder. ``record`` is the content of run.json."""

    def __init__(self, path: Path, record: dict):
        self.path = Path(path)
        self.record = record

    @property
    def run_id(self) -> str:
        return self.record["run_id"]

    @property
    def image_path(self) -> Path:
        return self.path / IMAGE_FILE

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES_FILE

    @property
    def kind(self) -> str:
        return self.record.get("kind", "")

    @property
    def backbone(self) -> str:
        return self.record.get("backbone", "")

    @property
    def scene_id(self) -> str | None:
        return self.record.get("scene_id")

    @property
    def params(self) -> dict:
        return self.record.get("params", {})

    def __repr__(self) -> str:
        return f"Run({self.run_id!r})"

    def image(self) -> np.ndarray:
        """The run's image as a uint8 ``H x W x 3`` array."""
        try:
            with Image.open(self.image_path) as img:
                return np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as exc:
            raise RunError(f"The image of run {self.run_id} cannot be read: {exc}") from exc

    def scores(self) -> list[dict]:
        """Entries of scores.json (each a :func:`core.metrics.scores_to_dict` dict plus a
        ``scored`` ISO time), oldest first; [] when the run was never scored."""
        try:
            text = self.scores_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RunError(
                f"{self.scores_path} is not valid JSON ({exc}); delete it to re-score the run."
            ) from exc
        if not isinstance(entries, list):
            raise RunError(f"{self.scores_path} should hold a list of score entries.")
        return entries

    def save_scores(self, scores: Scores) -> dict:
        """Store ``scores``; an entry with the same settings is replaced. Returns the entry."""
        from core.metrics.scoring import scores_to_dict

        entry = scores_to_dict(scores)
        entry["scored"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        key = _settings_key(entry["settings"])
        with _SCORES_LOCK:
            kept = [e for e in self.scores() if _settings_key(e.get("settings")) != key]
            kept.append(entry)
            try:
                atomic_write_text(self.scores_path, dumps(kept))
            except OSError as err:  # the previous scores.json stays as it was
                raise SaveError.from_os(err, f"the scores of run {self.run_id}", self.path, "--runs") from err
        return entry

    def latest_scores(self, settings_dict: Mapping | None = None) -> dict | None:
        """The most recently scored entry (for ``settings_dict`` when given), or None."""
        entries = self.scores()
        if settings_dict is not None:
            key = _settings_key(json.loads(dumps(dict(settings_dict))))
            entries = [e for e in entries if _settings_key(e.get("settings")) == key]
        if not entries:
            return None
        return max(entries, key=lambda e: e.get("scored", ""))


# ----------------------------------------------------------------------------- RunStore
class RunStore:
    """All runs under one root folder (created on first write)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.problems: list[Problem] = []

    # ------------------------------------------------------------------ writing
    def create(
        self,
        image,
        *,
        kind: str,
        backbone: str,
        scene_id: str | None,
        params: dict,
        data_root: str | None = None,
    ) -> Run:
        """Write a new run (image.png + run.json) and return it.

        ``image``: uint8 ``H x W x 3`` array or PIL image (stored as lossless RGB PNG, with
        ``params`` as JSON in the PNG text chunk "parameters"). ``kind`` is one of
        :data:`RUN_KINDS`. The folder appears complete or not at all.
        """
        if kind not in RUN_KINDS:
            raise RunError(f"Unknown run kind {kind!r}; use one of {', '.join(RUN_KINDS)}.")
        if not backbone or not isinstance(backbone, str):
            raise RunError("A run needs a backbone name (e.g. the backend id, or 'none').")
        pil = _as_pil_rgb(image)
        clean = _clean_params(params)
        now = datetime.now(timezone.utc)
        run_id = new_run_id(kind, backbone, scene_id, now)
        record = {
            "run_id": run_id,
            "kind": kind,
            "backbone": backbone,
            "scene_id": scene_id,
            "data_root": None if data_root is None else str(data_root),
            "params": clean,
            "created": now.isoformat(timespec="microseconds"),
            "versions": library_versions(),
        }
        try:
            self._write(run_id, pil, clean, record)
        except OSError as err:  # a full disk, a read-only folder: say so, keep what was saved
            raise SaveError.from_os(err, "the run", self.root, "--runs") from err
        return Run(self.root / run_id, record)

    def _write(self, run_id: str, pil: Image.Image, clean: dict, record: dict) -> None:
        """Assemble the run in a hidden temporary folder, then rename it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(dir=self.root, prefix=TMP_PREFIX + run_id + "."))
        try:
            info = PngImagePlugin.PngInfo()
            info.add_text(PNG_PARAMS_KEY, json.dumps(clean, ensure_ascii=False))
            pil.save(tmp_dir / IMAGE_FILE, format="PNG", pnginfo=info)
            atomic_write_text(tmp_dir / RECORD_FILE, dumps(record))
            os.replace(tmp_dir, self.root / run_id)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise

    def delete(self, run_id: str) -> None:
        """Remove a run folder (RunError if there is none)."""
        path = self._path(run_id)
        if not path.is_dir():
            raise RunError(f"No run {run_id!r} in {self.root}.")
        # Rename first so the run disappears at once even if removal is slow or fails.
        trash = self.root / f"{TMP_PREFIX}deleted-{run_id}.{secrets.token_hex(3)}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def clean_leftovers(self, older_than_s: float = 600.0) -> int:
        """Remove what a killed process left behind: hidden temporary run folders and
        half-written files (`.tmp-*`) in the runs folder and in run folders, older than
        `older_than_s` seconds (younger ones may belong to a process writing right now).
        Returns how many were removed; errors removing one are skipped."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        candidates = list(self.root.glob(TMP_PREFIX + "*")) + list(self.root.glob(f"*/{TMP_PREFIX}*"))
        removed = 0
        for path in candidates:
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed += 1
            except OSError:
                continue
        return removed

    # ------------------------------------------------------------------ reading
    def open(self, run_id: str) -> Run:
        """The run named ``run_id``; RunError when it is missing or its run.json is broken."""
        path = self._path(run_id)
        if not path.is_dir():
            raise RunError(
                f"No run {run_id!r} in {self.root}. Use the run list to pick an existing run."
            )
        return Run(path, _read_record(path))

    def list(self, *, scene_id: str | None = None, backbone: str | None = None) -> list[Run]:
        """Runs, newest first, optionally only one scene and/or backbone.

        Folders without a readable run.json are skipped and described in
        :attr:`problems` (reset on each call).
        """
        self.problems = []
        if not self.root.is_dir():
            return []
        runs: list[Run] = []
        for path in self.root.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            try:
                run = Run(path, _read_record(path))
            except RunError as exc:
                self.problems.append(Problem(path=path, message=str(exc)))
                continue
            if scene_id is not None and run.scene_id != scene_id:
                continue
            if backbone is not None and run.backbone != backbone:
                continue
            runs.append(run)
        runs.sort(key=lambda r: (str(r.record.get("created", "")), r.path.name), reverse=True)
        return runs

    def _path(self, run_id: str) -> Path:
        if not isinstance(run_id, str) or not _is_safe_id(run_id):
            raise RunError(
                f"{run_id!r} is not a valid run id: ids are single folder names without "
                "path separators, '..' or a leading dot."
            )
        return self.root / run_id


def _is_safe_id(run_id: str) -> bool:
    if not run_id or run_id.startswith(".") or ".." in run_id or "\x00" in run_id:
        return False
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    return not any(s in run_id for s in seps)


def _read_record(path: Path) -> dict:
    record_path = path / RECORD_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{path} has no {RECORD_FILE}; it is not a complete run.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{record_path} is not valid JSON ({exc}).") from exc
    if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
        raise RunError(f"{record_path} lacks a run_id; it is not a run record.")
    if record["run_id"] != path.name:
        raise RunError(
            f"{record_path} names run {record['run_id']!r} but its folder is {path.name!r}."
        )
    return record


__all__ = [
    "IMAGE_FILE",
    "PNG_PARAMS_KEY",
    "RECORD_FILE",
    "RUN_KINDS",
    "SCORES_FILE",
    "Run",
    "RunStore",
    "new_run_id",
]
