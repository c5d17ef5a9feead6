"""The xBD folders one process has opened: each indexed once (core.data.index) and kept,
and the folders the web app may serve files from."""

from __future__ import annotations

import threading
from pathlib import Path

from core.errors import DataError


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

    def open(self, data_dir: Path | str | None = None, *, refresh: bool = False,
             within: tuple[Path, ...] | None = None):
        """The index of `data_dir` (default: `default_dir`), built on first use or when
        `refresh` is asked for. With `within`, only a folder that is (after resolving links)
        one of those folders or under one opens; any other raises DataError."""
        from core.data.index import index_dataset

        root = Path(data_dir or self.default_dir).expanduser().resolve()
        if within is not None:
            _require_within(root, within, shown=data_dir or self.default_dir)
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


def _require_within(root: Path, roots: tuple[Path, ...], shown) -> None:
    allowed = [Path(r).expanduser().resolve() for r in roots]
    if not any(root == r or r in root.parents for r in allowed):
        names = ", ".join(str(r) for r in allowed)
        raise DataError(f"This app is reachable from other machines, so its folder box opens only "
                        f"folders under {names}; {shown} is not one. Move the dataset there, or restart "
                        "the app with --data pointing at it (or with --any-folder to open any folder).")


__all__ = ["Datasets"]
