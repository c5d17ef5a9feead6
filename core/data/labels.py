"""xBD label JSON: parsing into `core.types.Label`, WKT polygons, and light summaries.

A label holds the same buildings twice: `features.xy` (pixel x/y in the label's image,
1024 px for the full tiles) and `features.lng_lat` (WGS84 lon/lat). Buildings of the two
lists are matched by `properties.uid`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

from core.errors import LabelError
from core.types import DAMAGE_CLASSES, UNCLASSIFIED, Building, Label, LabelMetadata

Ring = tuple[tuple[float, float], ...]

# -- WKT ---------------------------------------------------------------------------------

_TOKENS = re.compile(r"[()]|[^()]+")


def parse_wkt(text: str) -> list[list[Ring]]:
    """Parse a WKT ``POLYGON`` or ``MULTIPOLYGON`` into polygons, each a list of rings
    (exterior first, then holes), each ring a tuple of (x, y) floats.

    The closing point of a ring (equal to its first point) is dropped. ``EMPTY`` gives
    ``[]``. Z/M ordinates are ignored. Raises ValueError on anything malformed.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a WKT string, got {type(text).__name__}")
    s = text.strip()
    head = s[:12].upper()
    if head.startswith("MULTIPOLYGON"):
        body, ring_depth = s[12:], 3
    elif head.startswith("POLYGON"):
        body, ring_depth = s[7:], 2
    else:
        raise ValueError(f"not a POLYGON or MULTIPOLYGON: {s[:40]!r}")
    body = body.strip()
    for tag in ("ZM", "Z", "M"):  # "POLYGON Z ((...))"
        if body.upper().startswith(tag) and body[len(tag):].lstrip().startswith(("(", "E", "e")):
            body = body[len(tag):].strip()
            break
    if body.upper() == "EMPTY":
        return []
    if not body.startswith("("):
        raise ValueError(f"expected '(' after the geometry type in {s[:40]!r}")

    polygons: list[list[Ring]] = []
    stack: list[list] = []  # open groups: [multipolygon] [polygon] [ring]
    done = False
    for tok in _TOKENS.findall(body):
        if done:
            if tok.strip():
                raise ValueError(f"text after the end of the geometry: {tok.strip()[:20]!r}")
            continue
        if tok == "(":
            if len(stack) >= ring_depth:
                raise ValueError("too many nested parentheses")
            stack.append([])
        elif tok == ")":
            if not stack:
                raise ValueError("unbalanced ')'")
            group = stack.pop()
            depth = len(stack) + 1  # depth of the group just closed
            if depth == ring_depth:
                if not group:
                    raise ValueError("empty ring")
                ring = tuple(group)
                if len(ring) > 1 and ring[0] == ring[-1]:
                    ring = ring[:-1]
                stack[-1].append(ring)
            elif depth == ring_depth - 1:  # a polygon closed
                if not group:
                    raise ValueError("polygon without rings")
                if ring_depth == 3:
                    stack[-1].append(group)
                else:
                    polygons.append(group)
                    done = True
            else:  # the multipolygon closed
                polygons.extend(group)
                done = True
        else:
            if len(stack) == ring_depth:
                stack[-1].extend(_parse_points(tok))
            elif tok.strip(" \t\r\n,"):
                raise ValueError(f"unexpected text {tok.strip()[:20]!r}")
    if not done:
        raise ValueError("unbalanced '(' (geometry not closed)")
    return polygons


def _parse_points(chunk: str) -> list[tuple[float, float]]:
    points = []
    for pair in chunk.split(","):
        parts = pair.split()
        if not parts:
            if pair.strip():
                raise ValueError(f"bad coordinate {pair.strip()[:20]!r}")
            continue
        if len(parts) < 2 or len(parts) > 4:
            raise ValueError(f"bad coordinate {pair.strip()[:30]!r}")
        try:
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise ValueError(f"bad number in coordinate {pair.strip()[:30]!r}") from None
    return points


def polygon_rings(text: str) -> tuple[Ring, ...]:
    """All rings of a WKT polygon/multipolygon, flattened: exterior first, then holes,
    then the next polygon's rings. Rasterise with the even-odd rule (core.data.masks)."""
    return tuple(ring for poly in parse_wkt(text) for ring in poly)


