"""Synthetic demo scenes written in the official xBD layout.

Real xBD tiles are CC BY-NC-SA, so the app ships made-up scenes instead: small towns
painted from noise and simple geometry, each shown before and after a disaster, with
building footprints and damage labels that follow the xBD label schema exactly.

Everything is deterministic. Each scene draws from its own seeded numpy Generator, PNGs
are written with fixed settings and no time chunks, and label JSON is dumped with sorted
keys, so `write_demo_scenes` gives byte-identical files on every run on the same software
stack. Only numpy, Pillow and scipy.ndimage are used; no per-pixel Python loops.

Conventions: images are SIZE x SIZE RGB; pixel (col, row) covers the square
[col, col + 1) x [row, row + 1), so its centre is (col + 0.5, row + 0.5). Polygons are in
that continuous pixel frame, x to the right, y down; north is up.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.errors import DataError
from core.types import DAMAGE_CLASSES

SIZE = 1024
_SS = 4  # supersampling factor of the anti-aliased masks
_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://example.invalid/xbd-diffusion-lab/demo-scenes")

NO, MINOR, MAJOR, DESTROYED = 0, 1, 2, 3  # indices into DAMAGE_CLASSES

README = """\
# Synthetic demo scenes

These scenes are SYNTHETIC. They are not satellite imagery and show no real place or
event: towns, disasters, sensors, dates and coordinates are all made up, painted from
noise and simple geometry so that the app has something to open without the real xBD
data (whose tiles are CC BY-NC-SA and are not bundled).

The files follow the official xBD layout and label schema: `<split>/images`,
`<split>/labels` and `<split>/targets`, with names such as
`demo-flood_00000001_pre_disaster.png`. Targets: post = damage class per pixel
(0 background, 1 no-damage, 2 minor, 3 major, 4 destroyed); pre = building mask (0/1).

Regenerate them, byte for byte, with:

    python -m core demo-scenes --out DIR

