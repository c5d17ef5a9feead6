"""Index an xBD-like folder from file names alone; parse labels lazily.

`index_dataset(root)` walks at most three folder levels below `root` with `os.scandir`,
keeps the files whose names parse (core.data.names) and pairs them into scenes. No file
is opened at index time. Layouts recognised (see docs/xbd.md):

- official release: `<root>/<split>/{images,labels,targets}` (train, test, tier3, hold, or
  any folder holding images/ that is not named like a disaster) -> `Scene.split` = folder
- per-disaster grouping: `<root>/<disaster>/{images,labels}` -> split None
  (`<root>/<split>/<disaster>/images` keeps the split when it is an official split name)
- `<root>/{images,labels}` directly, or a flat folder of images and labels -> split None
- the competition-era test set `test_{pre|post}_{id}.png` -> disaster None
- 512 px course tiles `..._disaster_part{N}.png`

Part tiles and labels: the tile `X_post_disaster_part2.png` uses `X_post_disaster_part2.json`
when present, else the full-tile `X_post_disaster.json`. A full-tile label is cropped to the
tile's quadrant when drawn or rasterised: part 1 = top-left, part 2 = top-right, part 3 =
bottom-left, part 4 = bottom-right (core.data.masks applies this; pass `part=scene.part`).

Label parsing happens on demand: `label()` parses one file fully (core.data.labels'
LRU cache); `scene_info()`, `filter(damage=...)` and `counts()` use light summaries,
stored in a persistent JSON cache under `cache_dir` keyed by label path, mtime_ns and size,
so a second open of the full release parses nothing.

Nothing checks that the files themselves are sound until they are read; `check_files()`
reads every one of them (images decoded in full, labels parsed in full) in a process pool
and records a problem for each bad file.
"""

from __future__ import annotations

import difflib
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from core.data import labels as _labels
from core.data.names import ParsedName, file_name_for, parse_name, scene_id_for
from core.io import atomic_file
from core.errors import DataError, ImageError, LabelError
from core.types import DAMAGE_CLASSES, UNCLASSIFIED, Label, Problem, Scene

#: disaster_type of each of the 19 xBD disasters (used before any label is parsed)
DISASTER_TYPE_BY_NAME: dict[str, str] = {
    "guatemala-volcano": "volcano",
    "hurricane-florence": "flooding",
    "hurricane-harvey": "flooding",
    "hurricane-matthew": "wind",
    "hurricane-michael": "wind",
    "mexico-earthquake": "earthquake",
    "midwest-flooding": "flooding",
    "palu-tsunami": "tsunami",
    "santa-rosa-wildfire": "fire",
    "socal-fire": "fire",
    "joplin-tornado": "wind",
    "lower-puna-volcano": "volcano",
    "moore-tornado": "wind",
    "nepal-flooding": "flooding",
    "pinery-bushfire": "fire",
    "portugal-wildfire": "fire",
    "sunda-tsunami": "tsunami",
    "tuscaloosa-tornado": "wind",
    "woolsey-fire": "fire",
}
OFFICIAL_SPLITS: tuple[str, ...] = ("train", "test", "tier3", "hold")
#: values accepted by `DatasetIndex.filter(damage=...)`
DAMAGE_FILTERS: tuple[str, ...] = DAMAGE_CLASSES + (UNCLASSIFIED, "any-damage", "no-buildings")
DATA_DIRS = frozenset({"images", "labels", "targets"})
MAX_DEPTH = 3  # folder levels below the root that are searched
SUMMARY_CACHE_FILE = "xbd-label-summaries.json"
_EXAMPLE = "hurricane-matthew_00000066_pre_disaster.png"
_POINT_AT = ("Point --data (or the folder box) at an xBD folder (one holding images/ and labels/, "
             "or train/, test/, tier3/, hold/ each holding them, or one folder per disaster).")


