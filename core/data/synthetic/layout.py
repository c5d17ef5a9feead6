"""Scene geometry shared by both captures: roads, buildings and lots, the six town styles,
trees and land cover, and `_layout` which builds it all for one scene."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from core.data.synthetic.numeric import (
    _at,
    _col,
    _cos,
    _dist_outside,
    _fbm,
    _grid,
    _hypot,
    _lerp,
    _lookup,
    _Mask,
    _noise,
    _rect,
    _sin,
    _smooth,
    _sub_rng,
    _walk,
    _wave,
    _wavy,
)
from core.data.synthetic.specs import SIZE, DemoSceneSpec


@dataclass
class _Road:
    pts: np.ndarray  # N x 2 polyline (px)
    width: float  # px
    kind: str  # "main" | "street" | "track"


@dataclass
class _Part:
    """A rectangular roof part; its u axis (length `su` >= `sv`) carries the ridge."""

    cx: float
    cy: float
    su: float
    sv: float
    angle: float
    roof: int  # 0 flat, 1 gable, 2 hip

    def corners(self, grow: float = 0.0) -> list[tuple[float, float]]:
        return _rect(self.cx, self.cy, self.su + 2 * grow, self.sv + 2 * grow, self.angle)


@dataclass
class _Building:
    parts: list[_Part]
    outline: list[tuple[float, float]]
    colour: np.ndarray  # RGB in [0, 1]
    height: float  # px
    kind: str  # "house" | "large" | "block"

    @property
    def anchor(self) -> tuple[float, float]:
        """A point surely inside the footprint: the centre of the largest part."""
        p = max(self.parts, key=lambda q: q.su * q.sv)
        return p.cx, p.cy


@dataclass
class _Trees:
    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray  # radius along `ang`
    rb: np.ndarray  # radius across
    ang: np.ndarray
    tint: np.ndarray  # N x 3 canopy colour

    def subset(self, keep: np.ndarray) -> "_Trees":
        return _Trees(self.x[keep], self.y[keep], self.ra[keep], self.rb[keep], self.ang[keep],
                      self.tint[keep])

    def copy(self) -> "_Trees":
        return self.subset(np.ones(len(self.x), bool))


@dataclass
class _Layout:
    """Everything both captures share: land, water, roads, buildings, trees."""

    spec: DemoSceneSpec
    town: np.ndarray
    water: np.ndarray  # permanent water coverage (river, pond, sea)
    roads: list[_Road] = field(default_factory=list)
    buildings: list[_Building] = field(default_factory=list)
    paved: list[list[tuple[float, float]]] = field(default_factory=list)
    pools: list[list[tuple[float, float]]] = field(default_factory=list)
    trees: _Trees | None = None
    natural: np.ndarray | None = None  # land cover RGB (no roads, no water)
    layers: dict = field(default_factory=dict)  # coverage maps and colours
    extra: dict = field(default_factory=dict)  # style-specific maps (elevation, shore...)


_ROOFS = {
    "us": [(0.42, 0.42, 0.42), (0.30, 0.30, 0.32), (0.55, 0.53, 0.50), (0.46, 0.38, 0.32),
           (0.22, 0.22, 0.24), (0.78, 0.78, 0.76), (0.60, 0.40, 0.30), (0.36, 0.40, 0.44)],
    "mx": [(0.68, 0.65, 0.60), (0.74, 0.72, 0.68), (0.62, 0.58, 0.52), (0.64, 0.37, 0.27),
           (0.72, 0.58, 0.52), (0.58, 0.60, 0.62), (0.80, 0.78, 0.74)],
    "tropic": [(0.56, 0.57, 0.58), (0.72, 0.73, 0.73), (0.54, 0.37, 0.29), (0.56, 0.31, 0.27),
               (0.37, 0.45, 0.52), (0.40, 0.48, 0.42), (0.44, 0.44, 0.46), (0.62, 0.50, 0.40)],
}
_LARGE_ROOFS = [(0.80, 0.80, 0.79), (0.70, 0.71, 0.72), (0.58, 0.59, 0.60), (0.86, 0.85, 0.82)]


@dataclass(frozen=True)
class _Lots:
    """How buildings line a road (sizes in metres)."""

    front: tuple[float, float]
    depth: tuple[float, float]
    setback: tuple[float, float]
    gap: tuple[float, float]
    palette: str
    ell: float = 0.25  # share of L-shaped houses
    flat: float = 0.05  # share of flat roofs
    hip: float = 0.4  # share of hip roofs among pitched
    skip: float = 0.0  # chance to leave a lot empty
    driveway: bool = True
    pool: float = 0.0
    jitter: float = 0.03  # radians
    height: tuple[float, float] = (5.0, 8.0)


def _town_blob(rng, X, Y, cx, cy, r, wobble=0.25) -> np.ndarray:
    """A soft irregular disc: 1 in the town, 0 outside."""
    d = _hypot(X - cx, Y - cy) / r
    return _smooth(0.05, -0.05, d - 1.0 + wobble * _fbm(rng, 3, 3))


def _grid_roads(rng, town, centre, angle, su, sv, width, min_run=60.0) -> list[_Road]:
    """Straight streets of a rotated grid, kept where they run through the town."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = np.array([c, s]), np.array([-s, c])
    out = []
    t = np.arange(-900.0, 900.0, 4.0)
    for axis, normal, spacing in ((u, v, sv), (v, u, su)):
        off = rng.uniform(0, spacing)
        for k in range(-int(800 / spacing) - 1, int(800 / spacing) + 2):
            base = np.asarray(centre) + normal * (k * spacing + off)
            pts = base + t[:, None] * axis
            inside_tile = (pts[:, 0] > -30) & (pts[:, 0] < SIZE + 30) & (pts[:, 1] > -30) & (
                pts[:, 1] < SIZE + 30)
            inside = inside_tile & (_lookup(town, pts[:, 0], pts[:, 1]) > 0.5)
            edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
            for a, b in zip(edges[::2], edges[1::2]):
                if (b - a) * 4.0 >= min_run:
                    out.append(_Road(np.array([pts[a], pts[b - 1]]), width, "street"))
    return out


