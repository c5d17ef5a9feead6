"""Post-event damage: one style per disaster type (`_DISASTERS`), each choosing a damage
class per building and painting what changed on the ground, the trees and the roofs."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from core.data.synthetic.layout import _Layout
from core.data.synthetic.numeric import (
    _SS,
    _col,
    _cos,
    _dist_outside,
    _fbm,
    _hypot,
    _lerp,
    _lookup,
    _Mask,
    _noise,
    _Pieces,
    _sin,
    _smooth,
    _walk,
    _wave,
    _wavy,
)
from core.data.synthetic.render import _Post, _roof_geometry, _RoofGeo
from core.data.synthetic.specs import SIZE

NO, MINOR, MAJOR, DESTROYED = 0, 1, 2, 3  # indices into DAMAGE_CLASSES


def _per_pixel(geo: _RoofGeo, values: np.ndarray) -> np.ndarray:
    """Look a per-building array up at every roof pixel."""
    return np.concatenate([np.zeros(1, values.dtype), values])[geo.bid]


def _local(geo: _RoofGeo):
    """Roof coordinates normalised to [-1, 1] along and across each part."""
    return geo.pu / geo.hu, geo.pv / geo.hv


def _rubble(geo: _RoofGeo, rng, palette, base_noise: np.ndarray) -> np.ndarray:
    """Chunky debris colours for each roof pixel."""
    pal = np.array(palette, np.float32)
    n = base_noise.ravel()[geo.idx]
    q = np.clip(((n + 2.0) / 4.0 * len(pal)).astype(int), 0, len(pal) - 1)
    jitter = rng.uniform(0.8, 1.15, len(geo.idx)).astype(np.float32)
    return pal[q] * jitter[:, None]


def _chunk_noise(rng, cells: int = 300) -> np.ndarray:
    """Blocky noise (nearest-neighbour cells) mixed with smooth noise: debris texture."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    blocky = np.asarray(Image.fromarray(g).resize((SIZE, SIZE), Image.Resampling.NEAREST),
                        np.float32)
    return 0.75 * blocky + 0.5 * _noise(rng, cells)


def _missing_part(geo: _RoofGeo, rng, nb: int, share: tuple[float, float], wobble) -> np.ndarray:
    """A ragged part of each roof (True where missing); `share` bounds its area share."""
    uu, vv = _local(geo)
    th = rng.uniform(0, 2 * math.pi, nb + 1)
    cut = rng.uniform(*share, nb + 1)
    d = uu * _cos(th)[geo.bid] + vv * _sin(th)[geo.bid] + 0.35 * wobble.ravel()[geo.idx]
    return d > (1.0 - 2.0 * cut[geo.bid])


def _patches(geo: _RoofGeo, rng, nb: int, count: int, size=(0.25, 0.5)) -> np.ndarray:
    """A few rectangular patches per roof (tarps, holes), in roof coordinates."""
    uu, vv = _local(geo)
    hit = np.zeros(len(geo.idx), bool)
    for _ in range(count):
        cu, cv = rng.uniform(-0.6, 0.6, nb + 1), rng.uniform(-0.5, 0.5, nb + 1)
        su, sv = rng.uniform(*size, nb + 1), rng.uniform(*size, nb + 1)
        hit |= (np.abs(uu - cu[geo.bid]) < su[geo.bid]) & (np.abs(vv - cv[geo.bid]) < sv[geo.bid])
    return hit


def _classes(intensity: np.ndarray, rng, cuts=(0.35, 0.55, 0.75), spread=0.1) -> np.ndarray:
    r = intensity + rng.normal(0, spread, len(intensity))
    return np.searchsorted(np.asarray(cuts), r).astype(np.int64)


def _centres(L: _Layout) -> np.ndarray:
    return np.array([b.anchor for b in L.buildings], np.float64).reshape(-1, 2)


def _footprint_mask(L: _Layout, which: np.ndarray, grow: float = 0.0) -> np.ndarray:
    m = _Mask()
    for b, w in zip(L.buildings, which):
        if w:
            for p in b.parts:
                m.polygon(p.corners(grow=grow))
    return m.coverage()


