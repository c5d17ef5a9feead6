"""Label JSON parsing: buildings matched by uid, typed metadata, WKT, and clear errors."""

import json
import os
from datetime import datetime, timezone

import pytest

from core.data import labels as L
from core.errors import LabelError
from core.types import Label
from tests.xbd_trees import (COURTYARD, DEFAULT_BUILDINGS, ORIGIN, DEG_PER_PX, box, label_dict,
                             write_json, write_label_missing_keys, write_not_json)


@pytest.fixture(autouse=True)
def _fresh_cache():
    L.clear_label_cache()
    yield
    L.clear_label_cache()


def test_post_label_parses_buildings_subtypes_rings_and_typed_metadata(tmp_path):
    path = write_json(tmp_path / "socal-fire_00000003_post_disaster.json",
                      label_dict("socal-fire", "00000003", "post"))
    label = L.load_label(path)
    assert isinstance(label, Label) and label.path == path
    assert [b.subtype for b in label.buildings] == [s for s, _ in DEFAULT_BUILDINGS]
    first = label.buildings[0]
    assert first.xy == (((96.0, 96.0), (320.0, 96.0), (320.0, 256.0), (96.0, 256.0)),)  # closing point dropped
    lon, lat = first.lng_lat[0][0]
    assert lon == pytest.approx(ORIGIN[0] + 96 * DEG_PER_PX) and lat == pytest.approx(ORIGIN[1] - 96 * DEG_PER_PX)
    md = label.metadata
    assert md.capture_date == datetime(2017, 2, 11, 10, 20, 30, tzinfo=timezone.utc)
    assert isinstance(md.gsd, float) and md.gsd == 2.0
    assert md.width == 1024 and isinstance(md.width, int)
    assert md.disaster == "socal-fire" and md.disaster_type == "fire"
    assert md.sun_elevation == pytest.approx(60.1)
    assert label.counts() == {"no-damage": 1, "minor-damage": 1, "major-damage": 1, "destroyed": 1,
                              "un-classified": 1, "total": 5}


def test_pre_label_buildings_have_no_subtype(tmp_path):
    path = write_json(tmp_path / "a_00000001_pre_disaster.json", label_dict("a", "00000001", "pre"))
    label = L.load_label(path)
    assert len(label.buildings) == 5 and all(b.subtype is None for b in label.buildings)
    assert label.counts()["total"] == 5 and label.counts()["no-damage"] == 0


def test_lnglat_is_matched_by_uid_not_by_position(tmp_path):
    data = label_dict("a", "00000001", "post")
    data["features"]["lng_lat"].reverse()
    path = write_json(tmp_path / "a_00000001_post_disaster.json", data)
    label = L.load_label(path)
    for b in label.buildings:
        (x, y) = b.xy[0][0]
        (lon, lat) = b.lng_lat[0][0]
        assert lon == pytest.approx(ORIGIN[0] + x * DEG_PER_PX)
        assert lat == pytest.approx(ORIGIN[1] - y * DEG_PER_PX)


def test_empty_building_list_gives_a_label_without_buildings(tmp_path):
    path = write_json(tmp_path / "a_00000001_post_disaster.json", label_dict("a", "00000001", "post", ()))
    label = L.load_label(path)
    assert label.buildings == () and label.counts()["total"] == 0
    summary = L.summarize_label(path)
    assert summary["centroid"] is None and summary["counts"]["total"] == 0


@pytest.mark.parametrize("write, words", [
    (write_not_json, "not valid JSON"),
    (write_label_missing_keys, "metadata"),
    (lambda p: write_json(p, [1, 2, 3]), "JSON list"),
])
def test_broken_label_files_raise_label_error_naming_the_file(tmp_path, write, words):
    path = write(tmp_path / "bad_00000009_post_disaster.json")
    for fn in (L.load_label, L.summarize_label):
        with pytest.raises(LabelError) as err:
            fn(path)
        assert str(path) in str(err.value) and words in str(err.value)


def test_missing_label_file_raises_label_error(tmp_path):
    with pytest.raises(LabelError, match="does not exist"):
        L.load_label(tmp_path / "nope_00000001_post_disaster.json")


def test_malformed_wkt_names_the_file_and_the_building_uid(tmp_path):
    data = label_dict("a", "00000001", "post")
    data["features"]["xy"][2]["wkt"] = "POLYGON ((1 2, 3 4, oops))"
    path = write_json(tmp_path / "a_00000001_post_disaster.json", data)
    with pytest.raises(LabelError) as err:
        L.load_label(path)
    msg = str(err.value)
    assert str(path) in msg and "a-00000001-0002" in msg and "WKT" in msg