def _raster(polys, clip: bool = False) -> tuple[int, int, np.ndarray] | None:
    """Small raster (x0, y0, bool mask) of polygons.

    Polygons that come within 3 px of the tile edge give None, unless `clip` is set, in
    which case the raster is cut to the tile (None only if nothing is left).
    """
    xs = [x for poly in polys for x, _ in poly]
    ys = [y for poly in polys for _, y in poly]
    x0, y0 = int(math.floor(min(xs))) - 1, int(math.floor(min(ys))) - 1
    x1, y1 = int(math.ceil(max(xs))) + 1, int(math.ceil(max(ys))) + 1
    if clip:
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, SIZE), min(y1, SIZE)
        if x0 >= x1 or y0 >= y1:
            return None
    elif x0 < 3 or y0 < 3 or x1 > SIZE - 3 or y1 > SIZE - 3:
        return None
    img = Image.new("L", (x1 - x0, y1 - y0), 0)
    d = ImageDraw.Draw(img)
    for poly in polys:
        d.polygon([(x - x0 - 0.5, y - y0 - 0.5) for x, y in poly], fill=1)
    return x0, y0, np.asarray(img, dtype=bool)


def _fits(polys, occ: np.ndarray) -> tuple[int, int, np.ndarray] | None:
    """Raster of polygons if they fall inside the tile on free ground, else None."""
    hit = _raster(polys)
    if hit is None:
        return None
    x0, y0, m = hit
    if (occ[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] & m).any():
        return None
    return hit


def _stamp(occ: np.ndarray, polys=None, hit=None) -> None:
    """Mark polygons (or an already computed raster) as occupied."""
    hit = _raster(polys, clip=True) if hit is None else hit
    if hit is not None:
        x0, y0, m = hit
        occ[y0:y0 + m.shape[0], x0:x0 + m.shape[1]] |= m


def _house(rng, cx, cy, front, depth, angle, lots: _Lots, away: np.ndarray,
           gsd: float) -> _Building:
    """A rectangle or L-shaped house centred at (cx, cy); `away` points from the road."""
    c, s = math.cos(angle), math.sin(angle)
    u = np.array([c, s])
    v = np.array([-s, c])
    if float(np.dot(v, away)) < 0:
        v = -v
    r = rng.random()
    roof = 0 if r < lots.flat else (2 if rng.random() < lots.hip else 1)
    height = rng.uniform(*lots.height) / gsd
    centre = np.array([cx, cy])

    def part(pc, a, b):  # rectangle a along u, b along v, long axis first
        if a >= b:
            return _Part(float(pc[0]), float(pc[1]), a, b, angle, roof)
        return _Part(float(pc[0]), float(pc[1]), b, a, angle + math.pi / 2, roof)

    if rng.random() < lots.ell and front > 9 and depth > 7:
        # main block along the road, a wing at one end reaching to the back
        a = front * rng.uniform(0.35, 0.5)
        b = depth * rng.uniform(0.3, 0.45)
        md = depth - b
        side = 1.0 if rng.random() < 0.5 else -1.0
        main_c = centre - v * (b / 2)
        wing_c = centre + u * side * (front / 2 - a / 2) + v * (depth / 2 - b / 2)
        parts = [part(main_c, front, md), part(wing_c, a, b)]
        # outline in (u, v) coordinates around the house centre
        hu, hd = front / 2, depth / 2
        loc = [(-hu, -hd), (hu, -hd), (hu, hd), (hu - a, hd), (hu - a, hd - b), (-hu, hd - b)]
        loc = [(side * x, y) for x, y in loc]
        outline = [tuple(centre + u * x + v * y) for x, y in loc]
    else:
        parts = [part(centre, front, depth)]
        outline = _rect(cx, cy, front, depth, angle)
    outline = [(float(x), float(y)) for x, y in outline]
    return _Building(parts, outline, np.zeros(3, np.float32), height, "house")


