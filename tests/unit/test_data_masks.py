"""Damage masks: exact for rectangles, agree with a point-in-polygon reference, respect holes,
overlap priority, scaling and the part-tile crop convention."""

from pathlib import Path

import numpy as np
import pytest

from core.data.masks import class_masks, damage_mask, rasterize_rings
from core.types import MASK_REGIONS, Building, Label, LabelMetadata
from tests.xbd_trees import COURTYARD, DEFAULT_BUILDINGS, box


def make_label(buildings, *, name="x_00000001_post_disaster.json", width=1024, height=1024):
    bs = tuple(Building(uid=str(i), subtype=sub, xy=tuple(tuple(map(tuple, r)) for r in rings))
               for i, (sub, rings) in enumerate(buildings))
    return Label(path=Path(name), metadata=LabelMetadata(width=width, height=height), buildings=bs)


def reference_mask(rings, w, h):
    """Even-odd point-in-polygon test of every pixel centre (PNPOLY)."""
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    inside = np.zeros((h, w), bool)
    for ring in rings:
        r = np.asarray(ring, float)
        for (x0, y0), (x1, y1) in zip(r, np.roll(r, -1, axis=0)):
            if y0 == y1:
                continue
            crosses = (y0 > yy) != (y1 > yy)
            x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (xx < x_at)
    return inside


def test_rectangles_are_exact_at_every_size():
    label = make_label(DEFAULT_BUILDINGS)
    for size in (32, 64, 128):
        dm = damage_mask(label, size)
        s = size / 1024
        want = np.zeros((size, size), np.uint8)
        for sub, (ring,) in DEFAULT_BUILDINGS:
            (x0, y0), (x1, y1) = ring[0], ring[2]
            want[round(y0 * s):round(y1 * s), round(x0 * s):round(x1 * s)] = {
                "no-damage": 1, "minor-damage": 2, "major-damage": 3, "destroyed": 4}.get(sub, 5)
        assert dm.dtype == np.uint8 and dm.shape == (size, size)
        np.testing.assert_array_equal(dm, want)


def test_rectangle_with_fractional_edges_covers_exactly_the_pixel_centres_inside():
    # x from 10.2 to 20.7 covers centres 10.5 .. 20.5; y from 3.5 to 6.49 covers 3.5 .. 5.5
    hit = rasterize_rings([box(10.2, 3.5, 20.7, 6.49)], 32, 16)
    r0, c0, m = hit
    full = np.zeros((16, 32), bool)
    full[r0:r0 + m.shape[0], c0:c0 + m.shape[1]] = m
    want = np.zeros((16, 32), bool)
    want[3:6, 10:21] = True
    np.testing.assert_array_equal(full, want)


@pytest.mark.parametrize("size", [(64, 64), (96, 48)])
def test_random_polygons_agree_with_point_in_polygon_reference(size):
    w, h = size
    rng = np.random.default_rng(w * 7 + h)
    agree = total = 0
    for _ in range(60):
        n = int(rng.integers(3, 14))
        ang = rng.uniform(0, 2 * np.pi, n)  # unsorted: self-intersecting polygons too
        if rng.random() < 0.5:
            ang.sort()
        rad = rng.uniform(2, 25, n)
        cx, cy = rng.uniform(-8, w + 8), rng.uniform(-8, h + 8)
        ring = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        got = np.zeros((h, w), bool)
        hit = rasterize_rings([ring], w, h)
        if hit is not None:
            r0, c0, m = hit
            got[r0:r0 + m.shape[0], c0:c0 + m.shape[1]] = m
        ref = reference_mask([ring], w, h)
        agree += int((got == ref).sum())
        total += ref.size
    assert agree / total >= 0.99
    assert agree / total > 0.9999  # in practice only exact ties on an edge could differ


def test_holes_are_cut_out():
    label = make_label([COURTYARD])
    dm = damage_mask(label, 64)  # outer 32..48, courtyard 36..44 at 64 px
    assert dm[33, 33] == 1 and dm[40, 40] == 0 and dm[47, 47] == 1
    ref = reference_mask([np.asarray(r) / 16 for r in COURTYARD[1]], 64, 64)
    np.testing.assert_array_equal(dm > 0, ref)


def test_higher_damage_wins_on_overlap_whatever_the_order():
    a = ("destroyed", [box(0, 0, 512, 512)])
    b = ("no-damage", [box(256, 256, 768, 768)])
    c = ("un-classified", [box(0, 0, 1024, 1024)])
    for order in ([a, b, c], [c, b, a], [b, c, a]):
        dm = damage_mask(make_label(order), 16)
        assert dm[5, 5] == 4 and dm[7, 7] == 4  # overlap of destroyed and no-damage
        assert dm[10, 10] == 1 and dm[15, 0] == 5


def test_pre_label_buildings_and_unclassified_get_value_5_and_count_as_building():
    pre = make_label([(None, [box(0, 0, 512, 512)])], name="x_00000001_pre_disaster.json")
    assert damage_mask(pre, 8)[0, 0] == 5
    masks = class_masks(make_label([("un-classified", [box(0, 0, 512, 512)])]), 8)
    assert masks["building"][:4, :4].all() and not any(masks[k].any() for k in MASK_REGIONS[1:])


def test_class_masks_keys_and_disjoint_classes():
    masks = class_masks(make_label(DEFAULT_BUILDINGS), 64)
    assert tuple(masks) == MASK_REGIONS
    stack = np.stack([masks[k] for k in MASK_REGIONS[1:]])
    assert stack.sum(0).max() == 1  # classes never overlap
    assert (stack.any(0) <= masks["building"]).all()
    assert masks["building"].sum() > stack.any(0).sum()  # the un-classified building
    assert all(m.dtype == bool and m.shape == (64, 64) for m in masks.values())


def test_size_is_width_height_and_scale_follows_label_metadata():
    label = make_label([("destroyed", [box(0, 0, 256, 128)])], width=512, height=256)
    dm = damage_mask(label, (40, 20))  # (width, height)
    assert dm.shape == (20, 40)
    assert dm[:10, :20].all() and not dm[10:, :].any() and not dm[:, 20:].any()


@pytest.mark.parametrize("part, quadrant", [(1, (0, 0)), (2, (0, 1)), (3, (1, 0)), (4, (1, 1))])
def test_part_crops_the_full_tile_label_to_its_quadrant(part, quadrant):
    # one building in the middle of each quadrant, class = quadrant index
    classes = ["no-damage", "minor-damage", "major-damage", "destroyed"]
    buildings = [(classes[q], [box(128 + 512 * (q % 2), 128 + 512 * (q // 2),
                                   384 + 512 * (q % 2), 384 + 512 * (q // 2))]) for q in range(4)]
    dm = damage_mask(make_label(buildings), 32, part=part)
    assert set(np.unique(dm)) == {0, quadrant[0] * 2 + quadrant[1] + 1}
    assert dm[8:24, 8:24].all() and dm[:8].sum() == 0


def test_part_label_file_is_not_cropped_again():
    label = make_label([("destroyed", [box(0, 0, 256, 256)])],
                       name="x_00000001_post_disaster_part4.json", width=512, height=512)
    dm = damage_mask(label, 32, part=4)
    assert dm[:16, :16].all() and dm.sum() == 16 * 16 * 4


def test_empty_label_gives_background_only_and_bad_sizes_are_refused():
    assert not damage_mask(make_label([]), 16).any()
    with pytest.raises(ValueError):
        damage_mask(make_label([]), 0)
    with pytest.raises(ValueError):
        damage_mask(make_label(DEFAULT_BUILDINGS), 16, part=5)
