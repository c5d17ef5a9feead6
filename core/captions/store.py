"""A caption store that never loses an edit: one SQLite file, one row per image.

Each image (keyed by its file name, e.g. ``guatemala-volcano_00000004_post_disaster.png``)
has a machine caption (model, prompt, time), an optional summary, the current text and a
status: ``auto`` (the text is the machine's), ``edited`` or ``reviewed`` (a person owns the
text). Every change appends a row to the image's history, so any earlier text can be
restored.

Durability and sharing:

- WAL journal with ``synchronous=FULL``: a call that returned has committed, and the commit
  survives the process being killed (and, on honest disks, a power cut).
- One SQLite connection per thread, so the app's worker threads can share one store object.
  Nothing is cached in memory: every read goes to the file, so two users of one app, or two
  processes with their own store objects, see each other's saved edits.
- Writes run in ``BEGIN IMMEDIATE`` transactions; ``save_edit(..., expected_version=v)``
  checks the version inside that transaction and raises `ConflictError` (carrying the
  current record) instead of overwriting someone else's save.

``version`` counts changes of the text or the status (what a person sees and edits); storing
new machine fields under a person's text does not change it.

The course's ``captions.jsonl`` (keys ``disaster``, ``image``, ``caption`` and
``caption_short`` or ``single_caption``) is imported with `import_course_jsonl` and written
back with `export_course_jsonl`; `export_controlnet_metadata` writes a diffusers ControlNet
training ``metadata.jsonl``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from core.data.names import parse_name, scene_id_for
from core.errors import LabError
from core.io import atomic_write_text

STATUSES: tuple[str, ...] = ("auto", "edited", "reviewed")
PERSON_STATUSES: tuple[str, ...] = ("edited", "reviewed")
HISTORY_KINDS: tuple[str, ...] = ("machine", "summary", "edit", "restore", "import", "status")
SHORT_KEYS: tuple[str, ...] = ("caption_short", "single_caption")
COURSE_KEYS: frozenset[str] = frozenset({"disaster", "image", "caption", *SHORT_KEYS})
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000
_IN_CHUNK = 500  # image names per `IN (...)` query


class CaptionStoreError(LabError):
    """The caption store cannot do what was asked (unknown image, bad status, unreadable file)."""


class ConflictError(CaptionStoreError):
    """Someone else saved this caption since it was loaded; `current` is the stored record."""

    def __init__(self, message: str, current: "CaptionRecord | None"):
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class CaptionRecord:
    """The stored caption of one image. `text` is what is shown and used for training."""

    image: str
    scene_id: str | None
    phase: str | None
    disaster: str | None
    text: str
    status: str
    version: int
    machine_caption: str | None
    machine_model: str | None
    machine_prompt: str | None
    machine_time: str | None
    summary: str | None
    summary_model: str | None
    updated: str
    updated_by: str | None


@dataclass(frozen=True)
class HistoryEntry:
    """One change of an image's caption: the text and status after it, who and when (UTC)."""

    id: int
    image: str
    text: str
    status: str
    kind: str
    author: str | None
    time: str


@dataclass
class ImportReport:
    """What `import_course_jsonl` did. `bad` lists (line number, reason) of skipped lines;
    `kept_edits` counts images whose person-edited text was kept (machine fields updated)."""

    path: str
    lines: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_edits: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.path}: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
                f"{self.kept_edits} person edits kept, {len(self.bad)} bad line(s)")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
    image TEXT PRIMARY KEY,
    scene_id TEXT, phase TEXT, disaster TEXT,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    machine_caption TEXT, machine_model TEXT, machine_prompt TEXT, machine_time TEXT,
    summary TEXT, summary_model TEXT,
    updated TEXT NOT NULL, updated_by TEXT,
    short_key TEXT,      -- course key the short text came from (caption_short | single_caption)
    extra TEXT           -- other keys of the course line, JSON, written back on export
);
CREATE INDEX IF NOT EXISTS captions_status ON captions(status);
CREATE INDEX IF NOT EXISTS captions_disaster ON captions(disaster);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT NOT NULL,
    text TEXT NOT NULL,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    author TEXT,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_image ON history(image, id);