def _scatter(pieces: _Pieces, rng, density: np.ndarray, n_try: int, size_px, palette,
             avoid: np.ndarray | None = None) -> None:
    """Drop small debris fragments where `density` (0..1) says, avoiding `avoid`."""
    x = rng.uniform(0, SIZE, n_try)
    y = rng.uniform(0, SIZE, n_try)
    keep = rng.random(n_try) < _lookup(density, x, y)
    if avoid is not None:
        keep &= ~_lookup(avoid, x, y)
    x, y = x[keep], y[keep]
    n = len(x)
    a = rng.uniform(*size_px, n) / 2
    b = rng.uniform(*size_px, n) * rng.uniform(0.3, 0.8, n) / 2
    ang = rng.uniform(0, math.pi, n)
    pal = np.array(palette, np.float64)
    cols = np.clip(pal[rng.integers(len(pal), size=n)] * rng.uniform(0.85, 1.15, (n, 1)), 0, 1)
    cols = np.rint(cols * 255).astype(int)
    c, s = _cos(ang), _sin(ang)
    # corners in the supersampled frame, as _Mask._pts would place them
    us = np.array([-1, 1, 1, -1])[None, :]
    vs = np.array([-1, -1, 1, 1])[None, :]
    px = (x[:, None] + us * a[:, None] * c[:, None] - vs * b[:, None] * s[:, None]) * _SS - 0.5
    py = (y[:, None] + us * a[:, None] * s[:, None] + vs * b[:, None] * c[:, None]) * _SS - 0.5
    for qx, qy, col in zip(px.tolist(), py.tolist(), cols.tolist()):
        poly = list(zip(qx, qy))
        pieces.d_rgb.polygon(poly, fill=tuple(col))
        pieces.d_mask.polygon(poly, fill=255)


_DEBRIS = [(0.72, 0.70, 0.66), (0.55, 0.45, 0.34), (0.42, 0.40, 0.38), (0.80, 0.79, 0.75),
           (0.35, 0.28, 0.22), (0.62, 0.60, 0.56)]


def _post_flood(L: _Layout, rng, X, Y) -> _Post:
    """River in flood over fields and low streets; every building left dry (no damage)."""
    nb = len(L.buildings)
    elev = L.extra["elevation"]
    build = _footprint_mask(L, np.ones(nb, bool), grow=2.0) > 0
    keep_dry = _smooth(1.0, 4.0, _dist_outside(build))
    level = 1.1
    flood = _smooth(level + 0.03, level - 0.03, elev) * keep_dry
    flood = np.maximum(flood, L.water)
    depth = np.clip((level - elev) / level, 0, 1)
    swirl = _fbm(rng, 16, 3)
    mud = _lerp(np.broadcast_to(_col(0.53, 0.46, 0.34), (SIZE, SIZE, 3)).copy(),
                _col(0.39, 0.33, 0.25), _smooth(0.05, 0.6, depth + 0.12 * swirl))
    mud = _lerp(mud, _col(0.32, 0.27, 0.20), 0.8 * L.water)  # the channel still shows
    alpha = flood * (0.75 + 0.25 * _smooth(0.0, 0.08, depth))
    wet = _smooth(level + 0.15, level, elev) * (1 - flood)
    natural = L.natural * (1 - 0.22 * wet)[..., None]
    bridge = L.layers["road_cov"] * L.water

    def water(img):
        return _lerp(img, mud, alpha * (1 - bridge))

    return _Post(np.zeros(nb, np.int64), natural, L.trees.copy(), over_ground=[water])