def _roof_colour(name: str, rng) -> np.ndarray:
    """A roof colour from a regional palette, slightly varied (RGB in [0, 1])."""
    base = np.array(_ROOFS[name][int(rng.integers(len(_ROOFS[name])))], np.float32)
    colour = base * rng.uniform(0.92, 1.08) + rng.normal(0, 0.015, 3)
    return np.clip(colour, 0, 1).astype(np.float32)


def _line_road(road: _Road, rng, occ, lots: _Lots, gsd: float, L: _Layout,
               max_count: int = 10_000) -> None:
    """Place houses on both sides of a road, front to the road, with driveways."""
    pts = road.pts
    cum, tan = _walk(pts)
    total = cum[-1]
    for side in (-1.0, 1.0):
        s = rng.uniform(2.0, 12.0)
        while s < total - 4 and len(L.buildings) < max_count:
            front = rng.uniform(*lots.front) / gsd
            depth = rng.uniform(*lots.depth) / gsd
            if rng.random() < lots.skip:
                s += front + rng.uniform(*lots.gap) / gsd
                continue
            p, t = _at(pts, cum, tan, s + front / 2)
            n = np.array([-t[1], t[0]]) * side
            setback = road.width / 2 + rng.uniform(*lots.setback) / gsd
            c = p + n * (setback + depth / 2)
            if occ[min(max(int(c[1]), 0), SIZE - 1), min(max(int(c[0]), 0), SIZE - 1)]:
                s += 3.0
                continue
            angle = math.atan2(t[1], t[0]) + rng.normal(0, lots.jitter)
            b = _house(rng, c[0], c[1], front, depth, angle, lots, n, gsd)
            if _fits([q.corners() for q in b.parts], occ) is None:
                s += 3.0
                continue
            b.colour = _roof_colour(lots.palette, rng)
            L.buildings.append(b)
            _stamp(occ, [q.corners(grow=3.0) for q in b.parts])  # keeps neighbours 3 px off
            if lots.driveway:
                dw = 3.4 / gsd
                lateral = (front / 2 - dw / 2 - 1.0) * (1 if rng.random() < 0.5 else -1)
                a0 = p + t * lateral + n * (road.width / 2 - 0.5)
                a1 = c + t * lateral - n * (depth / 2)
                mid = (a0 + a1) / 2
                ln = math.hypot(float(a1[0] - a0[0]), float(a1[1] - a0[1]))
                if ln > 1.0:
                    poly = _rect(mid[0], mid[1], ln, dw, math.atan2(n[1], n[0]))
                    L.paved.append(poly)
                    _stamp(occ, [poly])
            if lots.pool and rng.random() < lots.pool:
                pl, pw = rng.uniform(7, 11) / gsd, rng.uniform(3.5, 5) / gsd
                pc = (c + n * (depth / 2 + 2.2 / gsd + pw / 2)
                      + t * rng.uniform(-front / 4, front / 4))
                poly = _rect(pc[0], pc[1], pl, pw, math.atan2(t[1], t[0]))
                if _fits([_rect(pc[0], pc[1], pl + 2, pw + 2, math.atan2(t[1], t[0]))], occ):
                    L.pools.append(poly)
                    _stamp(occ, [poly])
            s += front + rng.uniform(*lots.gap) / gsd


def _large_along(road: _Road, rng, occ, gsd: float, L: _Layout, count: int) -> None:
    """A few large flat-roofed buildings (stores, a school) with parking in front."""
    cum, tan = _walk(road.pts)
    placed = 0
    for _ in range(60):
        if placed >= count:
            break
        s = rng.uniform(30, cum[-1] - 30)
        side = 1.0 if rng.random() < 0.5 else -1.0
        p, t = _at(road.pts, cum, tan, s)
        n = np.array([-t[1], t[0]]) * side
        front, depth = rng.uniform(30, 60) / gsd, rng.uniform(20, 36) / gsd
        lot = rng.uniform(16, 26) / gsd
        angle = math.atan2(t[1], t[0])
        c = p + n * (road.width / 2 + lot + depth / 2)
        body = _Part(float(c[0]), float(c[1]), max(front, depth), min(front, depth),
                     angle if front >= depth else angle + math.pi / 2, 0)
        pc = p + n * (road.width / 2 + lot / 2)
        park = _rect(pc[0], pc[1], front * 1.1, lot - 1.5, angle)
        if _fits([body.corners(grow=2.0), park], occ) is None:
            continue
        colour = np.array(_LARGE_ROOFS[int(rng.integers(len(_LARGE_ROOFS)))], np.float32)
        L.buildings.append(_Building([body], body.corners(), colour, rng.uniform(6, 10) / gsd,
                                     "large"))
        L.paved.append(park)
        _stamp(occ, [body.corners(grow=3.0), park])
        placed += 1


