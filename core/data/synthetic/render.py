"""Rendering: sun and shadows, roof geometry and shading, tree crowns, ground colours, and
the composition and finish (gamma, colour balance, haze, blur) of one capture."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from core.data.synthetic.layout import _Building, _Layout, _Trees
from core.data.synthetic.numeric import _col, _cos, _hull, _lerp, _Mask, _sin, _smooth
from core.data.synthetic.specs import SIZE, Capture


def _sun(cap: Capture) -> np.ndarray:
    """Unit vector towards the sun in (x east, y south, z up)."""
    az, el = math.radians(cap.sun_azimuth), math.radians(cap.sun_elevation)
    return np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])


def _shadow_offset(cap: Capture, height: float) -> np.ndarray:
    """Where a point `height` px above the ground casts its shadow, relative to it."""
    s = _sun(cap)
    h = math.hypot(s[0], s[1])
    return -np.array([s[0], s[1]]) / max(h, 1e-6) * height * h / s[2]


@dataclass
class _RoofGeo:
    """Per-pixel roof geometry, as flat arrays over the pixels `idx` of the roofs."""

    cov: np.ndarray  # union coverage, SIZE x SIZE
    idx: np.ndarray  # flat pixel indices with a roof
    bid: np.ndarray  # building index + 1 per roof pixel
    pu: np.ndarray  # coordinate along the part's ridge (px)
    pv: np.ndarray  # across the ridge (px)
    hu: np.ndarray  # half length of the part
    hv: np.ndarray  # half width
    cos: np.ndarray
    sin: np.ndarray
    roof: np.ndarray  # 0 flat, 1 gable, 2 hip


def _roof_geometry(buildings: list[_Building]) -> _RoofGeo:
    from scipy.ndimage import grey_dilation

    parts = [(bi, p) for bi, b in enumerate(buildings) for p in b.parts]
    ids = Image.new("I", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(ids)
    cov = _Mask()
    for k, (_, p) in enumerate(parts):
        corners = p.corners()
        d.polygon([(x - 0.5, y - 0.5) for x, y in corners], fill=k + 1)
        cov.polygon(corners)
    pid = np.asarray(ids, dtype=np.int32)
    c = cov.coverage()
    grown = grey_dilation(pid, size=(3, 3))
    pid = np.where(pid > 0, pid, np.where(c > 0.004, grown, 0))
    idx = np.flatnonzero(pid)
    k = pid.ravel()[idx]
    table = np.array([(0, 0, 0, 1, 1, 0, 1, 0)] + [
        (bi + 1, p.cx, p.cy, p.su / 2, p.sv / 2, math.cos(p.angle), math.sin(p.angle), p.roof)
        for bi, p in parts], np.float64)
    row = table[k]
    xs = (idx % SIZE).astype(np.float64) + 0.5
    ys = (idx // SIZE).astype(np.float64) + 0.5
    dx, dy = xs - row[:, 1], ys - row[:, 2]
    cs, sn = row[:, 5], row[:, 6]
    f32 = np.float32
    return _RoofGeo(
        cov=c, idx=idx, bid=row[:, 0].astype(np.int32),
        pu=(dx * cs + dy * sn).astype(f32), pv=(-dx * sn + dy * cs).astype(f32),
        hu=row[:, 3].astype(f32), hv=row[:, 4].astype(f32), cos=cs.astype(f32),
        sin=sn.astype(f32), roof=row[:, 7].astype(np.int8))


def _roof_shading(geo: _RoofGeo, cap: Capture) -> np.ndarray:
    """Brightness of each roof pixel under this capture's sun (flat roof = 1)."""
    s = _sun(cap)
    pitch = math.radians(26.0)
    end = (geo.roof == 2) & ((geo.hu - np.abs(geo.pu)) < (geo.hv - np.abs(geo.pv)))
    sgn_u = np.where(geo.pu >= 0, 1.0, -1.0)
    sgn_v = np.where(geo.pv >= 0, 1.0, -1.0)
    # horizontal direction the facet faces
    hx = np.where(end, sgn_u * geo.cos, -sgn_v * geo.sin)
    hy = np.where(end, sgn_u * geo.sin, sgn_v * geo.cos)
    flat = geo.roof == 0
    nz = np.where(flat, 1.0, math.cos(pitch))
    k = np.where(flat, 0.0, math.sin(pitch))
    # exposure is normalised to a flat roof; the facet contrast is capped so that a low
    # winter sun does not turn pitched roofs black and white
    hs = math.hypot(s[0], s[1])
    ratio = min(hs / s[2], 0.8) / max(hs, 1e-6)
    light = nz + (hx * s[0] + hy * s[1]) * k * ratio
    shade = 0.45 + 0.55 * np.clip(light, 0.0, 1.6)
    # flat roofs: a darker parapet rim
    edge = np.minimum(geo.hu - np.abs(geo.pu), geo.hv - np.abs(geo.pv))
    shade = np.where(flat & (edge < 1.0), shade * 0.8, shade)
    # pitched roofs: a faint ridge line
    ridge = (~flat) & (~end) & (np.abs(geo.pv) < 0.6)
    shade = np.where(ridge, shade * 1.06, shade)
    return shade.astype(np.float32)