def _post_fire(L: _Layout, rng, X, Y) -> _Post:
    """A burn scar sweeping in from the north-east; most houses inside it burnt to ash."""
    nb = len(L.buildings)
    front = (0.75 * (X / SIZE) - 0.55 * (Y / SIZE) + 0.05) * 3.0
    burn = front + 0.7 * _fbm(rng, 3, 4)
    ctr = _centres(L)
    inten = _smooth(-0.6, 0.9, _lookup(burn, ctr[:, 0], ctr[:, 1]))
    klass = _classes(inten, rng, cuts=(0.42, 0.55, 0.68), spread=0.1)
    survivors = (inten > 0.85) & (rng.random(nb) < 0.15)
    klass[survivors] = NO
    # burnt ground reaches every damaged house, spares a ring round the survivors
    dmg = _footprint_mask(L, klass >= MINOR, grow=0)
    ragged = 3.0 * _noise(rng, 60)
    scar = np.maximum(_smooth(-0.1, 0.4, burn), _smooth(11, 3, _dist_outside(dmg > 0.5) + ragged))
    spare = _footprint_mask(L, klass == NO, grow=0) > 0.5
    scar *= 1.0 - 0.75 * _smooth(7.0, 2.0, _dist_outside(spare) + ragged * 0.5)
    scar = np.clip(scar, 0, 1)
    grit = _fbm(rng, 90, 3)
    char = _lerp(np.broadcast_to(_col(0.09, 0.085, 0.08), (SIZE, SIZE, 3)).copy(),
                 _col(0.27, 0.26, 0.25), _smooth(-0.6, 1.6, grit + 0.6 * L.layers["mid"]))
    streak = _smooth(1.3, 2.0, _fbm(rng, 70, 2))
    char = _lerp(char, _col(0.40, 0.39, 0.37), 0.3 * streak)
    singe = _col(0.42, 0.33, 0.23)
    edge = _smooth(0.2, 0.55, scar) * _smooth(1.0, 0.7, scar)
    natural = _lerp(L.natural, singe, np.clip(_smooth(0.05, 0.35, scar) * 1.2, 0, 1))
    natural = _lerp(natural, char, _smooth(0.45, 0.7, scar))
    natural = _lerp(natural, singe * 0.8, 0.35 * edge)
    t = L.trees
    at = _lookup(scar, t.x, t.y)
    keep = ~((at > 0.7) & (rng.random(len(t.x)) < 0.35))
    trees = t.subset(keep)
    at = at[keep]
    burnt = at > 0.65
    scorched = (at > 0.3) & ~burnt
    trees.tint[burnt] = _col(0.06, 0.055, 0.05) * rng.uniform(0.8, 1.4, (burnt.sum(), 1))
    trees.tint[scorched] = _col(0.42, 0.29, 0.16) * rng.uniform(0.8, 1.2, (scorched.sum(), 1))
    trees.ra[burnt] *= 0.7
    trees.rb[burnt] *= 0.7
    soot = _noise(rng, 200)
    wobble = _fbm(rng, 40, 2)

    def roofs(geo, roof, L_, post):
        k = _per_pixel(geo, post.klass)
        rim = np.minimum(geo.hu - np.abs(geo.pu), geo.hv - np.abs(geo.pv)) < 1.0
        ash = _lerp(np.broadcast_to(_col(0.55, 0.53, 0.50), (len(k), 3)).copy(),
                    _col(0.17, 0.15, 0.13), _smooth(-0.2, 1.0, soot.ravel()[geo.idx]))
        ash = _lerp(ash, _col(0.50, 0.33, 0.22), 0.6 * _smooth(1.2, 1.8, -soot.ravel()[geo.idx]))
        ash = np.where(rim[:, None], ash * 0.4 + _col(0.62, 0.60, 0.56) * 0.6, ash)
        out = np.where((k == DESTROYED)[:, None], ash, roof)
        gone = (k == MAJOR) & _missing_part(geo, rng, nb, (0.4, 0.7), wobble)
        charred = _col(0.12, 0.11, 0.10) * (1 + 0.3 * soot.ravel()[geo.idx])[:, None]
        out = np.where(gone[:, None], charred, out)
        sc = (k == MINOR) & _missing_part(geo, rng, nb, (0.2, 0.35), wobble)
        out = np.where(sc[:, None], out * 0.4, out)
        return out

    return _Post(klass, natural.astype(np.float32), trees, roof_fx=roofs,
                 gone=klass == DESTROYED)