"""
_RECORD_COLS = ("image, scene_id, phase, disaster, text, status, version, machine_caption, machine_model, "
                "machine_prompt, machine_time, summary, summary_model, updated, updated_by")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _record(row: tuple | None) -> CaptionRecord | None:
    return None if row is None else CaptionRecord(*row[:15])


def _name_fields(image: str) -> tuple[str | None, str | None, str | None]:
    """(scene_id, phase, disaster) from an xBD-like image name; Nones when it does not parse."""
    parsed = parse_name(image)
    if parsed is None:
        return None, None, None
    return scene_id_for(parsed), parsed.phase, parsed.disaster


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise CaptionStoreError(f"Unknown caption status {status!r}; use one of {', '.join(STATUSES)}.")


class CaptionStore:
    """Captions of one project in one SQLite file (created, with its folders, if missing).

    Safe to share between threads (one connection per thread) and between processes.
    Call `close()` (or use ``with``) to close every connection this object opened.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CaptionStoreError(f"Cannot create the folder of the caption store {self.path} ({err}).") from err
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        try:
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            with self._write() as c:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    c.execute(stmt)
                if c.execute("PRAGMA user_version").fetchone()[0] == 0:
                    c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            self.close()
            raise CaptionStoreError(f"{self.path} is not a usable caption store ({err}). "
                                    "Point the app at another file or move this one away.") from err
        if str(mode).lower() != "wal":
            self.close()
            raise CaptionStoreError(f"Cannot switch {self.path} to WAL mode (got {mode!r}); "
                                    "put the caption store on a local disk.")

    # -- connections -----------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise CaptionStoreError(f"The caption store {self.path} was closed.")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                       check_same_thread=False)
            except sqlite3.Error as err:
                raise CaptionStoreError(f"Cannot open the caption store {self.path} ({err}).") from err
            try:
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except sqlite3.Error:
                conn.close()
                raise
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE (so reads inside it are current)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this store opened (from any thread)."""
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> "CaptionStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptionStore({str(self.path)!r})"

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _fetch(conn: sqlite3.Connection, image: str) -> tuple | None:
        return conn.execute(f"SELECT {_RECORD_COLS}, short_key, extra FROM captions WHERE image=?",
                            (image,)).fetchone()

    @staticmethod
    def _log(conn: sqlite3.Connection, image: str, text: str, status: str, kind: str,
             author: str | None, time: str) -> None:
        conn.execute("INSERT INTO history(image, text, status, kind, author, time) VALUES (?,?,?,?,?,?)",
                     (image, text, status, kind, author, time))

    def _require(self, conn: sqlite3.Connection, image: str) -> tuple:
        row = self._fetch(conn, image)
        if row is None:
            raise CaptionStoreError(f"No caption stored for {image!r}; caption it or import captions first.")
        return row

    # -- reads -----------------------------------------------------------------------------
    def get(self, image: str) -> CaptionRecord | None:
        """The stored caption of `image` (a file name), or None."""
        return _record(self._fetch(self._conn(), image))

    def history(self, image: str) -> list[HistoryEntry]:
        """Every change of `image`'s caption, oldest first."""
        rows = self._conn().execute(
            "SELECT id, image, text, status, kind, author, time FROM history WHERE image=? ORDER BY id",
            (image,)).fetchall()
        return [HistoryEntry(*r) for r in rows]

    def list(self, *, status: str | None = None, disaster: str | None = None, phase: str | None = None,
             images: Iterable[str] | None = None) -> list[CaptionRecord]:
        """Records matching every given filter (None = any), sorted by image name."""
        where, args = [], []
        for col, val in (("status", status), ("disaster", disaster), ("phase", phase)):
            if val:
                if col == "status":
                    _check_status(val)
                where.append(f"{col}=?")
                args.append(val.lower() if col != "status" else val)
        base = f"SELECT {_RECORD_COLS} FROM captions"
        conn = self._conn()
        if images is None:
            sql = base + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY image"
            return [CaptionRecord(*r) for r in conn.execute(sql, args)]
        names = sorted(set(images))
        out: list[CaptionRecord] = []
        for i in range(0, len(names), _IN_CHUNK):
            chunk = names[i:i + _IN_CHUNK]
            cond = where + [f"image IN ({','.join('?' * len(chunk))})"]
            sql = base + " WHERE " + " AND ".join(cond)
            out.extend(CaptionRecord(*r) for r in conn.execute(sql, args + chunk))
        out.sort(key=lambda r: r.image)
        return out

    def counts(self) -> dict[str, int]:
        """Images per status (every status present, zeros included) plus "total"."""
        out = {s: 0 for s in STATUSES}
        for status, n in self._conn().execute("SELECT status, COUNT(*) FROM captions GROUP BY status"):
            out[status] = out.get(status, 0) + n
        out["total"] = sum(out[s] for s in out)
        return out

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM captions").fetchone()[0]

    # -- writes ----------------------------------------------------------------------------
    def put_machine(self, image: str, *, scene_id: str | None, phase: str | None, disaster: str | None,
                    caption: str, model: str | None, prompt: str | None, summary: str | None = None,
                    summary_model: str | None = None, author: str = "captioner") -> CaptionRecord:
        """Store a machine caption (and optional summary) for `image`.

        When the image has no caption yet, or its status is ``auto``, the current text becomes
        the summary when given, else the caption, with status ``auto``. When a person has
        edited or reviewed the text, that text and status are kept untouched — a machine
        re-caption never overwrites a person's edit — and only the machine fields are updated
        (the new machine text is still added to the history, so it can be restored).
        Storing the same caption and summary again changes nothing.
        """
        with self._write() as conn:
            row, _ = self._put_machine(conn, image, scene_id=scene_id, phase=phase, disaster=disaster,
                                       caption=caption, model=model, prompt=prompt, summary=summary,
                                       summary_model=summary_model, author=author, kind=None)
        return _record(row)

    def _put_machine(self, conn, image, *, scene_id, phase, disaster, caption, model, prompt, summary,
                     summary_model, author, kind, short_key=None, extra=None) -> tuple[tuple, str]:
        """Upsert machine fields inside a transaction; returns (row, what) where `what` is
        "added", "updated", "unchanged" or "kept" (machine fields updated under a person's text)."""
        if not isinstance(caption, str):
            raise CaptionStoreError(f"The machine caption of {image!r} must be text, got {type(caption).__name__}.")
        summary = summary if summary else None
        text = summary if summary is not None else caption
        now = _now()
        log_kind = kind or "machine"
        old = self._fetch(conn, image)
        if old is None:
            conn.execute(
                "INSERT INTO captions(image, scene_id, phase, disaster, text, status, version, machine_caption, "
                "machine_model, machine_prompt, machine_time, summary, summary_model, updated, updated_by, "
                "short_key, extra) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (image, scene_id, phase, disaster, text, "auto", 1, caption, model, prompt, now, summary,
                 summary_model, now, author, short_key, extra))
            self._log(conn, image, caption, "auto", log_kind, author, now)
            if summary is not None:
                self._log(conn, image, summary, "auto", kind or "summary", author, now)
            return self._fetch(conn, image), "added"
        rec = _record(old)
        if kind == "import":
            if prompt is None:
                prompt = rec.machine_prompt  # a course file has no prompt: keep the one stored
        else:
            short_key, extra = old[15], old[16]
        machine_changed = ((rec.machine_caption, rec.summary, rec.machine_model, rec.machine_prompt,
                            rec.summary_model) != (caption, summary, model, prompt, summary_model))
        meta_changed = ((rec.scene_id, rec.phase, rec.disaster, old[15], old[16])
                        != (scene_id, phase, disaster, short_key, extra))
        if not machine_changed and not meta_changed:
            return old, "unchanged"
        person = rec.status in PERSON_STATUSES
        new_text = rec.text if person else text
        text_changed = new_text != rec.text
        conn.execute(
            "UPDATE captions SET scene_id=?, phase=?, disaster=?, text=?, version=?, machine_caption=?, "
            "machine_model=?, machine_prompt=?, machine_time=?, summary=?, summary_model=?, updated=?, "
            "updated_by=?, short_key=?, extra=? WHERE image=?",
            (scene_id, phase, disaster, new_text, rec.version + int(text_changed), caption, model, prompt,
             now if machine_changed else rec.machine_time, summary, summary_model,
             now if text_changed else rec.updated, author if text_changed else rec.updated_by,
             short_key, extra, image))
        logged = False
        if caption != rec.machine_caption:
            self._log(conn, image, caption, rec.status, log_kind, author, now)
            logged = True
        if summary is not None and summary != rec.summary:
            self._log(conn, image, summary, rec.status, kind or "summary", author, now)
            logged = True
        if text_changed and not logged:  # e.g. a summary dropped: the caption is the text again
            self._log(conn, image, new_text, rec.status, log_kind, author, now)
        return self._fetch(conn, image), ("kept" if person and machine_changed else "updated")

    def save_edit(self, image: str, text: str, *, author: str, status: str = "edited",
                  expected_version: int | None = None) -> CaptionRecord:
        """Save a person's text for `image` in its own durable transaction (autosave-safe).

        Returns the new record, whose `version` is one more than before. Saving the text
        already stored is a no-op (same record back, no history row) unless `status` differs,
        which records a status change. With `expected_version` (the version the editor
        loaded; 0 for an image with no caption yet), raises `ConflictError` carrying the
        stored record when someone saved in between, so no save is silently overwritten.
        An image with no caption yet gets a new record (scene, phase and disaster from its name).
        """
        _check_status(status)
        if not isinstance(text, str):
            raise CaptionStoreError(f"A caption must be text, got {type(text).__name__}.")
        with self._write() as conn:
            old = self._fetch(conn, image)
            current = _record(old)
            stored_version = current.version if current is not None else 0
            if expected_version is not None and expected_version != stored_version:
                who = f" by {current.updated_by}" if current is not None and current.updated_by else ""
                raise ConflictError(
                    f"The caption of {image} was saved{who} after you loaded it (version {stored_version}, "
                    f"you had {expected_version}). Reload it, then apply your change again.", current)
            now = _now()
            if current is None:
                scene_id, phase, disaster = _name_fields(image)
                conn.execute(
                    "INSERT INTO captions(image, scene_id, phase, disaster, text, status, version, updated, "
                    "updated_by) VALUES (?,?,?,?,?,?,?,?,?)",
                    (image, scene_id, phase, disaster, text, status, 1, now, author))
                self._log(conn, image, text, status, "edit", author, now)
                return _record(self._fetch(conn, image))
            if text == current.text and status == current.status:
                return current
            kind = "status" if text == current.text else "edit"
            conn.execute("UPDATE captions SET text=?, status=?, version=version+1, updated=?, updated_by=? "
                         "WHERE image=?", (text, status, now, author, image))
            self._log(conn, image, text, status, kind, author, now)
            return _record(self._fetch(conn, image))

    def set_status(self, image: str, status: str, *, author: str,
                   expected_version: int | None = None) -> CaptionRecord:
        """Change the status of `image`'s caption (e.g. mark it ``reviewed``), keeping its text.

        Setting ``auto`` hands the text back to the machine: the next `put_machine` replaces it.
        """
        _check_status(status)
        with self._write() as conn:
            current = _record(self._require(conn, image))
            if expected_version is not None and expected_version != current.version:
                raise ConflictError(f"The caption of {image} was saved by someone else after you loaded it; "
                                    "reload it first.", current)
            if status == current.status:
                return current
            now = _now()
            conn.execute("UPDATE captions SET status=?, version=version+1, updated=?, updated_by=? WHERE image=?",
                         (status, now, author, image))
            self._log(conn, image, current.text, status, "status", author, now)
            return _record(self._fetch(conn, image))

    def restore(self, image: str, history_id: int, *, author: str,
                expected_version: int | None = None) -> CaptionRecord:
        """Make the text of history entry `history_id` the current text again, as a new
        ``edited`` change (kind ``restore``); the entries in between stay in the history."""
        with self._write() as conn:
            current = _record(self._require(conn, image))
            row = conn.execute("SELECT text FROM history WHERE id=? AND image=?", (history_id, image)).fetchone()
            if row is None:
                raise CaptionStoreError(f"History entry {history_id} does not belong to {image}; "
                                        "pick one from this image's history.")
            if expected_version is not None and expected_version != current.version:
                raise ConflictError(f"The caption of {image} was saved by someone else after you loaded it; "
                                    "reload it first.", current)
            text = row[0]
            if text == current.text and current.status == "edited":
                return current
            now = _now()
            conn.execute("UPDATE captions SET text=?, status='edited', version=version+1, updated=?, updated_by=? "
                         "WHERE image=?", (text, now, author, image))
            self._log(conn, image, text, "edited", "restore", author, now)
            return _record(self._fetch(conn, image))

    # -- the course's captions.jsonl -------------------------------------------------------
    def import_course_jsonl(self, path: Path | str, *, author: str = "import", model: str | None = None,
                            summary_model: str | None = None, batch: int = 2000) -> ImportReport:
        """Import the course's ``captions.jsonl``; bad lines are reported, not fatal.

        Each line: ``disaster``, ``image`` (file name), ``caption`` (the machine caption) and
        optionally ``caption_short`` or ``single_caption`` (the short text, stored as the
        summary). Scene id and phase come from the image name. Importing the same file again
        changes nothing; a person's edited or reviewed text is never overwritten (only the
        machine fields are). Committed in batches of `batch` lines.
        """
        path = Path(path)
        report = ImportReport(path=str(path))
        try:
            fh = open(path, encoding="utf-8")
        except OSError as err:
            raise CaptionStoreError(f"Cannot read the captions file {path} ({err.strerror or err}).") from err
        with fh:
            pending: list[tuple[int, dict]] = []
            for number, line in enumerate(fh, start=1):
                report.lines = number
                if not line.strip():
                    continue
                item, reason = _parse_course_line(line)
                if reason:
                    report.bad.append((number, reason))
                    continue
                pending.append((number, item))
                if len(pending) >= batch:
                    self._import_batch(pending, report, author, model, summary_model)
                    pending = []
            if pending:
                self._import_batch(pending, report, author, model, summary_model)
        return report

    def _import_batch(self, items, report, author, model, summary_model) -> None:
        with self._write() as conn:
            for number, it in items:
                _, what = self._put_machine(
                    conn, it["image"], scene_id=it["scene_id"], phase=it["phase"], disaster=it["disaster"],
                    caption=it["caption"], model=model, prompt=None, summary=it["short"],
                    summary_model=summary_model if it["short"] is not None else None, author=author,
                    kind="import", short_key=it["short_key"], extra=it["extra"])
                if what == "added":
                    report.added += 1
                elif what == "unchanged":
                    report.unchanged += 1
                elif what == "kept":
                    report.kept_edits += 1
                else:
                    report.updated += 1

    def export_course_jsonl(self, path: Path | str, *, images: Iterable[str] | None = None) -> int:
        """Write records in the course's format: ``caption`` = the machine caption (the current
        text when there is none) and the short key (``caption_short``, or ``single_caption``
        when imported so) = the current text. Returns the number of lines written."""
        conn = self._conn()
        names = None if images is None else set(images)
        lines = []
        for row in conn.execute(f"SELECT {_RECORD_COLS}, short_key, extra FROM captions ORDER BY image"):
            rec = _record(row)
            if names is not None and rec.image not in names:
                continue
            out = dict(json.loads(row[16])) if row[16] else {}
            out["disaster"] = rec.disaster
            out["image"] = rec.image
            out["caption"] = rec.machine_caption if rec.machine_caption is not None else rec.text
            if rec.summary is not None or rec.text != out["caption"] or row[15]:
                out[row[15] or "caption_short"] = rec.text
            lines.append(json.dumps(out, ensure_ascii=False))
        atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
        return len(lines)

    # -- ControlNet training ---------------------------------------------------------------
    def export_controlnet_metadata(self, path: Path | str, pairs: Iterable[tuple[str, str, str]]) -> int:
        """Write a diffusers ControlNet training ``metadata.jsonl``: one line per
        (post image, pre image, text) as ``{"image", "conditioning_image", "text"}``."""
        return export_controlnet_metadata(path, pairs)