@dataclass(frozen=True)
class SceneInfo:
    """What a scene's labels say, for lists and filters.

    `disaster_type` comes from the label metadata when known, else from the table of the
    19 xBD disasters. `counts` is `Label.counts()` of the post label (None when there is
    no readable post label). `has_labels` is True when the scene has a readable post
    label or any pre label file.
    """

    disaster_type: str | None
    counts: dict[str, int] | None
    has_labels: bool


@dataclass(frozen=True)
class FileCheck:
    """What `DatasetIndex.check_files` found: `files` read, and the `problems` (each bad
    file with what is wrong, and pre/post pairs of different sizes) in path order."""

    files: int
    problems: list[Problem]


# -- persistent summary cache ------------------------------------------------------------

class _SummaryCache:
    """JSON file {path: [mtime_ns, size, record]} of label summaries, shared across opens."""

    def __init__(self, cache_dir: Path):
        self.file = Path(cache_dir) / SUMMARY_CACHE_FILE
        self._entries: dict[str, list] | None = None
        self._dirty: dict[str, list] = {}
        self.last_flush = 0.0

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != _labels.SUMMARY_VERSION:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str, mtime_ns: int, size: int) -> dict | None:
        if self._entries is None:
            self._entries = self._load()
        hit = self._entries.get(key)
        if isinstance(hit, list) and len(hit) == 3 and hit[0] == mtime_ns and hit[1] == size:
            return hit[2] if isinstance(hit[2], dict) else None
        return None

    def put(self, key: str, mtime_ns: int, size: int, record: dict) -> None:
        if self._entries is None:
            self._entries = self._load()
        self._entries[key] = self._dirty[key] = [mtime_ns, size, record]

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def flush(self) -> None:
        """Merge new entries into the file on disk (another index may have written it)."""
        if not self._dirty:
            return
        merged = self._load()
        merged.update(self._dirty)
        with atomic_file(self.file) as fh:
            json.dump({"version": _labels.SUMMARY_VERSION, "entries": merged}, fh, separators=(",", ":"))
        self._entries = merged
        self._dirty.clear()
        self.last_flush = time.monotonic()


# -- the index -----------------------------------------------------------------------------