def _post_wind(L: _Layout, rng, X, Y) -> _Post:
    nb = len(L.buildings)
    ctr = _centres(L)
    inten = (0.9 * (1 - ctr[:, 1] / SIZE) * 0.5 + 0.6 * (1 - ctr[:, 0] / SIZE) * 0.5
              + 0.25 * _lookup(_fbm(rng, 3, 3), ctr[:, 0], ctr[:, 1]))
    klass = _classes(inten, rng, cuts=(0.3, 0.5, 0.72), spread=0.12)
    wind = math.radians(35)  # debris blown towards this direction (image coordinates)
    wdir = np.array([math.cos(wind), math.sin(wind)])
    hit = _footprint_mask(L, klass >= MAJOR, grow=0) > 0.5
    near = _dist_outside(hit)
    from scipy.ndimage import shift

    dens = shift(_smooth(18, 0, near), (wdir[1] * 8, wdir[0] * 8), order=1)
    dens = 0.22 * dens + 0.006 * _smooth(0.5, 1.5, _fbm(rng, 8, 2))
    roofs_any = _footprint_mask(L, np.ones(nb, bool), grow=0.5) > 0.1
    pieces = _Pieces()
    _scatter(pieces, rng, dens, 120_000, (1.2, 3.5), _DEBRIS + [(0.20, 0.40, 0.70)], roofs_any)
    # piles next to destroyed houses, spilling downwind
    destroyed = _footprint_mask(L, klass == DESTROYED, grow=0) > 0.5
    pile = _smooth(6, 0, shift(_dist_outside(destroyed), (wdir[1] * 3, wdir[0] * 3), order=1))
    _scatter(pieces, rng, 0.9 * pile, 60_000, (1.0, 2.5), _DEBRIS, roofs_any & ~destroyed)
    # browner, thinner vegetation; some trees down
    natural = L.natural * _col(1.072, 0.988, 0.91)  # stripped, browner vegetation
    t = L.trees.copy()
    fallen = rng.random(len(t.x)) < 0.12
    t.ang[fallen] = wind + rng.normal(0, 0.35, fallen.sum())
    t.ra[fallen] *= 1.9
    t.rb[fallen] *= 0.55
    t.x[fallen] += _cos(t.ang[fallen]) * t.ra[fallen] * 0.6
    t.y[fallen] += _sin(t.ang[fallen]) * t.ra[fallen] * 0.6
    t.tint = t.tint * _col(1.15, 1.0, 0.85)
    t.ra[~fallen] *= 0.88
    t.rb[~fallen] *= 0.88
    pool_murk = L.layers["pool_cov"]
    wobble = _fbm(rng, 40, 2)
    chunks = _chunk_noise(rng, 320)

    def ground(img):
        img = _lerp(img, _col(0.30, 0.36, 0.22), pool_murk * 0.9)
        return pieces.composite(img)

    def roofs(geo, roof, L_, post):
        k = _per_pixel(geo, post.klass)
        deck = _lerp(np.broadcast_to(_col(0.55, 0.45, 0.33), (len(k), 3)).copy(),
                     _col(0.22, 0.19, 0.16), _smooth(0.2, 1.2, chunks.ravel()[geo.idx]))
        rub = _rubble(geo, rng, _DEBRIS, chunks)
        out = np.where((k == DESTROYED)[:, None], rub, roof)
        miss = (k == MAJOR) & _missing_part(geo, rng, nb, (0.35, 0.6), wobble)
        out = np.where(miss[:, None], deck, out)
        covered = _per_pixel(geo, rng.random(nb) < 0.4)  # some damaged roofs got a tarp too
        tarp = _patches(geo, rng, nb, 2, (0.2, 0.45)) & (
            (k == MINOR) | ((k == MAJOR) & ~miss & covered))
        blue = _col(0.16, 0.38, 0.70) * (1 + 0.08 * chunks.ravel()[geo.idx])[:, None]
        out = np.where(tarp[:, None], blue, out)
        holes = (k == MINOR) & ~tarp & _patches(geo, rng, nb, 2, (0.08, 0.15))
        out = np.where(holes[:, None], deck, out)
        return out

    return _Post(klass, natural.astype(np.float32), t, over_ground=[ground], roof_fx=roofs,
                 gone=klass == DESTROYED)


