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
- Writes run in ``BEGIN IMMEDIATE`` transactions; ``save_edit``, ``set_status`` and
  ``restore`` with ``expected_version=v`` check the version inside that transaction and
  raise `ConflictError` (carrying the current record) instead of overwriting someone
  else's save.
- A write the disk refuses (full, read-only, I/O error, locked too long) is rolled back
  whole and raised as a `CaptionStoreError` saying what happened and what to do; what was
  committed before is untouched. Reads that fail the same way say so too.

``version`` counts changes of the text or the status (what a person sees and edits); storing
new machine fields under a person's text does not change it.

Rows are read by column name (``sqlite3.Row``), never by position.

This module is persistence only. Reading and writing files (the course's ``captions.jsonl``,
a ControlNet ``metadata.jsonl``) is `core.captions.formats`; it stores what a file held
with `put_imported` and reads it back with `list_with_source`.

Images are keyed by file name; a name with a path separator is refused. Whether an image
belongs to a dataset is the caller's check (`core.captions.service.CaptionService`).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

from core.data.names import parse_name, scene_id_for
from core.errors import LabError

STATUSES: tuple[str, ...] = ("auto", "edited", "reviewed")
PERSON_STATUSES: tuple[str, ...] = ("edited", "reviewed")
HISTORY_KINDS: tuple[str, ...] = ("machine", "summary", "edit", "restore", "import", "status")
SCHEMA_VERSION = 3  # 2: captions.caption_key; 3: history.started
# An autosaved version takes in quick edits for at most this long, so a long burst of typing
# with no pause still leaves a version a minute in the history.
VERSION_SPAN_SECONDS = 60.0
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


@dataclass(frozen=True)
class ImportedCaption:
    """A machine caption read from a file, for `CaptionStore.put_imported`.

    `summary` is the file's short text (None when it has none). `caption_key` (the key the
    caption came from; None for ``caption``), `short_key` (the key the short text came
    from) and `extra` (the line's other keys, as JSON text) are stored as they are, so
    that an export can write the line back as it came in."""

    image: str
    scene_id: str | None
    phase: str | None
    disaster: str | None
    caption: str
    summary: str | None = None
    short_key: str | None = None
    extra: str | None = None
    caption_key: str | None = None


class CaptionSource(NamedTuple):
    """A record with what `put_imported` kept of the file line it came from (the three
    keys None for captions that were never imported; `caption_key` None also means
    ``caption``)."""

    record: CaptionRecord
    caption_key: str | None
    short_key: str | None
    extra: str | None


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
    extra TEXT,          -- other keys of the course line, JSON, written back on export
    caption_key TEXT     -- course key the caption came from when not "caption" (schema 2)
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
    time TEXT NOT NULL,  -- when this text was written
    started TEXT         -- when the version began, if edits were folded into it (schema 3)
);
CREATE INDEX IF NOT EXISTS history_image ON history(image, id);
"""
_RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CaptionRecord))
_HISTORY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(HistoryEntry))
_RECORD_COLS = ", ".join(_RECORD_FIELDS)
_SOURCE_COLS = "caption_key, short_key, extra"
OUTCOMES: tuple[str, ...] = ("added", "updated", "unchanged", "kept")
"""What storing a machine caption did; "kept": machine fields updated under a person's text."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _record(row: sqlite3.Row | None) -> CaptionRecord | None:
    return None if row is None else CaptionRecord(**{name: row[name] for name in _RECORD_FIELDS})


