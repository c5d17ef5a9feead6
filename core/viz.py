"""Turning scalar maps into pictures (pure numpy)."""

from __future__ import annotations

import numpy as np

# Anchor colours of a jet-like map, from low (dark blue) to high (dark red).
_JET = np.array([
    [0.0, 0.0, 0.5], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0],
    [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0],
])


def colorize(values: np.ndarray, *, vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """A HxW map as a uint8 HxWx3 jet-like picture; `vmin` is dark blue, `vmax` dark red."""
    if values.ndim != 2:
        raise ValueError(f"colorize expects a 2-D map, got shape {values.shape}")
    span = vmax - vmin if vmax > vmin else 1.0
    t = np.clip((np.asarray(values, dtype=np.float64) - vmin) / span, 0.0, 1.0)
    pos = t * (len(_JET) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_JET) - 2)
    frac = (pos - lo)[..., None]
    rgb = _JET[lo] * (1.0 - frac) + _JET[lo + 1] * frac
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def labelled_grid(cells: list, *, size: int = 256, columns: int = 4, label_height: int = 22) -> np.ndarray:
    """A uint8 picture of (image, label) cells in rows of `columns`, each image resized to
    `size`×`size` (LANCZOS) with its label written underneath."""
    from PIL import Image, ImageDraw

    if not cells:
        raise ValueError("labelled_grid needs at least one cell")
    columns = min(columns, len(cells))
    rows = -(-len(cells) // columns)
    cell_h = size + label_height
    sheet = Image.new("RGB", (columns * size, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (image, label) in enumerate(cells):
        x, y = (i % columns) * size, (i // columns) * cell_h
        tile = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
        sheet.paste(tile.resize((size, size), Image.Resampling.LANCZOS), (x, y))
        draw.text((x + 4, y + size + 4), str(label)[: size // 6], fill=(20, 20, 20))
    return np.asarray(sheet)
