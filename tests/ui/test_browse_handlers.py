"""Browse tab handlers, called directly with a real Lab on the demo scenes (no browser)."""

import gradio as gr
import numpy as np
import pytest

from core.config import DEMO_SCENES, Settings
from ui.browse import ALL, PAGE_SIZE, apply_filters, open_folder, pick, show, switch_view, turn_page

NO_FILTER = (ALL, ALL, ALL, ALL, "")


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


def test_a_folder_that_is_not_xbd_gives_a_clear_message(lab, tmp_path):
    with pytest.raises(gr.Error, match="xBD"):
        open_folder(lab, str(tmp_path))


def test_filters_narrow_the_scene_list(lab):
    every, page, thumbs, info = apply_filters(lab, str(DEMO_SCENES), *NO_FILTER)
    assert page == 0 and len(thumbs) == len(every) and f"{len(every)} scenes" in info
    ruined, *_ = apply_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL, "destroyed", "")
    assert 0 < len(ruined) < len(every)
    index = lab.datasets.open(DEMO_SCENES)
    assert all(index.scene_info(index.get(s)).counts["destroyed"] > 0 for s in ruined)
    tests, *_ = apply_filters(lab, str(DEMO_SCENES), "test", ALL, ALL, ALL, "")
    assert tests and all(index.get(s).split == "test" for s in tests) and set(tests) < set(every)
    flood, *_ = apply_filters(lab, str(DEMO_SCENES), ALL, ALL, "flooding", ALL, "")
    assert flood and all("flood" in s for s in flood)
    found, *_ = apply_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL, ALL, every[1][-4:])
    assert found == [every[1]]
    none, _, thumbs, info = apply_filters(lab, str(DEMO_SCENES), ALL, ALL, ALL, ALL, "no such id")
    assert none == [] and thumbs == [] and info == "No scene matches."


def test_pages_turn_within_the_list_and_a_click_picks_its_scene(lab):
    ids, *_ = apply_filters(lab, str(DEMO_SCENES), *NO_FILTER)
    many = (ids * PAGE_SIZE)[:PAGE_SIZE + 3]  # two pages: a full one and three more
    page, thumbs, info = turn_page(lab, str(DEMO_SCENES), many, 0, +1)
    assert (page, len(thumbs)) == (1, 3) and "page 2 of 2" in info
    assert turn_page(lab, str(DEMO_SCENES), many, 1, +1)[0] == 1  # no page past the last
    assert turn_page(lab, str(DEMO_SCENES), many, 0, -1)[0] == 0
    click = gr.SelectData(None, {"index": 2, "value": None})
    assert pick(str(DEMO_SCENES), many, 1, click) == many[PAGE_SIZE + 2]


def test_a_scene_shows_its_tiles_counts_and_metadata(lab, destroyed):
    title, pre, post, pair, counts, meta, legend, to_evaluate, to_generate = show(
        lab, str(DEMO_SCENES), destroyed, False, "Side by side")
    assert destroyed in title
    assert pre.shape == post.shape and pre.shape[2] == 3 and pair[0] is pre and pair[1] is post
    assert dict((r[0], r[1]) for r in counts)["destroyed"] >= 1
    fields = [r[0] for r in meta]
    assert "disaster" in fields and any(f.startswith("DiffusionSat") for f in fields)
    assert not legend.visible
    assert to_evaluate.interactive and to_generate.interactive


def test_footprints_are_drawn_on_request_with_a_legend(lab, destroyed):
    plain = show(lab, str(DEMO_SCENES), destroyed, False, "Side by side")
    drawn = show(lab, str(DEMO_SCENES), destroyed, True, "Side by side")
    assert not np.array_equal(plain[2], drawn[2])  # the post tile has footprints drawn on it
    assert drawn[6].visible and "destroyed" in drawn[6].value


def test_no_scene_asks_for_one_and_an_unknown_id_says_so(lab):
    title, *rest = show(lab, str(DEMO_SCENES), "", False, "Side by side")
    assert title == "Pick a scene on the left." and rest[0] is None
    assert not rest[-1].interactive
    with pytest.raises(gr.Error, match="no-such-scene"):
        show(lab, str(DEMO_SCENES), "no-such-scene", False, "Side by side")


def test_the_view_switches_between_side_by_side_and_the_slider():
    row, slider = switch_view("Slider")
    assert not row.visible and slider.visible
    row, slider = switch_view("Side by side")
    assert row.visible and not slider.visible
