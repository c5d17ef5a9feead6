"""core.attention.analysis, the numbers the Attention tab shows: each word's share of
attention inside building footprints and each damage class against the share of pixels,
on hand-made maps and a hand-made label; and the saved maps at one step."""

from pathlib import Path

import numpy as np
import pytest

from core.attention.analysis import WordMap, damage_shares, has_maps, maps_at_step, save_maps, save_step_maps, step_count
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
    top_left = np.zeros((4, 4))
    top_left[:2, :2] = 1.0  # at 4 x 4 the destroyed building is rows 0-1, columns 0-1
    shares = damage_shares([word("destroyed", top_left), word("flood", np.ones((4, 4))),
                            word("nothing", np.zeros((4, 4)))], LABEL)
    assert list(shares) == ["destroyed", "flood", "nothing"]
    assert list(shares["flood"]) == ["building", "no-damage", "minor-damage", "major-damage", "destroyed"]
    # pixels at 4 x 4: destroyed 4, no-damage 2 (row 2, columns 2-3), un-classified 1: building 7 of 16
    assert shares["destroyed"] == {"building": (1.0, 7 / 16), "no-damage": (0.0, 2 / 16),
                                   "minor-damage": (0.0, 0.0), "major-damage": (0.0, 0.0),
                                   "destroyed": (1.0, 4 / 16)}
    # attention spread evenly: each region gets exactly its share of pixels
    assert {r: a for r, (a, _) in shares["flood"].items()} == {r: p for r, (_, p) in shares["flood"].items()}
    assert all(a == 0.0 for a, _ in shares["nothing"].values())  # no mass: attention share 0


def test_masks_follow_each_map_size_and_the_course_tile_part():
    big = np.zeros((8, 8))
    big[4:6, 4:] = 1.0  # the no-damage building at full size: 8 px
    big[0, 0] = 1.0  # one pixel of the destroyed one
    shares = damage_shares([word("big", big)], LABEL)["big"]
    assert shares["no-damage"] == (pytest.approx(8 / 9), 8 / 64)
    assert shares["destroyed"] == (pytest.approx(1 / 9), 16 / 64)
    assert shares["building"][0] == pytest.approx(1.0) and shares["building"][1] == 28 / 64
    # part 4 is the bottom-right quarter: only the no-damage building, rows 0-1 of a 4 x 4 tile
    part = damage_shares([word("flood", np.ones((4, 4)))], LABEL, part=4)["flood"]
    assert part["no-damage"] == (0.5, 0.5) and part["destroyed"] == (0.0, 0.0)
    assert part["building"] == (0.5, 0.5)


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
