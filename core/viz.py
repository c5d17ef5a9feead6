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


def labelled_matrix(rows: list, *, columns: list[str], context: tuple | None = None, size: int = 256,
                    font_size: int = 16) -> np.ndarray:
    """A uint8 picture of a labelled matrix: an optional `context` row (row label, cells)
    first, then the `columns` headers, then one row per (row label, cells) in `rows`; each
    cell (image or None, caption) is shown at `size`×`size` (LANCZOS) with its caption
    under it. A None image is drawn as a grey tile carrying its caption (a failed or
    stopped cell). Rows may be shorter than `columns`."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("labelled_matrix needs at least one row")
    font = ImageFont.load_default(size=font_size)
    line = font_size + 6
    everything = ([context] if context else []) + list(rows)
    n_cols = max(len(columns), max(len(cells) for _, cells in everything))
    left = max(120, min(260, max(int(font.getlength(label)) + 16 for label, _ in everything)))
    cell_h = size + 2 * line
    header_y = cell_h if context else 0
    top = header_y + (line + 8 if any(columns) else 0)
    sheet = Image.new("RGB", (left + n_cols * size, top + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for c, header in enumerate(columns):
        draw.text((left + c * size + 6, header_y + 4), _fit(header, font, size - 8), fill=(20, 20, 20), font=font)
    placed = ([(0, context)] if context else []) + [(top + r * cell_h, row) for r, row in enumerate(rows)]
    for y, (label, cells) in placed:
        for k, text in enumerate(_wrap(label, font, left - 12, 3)):
            draw.text((6, y + size // 2 - line + k * line), text, fill=(20, 20, 20), font=font)
        for c, (image, caption) in enumerate(cells):
            x = left + c * size
            if image is None:
                draw.rectangle((x + 2, y + 2, x + size - 3, y + size - 3), fill=(225, 225, 225))
                for k, text in enumerate(_wrap(caption, font, size - 16, size // line - 1)):
                    draw.text((x + 8, y + 8 + k * line), text, fill=(120, 20, 20), font=font)
                continue
            tile = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
            sheet.paste(tile.resize((size, size), Image.Resampling.LANCZOS), (x, y))
            for k, text in enumerate(_wrap(caption, font, size - 8, 2)):
                draw.text((x + 4, y + size + 2 + k * line), text, fill=(20, 20, 20), font=font)
    return np.asarray(sheet)


def _fit(text: str, font, width: int) -> str:
    """`text` cut with an ellipsis to fit `width` px in `font`."""
    text = str(text)
    while text and font.getlength(text) > width:
        text = text[:-2] + "…" if len(text) > 2 else ""
    return text


def _wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """`text` broken into at most `max_lines` lines of `width` px (the last one cut)."""
    lines, current = [], ""
    for word in str(text).split():
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(lines[-1] + " …", font, width)
    return [_fit(line, font, width) for line in lines]