def _crown_heights(trees: _Trees) -> tuple[np.ndarray, np.ndarray]:
    """Canopy height (px) and colour per pixel: each crown a half-ellipsoid, the highest wins.

    Vectorised by grouping crowns of the same window size; ties resolve in a fixed order.
    """
    H = np.zeros(SIZE * SIZE, np.float32)
    tint = np.zeros((SIZE * SIZE, 3), np.float32)
    if len(trees.x) == 0:
        return H.reshape(SIZE, SIZE), tint.reshape(SIZE, SIZE, 3)
    half = np.ceil(np.maximum(trees.ra, trees.rb)).astype(np.int64) + 1
    flats, heights, owners = [], [], []
    for h in np.unique(half):
        sel = np.flatnonzero(half == h)
        off = np.arange(-h, h + 1)
        x, y = trees.x[sel], trees.y[sel]
        col = np.floor(x).astype(np.int64)[:, None, None] + off[None, None, :]
        row = np.floor(y).astype(np.int64)[:, None, None] + off[None, :, None]
        dx = (col + 0.5 - x[:, None, None]).astype(np.float32)
        dy = (row + 0.5 - y[:, None, None]).astype(np.float32)
        c = _cos(trees.ang[sel]).astype(np.float32)[:, None, None]
        s = _sin(trees.ang[sel]).astype(np.float32)[:, None, None]
        ra = trees.ra[sel].astype(np.float32)[:, None, None]
        rb = trees.rb[sel].astype(np.float32)[:, None, None]
        a = (dx * c + dy * s) / ra
        b = (-dx * s + dy * c) / rb
        bump = rb * np.sqrt(np.clip(1.0 - a * a - b * b, 0.0, 1.0))
        ok = (bump > 0) & (col >= 0) & (col < SIZE) & (row >= 0) & (row < SIZE)
        flats.append((row * SIZE + col)[ok])
        heights.append(bump[ok])
        owners.append(np.broadcast_to(sel[:, None, None], ok.shape)[ok])
    flat = np.concatenate(flats)
    height = np.concatenate(heights)
    owner = np.concatenate(owners)
    order = np.lexsort((owner, height, flat))  # by pixel, then height, then tree index
    flat, height, owner = flat[order], height[order], owner[order]
    last = np.ones(len(flat), bool)
    last[:-1] = flat[1:] != flat[:-1]
    H[flat[last]] = height[last]
    tint[flat[last]] = trees.tint[owner[last]]
    return H.reshape(SIZE, SIZE), tint.reshape(SIZE, SIZE, 3)


def _render_trees(trees: _Trees, cap: Capture, leaf: np.ndarray):
    """Crowns as shaded bumps: (alpha, RGB, shadow) maps."""
    from scipy.ndimage import shift

    H, tint = _crown_heights(trees)
    Ht = H * (0.9 + 0.15 * np.clip(leaf * 0.5 + 0.5, 0, 1))
    alpha = np.clip(Ht / 0.9, 0, 1)
    gy, gx = np.gradient(Ht)
    s = _sun(cap)
    light = (-gx * s[0] - gy * s[1] + s[2]) / np.sqrt(gx * gx + gy * gy + 1.0) / s[2]
    shade = 0.58 + 0.5 * np.clip(light, 0, 1.5)
    rgb = tint * shade[..., None]
    off = _shadow_offset(cap, 7.0)
    shadow = shift(alpha, (off[1], off[0]), order=1, mode="constant", cval=0.0)
    shadow = np.clip(shadow, 0, 1)
    return alpha.astype(np.float32), rgb.astype(np.float32), shadow.astype(np.float32)


