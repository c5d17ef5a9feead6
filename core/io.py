"""Small file and JSON helpers every layer shares: atomic writes, JSON cleaning and the
library versions a record keeps. Nothing heavy is imported here (numpy only lazily)."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import IO, Any, Iterator

TMP_PREFIX = ".tmp-"
"""Temporary files and folders start with this; readers of a folder skip them."""

# Distributions whose versions shape an image or a score (read from package metadata,
# never imported). Those not installed are left out of `library_versions()`.
LIBRARIES: tuple[str, ...] = ("torch", "diffusers", "transformers", "huggingface-hub", "tokenizers",
                              "accelerate", "safetensors", "numpy", "pillow", "lpips", "scikit-image")


@contextmanager
def atomic_file(path: Path | str, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing ("w" text in UTF-8, or "wb"); on a
    clean exit it is flushed, fsync-ed and renamed over `path`, so a reader (or a crash)
    sees the old file or the new one, never half of it. On an error it is removed and the
    old file stays. The parent folder is created when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.")
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(text)


def jsonable(value: Any, *, strict: bool = False) -> Any:
    """`value` as plain JSON types: dict keys as strings, tuples and sets as lists (sets
    sorted), paths as strings, numpy/torch scalars and arrays as Python numbers and lists.
    NaN becomes None and ±infinity the strings "inf"/"-inf", unless `strict`, which keeps
    them (so `dumps` refuses them). Anything else is kept as it is (`dumps` refuses it)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [jsonable(v, strict=strict) for v in sorted(value, key=str)]
    if isinstance(value, (list, tuple)):
        return [jsonable(v, strict=strict) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if strict or math.isfinite(value):
            return value
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    if callable(getattr(value, "item", None)) and getattr(value, "size", 1) == 1 and not isinstance(value, type):
        try:
            return jsonable(value.item(), strict=strict)
        except (TypeError, ValueError, RuntimeError):
            pass
    if callable(getattr(value, "tolist", None)) and not isinstance(value, type):
        return jsonable(value.tolist(), strict=strict)
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """Strict JSON text of `value` after `jsonable(value, strict=True)`: TypeError for what
    JSON cannot hold, ValueError for NaN and infinities."""
    return json.dumps(jsonable(value, strict=True), indent=indent, allow_nan=False, ensure_ascii=False)


def jsonable_or_text(value: Any) -> Any:
    """`jsonable(value)` with anything JSON cannot hold turned into its text (for records
    of library objects, e.g. a scheduler's config)."""
    value = jsonable(value)
    if isinstance(value, dict):
        return {k: jsonable_or_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable_or_text(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


@lru_cache(maxsize=1)
def _versions() -> tuple:
    import core

    out = {"python": platform.python_version(), "xbd-diffusion-lab": core.__version__}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return tuple(out.items())


def library_versions() -> dict[str, str]:
    """Python's, this package's and the installed versions of `LIBRARIES` (looked up
    once per process from package metadata; a library that is not installed is absent)."""
    return dict(_versions())


__all__ = ["LIBRARIES", "TMP_PREFIX", "atomic_file", "atomic_write_text", "dumps", "jsonable",
           "jsonable_or_text", "library_versions"]


def tail_text(path, limit: int = 4000) -> str:
    """The last `limit` bytes of a log file as text ("" when it cannot be read)."""
    import os

    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


class JsonlFollower:
    """Reads growing JSONL logs, each new part once: `rows(path)` parses only the lines
    added since the last call. A file replaced or rewritten (its last line read is no longer
    where it was) is read again from the start; a last line still being written waits for
    its newline. Safe to share between threads."""

    _CHECK = 64  # bytes before the read position that must be unchanged for a file to have only grown

    def __init__(self) -> None:
        self._seen: dict = {}  # path -> (bytes read, the last bytes read, rows)
        self._lock = threading.Lock()

    def rows(self, path) -> list[dict]:
        """Every whole line of `path` that parses as JSON, oldest first ([] without a file)."""
        path = os.fspath(path)
        with self._lock:
            offset, tail, rows = self._seen.get(path, (0, b"", []))
            try:
                with open(path, "rb") as f:
                    f.seek(offset - len(tail))
                    if f.read(len(tail)) != tail:  # rewritten (a resume drops lines) or replaced
                        offset, tail, rows = 0, b"", []
                        f.seek(0)
                    new = f.read()
            except OSError:
                self._seen.pop(path, None)
                return []
            whole = new[:new.rfind(b"\n") + 1]
            if whole:
                rows = rows + _parsed_lines(whole)
                offset, tail = offset + len(whole), (tail + whole)[-self._CHECK:]
            self._seen[path] = (offset, tail, rows)
            return list(rows)


def read_jsonl(path) -> list[dict]:
    """The lines of a JSONL log that parse (a line cut by a kill is left out)."""
    try:
        with open(path, "rb") as f:
            return _parsed_lines(f.read())
    except OSError:
        return []


def _parsed_lines(data: bytes) -> list[dict]:
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a kill
    return out
