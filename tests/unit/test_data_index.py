"""Indexing every xBD layout from file names, problems that leave the rest usable, filters,
counts, and the persistent label-summary cache."""

import json
import os
import shutil

import pytest

from core.data import labels as L
from core.data.index import DAMAGE_FILTERS, SUMMARY_CACHE_FILE, SceneInfo, index_dataset
from core.errors import DataError, ImageError, LabelError
from tests import xbd_trees as T


@pytest.fixture(autouse=True)
def _fresh_label_cache():
    L.clear_label_cache()
    yield
    L.clear_label_cache()


@pytest.fixture
def count_parses(monkeypatch):
    """Counts every label parse (full or summary) made through core.data.labels."""
    calls = []
    real_load, real_summary = L.load_label, L.summarize_label
    monkeypatch.setattr(L, "load_label", lambda p: calls.append(("load", p)) or real_load(p))
    monkeypatch.setattr(L, "summarize_label", lambda p: calls.append(("summary", p)) or real_summary(p))
    return calls


@pytest.fixture
def no_parsing(monkeypatch):
    def boom(path):
        raise AssertionError(f"label parsed: {path}")
    monkeypatch.setattr(L, "load_label", boom)
    monkeypatch.setattr(L, "summarize_label", boom)


def ids(scenes):
    return [s.scene_id for s in scenes]


# -- layouts -----------------------------------------------------------------------------

def test_official_release_layout_gives_splits_disasters_labels_and_targets(tmp_path, no_parsing):
    root = T.make_official(tmp_path / "xbd")
    index = index_dataset(root)
    expected = sorted(f"{d}_{i}" for scenes in T.OFFICIAL.values() for d, i in scenes)
    assert ids(index.scenes) == expected
    assert index.splits() == ["hold", "test", "tier3", "train"]
    assert index.disasters() == ["hurricane-matthew", "joplin-tornado", "mexico-earthquake",
                                 "palu-tsunami", "socal-fire", "woolsey-fire"]
    s = index.get("joplin-tornado_00000005")
    assert s.split == "tier3" and s.disaster == "joplin-tornado" and s.part is None
    assert s.pre_image == root / "tier3/images/joplin-tornado_00000005_pre_disaster.png"
    assert s.post_label == root / "tier3/labels/joplin-tornado_00000005_post_disaster.json"
    assert s.target == root / "tier3/targets/joplin-tornado_00000005_post_disaster_target.png"
    assert index.problems == []


def test_any_folder_holding_images_is_a_split_unless_named_like_its_disaster(tmp_path):
    T.write_scene(tmp_path / "tier1/images", tmp_path / "tier1/labels", "socal-fire", "00000001")
    T.write_scene(tmp_path / "socal-fire/images", tmp_path / "socal-fire/labels", "socal-fire", "00000002")
    T.write_scene(tmp_path / "train/palu-tsunami/images", None, "palu-tsunami", "00000003")
    index = index_dataset(tmp_path)
    assert {s.scene_id: s.split for s in index.scenes} == {
        "socal-fire_00000001": "tier1", "socal-fire_00000002": None, "palu-tsunami_00000003": "train"}


def test_per_disaster_layout_has_no_split(tmp_path):
    index = index_dataset(T.make_per_disaster(tmp_path))
    assert ids(index.scenes) == ["guatemala-volcano_00000000", "guatemala-volcano_00000004",
                                 "midwest-flooding_00000010"]
    assert all(s.split is None and s.pre_label and s.post_label for s in index.scenes)
    assert index.splits() == [] and index.disasters() == ["guatemala-volcano", "midwest-flooding"]


def test_images_and_labels_directly_under_the_root(tmp_path):
    index = index_dataset(T.make_images_labels(tmp_path))
    assert ids(index.scenes) == ["palu-tsunami_00000031", "woolsey-fire_00000032"]
    assert all(s.split is None and s.post_label is not None for s in index.scenes)