(`core/data/synthetic.py` holds the generator and the list of scenes.)
"""


# --------------------------------------------------------------------------------------
# Scene specifications
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capture:
    """One (made-up) satellite capture: the label metadata plus the look of the image.

    `gains` multiply R, G, B; `gamma` is applied before the gains; `haze` in [0, 1]
    blends towards a pale blue-grey.
    """

    date: str  # ISO 8601, milliseconds, UTC ("Z")
    sensor: str
    catalog_id: str
    off_nadir_angle: float  # degrees
    sun_azimuth: float  # degrees clockwise from north
    sun_elevation: float  # degrees
    target_azimuth: float  # degrees
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    haze: float = 0.0


@dataclass(frozen=True)
class DemoSceneSpec:
    """One synthetic scene: where it goes, how its town looks, and its two captures.

    `style` picks the town layout (riverside, wui, suburb, dense, rural, coastal);
    `lon`/`lat` is the WGS84 position of the tile's top-left corner; `gsd` is metres per
    pixel and sets both the size of things drawn and the lon/lat scale of the labels.
    """

    disaster: str
    disaster_type: str
    number: int
    split: str
    style: str
    seed: int
    lon: float
    lat: float
    gsd: float
    pre: Capture
    post: Capture

    @property
    def tile_id(self) -> str:
        """The 8-digit id of the tile, e.g. `00000001`."""
        return f"{self.number:08d}"

    @property
    def scene_id(self) -> str:
        """`{disaster}_{id}`, as the rest of the app names scenes."""
        return f"{self.disaster}_{self.tile_id}"

    def stem(self, phase: str) -> str:
        """File stem of one phase: `{disaster}_{id}_{pre|post}_disaster`."""
        return f"{self.scene_id}_{phase}_disaster"


DEMO_SCENES: tuple[DemoSceneSpec, ...] = (
    DemoSceneSpec(
        "demo-flood", "flooding", 1, "train", "riverside", 1101, -95.8712, 41.2968, 1.24,
        pre=Capture("2018-10-14T17:02:41.000Z", "WORLDVIEW02", "1030010087A4C200", 14.2,
                    166.3, 38.9, 201.7, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2019-03-21T16:48:09.000Z", "GEOEYE01", "105001001452E700", 21.6,
                     154.8, 46.2, 118.4, (1.04, 1.0, 0.94), 0.96, 0.05),
    ),
    DemoSceneSpec(
        "demo-wildfire", "fire", 2, "train", "wui", 2202, -121.6247, 39.7731, 1.22,
        pre=Capture("2018-06-02T18:55:12.000Z", "WORLDVIEW03_VNIR", "10400100401B7F00", 11.8,
                    139.4, 69.8, 232.0, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-11-25T19:03:57.000Z", "WORLDVIEW02", "1030010089D0A500", 17.3,
                     164.1, 30.9, 76.5, (1.03, 0.99, 0.95), 1.04, 0.03),
    ),
    DemoSceneSpec(
        "demo-hurricane", "wind", 3, "train", "suburb", 3303, -85.4166, 29.9587, 1.21,
        pre=Capture("2018-04-30T16:21:35.000Z", "WORLDVIEW02", "10300100791E4A00", 9.6,
                    126.7, 66.1, 164.3, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-10-13T16:37:20.000Z", "WORLDVIEW03_VNIR", "104001004218C900", 19.9,
                     160.2, 50.4, 284.6, (0.97, 1.0, 1.05), 1.02, 0.06),
    ),
    DemoSceneSpec(
        "demo-earthquake", "earthquake", 4, "train", "dense", 4404, -99.1893, 18.6214, 1.2,
        pre=Capture("2017-02-09T17:14:03.000Z", "GEOEYE01", "10500100092F6B00", 16.4,
                    148.9, 50.7, 32.1, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2017-09-23T16:58:46.000Z", "WORLDVIEW02", "1030010070C44E00", 12.7,
                     121.6, 66.8, 211.9, (1.05, 1.02, 0.96), 0.97, 0.04),
    ),
    DemoSceneSpec(
        "demo-volcano", "volcano", 5, "test", "rural", 5505, -154.9061, 19.4719, 1.26,
        pre=Capture("2018-02-28T21:12:54.000Z", "WORLDVIEW02", "103001007B8F1300", 15.1,
                    143.2, 55.9, 127.3, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-06-11T21:05:30.000Z", "WORLDVIEW03_VNIR", "10400100413A2200", 24.3,
                     63.8, 78.4, 250.6, (0.98, 0.98, 1.02), 1.0, 0.08),
    ),
    DemoSceneSpec(
        "demo-tsunami", "tsunami", 6, "test", "coastal", 6606, 119.8463, -0.8802, 1.23,
        pre=Capture("2017-08-17T02:47:18.000Z", "WORLDVIEW02", "103001006F2E8D00", 13.3,
                    57.4, 66.3, 307.8, (1.0, 1.0, 1.0), 1.0, 0.0),
        post=Capture("2018-10-02T02:39:44.000Z", "WORLDVIEW03_VNIR", "104001004210FD00", 22.8,
                     83.1, 70.2, 145.2, (1.03, 1.0, 0.95), 0.98, 0.05),
    ),
)


# --------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------


# numpy may route np.sin, np.cos and ** on arrays to SIMD code (SVML on AVX-512) whose last
# bits differ from one processor to another; a single flipped rounding would change the PNG
# bytes. These helpers use only table look-ups and basic arithmetic, which IEEE 754 pins down.
_SIN_TABLE = np.array([math.sin(2 * math.pi * i / 4096) for i in range(4097)])


def _wave(cycles) -> np.ndarray:
    """sin(2 pi * cycles), the same on every CPU (table with linear interpolation)."""
    f = (np.asarray(cycles, np.float64) % 1.0) * 4096.0
    i = np.minimum(f.astype(np.int64), 4095)
    w = f - i
    return _SIN_TABLE[i] * (1.0 - w) + _SIN_TABLE[i + 1] * w


def _sin(x) -> np.ndarray:
    return _wave(np.asarray(x, np.float64) / (2 * math.pi))


def _cos(x) -> np.ndarray:
    return _wave(np.asarray(x, np.float64) / (2 * math.pi) + 0.25)


def _hypot(a, b):
    return np.sqrt(a * a + b * b)


def _sub_rng(spec: DemoSceneSpec, stream: int) -> np.random.Generator:
    """An independent, reproducible random stream of one scene."""
    return np.random.default_rng([spec.seed, stream])


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (X, Y), each SIZE x SIZE float32."""
    c = np.arange(SIZE, dtype=np.float32) + 0.5
    return np.meshgrid(c, c)


