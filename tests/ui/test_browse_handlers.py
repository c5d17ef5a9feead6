"""Browse tab handlers, called directly with a real Lab on the demo scenes (no browser)."""

import inspect
import logging

import gradio as gr
import numpy as np
import pytest

from core.config import DEMO_SCENES, Settings
from ui.common import bind
from ui.browse import (ALL, PAGE_SIZE, apply_filters, check_files, narrow_filters, next_page, open_folder,
                       pick, show, switch_view, turn_page)

NO_FILTER = (ALL, ALL, ALL, ALL, "")
SKIP = gr.skip()


def pixels(picture):
    """The pixels of a picture a handler gave a gr.Image (the path of a PNG file)."""
    from PIL import Image

    return np.asarray(Image.open(picture))


def final(values):
    """The last thing a streaming handler yields (what the page shows in the end)."""
    *_, last = values
    return last


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path_factory.mktemp("work")))


@pytest.fixture(scope="module")
def destroyed(lab):
    """A demo scene with destroyed buildings."""
    return lab.datasets.open(DEMO_SCENES).filter(damage="destroyed")[0].scene_id


def choices(update):
    return [c[0] for c in update.choices]


def test_opening_the_demo_folder_counts_its_scenes_and_fills_the_filters(lab):
    root, status, split, disaster, dtype = open_folder(lab, str(DEMO_SCENES))
    n = len(lab.datasets.open(DEMO_SCENES).scenes)
    assert root == str(DEMO_SCENES.resolve()) and f"**{n} scenes**" in status and "problem" not in status
    assert choices(split)[0] == ALL and {"train", "test"} <= set(choices(split))
    assert "flooding" in choices(dtype) and len(choices(disaster)) == n + 1  # one disaster per demo scene
    assert all(u.value == ALL for u in (split, disaster, dtype))


def test_a_folder_that_is_not_xbd_gives_a_clear_message(lab, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"), pytest.warns(UserWarning, match="xBD") as caught:
        opened, status, split, disaster, dtype = open_folder(lab, str(tmp_path), str(DEMO_SCENES))
    assert len(caught) == 1 and len([r for r in caplog.records if r.name == "xbdlab.ui"]) == 1
    # The open folder, the filters and their values stay; the status says what failed and what is open.
    assert opened == split == disaster == dtype == SKIP
    assert status.startswith(f"⚠ Could not open `{tmp_path}`") and f"`{DEMO_SCENES}` is still open" in status
    with pytest.warns(UserWarning, match="does not exist"):
        _, status, *_ = open_folder(lab, str(tmp_path / "missing"))  # nothing open before: nothing "still open"
    assert status.startswith("⚠ Could not open") and "still open" not in status


def test_bound_handlers_keep_their_shape_for_gradio(lab):
    assert inspect.isgeneratorfunction(bind(apply_filters, lab))  # Gradio streams only generator functions
    assert inspect.isgeneratorfunction(bind(next_page, lab))
    assert not inspect.isgeneratorfunction(bind(open_folder, lab))
    assert list(inspect.signature(bind(open_folder, lab)).parameters) == ["path", "current"]
    assert bind(apply_filters, lab).__name__ == "apply_filters"


def test_a_split_narrows_the_disasters_and_a_disaster_the_types(lab):
    index = lab.datasets.open(DEMO_SCENES)
    disasters, dtypes = narrow_filters(lab, str(DEMO_SCENES), "test", ALL, ALL)
    in_test = {s.disaster for s in index.filter(split="test")}
    assert set(choices(disasters)) == {ALL} | in_test and len(in_test) < len(index.disasters())
    assert set(choices(dtypes)) == {ALL} | {index.disaster_type(s) for s in index.filter(split="test")}
    one = sorted(in_test)[0]
    disasters, dtypes = narrow_filters(lab, str(DEMO_SCENES), "test", one, "no-such-type")
    assert disasters.value == one and dtypes.value == ALL  # a type no longer offered goes back to All
    assert choices(dtypes) == [ALL, index.disaster_type(index.filter(disaster=one)[0])]
    elsewhere = next(d for d in index.disasters() if d not in in_test)
    disasters, _ = narrow_filters(lab, str(DEMO_SCENES), "test", elsewhere, ALL)
    assert disasters.value == ALL
    disasters, dtypes = narrow_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL)
    assert choices(disasters) == [ALL] + index.disasters() and choices(dtypes) == [ALL] + index.disaster_types()


def test_thumbnails_show_from_the_cache_at_once_and_the_rest_as_they_are_made(tmp_path):
    lab = lab_for(tmp_path)
    steps = list(apply_filters(lab, str(DEMO_SCENES), *NO_FILTER))
    ids, _, first, info = steps[0]
    assert first == [] and "making 6 thumbnail(s)" in info  # a cold cache: the page shows at once, empty
    ids, _, thumbs, info = steps[-1]
    assert [caption for _, caption in thumbs] == ids and info == "6 scenes · page 1 of 1"
    again = list(apply_filters(lab, str(DEMO_SCENES), *NO_FILTER))
    assert again == [steps[-1]]  # a warm cache: everything in the first (and only) step