def test_wkt_polygon_with_hole_multipolygon_and_empty():
    rings = L.parse_wkt("POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0), (2 2, 4 2, 4 4, 2 2))")
    assert rings == [[((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)),
                      ((2.0, 2.0), (4.0, 2.0), (4.0, 4.0))]]
    multi = L.parse_wkt("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5), (5.2 5.1, 5.8 5.1, 5.8 5.5)))")
    assert len(multi) == 2 and len(multi[0]) == 1 and len(multi[1]) == 2
    assert L.polygon_rings("MULTIPOLYGON (((0 0, 1 0, 1 1, 0 0)), ((5 5, 6 5, 6 6, 5 5)))")[1][0] == (5.0, 5.0)
    assert L.parse_wkt("POLYGON EMPTY") == []
    assert L.parse_wkt("polygon((1e2 -2.5E-1, 3 4 7, 5 6))") == [[((100.0, -0.25), (3.0, 4.0), (5.0, 6.0))]]


@pytest.mark.parametrize("text", [
    "POINT (1 2)", "POLYGON ((1 2, 3 4)", "POLYGON ((1 2, 3 4)))", "POLYGON (1 2, 3 4)",
    "POLYGON ((1 2, x 4, 5 6))", "POLYGON (())", "POLYGON ((1 2, 3 4, 5 6)) junk", "", None,
    "MULTIPOLYGON ((1 2, 3 4, 5 6))",
])
def test_malformed_wkt_raises_value_error(text):
    with pytest.raises(ValueError):
        L.parse_wkt(text)


def test_parse_is_cached_until_the_file_changes(tmp_path):
    path = write_json(tmp_path / "a_00000001_post_disaster.json", label_dict("a", "00000001", "post"))
    first = L.load_label(path)
    assert L.load_label(str(path)) is first
    write_json(path, label_dict("a", "00000001", "post", DEFAULT_BUILDINGS[:2]))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    again = L.load_label(path)
    assert again is not first and len(again.buildings) == 2


def test_summary_agrees_with_the_full_parse(tmp_path):
    buildings = DEFAULT_BUILDINGS + (COURTYARD, ("destroyed", [box(10, 10, 20, 20)]))
    path = write_json(tmp_path / "a_00000001_post_disaster.json",
                      label_dict("a", "00000001", "post", buildings, disaster_type="Flooding"))
    label = L.load_label(path)
    summary = L.summarize_label(path)
    assert summary == L.summary_of(label)
    assert summary["counts"] == label.counts() and summary["counts"]["destroyed"] == 2
    assert summary["disaster_type"] == "flooding"
    lon, lat = summary["centroid"]  # centre of the first box: (208, 176) px
    assert lon == pytest.approx(ORIGIN[0] + 208 * DEG_PER_PX) and lat == pytest.approx(ORIGIN[1] - 176 * DEG_PER_PX)
    json.dumps(summary)  # stored in a JSON cache


def test_unknown_subtype_counts_as_unclassified_and_other_features_are_skipped(tmp_path):
    data = label_dict("a", "00000001", "post", DEFAULT_BUILDINGS[:1])
    data["features"]["xy"][0]["properties"]["subtype"] = "Weird"
    data["features"]["xy"].append({"properties": {"feature_type": "road", "uid": "r1"},
                                   "wkt": "POLYGON ((0 0, 1 0, 1 1, 0 0))"})
    path = write_json(tmp_path / "a_00000001_post_disaster.json", data)
    label = L.load_label(path)
    assert [b.subtype for b in label.buildings] == ["un-classified"]
    assert L.summarize_label(path)["counts"] == label.counts()


def test_bad_metadata_values_become_none_instead_of_failing(tmp_path):
    data = label_dict("a", "00000001", "post")
    data["metadata"].update(gsd="n/a", capture_date="yesterday", width=None)
    path = write_json(tmp_path / "a_00000001_post_disaster.json", data)
    md = L.load_label(path).metadata
    assert md.gsd is None and md.capture_date is None and md.width is None


def test_lon_lat_centroids_have_no_cancellation_error():
    from fractions import Fraction

    from core.data.labels import ring_centroid

    # A 12 m x 8 m rotated building in Florida, as xBD stores it (degrees, closed ring).
    ring = [(-80.12345671, 25.76543211), (-80.12334012, 25.76545102), (-80.12332755, 25.76537988),
            (-80.12344414, 25.76536097), (-80.12345671, 25.76543211)]
    exact = [(Fraction(x), Fraction(y)) for x, y in ring]
    a = cx = cy = Fraction(0)
    for (x0, y0), (x1, y1) in zip(exact, exact[1:] + exact[:1]):
        cross = x0 * y1 - x1 * y0
        a, cx, cy = a + cross, cx + (x0 + x1) * cross, cy + (y0 + y1) * cross
    want = (float(cx / (3 * a)), float(cy / (3 * a)))
    got = ring_centroid(ring)
    assert abs(got[0] - want[0]) < 1e-11 and abs(got[1] - want[1]) < 1e-11  # ~1 µm
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert min(xs) < got[0] < max(xs) and min(ys) < got[1] < max(ys)


def test_a_ring_without_area_falls_back_to_the_mean_of_its_points():
    from core.data.labels import ring_centroid

    assert ring_centroid([(1.0, 2.0), (1.0, 2.0)]) == (1.0, 2.0)
    assert ring_centroid([(0.0, 0.0), (2.0, 2.0), (4.0, 4.0)]) == (2.0, 2.0)