def test_flat_folder_indexes_by_file_name_with_or_without_labels(tmp_path):
    index = index_dataset(T.make_flat(tmp_path / "a"))
    assert ids(index.scenes) == ["hurricane-florence_00000021", "socal-fire_00000022"]
    assert index.get("socal-fire_00000022").post_label.name == "socal-fire_00000022_post_disaster.json"
    bare = index_dataset(T.make_flat(tmp_path / "b", labels=False))
    assert len(bare.scenes) == 2 and bare.problems == []
    assert bare.scene_info(bare.scenes[0]) == SceneInfo(disaster_type="flooding", counts=None, has_labels=False)


def test_unnamed_competition_test_set(tmp_path):
    index = index_dataset(T.make_unnamed_test(tmp_path))
    assert ids(index.scenes) == ["test_00000", "test_00001", "test_00002"]
    s = index.get("test_00001")
    assert s.disaster is None and s.split == "test" and s.pre_image.name == "test_pre_00001.png"
    assert index.disasters() == [] and index.disaster_types() == []
    assert index.label(s, "post") is None


def test_part_tiles_pair_and_use_the_full_tile_label(tmp_path):
    index = index_dataset(T.make_parts(tmp_path))
    assert ids(index.scenes) == [f"guatemala-volcano_00000004_part{p}" for p in (1, 2, 3, 4)]
    s = index.get("guatemala-volcano_00000004_part2")
    assert s.part == 2 and s.post_image.name == "guatemala-volcano_00000004_post_disaster_part2.png"
    assert s.post_label.name == "guatemala-volcano_00000004_post_disaster.json"
    assert s.pre_label.name == "guatemala-volcano_00000004_pre_disaster.json"
    assert index.problems == []  # the full-tile labels are used, not orphans


def test_part_tiles_prefer_their_own_part_labels(tmp_path):
    index = index_dataset(T.make_parts(tmp_path, part_labels=True))
    s = index.get("guatemala-volcano_00000004_part3")
    assert s.post_label.name == "guatemala-volcano_00000004_post_disaster_part3.json"
    assert index.scene_info(s).counts["major-damage"] == 1


def test_cache_folder_inside_the_root_is_not_indexed(tmp_path):
    root = T.make_flat(tmp_path)
    cache = root / "cache"
    T.write_png(cache / "thumbnails" / "socal-fire_00000099_post_disaster.png")
    index = index_dataset(root, cache_dir=cache)
    assert "socal-fire_00000099" not in ids(index.scenes)


# -- folders that are not xBD ----------------------------------------------------------------