def _noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth value noise, zero mean and unit spread, with about `cells` bumps a side."""
    g = rng.standard_normal((cells + 4, cells + 4)).astype(np.float32)
    img = Image.fromarray(g).resize((SIZE, SIZE), Image.Resampling.BICUBIC,
                                    box=(2.0, 2.0, cells + 2.0, cells + 2.0))
    a = np.asarray(img, dtype=np.float32)
    return (a - a.mean()) / (a.std() + 1e-6)


def _fbm(rng: np.random.Generator, cells: int, octaves: int, gain: float = 0.5) -> np.ndarray:
    """Fractal sum of `octaves` noise layers, each twice as fine; unit spread."""
    total = np.zeros((SIZE, SIZE), np.float32)
    amp, norm = 1.0, 0.0
    for i in range(octaves):
        total += np.float32(amp) * _noise(rng, min(cells * 2 ** i, 512))
        norm += amp * amp
        amp *= gain
    return total / np.float32(math.sqrt(norm))


def _smooth(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Smoothstep from 0 at e0 to 1 at e1 (e1 may be below e0)."""
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _lerp(a: np.ndarray, b, t: np.ndarray) -> np.ndarray:
    """Blend image `a` towards `b` (image or colour) by per-pixel weight `t`."""
    return a + (np.asarray(b, np.float32) - a) * t[..., None]


def _col(*rgb: float) -> np.ndarray:
    return np.array(rgb, np.float32)


def _dist_outside(mask: np.ndarray) -> np.ndarray:
    """Distance in px from each pixel to the nearest True pixel of `mask` (0 inside).

    Computed on a 2x coarser grid (a pixel pair counts as set if any of it is), so it is
    good to about a pixel, which is all the soft edges drawn from it need.
    """
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return np.full(mask.shape, 1e4, np.float32)
    h, w = mask.shape
    coarse = mask.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))
    d = distance_transform_edt(~coarse, sampling=2.0).astype(np.float32)
    d = np.repeat(np.repeat(d, 2, axis=0), 2, axis=1)
    return np.where(mask, np.float32(0), np.maximum(d, np.float32(0.5)))


def _lookup(values: np.ndarray, x, y):
    """Nearest-pixel values of a map at continuous points (clamped to the tile)."""
    xi = np.clip(np.asarray(x, np.float64).astype(np.int64), 0, SIZE - 1)
    yi = np.clip(np.asarray(y, np.float64).astype(np.int64), 0, SIZE - 1)
    return values[yi, xi]


class _Mask:
    """An anti-aliased coverage mask, drawn at _SS x resolution and box-filtered down."""

    def __init__(self) -> None:
        self.img = Image.new("L", (SIZE * _SS, SIZE * _SS), 0)
        self.draw = ImageDraw.Draw(self.img)

    @staticmethod
    def _pts(pts) -> list[tuple[float, float]]:
        return [(float(x) * _SS - 0.5, float(y) * _SS - 0.5) for x, y in pts]

    def polygon(self, pts, value: int = 255) -> None:
        self.draw.polygon(self._pts(pts), fill=value)

    def line(self, pts, width: float, value: int = 255, caps: bool = True) -> None:
        p = self._pts(pts)
        w = max(1, int(round(width * _SS)))
        self.draw.line(p, fill=value, width=w, joint="curve")
        if caps:
            r = w / 2.0
            for x, y in (p[0], p[-1]):
                self.draw.ellipse((x - r, y - r, x + r, y + r), fill=value)

    def disc(self, x: float, y: float, r: float, value: int = 255) -> None:
        cx, cy = x * _SS - 0.5, y * _SS - 0.5
        self.draw.ellipse((cx - r * _SS, cy - r * _SS, cx + r * _SS, cy + r * _SS), fill=value)

    def coverage(self) -> np.ndarray:
        return np.asarray(self.img.reduce(_SS), dtype=np.float32) / np.float32(255.0)


