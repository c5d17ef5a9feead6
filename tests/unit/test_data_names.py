"""File names alone tell the index which scene, phase and kind a file is."""

import pytest

from core.data.names import ParsedName, file_name_for, parse_name, scene_id_for


@pytest.mark.parametrize("filename, expected, scene_id", [
    ("hurricane-matthew_00000066_pre_disaster.png",
     ParsedName("hurricane-matthew", "00000066", "pre", None, "image"), "hurricane-matthew_00000066"),
    ("hurricane-matthew_00000066_post_disaster.json",
     ParsedName("hurricane-matthew", "00000066", "post", None, "label"), "hurricane-matthew_00000066"),
    ("guatemala-volcano_00000004_post_disaster_part1.png",
     ParsedName("guatemala-volcano", "00000004", "post", 1, "image"), "guatemala-volcano_00000004_part1"),
    ("guatemala-volcano_00000004_pre_disaster_part4.json",
     ParsedName("guatemala-volcano", "00000004", "pre", 4, "label"), "guatemala-volcano_00000004_part4"),
    ("socal-fire_00001400_post_disaster_target.png",
     ParsedName("socal-fire", "00001400", "post", None, "target"), "socal-fire_00001400"),
    ("test_pre_00000.png", ParsedName(None, "00000", "pre", None, "image"), "test_00000"),
    ("test_post_00932.png", ParsedName(None, "00932", "post", None, "image"), "test_00932"),
    ("test_post_00932.json", ParsedName(None, "00932", "post", None, "label"), "test_00932"),
    ("Hurricane-Matthew_00000066_PRE_disaster.PNG",
     ParsedName("hurricane-matthew", "00000066", "pre", None, "image"), "hurricane-matthew_00000066"),
])
def test_xbd_names_parse_to_scene_phase_and_kind(filename, expected, scene_id):
    parsed = parse_name(filename)
    assert parsed == expected
    assert scene_id_for(parsed) == scene_id


@pytest.mark.parametrize("filename", [
    "README.md", "captions.jsonl", "foo.png", ".DS_Store",
    "hurricane-matthew_0000066_pre_disaster.png",           # 7 digits
    "hurricane-matthew_00000066_mid_disaster.png",          # not pre/post
    "hurricane-matthew_00000066_pre_disaster.tif",          # GeoTIFF release
    "hurricane-matthew_00000066_pre_disaster_part5.png",    # parts are 1..4
    "hurricane-matthew_00000066_post_disaster_target.json",  # targets are PNG
    "hurricane-matthew_00000066_pre_disaster-3fa2.png",     # a cached thumbnail
    "test_mid_00000.png",
])
def test_unrelated_files_are_not_xbd_files(filename):
    assert parse_name(filename) is None


@pytest.mark.parametrize("disaster, tile_id, phase, part, kind", [
    ("midwest-flooding", "00000010", "post", None, "image"),
    ("midwest-flooding", "00000010", "pre", 3, "label"),
    ("midwest-flooding", "00000010", "post", None, "target"),
    (None, "00042", "pre", None, "image"),
])
def test_file_name_for_is_the_inverse_of_parse_name(disaster, tile_id, phase, part, kind):
    name = file_name_for(disaster, tile_id, phase, part=part, kind=kind)
    assert parse_name(name) == ParsedName(disaster, tile_id, phase, part, kind)