def _occupancy(L: _Layout, road_margin: float = 2.0) -> np.ndarray:
    road = _Mask()
    for r in L.roads:
        road.line(r.pts, r.width + 2 * road_margin)
    occ = road.coverage() > 0.02
    occ |= _dist_outside(L.water > 0.02) < 4.0
    return occ


# ----- the six town styles ------------------------------------------------------------


def _spur(base: np.ndarray, rng, at: float, side: float, length: float, wiggle=25.0) -> np.ndarray:
    """A side road leaving polyline `base` at arc fraction `at`, `length` px long."""
    cum, tan = _walk(base)
    p, t = _at(base, cum, tan, at * cum[-1])
    n = np.array([-t[1], t[0]]) * side
    end = p + n * length + t * rng.uniform(-0.3, 0.3) * length
    end = np.clip(end, 40, SIZE - 40)
    return _wavy(p, end, rng, amps=(wiggle, wiggle / 3), periods=(500, 200), step=5)


def _loop(cx, cy, rx, ry, rng, tilt=0.0) -> np.ndarray:
    """A closed, slightly irregular oval road."""
    a = np.linspace(0, 2 * np.pi, 120)
    wob = 1 + 0.06 * _sin(3 * a + rng.uniform(0, 6)) + 0.04 * _sin(5 * a + rng.uniform(0, 6))
    x, y = rx * _cos(a) * wob, ry * _sin(a) * wob
    c, s = math.cos(tilt), math.sin(tilt)
    return np.stack([cx + x * c - y * s, cy + x * s + y * c], axis=1)


def _style_riverside(L: _Layout, rng, X, Y) -> None:
    g = L.spec.gsd
    river = _wavy((-60, 760), (SIZE + 60, 650), rng, amps=(70, 22), periods=(1100, 380))
    L.extra["river"] = river
    m = _Mask()
    m.line(river, 48)
    cov = m.coverage()
    from scipy.ndimage import gaussian_filter

    soft = gaussian_filter(cov, 4.0) + 0.12 * _noise(rng, 40)
    L.water = _smooth(0.42, 0.58, soft)
    dist = _dist_outside(L.water > 0.5)
    L.extra["elevation"] = dist / 260.0 + 0.22 * _fbm(rng, 4, 3) + (700 - Y) / 2600.0
    L.town = _town_blob(rng, X, Y, 450, 300, 320)
    L.town *= _smooth(110, 160, dist)
    L.roads = _grid_roads(rng, L.town, (450, 300), math.radians(7), 150, 112, 7.5, min_run=80)
    highway = _wavy((720, -40), (560, SIZE + 40), rng, amps=(25, 8), periods=(900, 300))
    L.roads.insert(0, _Road(highway, 10.5, "main"))
    track = _wavy((-40, 930), (SIZE + 40, 900), rng, amps=(6, 3), periods=(800, 300))
    L.roads.append(_Road(track, 4.0, "track"))
    occ = _occupancy(L)
    _large_along(L.roads[0], rng, occ, g, L, 3)
    lots = _Lots((14, 22), (11, 15), (6, 9), (6, 12), "us", ell=0.3, hip=0.35, pool=0.05)
    for r in L.roads[1:]:
        if r.kind == "street":
            _line_road(r, rng, occ, lots, g, L)
    L.extra["fields"] = dict(angle=math.radians(7), palette="midwest")


def _style_wui(L: _Layout, rng, X, Y) -> None:
    g = L.spec.gsd
    L.water = np.zeros((SIZE, SIZE), np.float32)
    L.town = np.zeros((SIZE, SIZE), np.float32)
    mains = [
        _wavy((-40, 220), (SIZE + 40, 380), rng, amps=(90, 30), periods=(1200, 420)),
        _wavy((300, SIZE + 40), (760, -40), rng, amps=(110, 35), periods=(1300, 400)),
    ]
    L.roads = [_Road(p, 7.5, "street") for p in mains]
    for k in range(7):
        spur = _spur(mains[k % 2], rng, rng.uniform(0.15, 0.85), 1 if k % 2 == 0 else -1,
                     rng.uniform(160, 300))
        L.roads.append(_Road(spur, 6.0, "street"))
    occ = _occupancy(L)
    L.extra["culdesac"] = [r.pts[-1] for r in L.roads[2:]]
    lots = _Lots((16, 26), (12, 18), (8, 16), (12, 30), "us", ell=0.35, hip=0.5, skip=0.15,
                 pool=0.1, jitter=0.08)
    for r in L.roads:
        _line_road(r, rng, occ, lots, g, L)


