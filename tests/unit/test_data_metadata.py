"""DiffusionSat metadata: the normalisation of the spec, and the xBD recipe per scene."""

import pytest

from core.data.index import index_dataset
from core.data.metadata import NO_METADATA, decode_metadata, encode_metadata, scene_metadata
from core.errors import DataError
from tests import xbd_trees as T

SPEC_VECTOR = (925.8798, 345.2111, 411.4541, 0.0, 308.3333, 166.6667, 354.8387)


def test_spec_example_decodes_and_round_trips():
    d = decode_metadata(SPEC_VECTOR)
    assert round(d["lon"], 2) == 153.32 and round(d["lat"], 2) == -27.86
    assert round(d["gsd"], 3) == 0.411 and d["cloud_cover"] == 0.0
    assert (d["year"], d["month"], d["day"]) == (2017, 2, 11)
    again = encode_metadata(**d)
    assert again == pytest.approx(SPEC_VECTOR, abs=1e-3)


def test_encode_matches_the_spec_formulae():
    vec = encode_metadata(153.32, -27.86, 0.411, 0.0, 2017, 2, 11)
    assert len(vec) == 7 and all(isinstance(v, float) for v in vec)
    assert vec == pytest.approx(((153.32 + 180) / 360 * 1000, (90 - 27.86) / 180 * 1000, 411.0, 0.0,
                                 37 / 120 * 1000, 2 / 12 * 1000, 11 / 31 * 1000))
    assert vec == pytest.approx(SPEC_VECTOR, abs=0.5)  # the spec rounds its raw values


def test_raw_values_passed_by_mistake_are_refused():
    with pytest.raises(DataError, match="year"):
        encode_metadata(-73.97, 40.79, 0.92, 0.08, 5, 5, 10)
    with pytest.raises(DataError, match="lat"):
        encode_metadata(10, 95, 0.5, 0, 2020, 1, 1)
    with pytest.raises(DataError, match="7 values"):
        decode_metadata([1, 2, 3])


def test_no_metadata_is_seven_zeros():
    assert NO_METADATA == (0.0,) * 7


def _centroid_vec(cx, cy):
    return ((T.ORIGIN[0] + cx * T.DEG_PER_PX + 180) / 360 * 1000,
            (T.ORIGIN[1] - cy * T.DEG_PER_PX + 90) / 180 * 1000)


def test_scene_metadata_follows_the_xbd_recipe(tmp_path):
    index = index_dataset(T.make_flat(tmp_path))
    scene = index.get("socal-fire_00000022")
    vec = scene_metadata(index, scene)
    lon, lat = _centroid_vec(208, 176)  # centre of the first building of the post label
    assert vec == pytest.approx((lon, lat, 2.0 * 1024 / 512 * 1000, 0.0, 37 / 120 * 1000,
                                 2 / 12 * 1000, 11 / 31 * 1000))
    d = decode_metadata(vec)
    assert (d["year"], d["month"], d["day"], d["gsd"]) == (2017, 2, 11, pytest.approx(4.0))
    assert scene_metadata(index, scene, resolution=1024)[2] == pytest.approx(2000.0)
    assert scene_metadata(index, scene, phase="pre") == pytest.approx(vec)


def test_centroid_falls_back_to_the_pre_label_then_to_zeros(tmp_path):
    root = T.make_flat(tmp_path, scenes=())
    first = ("no-damage", [T.box(0, 0, 100, 100)])
    T.write_scene(root, None, "socal-fire", "00000001")
    T.write_json(root / "socal-fire_00000001_pre_disaster.json",
                 T.label_dict("socal-fire", "00000001", "pre", [first]))
    T.write_json(root / "socal-fire_00000001_post_disaster.json",
                 T.label_dict("socal-fire", "00000001", "post", (), capture_date="2018-11-09T18:00:00.000Z"))
    T.write_scene(root, root, "socal-fire", "00000002", buildings=())
    T.write_scene(root, None, "socal-fire", "00000003")
    index = index_dataset(root)

    vec = scene_metadata(index, index.get("socal-fire_00000001"))
    assert vec[:2] == pytest.approx(_centroid_vec(50, 50))
    assert decode_metadata(vec)["year"] == 2018  # date of the post label itself

    empty = scene_metadata(index, index.get("socal-fire_00000002"))
    assert empty[:2] == (0.0, 0.0) and empty[2] == pytest.approx(4000.0)
    assert scene_metadata(index, index.get("socal-fire_00000003")) == NO_METADATA


def test_part_tile_gsd_uses_the_512_px_side(tmp_path):
    index = index_dataset(T.make_parts(tmp_path))
    vec = scene_metadata(index, index.get("guatemala-volcano_00000004_part1"), resolution=512)
    assert vec[2] == pytest.approx(2000.0)  # gsd 2.0 m, a 512 px tile generated at 512 px


def test_broken_label_gives_no_metadata_and_a_problem(tmp_path):
    root = T.make_flat(tmp_path, scenes=())
    T.write_scene(root, None, "socal-fire", "00000001")
    T.write_not_json(root / "socal-fire_00000001_post_disaster.json")
    index = index_dataset(root)
    assert scene_metadata(index, index.scenes[0]) == NO_METADATA
    assert len(index.problems) == 1