def _building_shadows(buildings: list[_Building], heights: np.ndarray, cap: Capture) -> np.ndarray:
    m = _Mask()
    for b, h in zip(buildings, heights):
        if h <= 0:
            continue
        off = _shadow_offset(cap, float(h))
        for p in b.parts:
            c = p.corners()
            m.polygon(_hull(c + [(x + off[0], y + off[1]) for x, y in c]))
    return m.coverage()


def _ground_rgb(L: _Layout, natural: np.ndarray) -> np.ndarray:
    ly = L.layers
    g = natural
    g = _lerp(g, _col(0.56, 0.48, 0.37), ly["track_cov"])
    g = _lerp(g, ly["bank_rgb"], ly["bank"])
    g = _lerp(g, ly["water_rgb"], L.water)
    g = _lerp(g, _col(0.66, 0.65, 0.62), ly["walk_cov"])
    g = _lerp(g, ly["road_rgb"], ly["road_cov"])
    g = _lerp(g, _col(0.60, 0.59, 0.56) * (1 + 0.015 * ly["fine"])[..., None], ly["paved_cov"])
    g = _lerp(g, _col(0.30, 0.66, 0.78), ly["pool_cov"])
    return g


@dataclass
class _Post:
    """What the disaster changed: damage per building and the maps that draw it."""

    klass: np.ndarray  # per building, index into DAMAGE_CLASSES
    natural: np.ndarray  # land cover after the event
    trees: _Trees
    over_ground: list = field(default_factory=list)  # callables img -> img before shadows
    over_all: list = field(default_factory=list)  # callables img -> img after roofs
    roof_fx: object = None  # callable (geo, roof_rgb, L, post) -> roof_rgb
    gone: np.ndarray | None = None  # per building: no height left (collapsed, burnt)


def _compose(L: _Layout, geo: _RoofGeo, cap: Capture, post: _Post | None) -> np.ndarray:
    natural = L.natural if post is None else post.natural
    img = _ground_rgb(L, natural)
    if post is not None:
        for fx in post.over_ground:
            img = fx(img)
    heights = np.array([b.height for b in L.buildings], np.float32)
    if post is not None and post.gone is not None:
        heights = np.where(post.gone, 0.0, heights)
    bsh = _building_shadows(L.buildings, heights, cap)
    trees = L.trees if post is None else post.trees
    t_alpha, t_rgb, t_sh = _render_trees(trees, cap, L.layers["fine"])
    from scipy.ndimage import gaussian_filter

    understory = _smooth(0.25, 0.7, gaussian_filter(t_alpha, 3.0))  # forest floor in shade
    sh = np.clip(np.maximum(np.maximum(bsh, t_sh * 0.85), understory * 0.8), 0, 1)
    img = img * (1.0 - sh[..., None] * _col(0.55, 0.52, 0.45))
    img = _lerp(img, t_rgb, t_alpha)
    # roofs
    shade = _roof_shading(geo, cap)
    cols = np.array([(0, 0, 0)] + [b.colour for b in L.buildings], np.float32)
    roof = cols[geo.bid] * shade[:, None]
    roof *= (1 + 0.012 * L.layers["fine"].ravel()[geo.idx])[:, None]
    if post is not None and post.roof_fx is not None:
        roof = post.roof_fx(geo, roof, L, post)
    flat = img.reshape(-1, 3)
    a = geo.cov.ravel()[geo.idx][:, None]
    flat[geo.idx] = flat[geo.idx] * (1 - a) + roof * a
    if post is not None:
        for fx in post.over_all:
            img = fx(img)
    return img


def _finish(img: np.ndarray, cap: Capture) -> np.ndarray:
    """The capture's look (gamma, colour balance, haze) and optics blur, as uint8 RGB.

    No sensor noise on purpose: sub-level noise over the whole tile costs ~30% PNG size.
    """
    from scipy.ndimage import gaussian_filter

    out = np.clip(img, 0, 1)
    if cap.gamma != 1.0:  # x ** gamma from a table, for the reason given at numeric._wave
        table = np.array([(i / 4096) ** cap.gamma for i in range(4097)], np.float32)
        f = out * np.float32(4096.0)
        i = np.minimum(f.astype(np.int64), 4095)
        w = f - i
        out = table[i] * (1 - w) + table[i + 1] * w
    out = out * np.array(cap.gains, np.float32)
    out = out * (1 - cap.haze) + np.float32(cap.haze) * _col(0.72, 0.76, 0.82)
    out = gaussian_filter(out, sigma=(0.8, 0.8, 0))
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