def _style_suburb(L: _Layout, rng, X, Y) -> None:
    g = L.spec.gsd
    pond = _Mask()
    pond.polygon([(830 + 70 * math.cos(a) + 10 * math.sin(3 * a),
                   905 + 45 * math.sin(a) + 8 * math.cos(5 * a))
                  for a in np.linspace(0, 2 * math.pi, 40, endpoint=False)])
    L.water = pond.coverage()
    # an older street grid in the north-west, a newer loop-and-cul-de-sac estate south-east
    estate = _smooth(0.05, -0.05, _hypot((X - 740) / 270, (Y - 650) / 230) - 1.0)
    grid_town = _town_blob(rng, X, Y, 300, 360, 420, wobble=0.2) * (1 - estate)
    L.town = np.maximum(grid_town, estate)
    L.roads = _grid_roads(rng, grid_town, (512, 512), math.radians(-3), 210, 124, 7.0,
                          min_run=100)
    main = _wavy((-40, 150), (SIZE + 40, 190), rng, amps=(14, 4), periods=(900, 300))
    L.roads.insert(0, _Road(main, 11.0, "main"))
    loop = _loop(740, 650, 170, 130, rng, tilt=0.2)
    L.roads.append(_Road(loop, 7.0, "street"))
    L.roads.append(_Road(_wavy((740, 190), loop[90], rng, amps=(10, 3), periods=(500, 200)),
                         7.0, "street"))
    for at in (0.1, 0.45, 0.7):
        L.roads.append(_Road(_spur(loop, rng, at, 1.0, rng.uniform(70, 90), 8), 6.0, "street"))
    L.extra["culdesac"] = [r.pts[-1] for r in L.roads[-3:]]
    occ = _occupancy(L)
    _large_along(L.roads[0], rng, occ, g, L, 2)
    lots = _Lots((15, 22), (11, 15), (6, 9), (4, 8), "us", ell=0.3, hip=0.55, pool=0.3)
    for r in L.roads[1:]:
        _line_road(r, rng, occ, lots, g, L)


def _style_dense(L: _Layout, rng, X, Y) -> None:
    g = L.spec.gsd
    L.water = np.zeros((SIZE, SIZE), np.float32)
    L.town = _town_blob(rng, X, Y, 470, 420, 290, wobble=0.2)
    L.roads = _grid_roads(rng, L.town, (470, 420), math.radians(18), 118, 94, 6.5, min_run=60)
    main = _wavy((-40, 860), (SIZE + 40, 760), rng, amps=(20, 6), periods=(900, 300))
    L.roads.insert(0, _Road(main, 9.5, "main"))
    occ = _occupancy(L, road_margin=0.5)
    # a plaza: a paved square kept free of buildings, planted round the edge
    plaza = _rect(470, 430, 62, 52, math.radians(18))
    L.paved.append(plaza)
    L.extra["plaza"] = plaza
    _stamp(occ, [_rect(470, 430, 70, 60, math.radians(18))])
    _large_along(L.roads[0], rng, occ, g, L, 2)
    lots = _Lots((10, 20), (15, 28), (1.2, 2.2), (3.7, 4.3), "mx", ell=0.15, flat=0.8, hip=0.2,
                 driveway=False, jitter=0.0, height=(4.0, 9.0))
    for r in L.roads:
        _line_road(r, rng, occ, lots, g, L)
    # second row: fill the middle of the blocks
    lots2 = _Lots((9, 15), (9, 13), (27, 34), (4.0, 6.0), "mx", ell=0.0, flat=0.85,
                  driveway=False, jitter=0.0, skip=0.6, height=(4.0, 8.0))
    for r in L.roads[1:]:
        _line_road(r, rng, occ, lots2, g, L)


def _style_rural(L: _Layout, rng, X, Y) -> None:
    g = L.spec.gsd
    L.water = np.zeros((SIZE, SIZE), np.float32)
    L.town = np.zeros((SIZE, SIZE), np.float32)
    grid = np.ones((SIZE, SIZE), np.float32)
    L.roads = _grid_roads(rng, grid, (512, 512), math.radians(-32), 260, 220, 6.0, min_run=200)
    main = _wavy((-40, 560), (SIZE + 40, 470), rng, amps=(30, 10), periods=(1000, 330))
    L.roads.insert(0, _Road(main, 8.5, "main"))
    occ = _occupancy(L)
    lots = _Lots((12, 20), (9, 14), (8, 20), (14, 45), "tropic", ell=0.3, flat=0.1, hip=0.35,
                 skip=0.3, pool=0.0, jitter=0.12)
    for r in L.roads:
        _line_road(r, rng, occ, lots, g, L)
    L.extra["fields"] = dict(angle=math.radians(-32), palette="tropic")