class DatasetIndex:
    """Scenes of one data folder, found from file names, with lazily parsed labels.

    `scenes` is sorted by scene_id. `problems` lists what is wrong with single files; it
    grows when later work (parsing a label, reading an image header) finds more. Safe to
    share between threads.
    """

    def __init__(self, root: Path, scenes: list[Scene], problems: list[Problem] | None = None, *,
                 cache_dir: Path | None = None):
        self.root = Path(root)
        self.scenes: list[Scene] = sorted(scenes, key=lambda s: s.scene_id)
        self.problems: list[Problem] = []
        self._by_id = {s.scene_id: s for s in self.scenes}
        self._lock = threading.RLock()
        self._seen_problems: set[tuple[str, str]] = set()
        self._summaries: dict[str, dict] = {}  # label path -> {"summary": ...} | {"error": ...}
        self._cache = _SummaryCache(cache_dir) if cache_dir is not None else None
        for p in problems or []:
            self.report(p.path, p.message)

    def __len__(self) -> int:
        return len(self.scenes)

    def __repr__(self) -> str:
        return f"DatasetIndex({str(self.root)!r}, {len(self.scenes)} scenes, {len(self.problems)} problems)"

    # -- problems --------------------------------------------------------------------------
    def report(self, path: Path | str, message: str) -> Problem:
        """Record a problem with one file (once per path and message) and return it."""
        problem = Problem(Path(path), message)
        with self._lock:
            key = (str(problem.path), message)
            if key not in self._seen_problems:
                self._seen_problems.add(key)
                self.problems.append(problem)
        return problem

    # -- lookup ----------------------------------------------------------------------------
    def get(self, scene_id: str) -> Scene:
        """The scene with this id; DataError (with close matches) when there is none."""
        scene = self._by_id.get(scene_id)
        if scene is not None:
            return scene
        ids = list(self._by_id)
        close = difflib.get_close_matches(str(scene_id), ids, n=3, cutoff=0.75) if len(ids) < 50_000 else []
        hint = f" Did you mean {', '.join(close)}?" if close else (
            f" Scene ids look like {ids[0]}." if ids else "")
        raise DataError(f"No scene {scene_id!r} in {self.root} ({len(ids)} scenes).{hint} "
                        "If files were added since, open the folder again.")

    def splits(self) -> list[str]:
        """Sorted split names present (official layout only)."""
        return sorted({s.split for s in self.scenes if s.split is not None})

    def disasters(self) -> list[str]:
        """Sorted disaster names present (the competition test set has none)."""
        return sorted({s.disaster for s in self.scenes if s.disaster is not None})

    def disaster_types(self) -> list[str]:
        """Sorted disaster types present; may parse labels of scenes whose disaster name is
        not one of the 19 xBD disasters."""
        types = {self.disaster_type(s) for s in self.scenes}
        self._flush_if_dirty()
        return sorted(t for t in types if t is not None)

    # -- labels ----------------------------------------------------------------------------
    def label(self, scene: Scene, phase: str) -> Label | None:
        """The parsed label of `scene`'s `phase` ("pre" or "post"); None when the scene has no
        such label file. Raises LabelError (and records a problem) when the file is broken."""
        path = scene.label(phase)
        if path is None:
            return None
        try:
            return _labels.load_label(path)
        except LabelError as err:
            self.report(path, str(err))
            raise

    def label_summary(self, scene: Scene, phase: str) -> dict | None:
        """The light summary (core.data.labels.summarize_label) of a scene's label; None
        when it has no such label or the label is broken (then a problem is recorded)."""
        path = scene.label(phase)
        if path is None:
            return None
        out = self._summary(path)
        self._flush_if_dirty(throttle=True)
        return out

    def _known_summary(self, path: Path) -> dict | None:
        """A summary already in memory or in the persistent cache (never parses)."""
        key = str(path)
        with self._lock:
            rec = self._summaries.get(key)
            if rec is None and self._cache is not None:
                try:
                    st = os.stat(path)
                except OSError:
                    return None
                rec = self._cache.get(key, st.st_mtime_ns, st.st_size)
                if rec is not None:
                    self._remember(path, rec)
        return rec.get("summary") if rec else None

    def _summary(self, path: Path) -> dict | None:
        key = str(path)
        with self._lock:
            rec = self._summaries.get(key)
        if rec is not None:
            return rec.get("summary")
        try:
            st = os.stat(path)
        except OSError as err:
            rec = {"error": f"Label file {path} cannot be read ({err.strerror or err})."}
            with self._lock:
                self._remember(path, rec)
            return None
        with self._lock:
            if self._cache is not None:
                rec = self._cache.get(key, st.st_mtime_ns, st.st_size)
        if rec is None:
            try:
                rec = {"summary": _labels.summarize_label(path)}
            except LabelError as err:
                rec = {"error": str(err)}
            with self._lock:
                if self._cache is not None:
                    self._cache.put(key, st.st_mtime_ns, st.st_size, rec)
        with self._lock:
            self._remember(path, rec)
        return rec.get("summary")

    def _remember(self, path: Path, rec: dict) -> None:
        self._summaries[str(path)] = rec
        if "error" in rec:
            self.report(path, str(rec["error"]))

    def flush_cache(self) -> None:
        """Write label summaries computed so far to the persistent cache (if any)."""
        with self._lock:
            if self._cache is not None:
                self._cache.flush()

    def _flush_if_dirty(self, *, throttle: bool = False) -> None:
        with self._lock:
            c = self._cache
            if c is None or not c.dirty:
                return
            if throttle and time.monotonic() - c.last_flush < 2.0:
                return  # single look-ups: at most one write every 2 s
            try:
                c.flush()
            except OSError as err:  # a read-only cache folder must not break browsing
                self.report(c.file, f"Cannot write the label summary cache ({err}); "
                                    "labels will be parsed again next time.")

    def disaster_type(self, scene: Scene) -> str | None:
        """The scene's disaster type: label metadata when already parsed or cached, else the
        table of the 19 xBD disasters, else (unknown name) parsed from its label."""
        for phase in ("post", "pre"):
            path = scene.label(phase)
            if path is not None:
                s = self._known_summary(path)
                if s is not None and s.get("disaster_type"):
                    return s["disaster_type"]
        if scene.disaster in DISASTER_TYPE_BY_NAME:
            return DISASTER_TYPE_BY_NAME[scene.disaster]
        for phase in ("post", "pre"):
            path = scene.label(phase)
            if path is not None:
                s = self._summary(path)
                if s is not None and s.get("disaster_type"):
                    return s["disaster_type"]
        return None

    def scene_info(self, scene: Scene) -> SceneInfo:
        """Disaster type, post-label building counts and whether the scene has labels."""
        post = self._summary(scene.post_label) if scene.post_label is not None else None
        info = SceneInfo(
            disaster_type=self.disaster_type(scene),
            counts=dict(post["counts"]) if post is not None else None,
            has_labels=post is not None or scene.pre_label is not None,
        )
        self._flush_if_dirty(throttle=True)
        return info

    # -- filters and counts ----------------------------------------------------------------
    def filter(self, *, split: str | None = None, disaster: str | None = None,
               disaster_type: str | None = None, damage: str | None = None,
               query: str | None = None) -> list[Scene]:
        """Scenes matching every given criterion (None or "" = any), in scene_id order.

        `damage` is one of DAMAGE_FILTERS: a damage class (>= 1 building of it in the post
        label), "any-damage" (>= 1 minor, major or destroyed), or "no-buildings" (a post
        label with no building); scenes without a readable post label never match it.
        `query` is a case-insensitive substring of the scene id. Split, disaster and query
        never parse labels; disaster_type rarely does; damage reads label summaries.
        """
        if damage and damage not in DAMAGE_FILTERS:
            raise ValueError(f"damage must be one of {', '.join(DAMAGE_FILTERS)}; got {damage!r}")
        out = self.scenes
        if split:
            out = [s for s in out if s.split == split]
        if disaster:
            d = disaster.lower()
            out = [s for s in out if s.disaster == d]
        if query and query.strip():
            q = query.strip().lower()
            out = [s for s in out if q in s.scene_id.lower()]
        if disaster_type:
            t = disaster_type.lower()
            out = [s for s in out if self.disaster_type(s) == t]
        if damage:
            out = [s for s in out if self._has_damage(s, damage)]
        self._flush_if_dirty()
        return list(out)

    def _has_damage(self, scene: Scene, damage: str) -> bool:
        if scene.post_label is None:
            return False
        summary = self._summary(scene.post_label)
        if summary is None:
            return False
        c = summary["counts"]
        if damage == "any-damage":
            return c["minor-damage"] + c["major-damage"] + c["destroyed"] > 0
        if damage == "no-buildings":
            return c["total"] == 0
        return c.get(damage, 0) > 0

    def counts(self) -> dict:
        """Totals: "scenes"; scenes per "split", "disaster" and "disaster_type" (values
        present only); "damage" = buildings per class (plus un-classified and total) over
        every post label; "problems" = number of problems known after reading them."""
        damage = {name: 0 for name in DAMAGE_CLASSES + (UNCLASSIFIED, "total")}
        for s in self.scenes:
            if s.post_label is not None:
                summary = self._summary(s.post_label)
                if summary is not None:
                    for k, v in summary["counts"].items():
                        damage[k] = damage.get(k, 0) + int(v)
        out = {
            "scenes": len(self.scenes),
            "split": dict(sorted(Counter(s.split for s in self.scenes if s.split).items())),
            "disaster": dict(sorted(Counter(s.disaster for s in self.scenes if s.disaster).items())),
            "disaster_type": dict(sorted(Counter(
                t for t in (self.disaster_type(s) for s in self.scenes) if t).items())),
            "damage": damage,
        }
        self._flush_if_dirty()
        out["problems"] = len(self.problems)
        return out

    # -- images ----------------------------------------------------------------------------
    def check_images(self, scene: Scene) -> list[Problem]:
        """Read the headers of the scene's images; record (and return) a problem for an
        unreadable image or a pre/post pair of different sizes."""
        from core.data.images import image_size

        found: list[Problem] = []
        sizes = {}
        for path in (scene.pre_image, scene.post_image):
            if path is None:
                continue
            try:
                sizes[path] = image_size(path)
            except ImageError as err:
                found.append(self.report(path, str(err)))
        mismatch = self._pair_mismatch(scene, sizes)
        return found + ([mismatch] if mismatch else [])

    def _pair_mismatch(self, scene: Scene, sizes: dict) -> Problem | None:
        """Record (and return) a problem when the scene's pre and post images, of `sizes`
        {path: (w, h)}, differ in size; None when they match or a size is unknown."""
        pre, post = sizes.get(scene.pre_image), sizes.get(scene.post_image)
        if pre is None or post is None or pre == post:
            return None
        (w0, h0), (w1, h1) = pre, post
        return self.report(scene.post_image, (
            f"The pre image of {scene.scene_id} is {w0}x{h0} px but the post image is "
            f"{w1}x{h1} px; pairs must have one size. Re-export one of them."))

    def check_files(self, *, workers: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> FileCheck:
        """Read every file of the index: each image (pre, post, target) decoded in full,
        each label parsed in full, in a pool of `workers` processes (default: one per CPU).
        Records a problem for every file that cannot be used (an unreadable or too large
        image, a label that is not JSON, lacks keys or has a malformed polygon) and for
        pre/post pairs of different sizes. `progress(done, total)` is called as files
        finish. The problems found are also recorded in `problems`."""
        from PIL import Image

        jobs: dict[str, str] = {}
        for scene in self.scenes:
            jobs.update((str(p), "image") for p in (scene.pre_image, scene.post_image, scene.target) if p)
            jobs.update((str(p), "label") for p in (scene.pre_label, scene.post_label) if p)
        items = sorted(jobs.items())
        chunks = [items[i:i + _CHECK_CHUNK] for i in range(0, len(items), _CHECK_CHUNK)]
        sizes: dict[Path, tuple[int, int]] = {}
        found: list[Problem] = []
        done = 0
        if progress:
            progress(0, len(items))
        for results in _checked(chunks, workers or os.cpu_count() or 2, Image.MAX_IMAGE_PIXELS):
            for path, size, error in results:
                if error is not None:
                    found.append(self.report(path, error))
                elif size is not None:
                    sizes[Path(path)] = (size[0], size[1])
            done += len(results)
            if progress:
                progress(done, len(items))
        found.extend(filter(None, (self._pair_mismatch(scene, sizes) for scene in self.scenes)))
        return FileCheck(files=len(items), problems=sorted(found, key=lambda p: str(p.path)))

    def load_image(self, scene: Scene, phase: str):
        """The scene's `phase` image as uint8 RGB (core.data.images.load_rgb); records a
        problem before re-raising ImageError for a missing or corrupt file."""
        from core.data.images import load_rgb

        path = scene.image(phase)
        if path is None:
            raise ImageError(f"Scene {scene.scene_id} has no {phase}-disaster image.")
        try:
            return load_rgb(path)
        except ImageError as err:
            self.report(path, str(err))
            raise


# -- checking files (in worker processes) ------------------------------------------------

_CHECK_CHUNK = 32  # files per task: few round trips, and progress still moves


def _checked(chunks: list, workers: int, max_pixels: int | None):
    """The results of `_check_chunk` for each chunk, as they finish: in this process when
    there is one chunk or one worker (starting processes costs more), else in `workers`
    spawned processes (safe from the threaded app; they get this process's pixel limit)."""
    if len(chunks) <= 1 or workers <= 1:
        yield from (_check_chunk(chunk, max_pixels) for chunk in chunks)
        return
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_check_chunk, chunk, max_pixels) for chunk in chunks]
        yield from (future.result() for future in as_completed(futures))