def _post_earthquake(L: _Layout, rng, X, Y) -> _Post:
    nb = len(L.buildings)
    ctr = _centres(L)
    inten_map = 0.55 * _fbm(rng, 3, 3) + 0.35 * (1 - _hypot(X - 380, Y - 600) / 900)
    klass = _classes(_lookup(inten_map, ctr[:, 0], ctr[:, 1]), rng, cuts=(0.15, 0.33, 0.5),
                     spread=0.15)
    collapsed = _footprint_mask(L, klass == DESTROYED, grow=0) > 0.5
    roofs_any = _footprint_mask(L, np.ones(nb, bool), grow=0.5) > 0.1
    d = _dist_outside(collapsed)
    spill_noise = _noise(rng, 200)
    spill = _smooth(5.0, 0.5, d + 1.5 * spill_noise) * ~roofs_any
    chunks = _chunk_noise(rng, 340)
    pal = np.array([(0.70, 0.68, 0.64), (0.58, 0.56, 0.52), (0.46, 0.44, 0.41),
                    (0.80, 0.78, 0.74), (0.55, 0.42, 0.33)], np.float32)
    q = np.clip(((chunks + 2) / 4 * len(pal)).astype(int), 0, len(pal) - 1)
    rubble_img = pal[q] * (1 + 0.08 * spill_noise)[..., None]
    dust = _smooth(25, 2, d) * 0.35
    cracks = _Mask()
    starts = rng.uniform(100, 900, (60, 2))
    starts = starts[_lookup(L.town, starts[:, 0], starts[:, 1]) > 0.6][:7]
    for x, y in starts:
        ang = rng.uniform(0, 2 * math.pi)
        pts = [(x, y)]
        for _ in range(int(rng.integers(20, 50))):
            ang += rng.normal(0, 0.35)
            x += 4 * math.cos(ang)
            y += 4 * math.sin(ang)
            pts.append((x, y))
        cracks.line(pts, rng.uniform(0.35, 0.7), caps=False)
    crack = cracks.coverage()
    pieces = _Pieces()
    _scatter(pieces, rng, 0.6 * _smooth(10, 2, d), 80_000, (0.8, 2.2), [tuple(c) for c in pal],
             roofs_any)

    def ground(img):
        img = _lerp(img, _col(0.70, 0.68, 0.64), dust)
        img = _lerp(img, rubble_img, spill)
        img = _lerp(img, _col(0.10, 0.09, 0.09), crack * 0.85)
        return pieces.composite(img)

    wobble = _fbm(rng, 40, 2)

    def roofs(geo, roof, L_, post):
        k = _per_pixel(geo, post.klass)
        rub = pal[q.ravel()[geo.idx]] * (0.85 + 0.2 * spill_noise.ravel()[geo.idx])[:, None]
        # rubble heaps are darker where they slump away from the sun
        out = np.where((k == DESTROYED)[:, None], rub, roof)
        part = (k == MAJOR) & _missing_part(geo, rng, nb, (0.3, 0.6), wobble)
        out = np.where(part[:, None], rub * 0.85, out)
        spots = (k == MINOR) & _patches(geo, rng, nb, 2, (0.1, 0.22))
        out = np.where(spots[:, None], rub, out)
        return out

    return _Post(klass, L.natural, L.trees.copy(), over_ground=[ground], roof_fx=roofs,
                 gone=klass == DESTROYED)