class _Pieces:
    """Small coloured shapes (debris, tarps on the ground) with anti-aliased edges."""

    def __init__(self) -> None:
        self.rgb = Image.new("RGB", (SIZE * _SS, SIZE * _SS), (0, 0, 0))
        self.mask = Image.new("L", (SIZE * _SS, SIZE * _SS), 0)
        self.d_rgb = ImageDraw.Draw(self.rgb)
        self.d_mask = ImageDraw.Draw(self.mask)

    def polygon(self, pts, colour) -> None:
        p = _Mask._pts(pts)
        c = tuple(int(round(float(v) * 255)) for v in colour)
        self.d_rgb.polygon(p, fill=c)
        self.d_mask.polygon(p, fill=255)

    def composite(self, img: np.ndarray) -> np.ndarray:
        """Lay the pieces over `img` (float RGB in [0, 1])."""
        pre = np.asarray(self.rgb.reduce(_SS), dtype=np.float32) / np.float32(255.0)
        a = np.asarray(self.mask.reduce(_SS), dtype=np.float32) / np.float32(255.0)
        return img * (1.0 - a[..., None]) + pre


def _rect(cx: float, cy: float, su: float, sv: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a rectangle `su` x `sv` centred at (cx, cy), its u axis at `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    out = []
    for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        u, v = a * su / 2.0, b * sv / 2.0
        out.append((cx + u * c - v * s, cy + u * s + v * c))
    return out


def _hull(points) -> list[tuple[float, float]]:
    """Convex hull (monotone chain) of a few points."""
    pts = sorted(set((round(x, 6), round(y, 6)) for x, y in points))
    if len(pts) <= 2:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _wavy(p0, p1, rng: np.random.Generator, amps=(40.0, 15.0), periods=(700.0, 260.0),
          step: float = 6.0) -> np.ndarray:
    """A gently meandering polyline from p0 to p1 (N x 2), ends pinned."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    d = p1 - p0
    length = math.hypot(float(d[0]), float(d[1]))
    d /= length
    n = np.array([-d[1], d[0]])
    t = np.arange(0.0, length + step, step)
    t[-1] = length
    off = np.zeros_like(t)
    for amp, per in zip(amps, periods):
        off += amp * _wave(t / per + rng.uniform(0, 1))
    off -= off[0] + (off[-1] - off[0]) * t / length
    return p0 + t[:, None] * d + off[:, None] * n


def _walk(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative arc length at each vertex and the unit tangent of each segment."""
    seg = np.diff(pts, axis=0)
    lens = _hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lens)])
    tan = seg / np.maximum(lens, 1e-9)[:, None]
    return cum, tan


def _at(pts: np.ndarray, cum: np.ndarray, tan: np.ndarray, s: float):
    """Point and unit tangent at arc length `s` along a polyline."""
    i = int(np.clip(np.searchsorted(cum, s) - 1, 0, len(tan) - 1))
    return pts[i] + tan[i] * (s - cum[i]), tan[i]


# --------------------------------------------------------------------------------------
# Scene geometry
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


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
    if cap.gamma != 1.0:  # x ** gamma from a table, for the reason given at _wave
        table = np.array([(i / 4096) ** cap.gamma for i in range(4097)], np.float32)
        f = out * np.float32(4096.0)
        i = np.minimum(f.astype(np.int64), 4095)
        w = f - i
        out = table[i] * (1 - w) + table[i + 1] * w
    out = out * np.array(cap.gains, np.float32)
    out = out * (1 - cap.haze) + np.float32(cap.haze) * _col(0.72, 0.76, 0.82)
    out = gaussian_filter(out, sigma=(0.8, 0.8, 0))
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Disasters
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


def _num(v: float, places: int) -> str:
    s = f"{v:.{places}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _wkt(ring, places: int) -> str:
    pts = list(ring) + [ring[0]]
    return "POLYGON ((" + ", ".join(f"{_num(x, places)} {_num(y, places)}" for x, y in pts) + "))"


def _to_lng_lat(spec: DemoSceneSpec, ring):
    """Pixel coordinates to WGS84 with a local affine (north up) from the top-left anchor."""
    m_lon = 111_320.0 * math.cos(math.radians(spec.lat))
    m_lat = 110_574.0
    return [(spec.lon + x * spec.gsd / m_lon, spec.lat - y * spec.gsd / m_lat) for x, y in ring]


def _label(spec: DemoSceneSpec, L: _Layout, phase: str, klass: np.ndarray | None) -> dict:
    cap = spec.pre if phase == "pre" else spec.post
    xy, ll = [], []
    for i, b in enumerate(L.buildings):
        props = {"feature_type": "building",
                 "uid": str(uuid.uuid5(_NS, f"{spec.scene_id}/building/{i}"))}
        if phase == "post":
            props["subtype"] = DAMAGE_CLASSES[int(klass[i])]
        xy.append({"properties": dict(props), "wkt": _wkt(b.outline, 2)})
        ll.append({"properties": dict(props), "wkt": _wkt(_to_lng_lat(spec, b.outline), 8)})
    meta = {
        "sensor": cap.sensor,
        "provider_asset_type": cap.sensor,
        "gsd": spec.gsd,
        "capture_date": cap.date,
        "off_nadir_angle": cap.off_nadir_angle,
        "pan_resolution": round(spec.gsd / 4.0, 4),
        "sun_azimuth": cap.sun_azimuth,
        "sun_elevation": cap.sun_elevation,
        "target_azimuth": cap.target_azimuth,
        "disaster": spec.disaster,
        "disaster_type": spec.disaster_type,
        "catalog_id": cap.catalog_id,
        "original_width": SIZE,
        "original_height": SIZE,
        "width": SIZE,
        "height": SIZE,
        "id": str(uuid.uuid5(_NS, f"{spec.scene_id}/{phase}")),
        "img_name": spec.stem(phase) + ".png",
    }
    return {"features": {"lng_lat": ll, "xy": xy}, "metadata": meta}


def _target(L: _Layout, klass: np.ndarray) -> np.ndarray:
    img = Image.new("L", (SIZE, SIZE), 0)
    d = ImageDraw.Draw(img)
    for b, k in zip(L.buildings, klass):
        d.polygon([(x - 0.5, y - 0.5) for x, y in b.outline], fill=int(k) + 1)
    return np.asarray(img, dtype=np.uint8).copy()


# --------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------


def render_scene(spec: DemoSceneSpec):
    """Render one scene in memory.

    Returns (pre, post, pre_label, post_label, target): two SIZE x SIZE x 3 uint8 RGB
    images, the two label dicts in the xBD schema, and the post target mask
    (SIZE x SIZE uint8: 0 background, 1 no-damage, 2 minor, 3 major, 4 destroyed).
    """
    L = _layout(spec)
    X, Y = _grid()
    geo = _roof_geometry(L.buildings)
    post = _DISASTERS[spec.disaster_type](L, _sub_rng(spec, 4), X, Y)
    pre_img = _finish(_compose(L, geo, spec.pre, None), spec.pre)
    post_img = _finish(_compose(L, geo, spec.post, post), spec.post)
    return (pre_img, post_img, _label(spec, L, "pre", None), _label(spec, L, "post", post.klass),
            _target(L, post.klass))


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def _save_json(path: Path, data: dict) -> None:
    # one line with sorted keys, like the real xBD label files
    path.write_bytes((json.dumps(data, sort_keys=True) + "\n").encode("utf-8"))


def write_demo_scenes(out_dir: Path | str, specs=DEMO_SCENES) -> list[Path]:
    """Render the demo scenes into `out_dir` in the official xBD layout.

    Writes `<split>/images/*.png` (pre and post), `<split>/labels/*.json` and
    `<split>/targets/*_target.png` (post: damage classes 0-4; pre: building mask 0/1),
    plus a README.md. Returns the written files, sorted. Files are byte-identical from
    run to run.
    """
    out = Path(out_dir)
    written: list[Path] = []
    try:
        for spec in specs:
            pre, post, pre_label, post_label, target = render_scene(spec)
            base = out / spec.split
            for sub in ("images", "labels", "targets"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            for phase, img, label, tgt in (("pre", pre, pre_label, (target > 0).astype(np.uint8)),
                                           ("post", post, post_label, target)):
                stem = spec.stem(phase)
                files = (base / "images" / f"{stem}.png", base / "labels" / f"{stem}.json",
                         base / "targets" / f"{stem}_target.png")
                _save_png(files[0], img)
                _save_json(files[1], label)
                _save_png(files[2], tgt)
                written.extend(files)
        readme = out / "README.md"
        readme.write_bytes(README.encode("utf-8"))
        written.append(readme)
    except OSError as err:
        raise DataError(f"Cannot write the demo scenes to {out}: {err}. "
                        "Choose a folder you can write to (--out DIR).") from err
    return sorted(written)