def _check_chunk(jobs: list[tuple[str, str]], max_pixels: int | None) -> list[tuple]:
    """Check (path, "image" | "label") files with `max_pixels` as PIL's limit (in a worker
    process, or in this one): (path, (w, h) of an image or None, None) for a sound file,
    (path, None, what is wrong) for a bad one."""
    from PIL import Image

    from core.data.images import verify_image

    Image.MAX_IMAGE_PIXELS = max_pixels
    out = []
    for path, kind in jobs:
        try:
            if kind == "image":
                out.append((path, verify_image(path), None))
            else:
                _labels.load_label(path)
                out.append((path, None, None))
        except (ImageError, LabelError) as err:
            out.append((path, None, str(err)))
        except Exception as err:  # noqa: BLE001 - one odd file must not end the check
            out.append((path, None, f"{path} cannot be read ({type(err).__name__}: {err})."))
    return out


# -- scanning ------------------------------------------------------------------------------

@dataclass
class _Found:
    key: str  # the path as a string, for sorting
    path: Path
    parsed: ParsedName
    split: str | None


def _split_for(rel_dir: tuple[str, ...], disaster: str | None) -> str | None:
    """The split of a file in folder `rel_dir` (relative to the root)."""
    if not rel_dir or rel_dir[-1].lower() not in DATA_DIRS or len(rel_dir) < 2:
        return None  # flat files, or <root>/images directly

    def disaster_like(name: str) -> bool:
        low = name.lower()
        return low == disaster or low in DISASTER_TYPE_BY_NAME

    holder = rel_dir[-2]
    if not disaster_like(holder):
        return holder
    if len(rel_dir) >= 3 and rel_dir[-3].lower() in OFFICIAL_SPLITS:
        return rel_dir[-3]  # <root>/<split>/<disaster>/images
    return None


