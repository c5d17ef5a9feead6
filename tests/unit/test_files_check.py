"""Checking every file of a dataset (`DatasetIndex.check_files`), images too large to open
(PIL's decompression-bomb guard, tested with a lowered `Image.MAX_IMAGE_PIXELS`), and
thumbnails that cannot be saved."""

import errno
import os
from contextlib import nullcontext

import pytest
from PIL import Image

from core.data import images as images_module
from core.data import index as index_module
from core.data.images import image_size, load_rgb, thumbnail, verify_image
from core.data.index import index_dataset
from core.errors import ImageError, SaveError
from tests import xbd_trees as T

# 32 x 32 = 1024 px tiles pass, a 64 x 64 = 4096 px tile is too large.
LIMIT_ERROR = 1500  # 4096 > 2 x limit: PIL itself refuses (DecompressionBombError)
LIMIT_WARNING = 3000  # limit < 4096 <= 2 x limit: PIL only warns (DecompressionBombWarning)


@pytest.fixture
def broken_tree(tmp_path):
    """The official layout with one file of each kind of trouble; the rest is sound."""
    root = T.make_official(tmp_path / "xbd")
    bad = {
        "truncated": T.write_corrupt_png(root / "train/images/socal-fire_00000003_post_disaster.png"),
        "not json": T.write_not_json(root / "test/labels/palu-tsunami_00000004_pre_disaster.json"),
        "no keys": T.write_label_missing_keys(root / "hold/labels/mexico-earthquake_00000007_post_disaster.json"),
        "huge": T.write_png(root / "tier3/images/woolsey-fire_00000006_pre_disaster.png", 64),
        "bad target": T.write_corrupt_png(root / "train/targets/hurricane-matthew_00000001_post_disaster_target.png"),
    }
    mismatch = T.write_png(root / "tier3/images/joplin-tornado_00000005_post_disaster.png", 36)
    return root, bad, mismatch


@pytest.mark.parametrize("limit", [LIMIT_ERROR, LIMIT_WARNING])
@pytest.mark.parametrize("read", [load_rgb, image_size, verify_image])
def test_an_image_past_the_pixel_limit_is_a_clear_message_naming_it(tmp_path, monkeypatch, limit, read):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    big = T.write_png(tmp_path / "socal-fire_00000001_post_disaster.png", 64)
    with pytest.raises(ImageError) as err:
        read(big)
    assert str(err.value) == (f"{big} is 64×64 px, larger than the {limit} px this app opens; "
                              "crop or downscale it (e.g. into 1024 px tiles).")
    assert read(T.write_png(tmp_path / "small.png", 32)) is not None  # under the limit: fine


@pytest.mark.parametrize("limit", [LIMIT_ERROR, LIMIT_WARNING])
def test_other_formats_past_the_limit_are_refused_too(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    jpeg = tmp_path / "upload.jpg"
    Image.new("RGB", (64, 64)).save(jpeg)
    with pytest.warns(Image.DecompressionBombWarning) if limit == LIMIT_WARNING else nullcontext():
        with pytest.raises(ImageError, match=rf"upload\.jpg is .*px, larger than the {limit} px this app opens"):
            load_rgb(jpeg)


def test_names_only_by_default_then_check_files_lists_every_bad_file(broken_tree, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT_ERROR)
    root, bad, mismatch = broken_tree
    index = index_dataset(root)
    assert index.problems == []  # indexing opened no file
    seen = []
    check = index.check_files(progress=lambda done, total: seen.append((done, total)))
    n_files = 5 * sum(len(scenes) for scenes in T.OFFICIAL.values())  # pre/post images and labels, target
    assert check.files == n_files and seen[0] == (0, n_files) and seen[-1] == (n_files, n_files)
    messages = {p.path: p.message for p in check.problems}
    assert set(messages) == set(bad.values()) | {mismatch}
    assert "not a readable PNG" in messages[bad["truncated"]]
    assert "Re-download or remove it" in messages[bad["truncated"]]
    assert "not a readable PNG" in messages[bad["bad target"]]
    assert "is not valid JSON" in messages[bad["not json"]]
    assert "lacks 'metadata'" in messages[bad["no keys"]]
    assert "is 64×64 px, larger than" in messages[bad["huge"]]
    assert "32x32 px but the post image is 36x36 px" in messages[mismatch]
    assert [p.path for p in check.problems] == sorted(messages, key=str)
    assert set(messages) <= {p.path for p in index.problems}  # Browse and `index` list them
    again = index.check_files()
    assert again.problems == check.problems and len(index.problems) == len(check.problems)  # once each


def test_check_files_in_worker_processes_finds_the_same(broken_tree, monkeypatch):
    """Many chunks: the spawned pool runs, with this process's pixel limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT_WARNING)
    monkeypatch.setattr(index_module, "_CHECK_CHUNK", 5)
    root, bad, mismatch = broken_tree
    seen = []
    check = index_dataset(root).check_files(workers=2, progress=lambda done, total: seen.append(done))
    assert {p.path for p in check.problems} == set(bad.values()) | {mismatch}
    assert seen == sorted(seen) and seen[-1] == check.files and len(seen) > 3  # progress as chunks finish


def test_a_sound_folder_checks_clean(tmp_path):
    index = index_dataset(T.make_parts(tmp_path))
    check = index.check_files()
    assert check.problems == [] and check.files == 8 + 2  # four part pairs, two full-tile labels


def test_opening_a_huge_image_records_it_and_other_scenes_load(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", LIMIT_WARNING)
    root = T.make_flat(tmp_path)
    big = T.write_png(root / "socal-fire_00000022_post_disaster.png", 64)
    index = index_dataset(root)
    with pytest.raises(ImageError, match="64×64 px"):
        index.load_image(index.get("socal-fire_00000022"), "post")
    assert [p.path for p in index.problems] == [big]
    assert index.load_image(index.get("hurricane-florence_00000021"), "post").shape == (32, 32, 3)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_thumbnail_that_cannot_be_saved_says_what_to_do(tmp_path, monkeypatch):
    tile = T.write_png(tmp_path / "socal-fire_00000001_post_disaster.png")
    cache = tmp_path / "cache"
    monkeypatch.setattr(images_module, "atomic_file", _no_space)
    with pytest.raises(SaveError) as err:
        thumbnail(tile, cache)
    assert str(err.value) == (f"Could not save a thumbnail in {cache / 'thumbnails'}: No space left on device. "
                              "Free some space or choose another --work folder.")
    monkeypatch.undo()
    assert thumbnail(tile, cache).is_file()  # space again: it works
