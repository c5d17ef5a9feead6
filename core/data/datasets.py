"""The xBD folders one process has opened: each indexed once (core.data.index) and kept,
and the folders the web app may serve files from."""

from __future__ import annotations

import threading
from pathlib import Path


class Datasets:
    """Opened datasets, cached per resolved folder.

    default_dir: the folder `open()` indexes when given none; cache_dir: where label
    summaries are cached; always_allowed: folders whose files may be served even before a
    dataset is opened (the default data folder, the work and runs folders)."""

    def __init__(self, *, default_dir: Path, cache_dir: Path, always_allowed: tuple = ()) -> None:
        self.default_dir = Path(default_dir)
        self.cache_dir = Path(cache_dir)
        self.always_allowed = tuple(Path(p) for p in (default_dir, *always_allowed))
        self._indexes: dict[Path, object] = {}
        self._lock = threading.Lock()

    def open(self, data_dir: Path | str | None = None, *, refresh: bool = False):
        """The index of `data_dir` (default: `default_dir`), built on first use or when
        `refresh` is asked for."""
        from core.data.index import index_dataset

        root = Path(data_dir or self.default_dir).expanduser().resolve()
        with self._lock:
            if refresh or root not in self._indexes:
                self._indexes[root] = index_dataset(root, cache_dir=self.cache_dir)
            return self._indexes[root]

    def allowed_roots(self) -> list[Path]:
        """Folders whose files the web app may serve: every opened dataset and the folders
        always allowed."""
        roots = {p.resolve() for p in self.always_allowed}
        with self._lock:
            roots.update(self._indexes)
        return sorted(roots)


__all__ = ["Datasets"]