def _scan(root: Path, skip: set[str]) -> tuple[list[_Found], dict[str, int], list[Problem]]:
    found: list[_Found] = []
    stats = {"folders": 0, "other_files": 0, "tif": 0}
    problems: list[Problem] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    visited: set[str] = set()
    while stack:
        folder, rel = stack.pop()
        try:
            real = os.path.realpath(folder)
        except OSError:
            continue
        if real in visited or (rel and real in skip):
            continue
        visited.add(real)
        stats["folders"] += 1
        in_data_dir = bool(rel) and rel[-1].lower() in DATA_DIRS
        splits: dict[str | None, str | None] = {}  # disaster -> split, for this folder
        try:
            entries = list(os.scandir(folder))
        except OSError as err:
            problems.append(Problem(folder, f"Cannot list this folder ({err.strerror or err}); skipped."))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            if is_dir:
                if not in_data_dir and len(rel) < MAX_DEPTH and name != "__pycache__":
                    stack.append((Path(entry.path), rel + (name,)))
                continue
            parsed = parse_name(name)
            if parsed is None:
                stats["other_files"] += 1
                low = name.lower()
                if low.endswith((".tif", ".tiff")) and "_disaster" in low:
                    stats["tif"] += 1
                elif in_data_dir and low.endswith((".png", ".json")):
                    problems.append(Problem(Path(entry.path), "Not named like an xBD file "
                                            f"(e.g. {_EXAMPLE}); skipped."))
                continue
            if parsed.disaster not in splits:
                splits[parsed.disaster] = _split_for(rel, parsed.disaster)
            found.append(_Found(entry.path, folder / name, parsed, splits[parsed.disaster]))
    return found, stats, problems