def _history_entry(row: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(**{name: row[name] for name in _HISTORY_FIELDS})


def _name_fields(image: str) -> tuple[str | None, str | None, str | None]:
    """(scene_id, phase, disaster) from an xBD-like image name; Nones when it does not parse."""
    parsed = parse_name(image)
    if parsed is None:
        return None, None, None
    return scene_id_for(parsed), parsed.phase, parsed.disaster


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise CaptionStoreError(f"Unknown caption status {status!r}; use one of {', '.join(STATUSES)}.")


def _check_image(image: str) -> None:
    """Refuse what cannot be an image file name (the store's key): empty, or a path."""
    if not isinstance(image, str) or not image.strip() or image in (".", "..") or any(
            c in image for c in ("/", "\\", "\0")):
        raise CaptionStoreError(f"{image!r} is not an image file name; captions are kept per image file "
                                "name, such as guatemala-volcano_00000004_post_disaster.png.")


def _conflict(image: str, current: CaptionRecord | None, expected: int) -> ConflictError:
    """The refusal of a change made from version `expected` when `current` is stored."""
    stored = current.version if current is not None else 0
    who = f" by {current.updated_by}" if current is not None and current.updated_by else ""
    return ConflictError(f"The caption of {image} was saved{who} after you loaded it (version {stored}, "
                         f"you had {expected}). Reload it, then apply your change again.", current)


_STORE_KEPT = "Nothing of this change was written; everything saved before is intact."


def disk_error(err: BaseException, path: Path | str, *, writing: bool = True,
               kept: str = _STORE_KEPT) -> CaptionStoreError:
    """A plain message for an SQLite or OS error on `path`: what happened, what was kept
    (`kept`, said of a write) and what to do. `writing`: the error came from a write."""
    text = str(err).lower()
    errno_ = getattr(err, "errno", None)
    if "full" in text or errno_ in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk it is on is full"
        fix = "free some space there (or start with another --work folder), then try again"
    elif "readonly" in text or "read-only" in text or errno_ in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "it is read-only for this program"
        fix = ("make the file and its folder writable for the user running the app (or start with another "
               "--work folder), then try again")
    elif "locked" in text or "busy" in text:
        why = f"another program kept it locked for more than {BUSY_TIMEOUT_MS // 1000} s"
        fix = "try again in a moment, and close other programs writing to it"
    elif "disk i/o" in text or errno_ == errno.EIO:
        why = "the disk reported an input/output error"
        fix = ("check that the disk (or network drive) is still there, has space and no errors, "
               "then try again")
    elif "unable to open" in text or errno_ in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        why = "it or its folder cannot be opened or created"
        fix = ("check that the folder exists, is writable and that no file is in the way of a folder it needs "
               "(or start with another --work folder)")
    else:
        why = "the system refused the operation"
        fix = "check the disk and the file's permissions, then try again"
    detail = getattr(err, "strerror", None) or str(err)
    said = f" {kept}" if writing and kept else ""
    return CaptionStoreError(f"Cannot {'write' if writing else 'read'} {path}: {why} ({detail}).{said} "
                             f"What to do: {fix}.")


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
            mode = self._switch_to_wal(conn)
            if not self._schema_current(conn):  # a current store opens without writing (read-only too)
                with self._write() as c:
                    for stmt in filter(str.strip, _SCHEMA.split(";")):
                        c.execute(stmt)
                    if "caption_key" not in self._columns(c):
                        c.execute("ALTER TABLE captions ADD COLUMN caption_key TEXT")
                    if "started" not in self._columns(c, "history"):
                        c.execute("ALTER TABLE history ADD COLUMN started TEXT")
                    if c.execute("PRAGMA user_version").fetchone()["user_version"] < SCHEMA_VERSION:
                        c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except CaptionStoreError:
            self.close()
            raise
        except sqlite3.OperationalError as err:
            self.close()
            raise disk_error(err, self.path) from err
        except sqlite3.DatabaseError as err:
            self.close()
            raise CaptionStoreError(f"{self.path} is not a usable caption store ({err}). "
                                    "Point the app at another file or move this one away.") from err
        if str(mode).lower() != "wal":
            self.close()
            raise CaptionStoreError(f"Cannot switch {self.path} to WAL mode (got {mode!r}); "
                                    "put the caption store on a local disk.")

    @staticmethod
    def _switch_to_wal(conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode; returns the mode SQLite reports. SQLite answers "locked"
        at once, without waiting, while another process switches a new file at the same
        moment (several processes of one batch opening a fresh store), so this waits and
        tries again, for as long as the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.01
        while True:
            try:
                return conn.execute("PRAGMA journal_mode=WAL").fetchone()["journal_mode"]
            except sqlite3.OperationalError as err:
                if "locked" not in str(err).lower() or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

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
            conn.row_factory = sqlite3.Row
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

    @staticmethod
    def _columns(conn: sqlite3.Connection, table: str = "captions") -> set[str]:
        return {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}

    def _schema_current(self, conn: sqlite3.Connection) -> bool:
        """Whether the file already has this version's tables and columns."""
        if conn.execute("PRAGMA user_version").fetchone()["user_version"] < SCHEMA_VERSION:
            return False
        tables = {r["name"] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return ({"captions", "history"} <= tables and "caption_key" in self._columns(conn)
                and "started" in self._columns(conn, "history"))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE (so reads inside it are current).

        Any error, the COMMIT's included, rolls the whole transaction back; an SQLite
        error (disk full, read-only, I/O error, locked) is raised as `disk_error`'s
        CaptionStoreError."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        except sqlite3.OperationalError as err:
            raise disk_error(err, self.path) from err

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back the open transaction, if SQLite has not already (it does on some errors)."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for reads; an SQLite error is raised as `disk_error`'s."""
        conn = self._conn()
        try:
            yield conn
        except sqlite3.OperationalError as err:
            raise disk_error(err, self.path, writing=False) from err

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
    def _fetch(conn: sqlite3.Connection, image: str) -> sqlite3.Row | None:
        return conn.execute(f"SELECT {_RECORD_COLS}, {_SOURCE_COLS} FROM captions WHERE image=?",
                            (image,)).fetchone()

    @staticmethod
    def _log(conn: sqlite3.Connection, image: str, text: str, status: str, kind: str,
             author: str | None, time: str) -> None:
        conn.execute("INSERT INTO history(image, text, status, kind, author, time) VALUES (?,?,?,?,?,?)",
                     (image, text, status, kind, author, time))

    def _require(self, conn: sqlite3.Connection, image: str) -> sqlite3.Row:
        row = self._fetch(conn, image)
        if row is None:
            raise CaptionStoreError(f"No caption stored for {image!r}; caption it or import captions first.")
        return row

    # -- reads -----------------------------------------------------------------------------
    def get(self, image: str) -> CaptionRecord | None:
        """The stored caption of `image` (a file name), or None."""
        with self._reading() as conn:
            return _record(self._fetch(conn, image))

    def history(self, image: str) -> list[HistoryEntry]:
        """Every change of `image`'s caption, oldest first."""
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {', '.join(_HISTORY_FIELDS)} FROM history WHERE image=? ORDER BY id",
                                (image,)).fetchall()
        return [_history_entry(r) for r in rows]

    def list(self, *, status: str | None = None, disaster: str | None = None, phase: str | None = None,
             images: Iterable[str] | None = None) -> list[CaptionRecord]:
        """Records matching every given filter (None = any), sorted by image name."""
        return [_record(r) for r in self._select(_RECORD_COLS, status=status, disaster=disaster, phase=phase,
                                                 images=images)]

    def list_with_source(self, *, images: Iterable[str] | None = None) -> list[CaptionSource]:
        """A `CaptionSource` (record, caption_key, short_key, extra) of every image (or of
        `images`), sorted by image name, read in one query: the record with what
        `put_imported` kept of the file line it came from."""
        rows = self._select(f"{_RECORD_COLS}, {_SOURCE_COLS}", images=images)
        return [CaptionSource(_record(r), r["caption_key"], r["short_key"], r["extra"]) for r in rows]

    def _select(self, cols: str, *, status: str | None = None, disaster: str | None = None,
                phase: str | None = None, images: Iterable[str] | None = None) -> list[sqlite3.Row]:
        """Rows of `cols` matching every given filter (None = any), sorted by image name."""
        where, args = [], []
        for col, val in (("status", status), ("disaster", disaster), ("phase", phase)):
            if val:
                if col == "status":
                    _check_status(val)
                where.append(f"{col}=?")
                args.append(val.lower() if col != "status" else val)
        base = f"SELECT {cols} FROM captions"
        with self._reading() as conn:
            if images is None:
                sql = base + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY image"
                return conn.execute(sql, args).fetchall()
            names = sorted(set(images))
            out: list[sqlite3.Row] = []
            for i in range(0, len(names), _IN_CHUNK):
                chunk = names[i:i + _IN_CHUNK]
                cond = where + [f"image IN ({','.join('?' * len(chunk))})"]
                sql = base + " WHERE " + " AND ".join(cond)
                out.extend(conn.execute(sql, args + chunk))
        out.sort(key=lambda r: r["image"])
        return out

    def counts(self) -> dict[str, int]:
        """Images per status (every status present, zeros included) plus "total"."""
        out = {s: 0 for s in STATUSES}
        with self._reading() as conn:
            rows = conn.execute("SELECT status, COUNT(*) AS n FROM captions GROUP BY status").fetchall()
        for row in rows:
            out[row["status"]] = out.get(row["status"], 0) + row["n"]
        out["total"] = sum(out[s] for s in out)
        return out

    def __len__(self) -> int:
        with self._reading() as conn:
            return conn.execute("SELECT COUNT(*) AS n FROM captions").fetchone()["n"]

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

    def put_imported(self, entries: Iterable[ImportedCaption], *, author: str, model: str | None = None,
                     summary_model: str | None = None) -> list[str]:
        """Store machine captions read from a file, all in one transaction; returns what
        happened to each entry, in order (one of `OUTCOMES`).

        As `put_machine`, a person's edited or reviewed text is never overwritten, and an
        entry equal to what is stored changes nothing. Unlike it, a stored prompt is kept
        (a file has none), the entry's `caption_key`, `short_key` and `extra` replace the
        stored ones, and the history rows are of kind ``import``. `summary_model` applies
        to entries that have a summary."""
        outcomes = []
        with self._write() as conn:
            for e in entries:
                _, what = self._put_machine(
                    conn, e.image, scene_id=e.scene_id, phase=e.phase, disaster=e.disaster, caption=e.caption,
                    model=model, prompt=None, summary=e.summary,
                    summary_model=summary_model if e.summary is not None else None, author=author,
                    kind="import", short_key=e.short_key, extra=e.extra, caption_key=e.caption_key)
                outcomes.append(what)
        return outcomes

    def _put_machine(self, conn, image, *, scene_id, phase, disaster, caption, model, prompt, summary,
                     summary_model, author, kind, short_key=None, extra=None,
                     caption_key=None) -> tuple[sqlite3.Row, str]:
        """Upsert machine fields inside a transaction; returns (row, what) where `what` is
        one of `OUTCOMES`: "added", "updated", "unchanged" or "kept" (machine fields updated
        under a person's text)."""
        _check_image(image)
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
                "short_key, extra, caption_key) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (image, scene_id, phase, disaster, text, "auto", 1, caption, model, prompt, now, summary,
                 summary_model, now, author, short_key, extra, caption_key))
            self._log(conn, image, caption, "auto", log_kind, author, now)
            if summary is not None:
                self._log(conn, image, summary, "auto", kind or "summary", author, now)
            return self._fetch(conn, image), "added"
        rec = _record(old)
        if kind == "import":
            if prompt is None:
                prompt = rec.machine_prompt  # a course file has no prompt: keep the one stored
        else:
            short_key, extra, caption_key = old["short_key"], old["extra"], old["caption_key"]
        machine_changed = ((rec.machine_caption, rec.summary, rec.machine_model, rec.machine_prompt,
                            rec.summary_model) != (caption, summary, model, prompt, summary_model))
        meta_changed = ((rec.scene_id, rec.phase, rec.disaster, old["short_key"], old["extra"], old["caption_key"])
                        != (scene_id, phase, disaster, short_key, extra, caption_key))
        if not machine_changed and not meta_changed:
            return old, "unchanged"
        person = rec.status in PERSON_STATUSES
        new_text = rec.text if person else text
        text_changed = new_text != rec.text
        conn.execute(
            "UPDATE captions SET scene_id=?, phase=?, disaster=?, text=?, version=?, machine_caption=?, "
            "machine_model=?, machine_prompt=?, machine_time=?, summary=?, summary_model=?, updated=?, "
            "updated_by=?, short_key=?, extra=?, caption_key=? WHERE image=?",
            (scene_id, phase, disaster, new_text, rec.version + int(text_changed), caption, model, prompt,
             now if machine_changed else rec.machine_time, summary, summary_model,
             now if text_changed else rec.updated, author if text_changed else rec.updated_by,
             short_key, extra, caption_key, image))
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
                  expected_version: int | None = None, coalesce_seconds: float = 0) -> CaptionRecord:
        """Save a person's text for `image` in its own durable transaction (autosave-safe).

        Returns the new record, whose `version` is one more than before. Saving the text
        already stored is a no-op (same record back, no history row) unless `status` differs,
        which records a status change. With `expected_version` (the version the editor
        loaded; 0 for an image with no caption yet), raises `ConflictError` carrying the
        stored record when someone saved in between, so no save is silently overwritten.
        An image with no caption yet gets a new record (scene, phase and disaster from its name).

        `coalesce_seconds` (autosave): when the newest history entry is an edit by the same
        `author`, with the same status, written less than that many seconds ago, the edit
        replaces that entry's text and time instead of adding an entry, so one pause in
        typing leaves one version in the history, not one per keystroke (a version takes
        in edits for at most `VERSION_SPAN_SECONDS`, then the next edit starts one). The record's
        `version` still goes up (the conflict check stays exact) and the text saved last is
        always the stored one; an edit by anyone else always adds an entry.
        """
        _check_status(status)
        _check_image(image)
        if not isinstance(text, str):
            raise CaptionStoreError(f"A caption must be text, got {type(text).__name__}.")
        with self._write() as conn:
            old = self._fetch(conn, image)
            current = _record(old)
            stored_version = current.version if current is not None else 0
            if expected_version is not None and expected_version != stored_version:
                raise _conflict(image, current, expected_version)
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
            newest = self._coalescible(conn, image, author, status, now, coalesce_seconds) if kind == "edit" else None
            if newest is not None:
                conn.execute("UPDATE history SET text=?, started=COALESCE(started, time), time=? WHERE id=?",
                             (text, now, newest))
            else:
                self._log(conn, image, text, status, kind, author, now)
            return _record(self._fetch(conn, image))

    @staticmethod
    def _coalescible(conn, image: str, author: str, status: str, now: str, seconds: float) -> int | None:
        """The id of `image`'s newest history entry when an edit made `now` by `author` may
        replace it (see `save_edit`'s `coalesce_seconds`), else None."""
        if not seconds or seconds <= 0:
            return None
        row = conn.execute("SELECT id, kind, author, status, time, started FROM history WHERE image=? "
                           "ORDER BY id DESC LIMIT 1", (image,)).fetchone()
        if row is None or row["kind"] != "edit" or row["author"] != author or row["status"] != status:
            return None
        try:
            pause = (datetime.fromisoformat(now) - datetime.fromisoformat(row["time"])).total_seconds()
            span = (datetime.fromisoformat(now) - datetime.fromisoformat(row["started"] or row["time"])).total_seconds()
        except (TypeError, ValueError):
            return None
        return row["id"] if 0 <= pause < seconds and span < VERSION_SPAN_SECONDS else None

    def set_status(self, image: str, status: str, *, author: str,
                   expected_version: int | None = None) -> CaptionRecord:
        """Change the status of `image`'s caption (e.g. mark it ``reviewed``), keeping its text.

        Setting ``auto`` hands the text back to the machine: the next `put_machine` replaces it.
        With `expected_version` (the version the client loaded), raises `ConflictError` as
        `save_edit` does when someone saved in between, leaving their text and status as they are.
        """
        _check_status(status)
        with self._write() as conn:
            current = _record(self._require(conn, image))
            if expected_version is not None and expected_version != current.version:
                raise _conflict(image, current, expected_version)
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
        ``edited`` change (kind ``restore``); the entries in between stay in the history.
        With `expected_version`, raises `ConflictError` as `save_edit` does when someone
        saved in between, so an old version never replaces a text the client has not seen."""
        with self._write() as conn:
            current = _record(self._require(conn, image))
            row = conn.execute("SELECT text FROM history WHERE id=? AND image=?", (history_id, image)).fetchone()
            if row is None:
                raise CaptionStoreError(f"History entry {history_id} does not belong to {image}; "
                                        "pick one from this image's history.")
            if expected_version is not None and expected_version != current.version:
                raise _conflict(image, current, expected_version)
            text = row["text"]
            if text == current.text and current.status == "edited":
                return current
            now = _now()
            conn.execute("UPDATE captions SET text=?, status='edited', version=version+1, updated=?, updated_by=? "
                         "WHERE image=?", (text, now, author, image))
            self._log(conn, image, text, "edited", "restore", author, now)
            return _record(self._fetch(conn, image))
