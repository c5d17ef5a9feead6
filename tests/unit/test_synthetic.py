"""The synthetic demo scenes: official xBD layout and label schema, labels that agree with
the pictures, and a generator that rewrites the bundled files byte for byte.

The scenes are generated once per module into a temporary folder (a few seconds each);
every other test reads those files.
"""

import json
import math
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.cli import main as cli_main
from core.data.synthetic import DEMO_SCENES, render_scene, write_demo_scenes
from core.types import DAMAGE_CLASSES, DISASTER_TYPES, MASK_VALUE

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "demo-scenes"
NAME = re.compile(r"^(?P<disaster>[a-z0-9]+(?:-[a-z0-9]+)*)_(?P<id>\d{8})_(?P<phase>pre|post)"
                  r"_disaster(?P<target>_target)?\.(?P<ext>png|json)$")
POINT = r"-?\d+(?:\.\d+)? -?\d+(?:\.\d+)?"
WKT = re.compile(rf"^POLYGON \(\(({POINT})(, {POINT})+\)\)$")
META_KEYS = {"sensor", "provider_asset_type", "gsd", "capture_date", "off_nadir_angle",
             "pan_resolution", "sun_azimuth", "sun_elevation", "target_azimuth", "disaster",
             "disaster_type", "catalog_id", "original_width", "original_height", "width",
             "height", "id", "img_name"}


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The scenes as the documented command writes them: `python -m core demo-scenes`."""
    out = tmp_path_factory.mktemp("demo-scenes")
    assert cli_main(["demo-scenes", "--out", str(out)]) == 0
    return out, [out / p for p in _files(out)]


@pytest.fixture(scope="module")
def scenes(generated):
    """One record per scene: split, spec, labels, images and target as arrays."""
    root, _ = generated
    out = []
    for spec in DEMO_SCENES:
        base = root / spec.split

        def load(kind, phase, suffix):
            return base / kind / f"{spec.stem(phase)}{suffix}"

        out.append({
            "spec": spec,
            "pre_label": json.loads(load("labels", "pre", ".json").read_text()),
            "post_label": json.loads(load("labels", "post", ".json").read_text()),
            "pre": np.asarray(Image.open(load("images", "pre", ".png"))),
            "post": np.asarray(Image.open(load("images", "post", ".png"))),
            "target": np.asarray(Image.open(load("targets", "post", "_target.png"))),
            "pre_target": np.asarray(Image.open(load("targets", "pre", "_target.png"))),
        })
    return out


def _ring(wkt: str) -> list[tuple[float, float]]:
    inner = wkt[len("POLYGON (("):-2]
    return [tuple(float(v) for v in pair.split()) for pair in inner.split(", ")]


def _mask(ring) -> tuple[slice, slice, np.ndarray]:
    """Pixels whose centres fall inside a pixel-coordinate ring: (rows, cols, mask) of its
    bounding box, so `image[rows, cols][mask]` are the pixels."""
    x0 = max(int(min(x for x, _ in ring)) - 1, 0)
    y0 = max(int(min(y for _, y in ring)) - 1, 0)
    x1 = min(int(max(x for x, _ in ring)) + 2, 1024)
    y1 = min(int(max(y for _, y in ring)) + 2, 1024)
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(img).polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in ring], fill=1)
    return slice(y0, y1), slice(x0, x1), np.asarray(img, dtype=bool)


def _pixels(image: np.ndarray, ring) -> np.ndarray:
    rows, cols, m = _mask(ring)
    return image[rows, cols][m]


# --- the promise: the command regenerates the bundled files byte for byte ---------------


def test_regenerating_gives_the_bundled_files_byte_for_byte(generated):
    root, _ = generated
    hint = "regenerate them with `python -m core demo-scenes --out assets/demo-scenes`"
    assert ASSETS.is_dir(), f"assets/demo-scenes is missing: {hint}"
    assert _files(root) == _files(ASSETS)
    stale = [str(p) for p in _files(root) if (root / p).read_bytes() != (ASSETS / p).read_bytes()]
    assert stale == [], f"bundled demo scenes are stale: {hint}"


def test_a_second_run_writes_identical_bytes(generated, tmp_path):
    root, _ = generated
    spec = min(DEMO_SCENES, key=lambda s: s.number)
    again = write_demo_scenes(tmp_path, specs=[spec])
    scene_files = [p for p in again if p.name != "README.md"]
    assert len(scene_files) == 6
    for p in scene_files:
        assert p.read_bytes() == (root / p.relative_to(tmp_path)).read_bytes(), p.name


def test_render_scene_matches_the_written_files(scenes):
    record = min(scenes, key=lambda r: len(r["post_label"]["features"]["xy"]))
    pre, post, pre_label, post_label, target = render_scene(record["spec"])
    assert pre.shape == post.shape == (1024, 1024, 3) and pre.dtype == np.uint8
    assert target.shape == (1024, 1024) and target.dtype == np.uint8
    np.testing.assert_array_equal(pre, record["pre"])
    np.testing.assert_array_equal(post, record["post"])
    np.testing.assert_array_equal(target, record["target"])
    assert pre_label == record["pre_label"] and post_label == record["post_label"]


# --- layout and names ------------------------------------------------------------------


def test_layout_splits_names_and_complete_pairs(generated):
    root, _ = generated
    assert "synthetic" in (root / "README.md").read_text().lower()
    assert "python -m core demo-scenes --out" in (root / "README.md").read_text()
    assert {p.name for p in root.iterdir() if p.is_dir()} == {"train", "test"}
    assert Counter(s.split for s in DEMO_SCENES) == {"train": 4, "test": 2}
    kinds = {"images": ".png", "labels": ".json", "targets": ".png"}
    for split in ("train", "test"):
        for kind, ext in kinds.items():
            names = sorted(p.name for p in (root / split / kind).iterdir())
            assert names, (split, kind)
            for name in names:
                m = NAME.match(name)
                assert m, name
                assert m["ext"] == ext[1:] and bool(m["target"]) == (kind == "targets")
    for spec in DEMO_SCENES:
        assert NAME.match(spec.stem("pre") + ".png")["disaster"] == spec.disaster
        assert spec.disaster.startswith("demo-") and re.fullmatch(r"\d{8}", spec.tile_id)
        for phase in ("pre", "post"):
            for kind, suffix in (("images", ".png"), ("labels", ".json"),
                                 ("targets", "_target.png")):
                assert (root / spec.split / kind / f"{spec.stem(phase)}{suffix}").is_file()


def test_set_covers_every_disaster_type_and_damage_class(scenes):
    assert len(scenes) >= 6
    assert {r["spec"].disaster_type for r in scenes} == set(DISASTER_TYPES)
    assert len({r["spec"].scene_id for r in scenes}) == len(scenes)
    per_scene = [Counter(f["properties"]["subtype"] for f in r["post_label"]["features"]["xy"])
                 for r in scenes]
    assert set().union(*per_scene) == set(DAMAGE_CLASSES)
    assert sum(c["destroyed"] > 0 for c in per_scene) >= 3
    # exactly one scene has buildings but no damage at all, for the damage filters
    undamaged = [r["spec"].scene_id for r, c in zip(scenes, per_scene) if set(c) == {"no-damage"}]
    assert undamaged == ["demo-flood_00000001"]
    for r, c in zip(scenes, per_scene):
        if set(c) != {"no-damage"}:
            assert len(c) >= 3, (r["spec"].scene_id, c)


# --- images -------------------------------------------------------------------------------


def test_images_are_1024_rgb_8bit_and_targets_one_channel(generated, scenes):
    root, _ = generated
    for p in root.rglob("*.png"):
        with Image.open(p) as im:
            assert im.size == (1024, 1024)
            assert im.mode == ("L" if p.name.endswith("_target.png") else "RGB"), p.name
    for r in scenes:
        assert set(np.unique(r["target"])) <= {0, 1, 2, 3, 4}
        np.testing.assert_array_equal(r["pre_target"], (r["target"] > 0).astype(np.uint8))


# --- labels -------------------------------------------------------------------------------


def test_labels_follow_the_xbd_schema(scenes):
    for r in scenes:
        spec = r["spec"]
        for phase in ("pre", "post"):
            label = r[f"{phase}_label"]
            assert set(label) == {"features", "metadata"}
            assert set(label["features"]) == {"lng_lat", "xy"}
            meta = label["metadata"]
            assert set(meta) == META_KEYS
            assert meta["img_name"] == f"{spec.stem(phase)}.png"
            assert meta["disaster"] == spec.disaster and meta["disaster_type"] == spec.disaster_type
            assert meta["width"] == meta["height"] == meta["original_width"] == 1024
            assert 1.2 <= meta["gsd"] <= 2.5 and 0 < meta["pan_resolution"] < meta["gsd"]
            assert re.fullmatch(r"[0-9A-F]{16}", meta["catalog_id"])
            assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                                meta["id"])
            for key in ("sun_azimuth", "target_azimuth"):
                assert 0 <= meta[key] < 360
            assert 0 < meta["sun_elevation"] < 90 and 0 <= meta["off_nadir_angle"] < 45
            for kind in ("xy", "lng_lat"):
                for f in label["features"][kind]:
                    assert set(f) == {"properties", "wkt"}
                    props = f["properties"]
                    assert props["feature_type"] == "building"
                    assert WKT.match(f["wkt"]), f["wkt"][:80]
                    ring = _ring(f["wkt"])
                    assert ring[0] == ring[-1] and len(ring) >= 5
                    if phase == "pre":
                        assert set(props) == {"feature_type", "uid"}
                    else:
                        assert set(props) == {"feature_type", "uid", "subtype"}
                        assert props["subtype"] in DAMAGE_CLASSES
        pre_meta, post_meta = r["pre_label"]["metadata"], r["post_label"]["metadata"]
        assert pre_meta["id"] != post_meta["id"]


def test_capture_dates_are_iso_and_post_comes_after_pre(scenes):
    for r in scenes:
        dates = [r[f"{p}_label"]["metadata"]["capture_date"] for p in ("pre", "post")]
        for d in dates:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d)
        pre, post = (datetime.fromisoformat(d.replace("Z", "+00:00")) for d in dates)
        assert post > pre


def test_uids_agree_between_xy_lng_lat_pre_and_post(scenes):
    for r in scenes:
        uids = {}
        for phase in ("pre", "post"):
            feats = r[f"{phase}_label"]["features"]
            for kind in ("xy", "lng_lat"):
                uids[phase, kind] = [f["properties"]["uid"] for f in feats[kind]]
        first = uids["pre", "xy"]
        assert len(set(first)) == len(first)
        assert all(v == first for v in uids.values())
        post = r["post_label"]["features"]
        assert [f["properties"]["subtype"] for f in post["xy"]] == [
            f["properties"]["subtype"] for f in post["lng_lat"]]


def test_lng_lat_is_the_same_polygon_at_the_scene_gsd(scenes):
    for r in scenes:
        spec = r["spec"]
        feats = r["post_label"]["features"]
        for fxy, fll in list(zip(feats["xy"], feats["lng_lat"]))[:40]:
            xy, ll = _ring(fxy["wkt"]), _ring(fll["wkt"])
            assert len(xy) == len(ll)
            for (x, y), (lon, lat) in zip(xy, ll):
                assert abs(lon - spec.lon) < 0.05 and abs(lat - spec.lat) < 0.05
                assert (lon > spec.lon) == (x > 0) and (lat < spec.lat) == (y > 0)
            # edge lengths in metres: the pixel edge times the gsd
            (x0, y0), (x1, y1) = xy[0], xy[1]
            (a0, b0), (a1, b1) = ll[0], ll[1]
            m_lon = 111_320.0 * math.cos(math.radians(spec.lat))
            metres = math.hypot((a1 - a0) * m_lon, (b1 - b0) * 110_574.0)
            assert metres == pytest.approx(math.hypot(x1 - x0, y1 - y0) * spec.gsd, rel=1e-3,
                                           abs=0.01)


def test_building_polygons_do_not_overlap(scenes):
    for r in scenes:
        count = np.zeros((1024, 1024), np.int32)
        for f in r["pre_label"]["features"]["xy"]:
            rows, cols, m = _mask(_ring(f["wkt"]))
            count[rows, cols] += m
        assert count.max() <= 1, r["spec"].scene_id


# --- labels agree with the pictures -------------------------------------------------------


def test_target_mask_carries_the_label_class_of_each_building(scenes):
    for r in scenes:
        target = r["target"]
        for f in r["post_label"]["features"]["xy"]:
            value = MASK_VALUE[f["properties"]["subtype"]]
            ring = _ring(f["wkt"])
            inside = _pixels(target, ring)
            assert inside.size and (inside == value).all(), r["spec"].scene_id
            if len(ring) == 5:  # rectangles: the centroid is inside
                cx = sum(x for x, _ in ring[:4]) / 4
                cy = sum(y for _, y in ring[:4]) / 4
                assert target[int(cy), int(cx)] == value


def test_damage_shows_in_the_pictures_in_the_order_of_the_classes(scenes):
    """Mean absolute pre->post change inside footprints grows with the damage class."""
    pooled = {name: [] for name in DAMAGE_CLASSES}
    for r in scenes:
        diff = np.abs(r["post"].astype(np.int16) - r["pre"].astype(np.int16)).mean(axis=2)
        per = {name: [] for name in DAMAGE_CLASSES}
        for f in r["post_label"]["features"]["xy"]:
            per[f["properties"]["subtype"]].append(float(_pixels(diff, _ring(f["wkt"])).mean()))
        for name, values in per.items():
            pooled[name] += values
        if per["destroyed"] and per["no-damage"]:
            assert np.mean(per["destroyed"]) > 2.5 * np.mean(per["no-damage"]), r["spec"].scene_id
    means = [np.mean(pooled[name]) for name in DAMAGE_CLASSES]
    assert means == sorted(means), dict(zip(DAMAGE_CLASSES, means))
    assert means[3] > 3 * means[0]
    assert means[1] > 1.3 * means[0]