def ring_centroid(ring: Ring) -> tuple[float, float]:
    """Area centroid of one ring (shoelace); the mean of its points when it has no area.

    Coordinates are shifted to the ring's first point before the area formula: with
    lon/lat near (-80, 25) the products of raw coordinates are ~2000 while a building's
    area is ~1e-8 deg², so the raw formula loses the centroid to cancellation (tens of
    metres off, outside the building)."""
    n = len(ring)
    if n == 0:
        raise ValueError("empty ring")
    ox, oy = ring[0]
    pts = [(x - ox, y - oy) for x, y in ring]
    a = cx = cy = 0.0
    for i in range(n):
        x0, y0 = pts[i]
        x1, y1 = pts[(i + 1) % n]
        cross = x0 * y1 - x1 * y0
        a += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    extent = max(max(abs(x), abs(y)) for x, y in pts)
    if abs(a) <= 1e-12 * extent * extent:
        return (sum(p[0] for p in ring) / n, sum(p[1] for p in ring) / n)
    return (ox + cx / (3.0 * a), oy + cy / (3.0 * a))


# -- metadata ----------------------------------------------------------------------------

_FLOAT_FIELDS = ("gsd", "off_nadir_angle", "pan_resolution", "sun_azimuth", "sun_elevation",
                 "target_azimuth")
_INT_FIELDS = ("original_width", "original_height", "width", "height")
_STR_FIELDS = ("sensor", "provider_asset_type", "disaster", "disaster_type", "catalog_id", "id",
               "img_name")