def _style_coastal(L: _Layout, rng, X, Y) -> None:
    g = L.spec.gsd
    shore = _wavy((-40, 830), (SIZE + 40, 770), rng, amps=(26, 9), periods=(900, 260), step=4)
    L.extra["shore"] = shore
    ys = np.interp(X[0], shore[:, 0], shore[:, 1]).astype(np.float32)
    L.extra["shore_y"] = ys
    wig = 2.5 * _noise(rng, 60)
    L.water = _smooth(-1.0, 1.0, Y - ys[None, :] + wig)
    inland = ys[None, :] - Y
    L.town = _smooth(60, 90, inland) * _town_blob(rng, X, Y, 520, 660, 440, wobble=0.2)
    L.roads = _grid_roads(rng, L.town, (512, 400), math.radians(-4), 170, 112, 6.5, min_run=80)
    coast_road = shore + np.array([0.0, -52.0])
    L.roads.insert(0, _Road(coast_road, 9.0, "main"))
    occ = _occupancy(L)
    occ |= inland < 40
    _large_along(L.roads[0], rng, occ, g, L, 2)
    lots = _Lots((11, 18), (9, 14), (3.5, 6), (4, 9), "tropic", ell=0.25, flat=0.15, hip=0.4,
                 driveway=False, skip=0.2)
    for r in L.roads[1:]:
        _line_road(r, rng, occ, lots, g, L)


_STYLES = {"riverside": _style_riverside, "wui": _style_wui, "suburb": _style_suburb,
           "dense": _style_dense, "rural": _style_rural, "coastal": _style_coastal}


# ----- trees and land cover -------------------------------------------------------------

_GREENS = {
    "temperate": [(0.20, 0.29, 0.15), (0.25, 0.33, 0.17), (0.17, 0.24, 0.14), (0.28, 0.33, 0.20)],
    "dry": [(0.24, 0.28, 0.17), (0.20, 0.25, 0.16), (0.30, 0.32, 0.21), (0.17, 0.22, 0.15)],
    "tropic": [(0.16, 0.28, 0.13), (0.20, 0.33, 0.15), (0.13, 0.23, 0.11), (0.24, 0.34, 0.17)],
}

_GROUND = {
    # (grass a, grass b, soil, lawn)
    "riverside": ((0.42, 0.43, 0.30), (0.50, 0.47, 0.34), (0.47, 0.40, 0.31), (0.38, 0.44, 0.27)),
    "wui": ((0.64, 0.57, 0.41), (0.54, 0.48, 0.34), (0.56, 0.48, 0.37), (0.47, 0.48, 0.32)),
    "suburb": ((0.38, 0.44, 0.26), (0.47, 0.49, 0.32), (0.64, 0.60, 0.48), (0.35, 0.44, 0.24)),
    "dense": ((0.58, 0.53, 0.44), (0.50, 0.48, 0.38), (0.60, 0.52, 0.42), (0.56, 0.52, 0.45)),
    "rural": ((0.25, 0.35, 0.19), (0.33, 0.40, 0.23), (0.42, 0.36, 0.28), (0.36, 0.45, 0.26)),
    "coastal": ((0.42, 0.44, 0.29), (0.52, 0.50, 0.37), (0.60, 0.55, 0.43), (0.40, 0.46, 0.28)),
}

_FIELD_COLOURS = {
    "midwest": [(0.47, 0.40, 0.31), (0.55, 0.48, 0.36), (0.40, 0.45, 0.28), (0.60, 0.55, 0.40),
                (0.50, 0.43, 0.33), (0.35, 0.42, 0.25)],
    "tropic": [(0.33, 0.44, 0.22), (0.45, 0.50, 0.28), (0.38, 0.36, 0.27), (0.28, 0.38, 0.20),
               (0.50, 0.52, 0.33)],
}


