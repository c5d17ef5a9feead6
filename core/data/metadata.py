"""DiffusionSat's 7-value metadata vector (see docs/diffusionsat.md).

Order: [lon, lat, gsd, cloud_cover, year, month, day], each normalised to a 0..1000 scale:
(lon + 180) / 360, (lat + 90) / 180, gsd (m/px, already scaled to the generated
resolution), cloud cover (fraction 0..1), (year - 1980) / 120, month / 12, day / 31, all
times 1000. All seven values 0 means "no metadata".
"""

from __future__ import annotations

from datetime import datetime

from core.data.names import parse_name
from core.errors import DataError

SCALE = 1000.0
NO_METADATA: tuple[float, ...] = (0.0,) * 7
FIELDS: tuple[str, ...] = ("lon", "lat", "gsd", "cloud_cover", "year", "month", "day")


def encode_metadata(lon: float, lat: float, gsd: float, cloud_cover: float, year: int, month: int,
                    day: int) -> tuple[float, ...]:
    """The normalised 7-vector from raw values: lon/lat in degrees, gsd in metres per pixel
    of the generated image, cloud_cover as a fraction 0..1, and a calendar date.

    Raises DataError for values outside their range (a raw-value vector such as
    [-73.97, 40.79, 0.92, ...] passed by mistake is caught here, e.g. a year of 5).
    """
    checks = (
        ("lon", lon, -180.0, 180.0), ("lat", lat, -90.0, 90.0), ("gsd", gsd, 0.0, 1000.0),
        ("cloud_cover", cloud_cover, 0.0, 1.0), ("year", year, 1980, 2100),
        ("month", month, 1, 12), ("day", day, 1, 31),
    )
    for name, value, lo, hi in checks:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DataError(f"Metadata {name} must be a number, got {value!r}.") from None
        if not lo <= v <= hi:
            raise DataError(f"Metadata {name} = {value!r} is outside {lo}..{hi}. Pass raw values "
                            "(degrees, m/px, fraction 0-1, calendar date): they are normalised here.")
    return (
        (float(lon) + 180.0) / 360.0 * SCALE,
        (float(lat) + 90.0) / 180.0 * SCALE,
        float(gsd) * SCALE,
        float(cloud_cover) * SCALE,
        (float(year) - 1980.0) / 120.0 * SCALE,
        float(month) / 12.0 * SCALE,
        float(day) / 31.0 * SCALE,
    )


def decode_metadata(vec) -> dict:
    """Raw values of a normalised 7-vector: lon, lat (degrees), gsd (m/px), cloud_cover
    (fraction) as floats, and year, month, day as rounded ints. The inverse of
    `encode_metadata`; note that NO_METADATA decodes to lon -180, lat -90, year 1980, ...
    (check `tuple(vec) == NO_METADATA` first when that matters)."""
    values = [float(v) for v in vec]
    if len(values) != 7:
        raise DataError(f"A DiffusionSat metadata vector has 7 values, got {len(values)}.")
    lon, lat, gsd, cloud, year, month, day = (v / SCALE for v in values)
    return {
        "lon": lon * 360.0 - 180.0,
        "lat": lat * 180.0 - 90.0,
        "gsd": gsd,
        "cloud_cover": cloud,
        "year": int(round(year * 120.0 + 1980.0)),
        "month": int(round(month * 12.0)),
        "day": int(round(day * 31.0)),
    }


def scene_metadata(index, scene, resolution: int = 512, *, phase: str = "post") -> tuple[float, ...]:
    """The metadata vector of a scene's `phase` image ("post" by default) generated at
    `resolution` px, following DiffusionSat's xBD recipe:

    - lon/lat: centroid of the first polygon of `features.lng_lat` of that phase's label,
      else of the other phase's label; both normalised values 0 when neither has buildings
    - gsd: `metadata.gsd` x tile side / `resolution`, the side being 1024 px for a full tile
      (the label's width/height when given) and half of it for a 512 px part tile cropped
      from a full-tile label
    - cloud cover 0; year/month/day from `capture_date`

    Returns NO_METADATA when the scene has no readable label at all. Labels are read as
    light summaries (cached by the index).
    """
    if phase not in ("pre", "post"):
        raise ValueError(f"phase must be 'pre' or 'post', got {phase!r}")
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    other = "pre" if phase == "post" else "post"
    own = index.label_summary(scene, phase)
    alt = index.label_summary(scene, other)
    main, main_phase = (own, phase) if own is not None else (alt, other)
    if main is None:
        return NO_METADATA
    centroid = next((s["centroid"] for s in (own, alt) if s and s.get("centroid")), None)

    vec = [0.0] * 7
    if centroid is not None:
        lon, lat = centroid
        vec[0] = (lon + 180.0) / 360.0 * SCALE
        vec[1] = (lat + 90.0) / 180.0 * SCALE
    gsd = main.get("gsd")
    if gsd:
        side = min(main.get("width") or 1024, main.get("height") or 1024)
        label_path = scene.label(main_phase)
        parsed = parse_name(label_path.name)
        if scene.part is not None and (parsed is None or parsed.part is None):
            side = side / 2.0  # a part tile cropped from a full-tile label
        vec[2] = float(gsd) * side / resolution * SCALE
    date = main.get("capture_date")
    if date:
        d = datetime.fromisoformat(date)
        vec[4] = (d.year - 1980.0) / 120.0 * SCALE
        vec[5] = d.month / 12.0 * SCALE
        vec[6] = d.day / 31.0 * SCALE
    return tuple(vec)
