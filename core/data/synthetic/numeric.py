"""Small numeric helpers: CPU-independent sine and cosine, seeded value noise, blending,
distance maps, anti-aliased masks and polyline geometry, all on the SIZE x SIZE pixel grid."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from core.data.synthetic.specs import SIZE, DemoSceneSpec

_SS = 4  # supersampling factor of the anti-aliased masks


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
