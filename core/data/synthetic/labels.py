"""xBD label output: the label JSON of each capture (pixel and WGS84 polygons, metadata)
and the post-event target mask."""

from __future__ import annotations

import math
import uuid

import numpy as np
from PIL import Image, ImageDraw

from core.data.synthetic.layout import _Layout
from core.data.synthetic.specs import SIZE, DemoSceneSpec
from core.types import DAMAGE_CLASSES

_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://example.invalid/xbd-diffusion-lab/demo-scenes")


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