def parse_capture_date(value) -> datetime | None:
    """`capture_date` (ISO 8601, e.g. 2018-02-05T17:10:18.000Z) as a datetime; None if unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text[:10])
        except ValueError:
            return None


def _as_float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # drop NaN


def _as_int(value) -> int | None:
    f = _as_float(value)
    return int(round(f)) if f is not None else None


def parse_metadata(meta: dict) -> LabelMetadata:
    """The `metadata` block as typed values; a value of the wrong type becomes None."""
    kw: dict = {}
    for name in _FLOAT_FIELDS:
        kw[name] = _as_float(meta.get(name))
    for name in _INT_FIELDS:
        kw[name] = _as_int(meta.get(name))
    for name in _STR_FIELDS:
        v = meta.get(name)
        kw[name] = None if v is None else str(v)
    kw["capture_date"] = parse_capture_date(meta.get("capture_date"))
    if kw["disaster_type"] is not None:
        kw["disaster_type"] = kw["disaster_type"].strip().lower()
    return LabelMetadata(**kw)


# -- label files -------------------------------------------------------------------------

_KNOWN_SUBTYPES = set(DAMAGE_CLASSES) | {UNCLASSIFIED}


def _read_json(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise LabelError(f"Label file {path} does not exist. Re-index the data folder.") from None
    except OSError as err:
        raise LabelError(f"Label file {path} cannot be read ({err.strerror or err}).") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelError(f"Label file {path} is not valid JSON ({err}). "
                         "Re-download it or remove it.") from None
    if not isinstance(data, dict):
        raise LabelError(f"Label file {path} holds a JSON {type(data).__name__}, not the "
                         "object with 'features' and 'metadata' that xBD labels have.")
    missing = [k for k in ("features", "metadata") if not isinstance(data.get(k), dict)]
    if missing:
        raise LabelError(f"Label file {path} lacks {' and '.join(repr(k) for k in missing)} "
                         "(an xBD label has 'features' with 'xy' and 'lng_lat', and 'metadata'). "
                         "Is it an xBD label?")
    feats = data["features"]
    if not isinstance(feats.get("xy", []), list) or not isinstance(feats.get("lng_lat", []), list):
        raise LabelError(f"Label file {path}: 'features.xy' and 'features.lng_lat' must be lists.")
    if "xy" not in feats:
        raise LabelError(f"Label file {path} lacks 'features.xy' (the pixel polygons).")
    return data


def _building_features(features: list) -> list[tuple[dict, object]]:
    """(properties, wkt) of each building feature, skipping other feature types."""
    out = []
    for feat in features:
        if not isinstance(feat, dict):
            continue
        props = feat.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        ftype = props.get("feature_type", "building")
        if ftype is not None and str(ftype).lower() != "building":
            continue
        out.append((props, feat.get("wkt")))
    return out


def _subtype(props: dict) -> str | None:
    v = props.get("subtype")
    if v is None:
        return None
    v = str(v).strip().lower()
    return v if v in _KNOWN_SUBTYPES else UNCLASSIFIED


def _rings_or_error(path: Path, wkt, uid: str, which: str) -> tuple[Ring, ...]:
    try:
        return polygon_rings(wkt)
    except ValueError as err:
        raise LabelError(f"Label file {path}: the {which} polygon of building uid {uid!r} is "
                         f"malformed WKT ({err}).") from None


def _parse_label(path: Path) -> Label:
    data = _read_json(path)
    feats = data["features"]
    # Features without a uid get "#<position>", so such lists match by position.
    lnglat_by_uid: dict[str, tuple[Ring, ...]] = {}
    for i, (props, wkt) in enumerate(_building_features(feats.get("lng_lat") or [])):
        uid = str(props.get("uid", f"#{i}"))
        lnglat_by_uid[uid] = _rings_or_error(path, wkt, uid, "lng_lat")
    buildings = []
    for i, (props, wkt) in enumerate(_building_features(feats["xy"])):
        uid = str(props.get("uid", f"#{i}"))
        xy = _rings_or_error(path, wkt, uid, "xy")
        buildings.append(Building(uid=uid, subtype=_subtype(props), xy=xy,
                                  lng_lat=lnglat_by_uid.get(uid)))
    return Label(path=path, metadata=parse_metadata(data["metadata"]), buildings=tuple(buildings))


_CACHE_SIZE = 256
_cache: OrderedDict[tuple[str, int, int], Label] = OrderedDict()
_cache_lock = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise LabelError(f"Label file {path} does not exist. Re-index the data folder.") from None
    except OSError as err:
        raise LabelError(f"Label file {path} cannot be read ({err.strerror or err}).") from None
    return (str(path), st.st_mtime_ns, st.st_size)


def load_label(path: Path | str) -> Label:
    """Parse an xBD label file into a `Label` (buildings with pixel and lon/lat rings).

    Results are cached by (path, mtime_ns, size) in a small LRU, so a label edited on
    disk is parsed again. Raises LabelError naming the file for a missing file, invalid
    JSON, missing `features`/`metadata`, or a malformed WKT polygon (naming the uid).
    """
    path = Path(path)
    key = _stat_key(path)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            return hit
    label = _parse_label(path)
    with _cache_lock:
        _cache[key] = label
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return label


def clear_label_cache() -> None:
    """Forget every cached parse (tests and benchmarks use this)."""
    with _cache_lock:
        _cache.clear()


# -- summaries ---------------------------------------------------------------------------

SUMMARY_VERSION = 2  # 2: centroids without cancellation error


def summary_of(label: Label) -> dict:
    """A small JSON-able summary of a parsed label (see `summarize_label`)."""
    md = label.metadata
    centroid = next((list(ring_centroid(b.lng_lat[0])) for b in label.buildings if b.lng_lat), None)
    return {
        "disaster": md.disaster,
        "disaster_type": md.disaster_type,
        "counts": label.counts(),
        "centroid": centroid,
        "gsd": md.gsd,
        "capture_date": md.capture_date.isoformat() if md.capture_date else None,
        "width": md.width,
        "height": md.height,
    }


def summarize_label(path: Path | str) -> dict:
    """What the index needs from a label, without parsing every polygon.

    Returns a JSON-able dict: `disaster`, `disaster_type` (lower case or None), `counts`
    (as `Label.counts()`), `centroid` ([lon, lat] of the first `features.lng_lat`
    polygon's exterior ring, or None when there are no buildings), `gsd` (m/px),
    `capture_date` (ISO string or None), `width`, `height`. Raises LabelError like
    `load_label` (only the first lon/lat polygon's WKT is checked).
    """
    path = Path(path)
    data = _read_json(path)
    feats = data["features"]
    md = parse_metadata(data["metadata"])
    counts = {name: 0 for name in DAMAGE_CLASSES + (UNCLASSIFIED,)}
    total = 0
    for props, _wkt in _building_features(feats["xy"]):
        total += 1
        sub = _subtype(props)
        if sub is not None:
            counts[sub] += 1
    counts["total"] = total
    centroid = None
    lnglat = _building_features(feats.get("lng_lat") or [])
    if lnglat:
        props, wkt = lnglat[0]
        rings = _rings_or_error(path, wkt, str(props.get("uid", "#0")), "lng_lat")
        if rings:
            centroid = list(ring_centroid(rings[0]))
    return {
        "disaster": md.disaster,
        "disaster_type": md.disaster_type,
        "counts": counts,
        "centroid": centroid,
        "gsd": md.gsd,
        "capture_date": md.capture_date.isoformat() if md.capture_date else None,
        "width": md.width,
        "height": md.height,
    }