def _trees(L: _Layout, rng, X, Y) -> _Trees:
    """Tree crowns where the style's density map allows, off roads, roofs and water."""
    st = L.spec.style
    g = L.spec.gsd
    bmask = _Mask()
    for b in L.buildings:
        bmask.polygon(b.outline)
    for p in L.paved + L.pools:
        bmask.polygon(p)
    built = bmask.coverage() > 0.1
    dist_b = _dist_outside(built)
    road = L.layers["road_cov"] > 0.2
    dist_r = _dist_outside(road)
    wood = _fbm(rng, 5, 4)
    near = _smooth(25, 6, dist_b) * _smooth(1, 5, dist_b)  # yards
    if st == "riverside":
        river_near = _smooth(60, 10, _dist_outside(L.water > 0.5))
        dens = 0.05 * near + 0.6 * river_near * _smooth(0.0, 0.8, wood) + 0.5 * _smooth(
            1.0, 1.6, wood)
        n_try, r_m, greens = 65_000, (3.0, 6.5), "temperate"
    elif st == "wui":
        dens = 0.75 * _smooth(-0.3, 0.6, wood) + 0.1 * near
        n_try, r_m, greens = 42_000, (3.0, 7.0), "dry"
    elif st == "suburb":
        dens = (0.12 * near + 0.75 * (1 - L.town) * _smooth(-0.4, 0.4, wood)
                + 0.4 * _smooth(0.9, 1.5, wood) + 0.03)
        n_try, r_m, greens = 42_000, (3.0, 7.5), "temperate"
    elif st == "dense":
        plaza = _Mask()
        plaza.polygon(_rect(470, 430, 70, 60, math.radians(18)))
        ring = (plaza.coverage() > 0.5) & ~built
        dens = 0.02 * near + 0.3 * (1 - L.town) * _smooth(0.3, 1.0, wood) + 0.8 * ring
        n_try, r_m, greens = 40_000, (2.0, 4.5), "dry"
    elif st == "rural":
        dens = 0.9 * _smooth(-0.6, 0.3, wood) * _smooth(6, 14, dist_b) + 0.05
        n_try, r_m, greens = 35_000, (3.0, 7.0), "tropic"
    else:  # coastal
        ys = L.extra["shore_y"][None, :]
        dens = (0.06 * near + 0.35 * _smooth(0.4, 1.2, wood) + 0.25 * _smooth(100, 60, ys - Y)
                * _smooth(40, 55, ys - Y))
        n_try, r_m, greens = 45_000, (2.5, 5.5), "tropic"
    if "fields" in L.extra:
        dens = dens * (1 - 0.9 * L.layers["field_inside"]) + 0.7 * L.layers["hedge"]
    dens = dens * (L.water < 0.05) * (dist_r > 2.0) * (dist_b > 1.5)
    px = rng.uniform(0, SIZE, n_try)
    py = rng.uniform(0, SIZE, n_try)
    keep = rng.random(n_try) < _lookup(dens, px, py)
    px, py = px[keep], py[keep]
    n = len(px)
    r = rng.uniform(*r_m, n) / g
    # crowns do not reach far over roofs or roads
    r = np.minimum(r, np.maximum(_lookup(dist_b, px, py), _lookup(dist_r, px, py) + 1.5))
    r = np.maximum(r, 1.6)
    pal = np.array(_GREENS[greens], np.float32)
    tint = pal[rng.integers(len(pal), size=n)] * rng.uniform(0.85, 1.15, (n, 1)).astype(np.float32)
    ang = rng.uniform(0, math.pi, n)
    squash = rng.uniform(0.85, 1.0, n)
    return _Trees(px, py, r, r * squash, ang, tint.astype(np.float32))