def test_filters_narrow_the_scene_list(lab):
    every, page, thumbs, info = final(apply_filters(lab, str(DEMO_SCENES), *NO_FILTER))
    assert page == 0 and len(thumbs) == len(every) and f"{len(every)} scenes" in info
    ruined, *_ = final(apply_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL, "destroyed", ""))
    assert 0 < len(ruined) < len(every)
    index = lab.datasets.open(DEMO_SCENES)
    assert all(index.scene_info(index.get(s)).counts["destroyed"] > 0 for s in ruined)
    tests, *_ = final(apply_filters(lab, str(DEMO_SCENES), "test", ALL, ALL, ALL, ""))
    assert tests and all(index.get(s).split == "test" for s in tests) and set(tests) < set(every)
    flood, *_ = final(apply_filters(lab, str(DEMO_SCENES), ALL, ALL, "flooding", ALL, ""))
    assert flood and all("flood" in s for s in flood)
    found, *_ = final(apply_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL, ALL, every[1][-4:]))
    assert found == [every[1]]
    none, _, thumbs, info = final(apply_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL, ALL, "no such id"))
    assert none == [] and thumbs == [] and info == "No scene matches."


def test_pages_turn_within_the_list_and_a_click_picks_its_scene(lab):
    ids, *_ = final(apply_filters(lab, str(DEMO_SCENES), *NO_FILTER))
    many = (ids * PAGE_SIZE)[:PAGE_SIZE + 3]  # two pages: a full one and three more
    page, thumbs, info = final(turn_page(lab, str(DEMO_SCENES), many, 0, +1))
    assert (page, len(thumbs)) == (1, 3) and "page 2 of 2" in info
    assert final(turn_page(lab, str(DEMO_SCENES), many, 1, +1))[0] == 1  # no page past the last
    assert final(turn_page(lab, str(DEMO_SCENES), many, 0, -1))[0] == 0
    click = gr.SelectData(None, {"index": 2, "value": None})
    assert pick(str(DEMO_SCENES), many, 1, click) == many[PAGE_SIZE + 2]


def test_a_scene_shows_its_tiles_counts_and_metadata(lab, destroyed):
    title, pre, post, pair, counts, meta, legend, to_evaluate, to_generate = show(
        lab, str(DEMO_SCENES), destroyed, False, "Side by side")
    assert destroyed in title
    assert pixels(pre).shape == pixels(post).shape and pixels(pre).shape[2] == 3 and pair == (pre, post)
    assert dict((r[0], r[1]) for r in counts)["destroyed"] >= 1
    fields = [r[0] for r in meta]
    assert "disaster" in fields and any(f.startswith("DiffusionSat") for f in fields)
    assert not legend.visible
    assert to_evaluate.interactive and to_generate.interactive


def test_footprints_are_drawn_on_request_with_a_legend(lab, destroyed):
    plain = show(lab, str(DEMO_SCENES), destroyed, False, "Side by side")
    drawn = show(lab, str(DEMO_SCENES), destroyed, True, "Side by side")
    assert not np.array_equal(pixels(plain[2]), pixels(drawn[2]))  # the post tile has footprints drawn on it
    assert drawn[6].visible and "destroyed" in drawn[6].value


def test_a_tile_shown_again_is_the_same_file_never_rewritten(lab, destroyed):
    """A browser still reading the picture of the last event (a reload, two events showing one
    tile) must never see it truncated: the same tile is the same, untouched file."""
    from pathlib import Path

    first = show(lab, str(DEMO_SCENES), destroyed, False, "Side by side")[1]
    written = Path(first).stat().st_mtime_ns
    again = show(lab, str(DEMO_SCENES), destroyed, False, "Side by side")[1]
    assert again == first and Path(again).stat().st_mtime_ns == written


def test_no_scene_asks_for_one_and_an_unknown_id_says_so(lab):
    title, *rest = show(lab, str(DEMO_SCENES), "", False, "Side by side")
    assert title == "Pick a scene on the left." and rest[0] is None
    assert not rest[-1].interactive
    with pytest.warns(UserWarning, match="no-such-scene"):
        assert show(lab, str(DEMO_SCENES), "no-such-scene", False, "Side by side") == SKIP  # all outputs stay


def test_the_view_switches_between_side_by_side_and_the_slider():
    row, slider = switch_view("Slider")
    assert not row.visible and slider.visible
    row, slider = switch_view("Side by side")
    assert row.visible and not slider.visible


# -- bad files, huge images, a full disk, and which folders open -------------------------------

def lab_for(tmp_path, data_dir=DEMO_SCENES, **settings):
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=data_dir, work_dir=tmp_path / "work", **settings))


