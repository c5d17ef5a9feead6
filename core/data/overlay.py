"""Building footprints drawn over a tile, coloured by damage class, and their legend.

Colours follow the Okabe-Ito palette, which stays distinguishable under the common forms
of colour blindness, and keep the usual meaning (green = fine ... red = destroyed).
"""

from __future__ import annotations

import html

import numpy as np

from core.data.masks import building_masks
from core.types import DAMAGE_CLASSES, UNCLASSIFIED, Label

#: RGB colour per class; "building" is a pre-event footprint (no damage class yet)
DAMAGE_COLORS: dict[str, tuple[int, int, int]] = {
    "no-damage": (0, 158, 115),      # bluish green
    "minor-damage": (240, 228, 66),  # yellow
    "major-damage": (230, 159, 0),   # orange
    "destroyed": (213, 40, 40),      # red
    UNCLASSIFIED: (160, 160, 160),   # grey
    "building": (86, 220, 255),      # cyan
}

_LEGEND_NAMES = {
    "building": "building (pre-event)",
    "no-damage": "no damage",
    "minor-damage": "minor damage",
    "major-damage": "major damage",
    "destroyed": "destroyed",
    UNCLASSIFIED: "un-classified",
}


def color_key(subtype: str | None) -> str:
    """The DAMAGE_COLORS key of a building subtype (None = pre-event footprint)."""
    if subtype is None:
        return "building"
    return subtype if subtype in DAMAGE_COLORS else UNCLASSIFIED


def _inner_edge(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` px of its border (4-neighbourhood), inside it."""
    core = mask.copy()
    for _ in range(width):
        shrunk = core.copy()
        shrunk[1:, :] &= core[:-1, :]
        shrunk[:-1, :] &= core[1:, :]
        shrunk[:, 1:] &= core[:, :-1]
        shrunk[:, :-1] &= core[:, 1:]
        shrunk[0, :] = shrunk[-1, :] = False
        shrunk[:, 0] = shrunk[:, -1] = False
        core = shrunk
    return mask & ~core


def draw_footprints(image: np.ndarray, label: Label, *, part: int | None = None, alpha: float = 0.45,
                    outline: bool = True) -> np.ndarray:
    """A copy of `image` (uint8 HxWx3, or HxW grey) with the label's footprints filled with
    their class colour at opacity `alpha` (0..1) and, with `outline`, an opaque inner
    border (1 px up to 512 px images, 2 px above). Polygons are scaled from the label's
    size to the image's; `part` crops a full-tile label to a 512 px tile's quadrant (see
    core.data.masks). Pixels outside every footprint are left unchanged.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha!r}")
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    img = img[:, :, :3]
    h, w = img.shape[:2]
    out = img.astype(np.float32)  # a copy
    edge = 1 if min(h, w) <= 512 else 2
    for b, _value, r0, c0, m in building_masks(label, (w, h), part=part):
        color = np.asarray(DAMAGE_COLORS[color_key(b.subtype)], dtype=np.float32)
        view = out[r0:r0 + m.shape[0], c0:c0 + m.shape[1]]
        src = img[r0:r0 + m.shape[0], c0:c0 + m.shape[1]].astype(np.float32)
        view[m] = src[m] * (1.0 - alpha) + color * alpha
        if outline:
            view[_inner_edge(m, edge)] = color
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def legend_html() -> str:
    """A small inline-styled HTML legend of the footprint colours (no external files)."""
    items = []
    for key in ("building",) + DAMAGE_CLASSES + (UNCLASSIFIED,):
        r, g, b = DAMAGE_COLORS[key]
        items.append(
            '<span style="display:inline-flex;align-items:center;margin:0 12px 4px 0;'
            'font-size:0.9em;white-space:nowrap">'
            f'<span style="display:inline-block;width:14px;height:14px;margin-right:5px;'
            f'border:1px solid rgba(0,0,0,0.35);border-radius:2px;background:rgb({r},{g},{b})">'
            f'</span>{html.escape(_LEGEND_NAMES[key])}</span>'
        )
    return ('<div class="xbd-legend" style="display:flex;flex-wrap:wrap;align-items:center">'
            + "".join(items) + "</div>")