def _fields(L: _Layout, rng, X, Y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rectilinear crop parcels: colour, 'inside a field' weight, hedge/track lines."""
    info = L.extra["fields"]
    a = info["angle"]
    U = (X - 512) * math.cos(a) + (Y - 512) * math.sin(a)
    V = -(X - 512) * math.sin(a) + (Y - 512) * math.cos(a)
    cu = np.cumsum(rng.uniform(70, 200, 20)) - 900
    cv = np.cumsum(rng.uniform(90, 260, 16)) - 900
    iu = np.searchsorted(cu, U)
    iv = np.searchsorted(cv, V)
    pal = np.array(_FIELD_COLOURS[info["palette"]], np.float32)
    table = pal[rng.integers(len(pal), size=(len(cu) + 1, len(cv) + 1))]
    table *= rng.uniform(0.9, 1.1, (len(cu) + 1, len(cv) + 1, 1)).astype(np.float32)
    rgb = table[iu, iv]
    # crop rows: stripes along one axis of each parcel
    orient = rng.random((len(cu) + 1, len(cv) + 1)) < 0.5
    period = rng.uniform(5.0, 10.0, (len(cu) + 1, len(cv) + 1)).astype(np.float32)
    amp = rng.uniform(0.0, 0.03, (len(cu) + 1, len(cv) + 1)).astype(np.float32)
    coord = np.where(orient[iu, iv], U, V)
    rgb = rgb * (1 + amp[iu, iv] * _wave(coord / period[iu, iv]).astype(np.float32))[..., None]
    cu_ext = np.concatenate([[-1e4], cu, [1e4]])
    cv_ext = np.concatenate([[-1e4], cv, [1e4]])
    du = np.minimum(U - cu_ext[iu], cu_ext[iu + 1] - U)
    dv = np.minimum(V - cv_ext[iv], cv_ext[iv + 1] - V)
    edge = np.minimum(du, dv)
    hedge = _smooth(2.5, 0.5, edge)
    inside = _smooth(1.0, 5.0, edge)
    return rgb.astype(np.float32), inside.astype(np.float32), hedge.astype(np.float32)


def _land(L: _Layout, rng, X, Y) -> None:
    """Land cover (grass, soil, fields, lawns) and the paved/road/water layers."""
    st = L.spec.style
    ga, gb, soil, lawn = (_col(*c) for c in _GROUND[st])
    big = _fbm(rng, 4, 4)
    mid = _fbm(rng, 24, 3)
    fine = _noise(rng, 300)
    # Fine grain is kept off large areas on purpose: sub-level noise over the whole tile
    # doubles the PNG size. Texture comes from the smooth layers and the objects on top.
    soft = _fbm(rng, 20, 2)
    rgb = _lerp(np.broadcast_to(ga, (SIZE, SIZE, 3)).copy(), gb, _smooth(-0.8, 0.8, big))
    rgb = _lerp(rgb, soil, 0.6 * _smooth(0.9, 1.6, mid))
    rgb = _lerp(rgb, lawn, 0.8 * L.town)
    rgb *= (1 + 0.035 * soft)[..., None]
    L.layers["field_inside"] = np.zeros((SIZE, SIZE), np.float32)
    L.layers["hedge"] = np.zeros((SIZE, SIZE), np.float32)
    if "fields" in L.extra:
        frgb, inside, hedge = _fields(L, rng, X, Y)
        farm = (1 - _smooth(0.1, 0.6, L.town)) * _smooth(0.3, -0.2, _fbm(rng, 3, 2) - 0.6)
        frgb *= (1 + 0.03 * soft)[..., None]
        rgb = _lerp(rgb, frgb, farm * inside)
        L.layers["field_inside"] = farm * inside
        L.layers["hedge"] = farm * hedge
    L.natural = np.clip(rgb, 0, 1).astype(np.float32)

    # roads: sidewalks in towns, asphalt, dirt tracks
    walk, asphalt, track = _Mask(), _Mask(), _Mask()
    for r in L.roads:
        if r.kind == "track":
            track.line(r.pts, r.width)
        else:
            if st in ("suburb", "riverside", "dense") and r.kind == "street":
                walk.line(r.pts, r.width + 4.0)
            asphalt.line(r.pts, r.width)
    for c in L.extra.get("culdesac", []):
        asphalt.disc(c[0], c[1], 9.0)
    a_cov = asphalt.coverage()
    t_cov = track.coverage() * (1 - a_cov)
    w_cov = walk.coverage() * (1 - a_cov) * L.town
    road_tone = {"dense": (0.47, 0.46, 0.44), "coastal": (0.44, 0.43, 0.42)}.get(
        st, (0.33, 0.33, 0.34))
    road_rgb = np.broadcast_to(_col(*road_tone), (SIZE, SIZE, 3)) * (
        1 + 0.04 * soft)[..., None]
    L.layers.update(road_cov=a_cov, road_rgb=road_rgb.astype(np.float32), track_cov=t_cov,
                    walk_cov=w_cov)
    paved, pools = _Mask(), _Mask()
    for p in L.paved:
        paved.polygon(p)
    for p in L.pools:
        pools.polygon(p)
    L.layers["paved_cov"] = paved.coverage()
    L.layers["pool_cov"] = pools.coverage()
    # water colour: dark and greenish in deep water, lighter near the banks
    wdist = _dist_outside(L.water < 0.5)
    depth = _smooth(0, 18, wdist)
    if st == "coastal":
        depth = _smooth(0, 160, wdist)
        shallow, deep = _col(0.30, 0.50, 0.48), _col(0.08, 0.21, 0.29)
    elif st == "suburb":
        shallow, deep = _col(0.30, 0.34, 0.26), _col(0.14, 0.20, 0.18)
    else:
        shallow, deep = _col(0.36, 0.38, 0.30), _col(0.17, 0.23, 0.22)
    water_rgb = _lerp(np.broadcast_to(shallow, (SIZE, SIZE, 3)).copy(), deep, depth)
    water_rgb *= (1 + 0.03 * mid)[..., None]
    L.layers["water_rgb"] = water_rgb.astype(np.float32)
    bank = _smooth(7, 1, _dist_outside(L.water > 0.5)) * (1 - L.water)
    if st == "coastal":
        ys = L.extra["shore_y"][None, :]
        bank = np.maximum(bank, _smooth(-34, -22, Y - ys) * (1 - L.water))
    L.layers["bank"] = bank.astype(np.float32)
    L.layers["bank_rgb"] = _col(0.70, 0.65, 0.52) if st == "coastal" else _col(0.52, 0.47, 0.38)
    L.layers["fine"] = fine
    L.layers["mid"] = mid


def _layout(spec: DemoSceneSpec) -> _Layout:
    rng = _sub_rng(spec, 1)
    X, Y = _grid()
    L = _Layout(spec, town=np.zeros((SIZE, SIZE), np.float32),
                water=np.zeros((SIZE, SIZE), np.float32))
    _STYLES[spec.style](L, rng, X, Y)
    # footprints are stored with 2 decimals; round them now so that labels, targets and
    # every later use see exactly the same polygon
    for bld in L.buildings:
        bld.outline = [(round(x, 2), round(y, 2)) for x, y in bld.outline]
    _land(L, _sub_rng(spec, 2), X, Y)
    L.trees = _trees(L, _sub_rng(spec, 3), X, Y)
    return L
