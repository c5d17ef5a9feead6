"""Caption files in and out of the caption store (`core.captions.store`, which only persists).

- The course's ``captions.jsonl``: one JSON object a line with ``disaster``, ``image`` (a
  file name) and at least one of ``caption``, ``caption_short`` and ``single_caption``:
  the first of those present is the (machine) caption, a second one the short text (the
  course's 512 px ``captions_512.jsonl`` has only ``single_caption``). `import_course_jsonl`
  reads it into a store (bad lines are reported, not fatal) and `export_course_jsonl`
  writes a store back in that format with the keys each line came in with (and any other
  keys of the line), so a file round-trips.
- A diffusers ControlNet training ``metadata.jsonl``: `controlnet_pairs` picks (post image,
  pre image, caption) triples of scenes, `export_controlnet_metadata` writes them as
  ``{"image", "conditioning_image", "text"}`` lines.

Every function takes the store as an argument; writes are atomic (`core.io.atomic_write_text`)
and a file that cannot be read or written is a `CaptionStoreError` saying why and what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.captions.store import CaptionRecord, CaptionStore, CaptionStoreError, ImportedCaption, disk_error
from core.data.names import parse_name, scene_id_for
from core.io import atomic_write_text

SHORT_KEYS: tuple[str, ...] = ("caption_short", "single_caption")
TEXT_KEYS: tuple[str, ...] = ("caption", *SHORT_KEYS)
"""The keys of a course line that hold a caption, in the order their roles are given."""
COURSE_KEYS: frozenset[str] = frozenset({"disaster", "image", *TEXT_KEYS})


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

    def tally(self, outcomes: Iterable[str]) -> None:
        """Add the outcomes of `CaptionStore.put_imported` to the totals."""
        for what in outcomes:
            if what == "added":
                self.added += 1
            elif what == "unchanged":
                self.unchanged += 1
            elif what == "kept":
                self.kept_edits += 1
            else:
                self.updated += 1


# -- the course's captions.jsonl -----------------------------------------------------------

def import_course_jsonl(store: CaptionStore, path: Path | str, *, author: str = "import",
                        model: str | None = None, summary_model: str | None = None,
                        batch: int = 2000) -> ImportReport:
    """Import the course's ``captions.jsonl`` into `store`; bad lines are reported, not fatal.

    Each line: ``disaster``, ``image`` (file name) and one or two of ``caption``,
    ``caption_short``, ``single_caption``: the first present is the machine caption, the
    next the short text (stored as the summary); a third is kept as it is. Scene id and
    phase come from the image name. Importing the same file again changes nothing; a
    person's edited or reviewed text is never overwritten (only the machine fields are).
    Committed in batches of `batch` lines.
    """
    path = Path(path)
    report = ImportReport(path=str(path))
    try:
        fh = open(path, encoding="utf-8")
    except OSError as err:
        raise CaptionStoreError(f"Cannot read the captions file {path} ({err.strerror or err}).") from err
    with fh:
        pending: list[ImportedCaption] = []
        try:
            for number, line in enumerate(fh, start=1):
                report.lines = number
                if not line.strip():
                    continue
                entry, reason = _parse_course_line(line)
                if reason:
                    report.bad.append((number, reason))
                    continue
                pending.append(entry)
                if len(pending) >= batch:
                    report.tally(store.put_imported(pending, author=author, model=model,
                                                    summary_model=summary_model))
                    pending = []
        except UnicodeDecodeError as err:
            raise CaptionStoreError(f"Cannot read the captions file {path}: line {report.lines + 1} is not "
                                    f"UTF-8 text ({err.reason}); lines before it were imported. Save the file "
                                    "as UTF-8 and import it again.") from err
        except OSError as err:
            raise disk_error(err, path, writing=False) from err
        if pending:
            report.tally(store.put_imported(pending, author=author, model=model, summary_model=summary_model))
    return report


def export_course_jsonl(store: CaptionStore, path: Path | str, *, images: Iterable[str] | None = None) -> int:
    """Write `store`'s records (or those of `images`) in the course's format, each with the
    keys its line was imported with (see `course_line`). Returns the number of lines
    written; the file is written whole or not at all."""
    lines = [json.dumps(course_line(*source), ensure_ascii=False)
             for source in store.list_with_source(images=images)]
    _write_lines(path, lines)
    return len(lines)


def course_line(rec: CaptionRecord, caption_key: str | None, short_key: str | None, extra: str | None) -> dict:
    """The course line of a stored caption, from what `put_imported` kept of its line.

    The caption key (``caption`` unless the line had another) holds the machine caption
    (the current text when there is none) and the short key, when the line had one, the
    current text; a short text imported empty stays empty until a person writes one. A
    line with a single text key (e.g. only ``single_caption``) gets the current text under
    that key. A caption never imported gets ``caption``, and ``caption_short`` when its
    text is not the machine's."""
    out = dict(json.loads(extra)) if extra else {}
    out["disaster"] = rec.disaster
    out["image"] = rec.image
    machine = rec.machine_caption if rec.machine_caption is not None else rec.text
    if caption_key not in (None, "caption") and short_key is None:
        out[caption_key] = rec.text
    elif short_key is not None:
        out[caption_key or "caption"] = machine
        empty = rec.status == "auto" and rec.summary is None and rec.text == machine  # imported as ""
        out[short_key] = "" if empty else rec.text
    else:
        out["caption"] = machine
        if rec.summary is not None or rec.text != machine:
            out["caption_short"] = rec.text
    return out