def _parse_course_line(line: str) -> tuple[dict | None, str | None]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at column {err.colno})"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    image = obj.get("image")
    if not isinstance(image, str) or not image.strip():
        return None, "no 'image' file name"
    if "/" in image or "\\" in image:
        image = image.replace("\\", "/").rsplit("/", 1)[-1]
    caption = obj.get("caption")
    if not isinstance(caption, str):
        return None, f"no 'caption' text for {image}"
    parsed = parse_name(image)
    if parsed is None or parsed.kind != "image":
        return None, f"{image!r} is not an xBD image name"
    short_key = next((k for k in SHORT_KEYS if k in obj), None)
    short = obj.get(short_key) if short_key else None
    if short is not None and not isinstance(short, str):
        return None, f"'{short_key}' of {image} is not text"
    disaster = obj.get("disaster")
    if disaster is not None and not isinstance(disaster, str):
        return None, f"'disaster' of {image} is not text"
    extra = {k: v for k, v in obj.items() if k not in COURSE_KEYS}
    return {
        "image": image, "caption": caption, "short": short, "short_key": short_key,
        "disaster": (disaster or parsed.disaster), "scene_id": scene_id_for(parsed), "phase": parsed.phase,
        "extra": json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
    }, None


def export_controlnet_metadata(path: Path | str, pairs: Iterable[tuple[str, str, str]]) -> int:
    """Write a diffusers ControlNet training ``metadata.jsonl`` from (post image, pre image,
    text) triples: ``{"image": post, "conditioning_image": pre, "text": text}`` per line.
    Returns the number of lines."""
    lines = [json.dumps({"image": str(post), "conditioning_image": str(pre), "text": text}, ensure_ascii=False)
             for post, pre, text in pairs]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def _rel(path: Path, relative_to: Path | str | None) -> str:
    if relative_to is None:
        return Path(path).as_posix()
    return Path(os.path.relpath(path, relative_to)).as_posix()


def controlnet_pairs(index, scenes, store: CaptionStore, *,
                     relative_to: Path | str | None) -> tuple[list[tuple[str, str, str]], int]:
    """(post image, pre image, text) triples for ControlNet training, and the number of
    scenes skipped.

    `scenes` are `core.types.Scene`s (None = every scene of `index`). The text is the
    current caption of the post image, else of the pre image; scenes lacking either image
    or any non-empty caption are skipped. Paths are made relative to `relative_to` (the
    folder the metadata.jsonl goes into) with forward slashes, or kept as given when None.
    """
    scenes = list(index.scenes if scenes is None else scenes)
    wanted = [p.name for s in scenes for p in (s.post_image, s.pre_image) if p is not None]
    texts = {r.image: r.text for r in store.list(images=wanted)}
    pairs, skipped = [], 0
    for s in scenes:
        if s.pre_image is None or s.post_image is None:
            skipped += 1
            continue
        text = texts.get(s.post_image.name, "").strip() or texts.get(s.pre_image.name, "").strip()
        if not text:
            skipped += 1
            continue
        pairs.append((_rel(s.post_image, relative_to), _rel(s.pre_image, relative_to), text))
    return pairs, skipped