def index_dataset(root: Path | str, *, cache_dir: Path | None = None) -> DatasetIndex:
    """Index the xBD-like folder `root` by file names (see the module docstring).

    `cache_dir`, when given, holds the persistent label-summary cache. Raises DataError
    when `root` does not exist, is not a folder, or holds no xBD-like images.
    """
    given = Path(root).expanduser()
    if not given.exists():
        raise DataError(f"Data folder {given} does not exist. {_POINT_AT}")
    if not given.is_dir():
        raise DataError(f"{given} is a file, not a folder. {_POINT_AT}")
    root = given.resolve()
    skip = {os.path.realpath(cache_dir)} if cache_dir is not None else set()
    found, stats, problems = _scan(root, skip)
    found.sort(key=lambda f: f.key)

    files: dict[tuple[str, str, str], _Found] = {}
    for f in found:
        sid = scene_id_for(f.parsed)
        key = (sid, f.parsed.phase, f.parsed.kind)
        first = files.get(key)
        if first is not None:
            problems.append(Problem(f.path, f"Duplicate name: {first.path} has the same name; "
                                            "this copy is ignored. Keep one of them."))
            continue
        files[key] = f

    scenes: list[Scene] = []
    used: set[tuple[str, str, str]] = set()
    image_ids = sorted({k[0] for k in files if k[2] == "image"})
    for sid in image_ids:
        pre, post = files.get((sid, "pre", "image")), files.get((sid, "post", "image"))
        some = post or pre
        p = some.parsed
        used.update({(sid, "pre", "image"), (sid, "post", "image")})
        label_paths = {}
        for phase in ("pre", "post"):
            key = (sid, phase, "label")
            if key not in files and p.part is not None:
                base = ParsedName(p.disaster, p.tile_id, phase, None, "label")
                key = (scene_id_for(base), phase, "label")
            hit = files.get(key)
            if hit is not None:
                used.add(key)
            label_paths[phase] = hit.path if hit else None
        target = files.get((sid, "post", "target"))
        used.update({(sid, "post", "target"), (sid, "pre", "target")})
        for have, missing, phase in ((post, pre, "pre"), (pre, post, "post")):
            if have is not None and missing is None:
                expected = file_name_for(p.disaster, p.tile_id, phase, part=p.part)
                problems.append(Problem(have.path, (
                    f"No {phase}-disaster image for scene {sid} (expected {expected} next to "
                    f"this file); the scene is shown with its {have.parsed.phase} image only.")))
        scenes.append(Scene(
            scene_id=sid,
            disaster=p.disaster,
            split=(post.split if post else pre.split),
            part=p.part,
            pre_image=pre.path if pre else None,
            post_image=post.path if post else None,
            pre_label=label_paths["pre"],
            post_label=label_paths["post"],
            target=target.path if target else None,
        ))
    for key, f in files.items():
        if key not in used:
            what = {"label": "label", "target": "target mask"}.get(f.parsed.kind, f.parsed.kind)
            problems.append(Problem(f.path, f"A {what} without an image (no {key[0]} image found); ignored."))

    if not scenes:
        n_labels = sum(1 for k in files if k[2] == "label")
        if stats["tif"]:
            detail = (f" It holds {stats['tif']} GeoTIFF(s) named like xBD: this app reads the PNG "
                      "release of xBD (images/*.png with labels/*.json).")
        elif n_labels:
            detail = f" It holds {n_labels} xBD label file(s) but no image named like them."
        else:
            detail = (f" (searched {stats['folders']} folder(s), up to {MAX_DEPTH} levels deep; "
                      f"{stats['other_files']} other file(s)).")
        raise DataError(f"{root} contains no files named like {_EXAMPLE}.{detail} {_POINT_AT}")
    return DatasetIndex(root, scenes, problems, cache_dir=cache_dir)