def test_missing_folder_raises_data_error_saying_what_to_point_at(tmp_path):
    with pytest.raises(DataError) as err:
        index_dataset(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "does not exist" in str(err.value) and "Point" in str(err.value)


def test_a_file_is_not_a_data_folder(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        index_dataset(f)


@pytest.mark.parametrize("setup", ["empty", "other files", "labels only", "geotiffs"])
def test_folder_without_xbd_images_raises_data_error_with_an_example_name(tmp_path, setup):
    if setup == "other files":
        (tmp_path / "notes.txt").write_text("hi")
        T.write_png(tmp_path / "images" / "cat.png")
    elif setup == "labels only":
        T.write_json(tmp_path / "labels" / "socal-fire_00000001_post_disaster.json",
                     T.label_dict("socal-fire", "00000001", "post"))
    elif setup == "geotiffs":
        (tmp_path / "socal-fire_00000001_post_disaster.tif").write_bytes(b"II*\x00")
    with pytest.raises(DataError) as err:
        index_dataset(tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "hurricane-matthew_00000066_pre_disaster.png" in msg
    assert "images/" in msg and "train/" in msg
    if setup == "labels only":
        assert "1 xBD label file" in msg
    if setup == "geotiffs":
        assert "GeoTIFF" in msg


# -- problems ------------------------------------------------------------------------------

def test_post_without_pre_is_a_problem_and_the_scene_still_indexes(tmp_path):
    root = T.make_flat(tmp_path)
    T.write_scene(root, root, "moore-tornado", "00000040", pre=False)
    index = index_dataset(root)
    s = index.get("moore-tornado_00000040")
    assert s.pre_image is None and s.post_image is not None
    [problem] = index.problems
    assert problem.path == s.post_image and "moore-tornado_00000040_pre_disaster.png" in problem.message


def test_duplicate_names_and_orphan_labels_are_problems(tmp_path):
    root = T.make_official(tmp_path, {"train": [("socal-fire", "00000001")]}, targets=False)
    T.write_scene(root / "tier3/images", None, "socal-fire", "00000001")  # same names again
    T.write_json(root / "train/labels/socal-fire_00000777_post_disaster.json",
                 T.label_dict("socal-fire", "00000777", "post"))
    index = index_dataset(root)
    assert ids(index.scenes) == ["socal-fire_00000001"]
    assert index.get("socal-fire_00000001").split == "tier3"  # first in path order wins
    messages = {p.path.name: p.message for p in index.problems}
    assert "Duplicate" in messages["socal-fire_00000001_pre_disaster.png"]
    assert "without an image" in messages["socal-fire_00000777_post_disaster.json"]
    assert len(index.problems) == 3


def test_corrupt_png_is_reported_when_read_and_other_scenes_still_load(tmp_path):
    root = T.make_flat(tmp_path)
    bad = T.write_corrupt_png(root / "socal-fire_00000022_post_disaster.png")
    index = index_dataset(root)
    assert len(index.scenes) == 2 and index.problems == []  # names only at index time
    scene = index.get("socal-fire_00000022")
    with pytest.raises(ImageError) as err:
        index.load_image(scene, "post")
    assert str(bad) in str(err.value)
    assert [p.path for p in index.problems] == [bad]
    good = index.get("hurricane-florence_00000021")
    assert index.load_image(good, "post").shape == (32, 32, 3)
    assert index.check_images(good) == []


def test_pre_and_post_of_different_sizes_are_a_problem_when_detected(tmp_path):
    root = T.make_flat(tmp_path)
    T.write_png(root / "socal-fire_00000022_post_disaster.png", 48)
    index = index_dataset(root)
    [problem] = index.check_images(index.get("socal-fire_00000022"))
    assert "32x32" in problem.message and "48x48" in problem.message
    assert index.problems == [problem]
    index.check_images(index.get("socal-fire_00000022"))
    assert len(index.problems) == 1  # reported once


@pytest.mark.parametrize("write", [T.write_not_json, T.write_label_missing_keys])
def test_broken_label_is_a_problem_and_other_scenes_are_fine(tmp_path, write):
    root = T.make_official(tmp_path)
    bad = write(root / "train/labels/socal-fire_00000003_post_disaster.json")
    index = index_dataset(root)
    scene = index.get("socal-fire_00000003")
    info = index.scene_info(scene)
    assert info.counts is None and info.has_labels is True and info.disaster_type == "fire"
    assert [p.path for p in index.problems] == [bad]
    with pytest.raises(LabelError) as err:
        index.label(scene, "post")
    assert str(bad) in str(err.value)
    assert len(index.problems) == 1
    counts = index.counts()
    assert counts["problems"] == 1 and counts["damage"]["total"] == 5 * 6
    assert "socal-fire_00000003" not in ids(index.filter(damage="no-damage"))
    assert len(index.filter(damage="no-damage")) == 6
    assert index.label(index.get("palu-tsunami_00000004"), "post").counts()["total"] == 5


def test_empty_building_list_counts_as_no_buildings(tmp_path):
    root = T.make_flat(tmp_path)
    T.write_scene(root, root, "socal-fire", "00000050", buildings=())
    index = index_dataset(root)
    info = index.scene_info(index.get("socal-fire_00000050"))
    assert info.counts["total"] == 0 and info.has_labels
    assert ids(index.filter(damage="no-buildings")) == ["socal-fire_00000050"]
    assert "socal-fire_00000050" not in ids(index.filter(damage="no-damage"))


def test_get_unknown_scene_raises_data_error_with_suggestions(tmp_path):
    index = index_dataset(T.make_flat(tmp_path))
    with pytest.raises(DataError) as err:
        index.get("socal-fire_0000022")
    assert "socal-fire_00000022" in str(err.value) and "No scene" in str(err.value)


# -- filters and counts ------------------------------------------------------------------------

def test_filters_by_split_disaster_and_query_never_parse_labels(tmp_path, no_parsing):
    index = index_dataset(T.make_official(tmp_path))
    assert ids(index.filter(split="train")) == ["hurricane-matthew_00000001", "hurricane-matthew_00000002",
                                                "socal-fire_00000003"]
    assert ids(index.filter(disaster="Hurricane-Matthew", split="train")) == [
        "hurricane-matthew_00000001", "hurricane-matthew_00000002"]
    assert ids(index.filter(query="0000000")) == ids(index.scenes)
    assert ids(index.filter(query="FIRE_0")) == ["socal-fire_00000003", "woolsey-fire_00000006"]
    assert index.filter(split="hold", disaster="socal-fire") == []
    assert ids(index.filter(split="", disaster=None, query="  ")) == ids(index.scenes)
    # the 19 xBD disasters have a known type: no label is parsed either
    assert ids(index.filter(disaster_type="wind")) == ["hurricane-matthew_00000001", "hurricane-matthew_00000002",
                                                       "joplin-tornado_00000005"]
    assert index.disaster_types() == ["earthquake", "fire", "tsunami", "wind"]


def test_damage_filters(tmp_path):
    root = T.make_flat(tmp_path, scenes=())  # nothing yet
    T.write_scene(root, root, "socal-fire", "00000001", buildings=[("destroyed", [T.box(0, 0, 99, 99)])])
    T.write_scene(root, root, "socal-fire", "00000002", buildings=[("no-damage", [T.box(0, 0, 99, 99)])])
    T.write_scene(root, root, "socal-fire", "00000003", buildings=[("minor-damage", [T.box(0, 0, 99, 99)]),
                                                                   ("un-classified", [T.box(200, 0, 299, 99)])])
    T.write_scene(root, root, "socal-fire", "00000004", buildings=())
    T.write_scene(root, None, "socal-fire", "00000005")  # no labels: matches no damage filter
    index = index_dataset(root)
    got = {d: ids(index.filter(damage=d)) for d in DAMAGE_FILTERS}
    assert got == {
        "no-damage": ["socal-fire_00000002"],
        "minor-damage": ["socal-fire_00000003"],
        "major-damage": [],
        "destroyed": ["socal-fire_00000001"],
        "un-classified": ["socal-fire_00000003"],
        "any-damage": ["socal-fire_00000001", "socal-fire_00000003"],
        "no-buildings": ["socal-fire_00000004"],
    }
    assert ids(index.filter(damage="any-damage", query="0003")) == ["socal-fire_00000003"]
    with pytest.raises(ValueError, match="damage must be one of"):
        index.filter(damage="ruined")


def test_disaster_type_of_unknown_disasters_comes_from_the_label(tmp_path):
    root = T.make_flat(tmp_path)
    T.write_scene(root, root, "atlantis-flood", "00000001", disaster_type="flooding")
    index = index_dataset(root)
    assert index.scene_info(index.get("atlantis-flood_00000001")).disaster_type == "flooding"
    assert ids(index.filter(disaster_type="flooding")) == ["atlantis-flood_00000001", "hurricane-florence_00000021"]


def test_parsed_label_metadata_overrides_the_disaster_table(tmp_path):
    root = T.make_flat(tmp_path, scenes=())
    T.write_scene(root, root, "hurricane-matthew", "00000001", disaster_type="flooding")
    index = index_dataset(root)
    scene = index.scenes[0]
    assert index.disaster_type(scene) == "wind"  # table, nothing parsed yet
    index.scene_info(scene)
    assert index.disaster_type(scene) == "flooding"


def test_counts(tmp_path):
    root = T.make_official(tmp_path)
    T.write_scene(root / "hold/images", None, "woolsey-fire", "00000008", pre=False)
    index = index_dataset(root)
    counts = index.counts()
    assert counts == {
        "scenes": 8,
        "split": {"hold": 2, "test": 1, "tier3": 2, "train": 3},
        "disaster": {"hurricane-matthew": 2, "joplin-tornado": 1, "mexico-earthquake": 1, "palu-tsunami": 1,
                     "socal-fire": 1, "woolsey-fire": 2},
        "disaster_type": {"earthquake": 1, "fire": 3, "tsunami": 1, "wind": 3},
        "damage": {"no-damage": 7, "minor-damage": 7, "major-damage": 7, "destroyed": 7, "un-classified": 7,
                   "total": 35},
        "problems": 1,
    }
    json.dumps(counts)


# -- the persistent summary cache ---------------------------------------------------------------

def test_second_open_uses_the_summary_cache_instead_of_parsing(tmp_path, count_parses):
    root = T.make_official(tmp_path / "xbd")
    T.write_not_json(root / "hold/labels/mexico-earthquake_00000007_post_disaster.json")
    cache = tmp_path / "cache"
    first = index_dataset(root, cache_dir=cache)
    c1 = first.counts()
    assert len(count_parses) == 7 and (cache / SUMMARY_CACHE_FILE).is_file()

    count_parses.clear()
    second = index_dataset(root, cache_dir=cache)
    assert second.counts() == c1
    assert ids(second.filter(damage="destroyed")) == ids(first.filter(damage="destroyed"))
    assert second.scene_info(second.scenes[0]) == first.scene_info(first.scenes[0])
    assert count_parses == []  # nothing parsed again
    assert [p.path.name for p in second.problems] == ["mexico-earthquake_00000007_post_disaster.json"]

    # an edited label is parsed again, and only that one
    edited = root / "train/labels/socal-fire_00000003_post_disaster.json"
    T.write_json(edited, T.label_dict("socal-fire", "00000003", "post", T.DEFAULT_BUILDINGS[:1]))
    st = os.stat(edited)
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    third = index_dataset(root, cache_dir=cache)
    assert third.counts()["damage"]["total"] == c1["damage"]["total"] - 4
    assert [p for _kind, p in count_parses] == [edited]


def test_single_scene_look_ups_are_cached_too(tmp_path, count_parses):
    root = T.make_flat(tmp_path / "d")
    cache = tmp_path / "cache"
    index = index_dataset(root, cache_dir=cache)
    index.scene_info(index.scenes[0])  # the first write happens at once
    index.scene_info(index.scenes[1])  # may be held back briefly ...
    index.flush_cache()                # ... until flushed
    count_parses.clear()
    again = index_dataset(root, cache_dir=cache)
    assert [again.scene_info(s).counts["total"] for s in again.scenes] == [5, 5]
    assert count_parses == []


def test_an_unreadable_cache_file_is_ignored(tmp_path):
    root = T.make_flat(tmp_path / "d")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / SUMMARY_CACHE_FILE).write_text("{garbage")
    index = index_dataset(root, cache_dir=cache)
    assert index.counts()["damage"]["total"] == 10
    assert json.loads((cache / SUMMARY_CACHE_FILE).read_text())["version"] == L.SUMMARY_VERSION


def test_moved_dataset_is_indexed_fresh(tmp_path):
    root = T.make_flat(tmp_path / "a")
    cache = tmp_path / "cache"
    index_dataset(root, cache_dir=cache).counts()
    moved = tmp_path / "b"
    shutil.move(str(root), moved)
    index = index_dataset(moved, cache_dir=cache)
    assert index.counts()["damage"]["total"] == 10
    assert all(str(s.post_image).startswith(str(moved.resolve())) for s in index.scenes)
