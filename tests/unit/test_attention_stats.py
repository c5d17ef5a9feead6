"""core.attention.analysis, the numbers the Attention tab shows: each word's share of
attention inside building footprints and each damage class against the share of pixels,
on hand-made maps and hand-made labels, computed at the label's resolution (a building
smaller than a map pixel still counts) and saved with the run; and the saved maps at one
step."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from core.attention.analysis import (SHARES_FILE, WordMap, damage_shares, has_maps, label_size, load_shares,
                                     maps_at_step, save_maps, save_scene_shares, save_step_maps, scene_shares,
                                     step_count)
from core.config import DEMO_SCENES
from core.types import Building, Label, LabelMetadata


def rect(x0, y0, x1, y1):
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


# An 8 x 8 px label: destroyed top-left quarter, no-damage in rows 4-5 of the right half,
# an un-classified building in the top-right corner (rows 0-1, columns 6-7).
LABEL = Label(path=Path("hand_made_post_disaster.json"), metadata=LabelMetadata(width=8, height=8),
              buildings=(Building("d", "destroyed", (rect(0, 0, 4, 4),)),
                         Building("n", "no-damage", (rect(4, 4, 8, 6),)),
                         Building("u", "un-classified", (rect(6, 0, 8, 2),))))


def word(name, values):
    m = np.asarray(values, dtype=np.float32)
    return WordMap(word=name, map=m, raw_total=float(m.sum()))


def test_each_word_gets_its_attention_share_and_the_pixel_share_of_every_region():
    on_ruins = np.zeros((8, 8))
    on_ruins[:4, :4] = 1.0  # exactly the destroyed building, at the label's 8 x 8
    shares = damage_shares([word("destroyed", on_ruins), word("flood", np.ones((4, 4))),
                            word("nothing", np.zeros((8, 8)))], LABEL)
    assert list(shares) == ["destroyed", "flood", "nothing"]
    assert list(shares["flood"]) == ["building", "no-damage", "minor-damage", "major-damage", "destroyed"]
    # pixels at the label's 8 x 8: destroyed 16, no-damage 8, un-classified 4: building 28 of 64
    assert shares["destroyed"] == {"building": (1.0, 28 / 64), "no-damage": (0.0, 8 / 64),
                                   "minor-damage": (0.0, 0.0), "major-damage": (0.0, 0.0),
                                   "destroyed": (1.0, 16 / 64)}
    # attention spread evenly (a 4 x 4 map, upsampled): each region gets exactly its share of pixels
    assert {r: a for r, (a, _) in shares["flood"].items()} == {r: p for r, (_, p) in shares["flood"].items()}
    assert all(a == 0.0 for a, _ in shares["nothing"].values())  # no mass: attention share 0


# A full 1024 px tile: a 5 x 5 px destroyed building that covers no pixel centre of a 64 px
# raster (those sit at 16k + 8 px), and a large no-damage one.
TINY_RUIN = Label(path=Path("tiny_post_disaster.json"), metadata=LabelMetadata(width=1024, height=1024),
                  buildings=(Building("t", "destroyed", (rect(498, 498, 503, 503),)),
                             Building("n", "no-damage", (rect(0, 0, 256, 256),))))


def test_a_building_smaller_than_a_map_pixel_still_gets_its_share():
    from core.data.masks import class_masks

    assert not class_masks(TINY_RUIN, 64)["destroyed"].any()  # shrunk to the map, it vanishes
    assert label_size(TINY_RUIN) == (1024, 1024)
    even = damage_shares([word("flood", np.ones((64, 64)))], TINY_RUIN)["flood"]
    assert even["destroyed"] == (pytest.approx(25 / 1024 ** 2), 25 / 1024 ** 2)
    assert even["no-damage"] == (pytest.approx(1 / 16), 1 / 16)
    peak = np.zeros((64, 64))
    peak[31, 31] = 1.0  # the map pixel over the tiny ruin (496-512 px at 1024)
    on_it = damage_shares([word("destroyed", peak)], TINY_RUIN)["destroyed"]
    assert on_it["destroyed"][0] > 100 * on_it["destroyed"][1] > 0
    assert on_it["no-damage"][0] == 0.0


def test_masks_follow_the_label_resolution_and_the_course_tile_part():
    big = np.zeros((8, 8))
    big[4:6, 4:] = 1.0  # the no-damage building at the label's size: 8 px
    big[0, 0] = 1.0  # one pixel of the destroyed one
    shares = damage_shares([word("big", big)], LABEL)["big"]
    assert shares["no-damage"] == (pytest.approx(8 / 9), 8 / 64)
    assert shares["destroyed"] == (pytest.approx(1 / 9), 16 / 64)
    assert shares["building"][0] == pytest.approx(1.0) and shares["building"][1] == 28 / 64
    # part 4 is the bottom-right quarter (4 x 4): only the no-damage building, rows 0-1
    assert label_size(LABEL, 4) == (4, 4)
    for size in (4, 2, 16):  # whatever the map's size, the masks are the part tile's
        part = damage_shares([word("flood", np.ones((size, size)))], LABEL, part=4)["flood"]
        assert part["no-damage"] == (pytest.approx(0.5), 0.5) and part["destroyed"] == (0.0, 0.0)
        assert part["building"] == (pytest.approx(0.5), 0.5)
    assert label_size(Label(path=Path("x_post_disaster.json"), metadata=LabelMetadata(), buildings=())) == (1024, 1024)


DEMO_LABEL = DEMO_SCENES / "train" / "labels" / "demo-wildfire_00000002_post_disaster.json"


def test_shares_are_saved_once_and_read_back_unchanged(tmp_path):
    from core.data.labels import load_label

    maps = {"flood": WordMap("flood", np.random.default_rng(0).random((64, 64)).astype(np.float32), 3.0),
            "roofs": WordMap("roofs", np.ones((64, 64), np.float32), 1.0)}
    scene = SimpleNamespace(post_label=DEMO_LABEL, part=None)
    saved = save_scene_shares(tmp_path, maps, scene)
    assert saved == damage_shares(maps.values(), load_label(DEMO_LABEL)) == scene_shares(maps.values(), scene)
    assert load_shares(tmp_path) == load_shares(tmp_path / "attention") == saved
    doc = json.loads((tmp_path / "attention" / SHARES_FILE).read_text())
    assert doc["size"] == [1024, 1024] and doc["label"] == DEMO_LABEL.name and doc["part"] is None
    assert [w["word"] for w in doc["words"]] == ["flood", "roofs"]
    # No post label, or one that cannot be read: no file (the tab then computes, or says why).
    for other in (None, SimpleNamespace(post_label=None, part=None)):
        assert save_scene_shares(tmp_path / "none", maps, other) is None and scene_shares(maps.values(), other) is None
    broken = tmp_path / "broken_post_disaster.json"
    broken.write_text("{not json")
    assert save_scene_shares(tmp_path / "broken", maps, SimpleNamespace(post_label=broken, part=None)) is None
    assert load_shares(tmp_path / "none") is None and load_shares(tmp_path / "broken") is None


def test_maps_at_a_step_replace_the_totals_and_step_zero_keeps_them(tmp_path):
    first, second, total = np.eye(4, dtype=np.float32), np.ones((4, 4), np.float32), np.full((4, 4), 0.5, np.float32)
    assert not has_maps(tmp_path) and step_count(tmp_path) == 0
    save_maps(tmp_path, {"flood": WordMap("flood", total, raw_total=7.0), "house": WordMap("house", total, 1.0)})
    assert has_maps(tmp_path) and has_maps(tmp_path / "attention")
    assert step_count(tmp_path) == 0  # no step maps kept: every step is the total
    np.testing.assert_array_equal(maps_at_step(tmp_path, 2)["flood"].map, total)
    save_step_maps(tmp_path, [{"flood": WordMap("flood", first, 3.0), "house": WordMap("house", first, 1.0)},
                              {"flood": WordMap("flood", second, 4.0), "house": WordMap("house", second, 1.0)}])
    assert step_count(tmp_path) == 2
    np.testing.assert_array_equal(maps_at_step(tmp_path, 0)["flood"].map, total)
    at_one, at_two = maps_at_step(tmp_path, 1), maps_at_step(tmp_path, 2)
    np.testing.assert_array_equal(at_one["flood"].map, first)
    np.testing.assert_array_equal(at_two["house"].map, second)
    assert at_two["flood"].raw_total == 7.0  # the total's mass, not the step's