def _write_lines(path: Path | str, lines: list[str]) -> None:
    """Write JSON lines to `path` atomically; an OS error is a CaptionStoreError saying what to do."""
    try:
        atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    except OSError as err:
        raise disk_error(err, path, kept="Nothing was written there; a file already there is unchanged.") from err


def _parse_course_line(line: str) -> tuple[ImportedCaption | None, str | None]:
    """One line of a course file as an entry to store, or (None, why it is skipped)."""
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
    parsed = parse_name(image)
    if parsed is None or parsed.kind != "image":
        return None, f"{image!r} is not an xBD image name"
    present = [k for k in TEXT_KEYS if obj.get(k) is not None]
    for key in present:
        if not isinstance(obj[key], str):
            return None, f"'{key}' of {image} is not text"
    if not present:
        return None, f"no caption text for {image} (none of {', '.join(TEXT_KEYS)})"
    caption_key, short_key = present[0], (present[1] if len(present) > 1 else None)
    disaster = obj.get("disaster")
    if disaster is not None and not isinstance(disaster, str):
        return None, f"'disaster' of {image} is not text"
    roles = {"disaster", "image", caption_key, short_key}
    extra = {k: v for k, v in obj.items() if k not in roles}  # a third text key, nulls: kept as they are
    return ImportedCaption(
        image=image, scene_id=scene_id_for(parsed), phase=parsed.phase, disaster=disaster or parsed.disaster,
        caption=obj[caption_key], summary=obj[short_key] if short_key else None, short_key=short_key,
        extra=json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else None,
        caption_key=None if caption_key == "caption" else caption_key,
    ), None


# -- ControlNet training -------------------------------------------------------------------

def export_controlnet_metadata(path: Path | str, pairs: Iterable[tuple[str, str, str]]) -> int:
    """Write a diffusers ControlNet training ``metadata.jsonl`` from (post image, pre image,
    text) triples: ``{"image": post, "conditioning_image": pre, "text": text}`` per line.
    Returns the number of lines."""
    lines = [json.dumps({"image": str(post), "conditioning_image": str(pre), "text": text}, ensure_ascii=False)
             for post, pre, text in pairs]
    _write_lines(path, lines)
    return len(lines)


def _rel(path: Path, relative_to: Path | str | None) -> str:
    if relative_to is None:
        return Path(path).as_posix()
    return Path(os.path.relpath(path, relative_to)).as_posix()


def controlnet_pairs(store: CaptionStore, index, scenes, *,
                     relative_to: Path | str | None) -> tuple[list[tuple[str, str, str]], int]:
    """(post image, pre image, text) triples for ControlNet training, and the number of
    scenes skipped.

    `scenes` are `core.types.Scene`s (None = every scene of `index`). The text is the
    current caption in `store` of the post image, else of the pre image; scenes lacking
    either image or any non-empty caption are skipped. Paths are made relative to
    `relative_to` (the folder the metadata.jsonl goes into) with forward slashes, or kept
    as given when None.
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


__all__ = ["COURSE_KEYS", "SHORT_KEYS", "TEXT_KEYS", "ImportReport", "controlnet_pairs", "course_line",
           "export_controlnet_metadata", "export_course_jsonl", "import_course_jsonl"]
