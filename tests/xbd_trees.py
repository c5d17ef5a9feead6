"""Small fake xBD trees for tests: tiny PNGs and real-format label JSON in every layout.

Labels follow the xBD format exactly (features.xy / features.lng_lat WKT polygons matched
by uid, subtypes only in post labels, a full metadata block). Coordinates in `xy` are in
the 1024 px label space whatever the PNG size, as in the course's resized copies.

Typical use::

    root = make_official(tmp_path)            # train/test/tier3/hold
    index = index_dataset(root)
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 1024
# Default geographic origin: x/y pixels map to lon/lat near Brisbane (the spec's example).
ORIGIN = (153.32, -27.86)
DEG_PER_PX = 1e-5


def box(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """A clockwise rectangle ring (open: without the closing point)."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


# (subtype, rings) per building; rings in 1024 px label space, exterior first.
DEFAULT_BUILDINGS: tuple[tuple[str, list], ...] = (
    ("no-damage", [box(96, 96, 320, 256)]),
    ("minor-damage", [box(400, 128, 576, 320)]),
    ("major-damage", [box(608, 592, 832, 768)]),
    ("destroyed", [box(128, 704, 320, 896)]),
    ("un-classified", [box(704, 128, 864, 320)]),
)
# A building with a hole (a courtyard) for the rasteriser.
COURTYARD = ("no-damage", [box(512, 512, 768, 768), box(576, 576, 704, 704)])

DISASTER_TYPES = {
    "hurricane-matthew": "wind", "socal-fire": "fire", "palu-tsunami": "tsunami",
    "joplin-tornado": "wind", "woolsey-fire": "fire", "mexico-earthquake": "earthquake",
    "guatemala-volcano": "volcano", "hurricane-florence": "flooding", "midwest-flooding": "flooding",
}


def wkt(rings) -> str:
    """A WKT POLYGON with closed rings."""
    parts = []
    for ring in rings:
        pts = list(ring) + [ring[0]]
        parts.append("(" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in pts) + ")")
    return "POLYGON (" + ", ".join(parts) + ")"


def to_lnglat(rings, origin=ORIGIN):
    lon0, lat0 = origin
    return [[(lon0 + x * DEG_PER_PX, lat0 - y * DEG_PER_PX) for x, y in ring] for ring in rings]


def label_dict(disaster: str | None, tile_id: str, phase: str, buildings=DEFAULT_BUILDINGS, *,
               gsd: float = 2.0, capture_date: str = "2017-02-11T10:20:30.000Z",
               disaster_type: str | None = None, origin=ORIGIN, width: int = TILE,
               height: int = TILE) -> dict:
    """A label JSON object in the xBD format. Pre labels carry no subtype."""
    xy, lnglat = [], []
    for i, (subtype, rings) in enumerate(buildings):
        uid = f"{disaster or 'test'}-{tile_id}-{i:04d}"
        props = {"feature_type": "building", "uid": uid}
        if phase == "post" and subtype is not None:
            props["subtype"] = subtype
        xy.append({"properties": dict(props), "wkt": wkt(rings)})
        lnglat.append({"properties": dict(props), "wkt": wkt(to_lnglat(rings, origin))})
    name = (f"{disaster}_{tile_id}_{phase}_disaster.png" if disaster else f"test_{phase}_{tile_id}.png")
    return {
        "features": {"lng_lat": lnglat, "xy": xy},
        "metadata": {
            "sensor": "WORLDVIEW02", "provider_asset_type": "WORLDVIEW02", "gsd": gsd,
            "capture_date": capture_date, "off_nadir_angle": 21.3, "pan_resolution": 0.5,
            "sun_azimuth": 34.5, "sun_elevation": 60.1, "target_azimuth": 120.2,
            "disaster": disaster or "", "disaster_type": disaster_type or DISASTER_TYPES.get(disaster, "wind"),
            "catalog_id": "1030010067D1E600", "original_width": TILE, "original_height": TILE,
            "width": width, "height": height, "id": f"MjU0ODQ4OA.{tile_id}", "img_name": name,
        },
    }


