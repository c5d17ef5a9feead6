"""xBD file names: what a name says about its file, without opening it.

Recognised names (see docs/xbd.md):

- ``{disaster}_{8 digits}_{pre|post}_disaster.png`` / ``.json`` — image / label
- ``{disaster}_{8 digits}_{pre|post}_disaster_part{1-4}.png`` / ``.json`` — 512 px course tile
- ``{disaster}_{8 digits}_{pre|post}_disaster_target.png`` — damage target mask
- ``test_{pre|post}_{digits}.png`` / ``.json`` — competition-era test set (disaster unknown)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_XBD = re.compile(
    r"^(?P<disaster>[A-Za-z0-9][A-Za-z0-9_-]*?)_(?P<id>\d{8})_(?P<phase>pre|post)_disaster"
    r"(?:_part(?P<part>[1-4]))?(?P<target>_target)?\.(?P<ext>png|json)$",
    re.IGNORECASE,
)
_COMPETITION_TEST = re.compile(
    r"^test_(?P<phase>pre|post)_(?P<id>\d+)(?P<target>_target)?\.(?P<ext>png|json)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedName:
    """What an xBD-like file name says: the scene it belongs to and what the file is.

    `disaster` is None for the competition-era test set. `part` is 1..4 for a 512 px
    course tile, else None. `kind` is "image", "label" or "target".
    """

    disaster: str | None
    tile_id: str
    phase: str
    part: int | None
    kind: str


def parse_name(filename: str) -> ParsedName | None:
    """Parse an xBD-like file name (a bare name, not a path); None for unrelated files.

    A `_target` name is only a target when it is a PNG; a `.json` target is not an xBD file.
    """
    m = _XBD.match(filename)
    if m is not None:
        disaster = m["disaster"].lower()
        part = int(m["part"]) if m["part"] else None
    else:
        m = _COMPETITION_TEST.match(filename)
        if m is None:
            return None
        disaster, part = None, None
    ext = m["ext"].lower()
    if m["target"]:
        if ext != "png":
            return None
        kind = "target"
    else:
        kind = "image" if ext == "png" else "label"
    return ParsedName(disaster=disaster, tile_id=m["id"], phase=m["phase"].lower(), part=part, kind=kind)


def scene_id_for(parsed: ParsedName) -> str:
    """The scene id of a parsed name: `{disaster}_{id}`, `test_{id}` when the disaster is
    unknown, plus `_part{N}` for a course tile."""
    base = f"{parsed.disaster}_{parsed.tile_id}" if parsed.disaster else f"test_{parsed.tile_id}"
    return f"{base}_part{parsed.part}" if parsed.part else base


def file_name_for(disaster: str | None, tile_id: str, phase: str, *, part: int | None = None,
                  kind: str = "image") -> str:
    """The canonical file name of a scene's file (the inverse of `parse_name`)."""
    ext = "json" if kind == "label" else "png"
    suffix = "_target" if kind == "target" else ""
    if disaster is None:
        return f"test_{phase}_{tile_id}{suffix}.{ext}"
    part_s = f"_part{part}" if part else ""
    return f"{disaster}_{tile_id}_{phase}_disaster{part_s}{suffix}.{ext}"