def test_check_files_lists_each_bad_file_and_what_is_wrong(tmp_path):
    from tests import xbd_trees as T

    root = T.make_flat(tmp_path / "data")
    corrupt = T.write_corrupt_png(root / "socal-fire_00000022_pre_disaster.png")
    not_json = T.write_not_json(root / "hurricane-florence_00000021_post_disaster.json")
    lab = lab_for(tmp_path, root)
    opened, status, *_ = open_folder(lab, str(root))
    assert corrupt.name not in status  # opening reads names only
    status = check_files(lab, opened)
    assert status.startswith("Checked 8 files: 2 bad file(s) or pair(s)")
    assert f"`{corrupt.name}`: {corrupt} is not a readable PNG" in status
    assert f"`{not_json.name}`: Label file {not_json} is not valid JSON" in status


def test_a_scene_with_a_bad_tile_says_which_file_and_what_to_do(tmp_path):
    from tests import xbd_trees as T

    root = T.make_flat(tmp_path / "data")
    corrupt = T.write_corrupt_png(root / "socal-fire_00000022_post_disaster.png")
    lab = lab_for(tmp_path, root)
    title, pre, post, pair, *_, to_evaluate, to_generate = show(lab, str(root), "socal-fire_00000022", True,
                                                                "Side by side")
    assert f"⚠ {corrupt} is not a readable PNG" in title and "Re-download or remove it." in title
    assert pixels(pre).shape == (32, 32, 3) and post is None and pair is None  # the sound tile still shows
    assert not to_evaluate.interactive and to_generate.interactive


def test_a_huge_tile_is_named_and_the_rest_of_the_gallery_shows(tmp_path, monkeypatch):
    from PIL import Image

    from tests import xbd_trees as T

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    root = T.make_flat(tmp_path / "data")
    big = T.write_png(root / "socal-fire_00000022_post_disaster.png", 64)
    lab = lab_for(tmp_path, root)
    with pytest.warns(UserWarning) as caught:
        ids, _, thumbs, _ = final(apply_filters(lab, str(root), *NO_FILTER))
    assert ids == ["hurricane-florence_00000021", "socal-fire_00000022"]
    assert [caption for _, caption in thumbs] == ["hurricane-florence_00000021"]
    assert [str(w.message) for w in caught] == [
        f"{big} is 64×64 px, larger than the 2000 px this app opens; crop or downscale it (e.g. into 1024 px tiles)."]
    title, pre, post, *_ = show(lab, str(root), "socal-fire_00000022", False, "Side by side")
    assert "is 64×64 px, larger than the 2000 px" in title and post is None and pre is not None


def test_thumbnails_on_a_full_disk_warn_once_and_say_what_to_do(tmp_path, monkeypatch):
    import errno
    import os

    from core.data import images

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(images, "atomic_file", no_space)
    lab = lab_for(tmp_path)
    with pytest.warns(UserWarning) as caught:
        ids, _, thumbs, _ = final(apply_filters(lab, str(DEMO_SCENES), *NO_FILTER))
    assert len(ids) == 6 and thumbs == []
    thumbs_dir = lab.settings.cache_dir / "thumbnails"
    assert [str(w.message) for w in caught] == [
        f"Could not save a thumbnail in {thumbs_dir}: No space left on device. "
        "Free some space or choose another --work folder."]


@pytest.fixture
def trees(tmp_path):
    """A data root holding two datasets, a dataset outside it, and a link from inside to outside."""
    from tests import xbd_trees as T

    root = tmp_path / "root"
    inner = T.make_flat(root / "a")
    T.make_flat(root / "b")
    outside = T.make_flat(tmp_path / "elsewhere")
    (root / "link").symlink_to(outside, target_is_directory=True)
    return root, inner, outside


def test_a_reachable_app_opens_only_folders_under_its_data_folder(tmp_path, trees):
    root, inner, outside = trees
    lab = lab_for(tmp_path, root, host="0.0.0.0")
    assert open_folder(lab, str(inner))[0] == str(inner.resolve())  # under --data
    assert open_folder(lab, str(root / "b" / ".." / "b"))[0] == str((root / "b").resolve())
    for elsewhere in (outside, root / "link", root / "a" / ".." / "..", tmp_path / "no-such-folder"):
        with pytest.warns(UserWarning, match="reachable from other machines") as caught:
            opened, status, *filters = open_folder(lab, str(elsewhere), str(inner.resolve()))
        message = str(caught[0].message)
        assert "--any-folder" in message and str(root.resolve()) in message
        assert opened == SKIP and filters == [SKIP] * 3 and f"`{inner.resolve()}` is still open" in status
    assert outside.resolve() not in lab.datasets.allowed_roots()  # never indexed


@pytest.mark.parametrize("settings", [{"host": "127.0.0.1"}, {"host": "0.0.0.0", "any_folder": True}])
def test_this_machine_only_or_any_folder_opens_any_folder(tmp_path, trees, settings):
    root, _, outside = trees
    lab = lab_for(tmp_path, root, **settings)
    assert open_folder(lab, str(outside))[0] == str(outside.resolve())