def write_png(path: Path, size: int | tuple[int, int] = 32, *, seed: int = 0, mode: str = "RGB") -> Path:
    """A small deterministic noise PNG (`size` square or (w, h))."""
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_corrupt_png(path: Path, size: int = 32) -> Path:
    """A PNG cut in the middle of its pixel data (a truncated download)."""
    write_png(path, size, seed=99)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_not_json(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{ this is not json", encoding="utf-8")
    return path


def write_label_missing_keys(path: Path) -> Path:
    return write_json(path, {"features": {"xy": [], "lng_lat": []}})  # no "metadata"


def name(disaster: str | None, tile_id: str, phase: str, ext: str = "png", part: int | None = None,
         target: bool = False) -> str:
    if disaster is None:
        return f"test_{phase}_{tile_id}{'_target' if target else ''}.{ext}"
    p = f"_part{part}" if part else ""
    return f"{disaster}_{tile_id}_{phase}_disaster{p}{'_target' if target else ''}.{ext}"


def write_scene(images: Path, labels: Path | None, disaster: str | None, tile_id: str, *,
                buildings=DEFAULT_BUILDINGS, size: int = 32, pre: bool = True, post: bool = True,
                targets: Path | None = None, part: int | None = None, **label_kw) -> dict[str, Path]:
    """Write one scene's images (and labels unless `labels` is None). Returns the paths."""
    out: dict[str, Path] = {}
    for phase, wanted in (("pre", pre), ("post", post)):
        if not wanted:
            continue
        out[f"{phase}_image"] = write_png(images / name(disaster, tile_id, phase, part=part), size,
                                          seed=zlib.crc32(f"{tile_id}{phase}".encode()) % 1000)
        if labels is not None:
            out[f"{phase}_label"] = write_json(labels / name(disaster, tile_id, phase, "json", part=part),
                                               label_dict(disaster, tile_id, phase, buildings, **label_kw))
    if targets is not None:
        targets.mkdir(parents=True, exist_ok=True)
        t = targets / name(disaster, tile_id, "post", part=part, target=True)
        Image.fromarray(np.zeros((size, size), np.uint8)).save(t)
        out["target"] = t
    return out


OFFICIAL = {
    "train": [("hurricane-matthew", "00000001"), ("hurricane-matthew", "00000002"),
              ("socal-fire", "00000003")],
    "test": [("palu-tsunami", "00000004")],
    "tier3": [("joplin-tornado", "00000005"), ("woolsey-fire", "00000006")],
    "hold": [("mexico-earthquake", "00000007")],
}


def make_official(root: Path, splits: dict = OFFICIAL, *, targets: bool = True, **kw) -> Path:
    """`<root>/<split>/{images,labels,targets}` as in the official release."""
    for split, scenes in splits.items():
        for disaster, tile_id in scenes:
            write_scene(root / split / "images", root / split / "labels", disaster, tile_id,
                        targets=root / split / "targets" if targets else None, **kw)
    return root


PER_DISASTER = {"guatemala-volcano": ["00000000", "00000004"], "midwest-flooding": ["00000010"]}


def make_per_disaster(root: Path, groups: dict = PER_DISASTER, **kw) -> Path:
    """`<root>/<disaster>/{images,labels}` (xView2 baseline / course layout)."""
    for disaster, ids in groups.items():
        for tile_id in ids:
            write_scene(root / disaster / "images", root / disaster / "labels", disaster, tile_id, **kw)
    return root


# Per-part labels: one building each, in 512 px coordinates, a different class per part.
PART_BUILDINGS = {p: ((cls, [box(64, 64, 192, 192)]),) for p, cls in
                  zip((1, 2, 3, 4), ("no-damage", "minor-damage", "major-damage", "destroyed"))}


def make_parts(root: Path, disaster: str = "guatemala-volcano", tile_id: str = "00000004", *,
               part_labels: bool = False, buildings=DEFAULT_BUILDINGS, size: int = 32) -> Path:
    """512 px course tiles: `<root>/<disaster>/images/*_part{1-4}.png` with either the
    full-tile labels (default) or per-part labels."""
    images, labels = root / disaster / "images", root / disaster / "labels"
    for part in (1, 2, 3, 4):
        write_scene(images, None, disaster, tile_id, part=part, size=size)
        if part_labels:  # one building per part, in the part's own 512 px space
            for phase in ("pre", "post"):
                write_json(labels / name(disaster, tile_id, phase, "json", part=part),
                           label_dict(disaster, tile_id, phase, PART_BUILDINGS[part], width=512, height=512))
    if not part_labels:
        for phase in ("pre", "post"):
            write_json(labels / name(disaster, tile_id, phase, "json"),
                       label_dict(disaster, tile_id, phase, buildings))
    return root


def make_flat(root: Path, scenes=(("hurricane-florence", "00000021"), ("socal-fire", "00000022")),
              labels: bool = True) -> Path:
    """A flat folder of images (and labels) without any sub-folder."""
    for disaster, tile_id in scenes:
        write_scene(root, root if labels else None, disaster, tile_id)
    return root


def make_unnamed_test(root: Path, ids=("00000", "00001", "00002")) -> Path:
    """The competition-era test set: `<root>/test/images/test_{pre|post}_{id}.png`, no labels."""
    for tile_id in ids:
        write_scene(root / "test" / "images", None, None, tile_id)
    return root


def make_images_labels(root: Path, scenes=(("palu-tsunami", "00000031"), ("woolsey-fire", "00000032"))) -> Path:
    """`<root>/images` and `<root>/labels` directly (the user pointed at one split)."""
    for disaster, tile_id in scenes:
        write_scene(root / "images", root / "labels", disaster, tile_id)
    return root


def template_label_bytes(disaster: str, tile_id: str, phase: str, n_buildings: int, *, seed: int = 0) -> bytes:
    """Label JSON bytes with `n_buildings` random small quadrilaterals (for benchmarks)."""
    rng = np.random.default_rng(seed)
    subtypes = ("no-damage", "no-damage", "no-damage", "minor-damage", "major-damage", "destroyed",
                "un-classified")
    buildings = []
    for _ in range(n_buildings):
        x, y = rng.uniform(0, TILE - 40, 2)
        w, h = rng.uniform(8, 40, 2)
        ring = [(x, y), (x + w, y + rng.uniform(-2, 2)), (x + w, y + h), (x + rng.uniform(-2, 2), y + h)]
        buildings.append((subtypes[rng.integers(len(subtypes))], [ring]))
    return json.dumps(label_dict(disaster, tile_id, phase, buildings)).encode("utf-8")


def tiny_png_bytes(size: int = 8) -> bytes:
    """A valid grey PNG of `size` x `size` written by hand (fast to copy many times)."""
    raw = b"".join(b"\x00" + bytes(size) for _ in range(size))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + tag + data
                + zlib.crc32(tag + data).to_bytes(4, "big"))

    ihdr = size.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
