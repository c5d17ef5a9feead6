"""Footprint overlays: only footprint pixels change, each in its class colour; the legend."""

from pathlib import Path

import numpy as np
import pytest

from core.data.masks import damage_mask
from core.data.overlay import DAMAGE_COLORS, draw_footprints, legend_html
from core.types import DAMAGE_CLASSES, UNCLASSIFIED, Building, Label, LabelMetadata
from tests.xbd_trees import COURTYARD, DEFAULT_BUILDINGS, box

CLASS_OF_VALUE = {1: "no-damage", 2: "minor-damage", 3: "major-damage", 4: "destroyed", 5: UNCLASSIFIED}


def make_label(buildings, name="x_00000001_post_disaster.json"):
    bs = tuple(Building(uid=str(i), subtype=sub, xy=tuple(tuple(map(tuple, r)) for r in rings))
               for i, (sub, rings) in enumerate(buildings))
    return Label(path=Path(name), metadata=LabelMetadata(), buildings=bs)


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def test_only_footprint_pixels_change_and_each_gets_its_class_colour(image):
    label = make_label(DEFAULT_BUILDINGS + (COURTYARD,))
    before = image.copy()
    out = draw_footprints(image, label, alpha=0.5, outline=False)
    np.testing.assert_array_equal(image, before)  # the input is not modified
    assert out.shape == image.shape and out.dtype == np.uint8
    dm = damage_mask(label, 64)
    changed = (out != image).any(axis=2)
    assert not changed[dm == 0].any()  # nothing outside footprints (courtyard included)
    for value, cls in CLASS_OF_VALUE.items():
        inside = dm == value
        if not inside.any():
            continue
        color = np.asarray(DAMAGE_COLORS[cls], float)
        blended = np.round(image[inside] * 0.5 + color * 0.5)
        np.testing.assert_allclose(out[inside], blended, atol=1)


def test_outline_is_the_opaque_class_colour_on_the_footprint_border(image):
    label = make_label([("destroyed", [box(256, 256, 768, 768)])])  # 16..48 at 64 px
    out = draw_footprints(image, label)
    red = DAMAGE_COLORS["destroyed"]
    assert tuple(out[16, 30]) == red and tuple(out[47, 30]) == red and tuple(out[30, 16]) == red
    assert tuple(out[30, 30]) != red  # the interior is translucent
    assert (out[15, :] == image[15, :]).all() and (out[:, 48] == image[:, 48]).all()


def test_pre_label_footprints_are_cyan(image):
    label = make_label([(None, [box(0, 0, 512, 512)])], name="x_00000001_pre_disaster.json")
    out = draw_footprints(image, label, alpha=1.0)
    assert tuple(out[10, 10]) == DAMAGE_COLORS["building"]
    assert (out[40:, 40:] == image[40:, 40:]).all()


def test_nothing_changes_with_zero_alpha_and_no_outline(image):
    out = draw_footprints(image, make_label(DEFAULT_BUILDINGS), alpha=0.0, outline=False)
    np.testing.assert_array_equal(out, image)
    with pytest.raises(ValueError):
        draw_footprints(image, make_label(DEFAULT_BUILDINGS), alpha=1.5)


def test_part_and_grey_images(image):
    label = make_label([("minor-damage", [box(512, 0, 1024, 512)])])  # the top-right quadrant
    grey = image[..., 0]
    out = draw_footprints(grey, label, part=2, alpha=1.0, outline=False)
    assert out.shape == (64, 64, 3)
    assert (out == DAMAGE_COLORS["minor-damage"]).all()  # fills the whole part-2 tile
    assert (draw_footprints(grey, label, part=1) == np.repeat(grey[..., None], 3, 2)).all()


def test_colours_are_distinct_and_keep_their_usual_meaning():
    assert set(DAMAGE_COLORS) == set(DAMAGE_CLASSES) | {UNCLASSIFIED, "building"}
    assert len(set(DAMAGE_COLORS.values())) == len(DAMAGE_COLORS)
    r, g, b = DAMAGE_COLORS["no-damage"]
    assert g > r and g > 100                      # green
    r, g, b = DAMAGE_COLORS["destroyed"]
    assert r > 2 * g and r > 2 * b                # red
    r, g, b = DAMAGE_COLORS["minor-damage"]
    assert r > 200 and g > 200 and b < 100        # yellow
    r, g, b = DAMAGE_COLORS["major-damage"]
    assert r > g > b                              # orange
    r, g, b = DAMAGE_COLORS[UNCLASSIFIED]
    assert r == g == b                            # grey
    r, g, b = DAMAGE_COLORS["building"]
    assert b > r and g > r                        # cyan


def test_legend_is_self_contained_html_with_every_swatch():
    html = legend_html()
    for key, (r, g, b) in DAMAGE_COLORS.items():
        assert f"rgb({r},{g},{b})" in html
    for words in ("no damage", "minor damage", "major damage", "destroyed", "un-classified", "pre-event"):
        assert words in html
    assert "http" not in html and "src=" not in html and "url(" not in html and "<script" not in html