def _post_volcano(L: _Layout, rng, X, Y) -> _Post:
    """A lava flow across the town: what lies under it is destroyed, ash around it."""
    from scipy.ndimage import gaussian_filter

    nb = len(L.buildings)
    path = _wavy((380, -60), (640, SIZE + 60), rng, amps=(70, 25), periods=(1100, 360))
    m = _Mask()
    cum, _ = _walk(path)
    for i in range(len(path) - 1):
        m.line(path[i:i + 2], 150 + 90 * cum[i] / cum[-1])
    blur = gaussian_filter(m.coverage(), 6)
    lava = _smooth(0.45, 0.55, blur + 0.25 * _fbm(rng, 14, 4) * _smooth(0.0, 0.3, blur))
    lobe = _wavy((520, 380), (820, 640), rng, amps=(30, 10), periods=(500, 200))
    m2 = _Mask()
    m2.line(lobe, 70)
    blur2 = gaussian_filter(m2.coverage(), 5)
    lava = np.maximum(lava, _smooth(0.45, 0.55, blur2 + 0.22 * _fbm(rng, 16, 3)
                                    * _smooth(0.0, 0.3, blur2)))
    # damage from how much of each footprint lies under the lava
    fp = _roof_geometry(L.buildings)
    share = np.bincount(fp.bid, weights=lava.ravel()[fp.idx], minlength=nb + 1)[1:] / np.maximum(
        np.bincount(fp.bid, minlength=nb + 1)[1:], 1)
    dist_lava = _dist_outside(lava > 0.5)
    ctr = _centres(L)
    near = _lookup(dist_lava, ctr[:, 0], ctr[:, 1])
    klass = np.full(nb, NO)
    klass[near < 70] = MINOR
    klass[(near < 22) | (share > 0.03)] = MAJOR
    klass[share >= 0.5] = DESTROYED
    # lava surface: dark, matte, arcuate pressure ridges across the flow, a few pale crusts
    mott = 0.6 * _fbm(rng, 40, 3) + 0.4 * _noise(rng, 256)
    along = X * 0.22 + Y * 0.97
    ridges = _wave(along / 9.0 + 5.0 / (2 * math.pi) * _noise(rng, 25)).astype(np.float32)
    lava_rgb = np.broadcast_to(_col(0.13, 0.125, 0.13), (SIZE, SIZE, 3)) * (
        1 + 0.22 * mott + 0.1 * ridges + 0.08 * L.layers["fine"])[..., None]
    lava_rgb = _lerp(lava_rgb, _col(0.27, 0.26, 0.26), 0.35 * _smooth(1.6, 2.4, _fbm(rng, 120, 2)))
    rim = _smooth(0.5, 0.9, lava) * _smooth(1.0, 0.8, lava)
    lava_rgb *= (1 - 0.25 * rim)[..., None]
    ash_col = _col(0.55, 0.54, 0.52)
    ash = _smooth(90, 0, dist_lava) * 0.55
    natural = _lerp(L.natural, ash_col, ash)
    natural = _lerp(natural, _col(0.40, 0.33, 0.22), _smooth(30, 4, dist_lava) * 0.6)
    t = L.trees
    tl = _lookup(lava, t.x, t.y)
    td = _lookup(dist_lava, t.x, t.y)
    trees = t.subset(tl < 0.3)
    td = td[tl < 0.3]
    grey = td < 40
    trees.tint[grey] = _lerp(trees.tint[grey], ash_col * 0.6, np.full(grey.sum(), 0.5, np.float32))
    dead = td < 12
    trees.tint[dead] = _col(0.28, 0.22, 0.16)

    def over(img):
        return _lerp(img, lava_rgb, lava)

    wobble = _fbm(rng, 40, 2)

    def roofs(geo, roof, L_, post):
        k = _per_pixel(geo, post.klass)
        dusted = (k == MINOR) & _missing_part(geo, rng, nb, (0.35, 0.6), wobble)
        out = np.where(dusted[:, None], roof * 0.4 + ash_col * 0.6, roof)
        heavy = (k == MAJOR) & _missing_part(geo, rng, nb, (0.45, 0.7), wobble)
        burnt = _col(0.20, 0.18, 0.16) * (1 + 0.3 * mott.ravel()[geo.idx])[:, None]
        out = np.where(heavy[:, None], burnt, out)
        out = np.where(((k == MAJOR) & ~heavy)[:, None], out * 0.5 + ash_col * 0.5, out)
        out = np.where((k == DESTROYED)[:, None], burnt, out)
        return out

    return _Post(klass, natural.astype(np.float32), trees, over_all=[over], roof_fx=roofs,
                 gone=klass >= MAJOR)


