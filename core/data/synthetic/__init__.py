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
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.synthetic.damage import _DISASTERS
from core.data.synthetic.labels import _label, _target
from core.data.synthetic.layout import _layout
from core.data.synthetic.numeric import _grid, _sub_rng
from core.data.synthetic.render import _compose, _finish, _roof_geometry
from core.data.synthetic.specs import DEMO_SCENES, SIZE, Capture, DemoSceneSpec
from core.errors import DataError

__all__ = ["DEMO_SCENES", "SIZE", "Capture", "DemoSceneSpec", "render_scene",
           "write_demo_scenes"]

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

(`core/data/synthetic/` holds the generator; `specs.py` there lists the scenes.)
"""


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