def _post_tsunami(L: _Layout, rng, X, Y) -> _Post:
    nb = len(L.buildings)
    ys = L.extra["shore_y"][None, :]
    inland = ys - Y
    reach = 330 + 60 * _fbm(rng, 3, 2)
    inund = _smooth(1.0, 0.0, inland / reach)  # 1 at the shore, 0 at the limit
    ctr = _centres(L)
    inten = _lookup(inund, ctr[:, 0], ctr[:, 1])
    klass = _classes(inten, rng, cuts=(0.25, 0.45, 0.62), spread=0.09)
    sand = _lerp(np.broadcast_to(_col(0.66, 0.60, 0.47), (SIZE, SIZE, 3)).copy(),
                 _col(0.42, 0.37, 0.28), _smooth(0.3, 1.3, L.layers["mid"] + 0.5 * _noise(rng, 80)))
    natural = _lerp(L.natural, sand, _smooth(0.0, 0.35, inund) * 0.95)
    roofs_any = _footprint_mask(L, np.ones(nb, bool), grow=0.5) > 0.1
    destroyed = _footprint_mask(L, klass == DESTROYED, grow=0) > 0.5
    line = _smooth(0.0, 0.12, inund) * _smooth(0.45, 0.15, inund)  # debris line inland
    dens = (0.55 * line + 0.35 * _smooth(14, 0, _dist_outside(destroyed))
            + 0.025 * (inund > 0.3)) * (L.water < 0.3)
    pieces = _Pieces()
    _scatter(pieces, rng, dens, 160_000, (1.0, 3.5), _DEBRIS + [(0.65, 0.30, 0.25),
                                                             (0.30, 0.45, 0.58)], roofs_any)
    puddles = _smooth(1.45, 1.6, _fbm(rng, 24, 3)) * _smooth(0.2, 0.5, inund) * (1 - L.water)
    sea_mud = _smooth(140, 0, _dist_outside(L.water < 0.5)) * L.water
    t = L.trees
    ti = _lookup(inund, t.x, t.y)
    keep = rng.random(len(t.x)) > _smooth(0.35, 0.8, ti)
    trees = t.subset(keep)
    ti = ti[keep]
    trees.tint = _lerp(trees.tint, _col(0.35, 0.30, 0.20), _smooth(0.1, 0.5, ti) * 0.6)
    road_sand = _smooth(0.05, 0.4, inund) * 0.55

    def ground(img):
        img = _lerp(img, sand, road_sand * L.layers["road_cov"])
        img = _lerp(img, _col(0.34, 0.33, 0.27), sea_mud * 0.6)
        img = _lerp(img, _col(0.27, 0.28, 0.25), puddles * 0.85)
        return pieces.composite(img)

    wobble = _fbm(rng, 40, 2)
    chunks = _chunk_noise(rng, 300)

    def roofs(geo, roof, L_, post):
        k = _per_pixel(geo, post.klass)
        e = np.minimum(geo.hu - np.abs(geo.pu), geo.hv - np.abs(geo.pv))
        slab = _lerp(np.broadcast_to(_col(0.68, 0.66, 0.61), (len(k), 3)).copy(),
                     _col(0.42, 0.38, 0.31), _smooth(0.4, 1.4, chunks.ravel()[geo.idx]))
        slab = np.where((e < 1.0)[:, None], _col(0.50, 0.48, 0.45), slab)
        out = np.where((k == DESTROYED)[:, None], slab, roof)
        miss = (k == MAJOR) & _missing_part(geo, rng, nb, (0.35, 0.6), wobble)
        rub = _rubble(geo, rng, _DEBRIS, chunks)
        out = np.where(miss[:, None], rub, out)
        spots = (k == MINOR) & _patches(geo, rng, nb, 2, (0.1, 0.22))
        out = np.where(spots[:, None], rub * 0.8, out)
        return out

    return _Post(klass, natural.astype(np.float32), trees, over_ground=[ground], roof_fx=roofs,
                 gone=klass == DESTROYED)


_DISASTERS = {"flooding": _post_flood, "fire": _post_fire, "wind": _post_wind,
              "earthquake": _post_earthquake, "volcano": _post_volcano, "tsunami": _post_tsunami}
