"""Caption files in and out of the store: the course's captions.jsonl and a ControlNet
metadata.jsonl (core.captions.formats)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.captions.formats import (
    controlnet_pairs,
    export_controlnet_metadata,
    export_course_jsonl,
    import_course_jsonl,
)
from core.captions.store import CaptionStoreError
from core.types import Scene
from tests.unit.test_caption_store import POST, PRE, _machine, store  # noqa: F401  (store: a fixture)


# -- the course's captions.jsonl -----------------------------------------------------------

COURSE = [
    {"disaster": "guatemala-volcano", "image": POST, "caption": "Long text about lava.",
     "caption_short": "Lava flows."},
    {"disaster": "guatemala-volcano", "image": PRE, "caption": "A green valley.", "caption_short": "Valley."},
    {"disaster": "socal-fire", "image": "socal-fire_00000001_post_disaster_part2.png",
     "caption": "Burnt hills in one sentence.", "single_caption": "Burnt hills."},
    {"disaster": "socal-fire", "image": "socal-fire_00000002_pre_disaster.png", "caption": "Only long."},
]


def _write_course(path: Path, broken: bool = True) -> None:
    lines = [json.dumps(r) for r in COURSE]
    if broken:
        lines.insert(2, '{"disaster": "socal-fire", "image": ')  # line 3: cut JSON
        lines.append(json.dumps({"disaster": "x", "image": "notes.txt", "caption": "?"}))  # line 6
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_import_export_round_trip_with_bad_lines_reported(store, tmp_path):
    src = tmp_path / "captions.jsonl"
    _write_course(src)
    rep = import_course_jsonl(store, src)
    assert (rep.added, rep.updated, rep.unchanged) == (4, 0, 0)
    assert [n for n, _ in rep.bad] == [3, 6]
    assert "JSON" in rep.bad[0][1] and "notes.txt" in rep.bad[1][1]
    part = store.get("socal-fire_00000001_post_disaster_part2.png")
    assert (part.scene_id, part.phase, part.text, part.summary) == (
        "socal-fire_00000001_part2", "post", "Burnt hills.", "Burnt hills.")
    assert store.history(PRE)[-1].kind == "import"

    again = import_course_jsonl(store, src)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    assert sum(len(store.history(r["image"])) for r in COURSE) == 7

    out = tmp_path / "out" / "captions.jsonl"
    assert export_course_jsonl(store, out) == 4
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    key = lambda r: r["image"]  # noqa: E731
    assert sorted(exported, key=key) == sorted(COURSE, key=key)

    export_course_jsonl(store, out, images=[POST])
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == [POST]


def test_import_never_overwrites_a_persons_edit_and_export_carries_it(store, tmp_path):
    src = tmp_path / "captions.jsonl"
    _write_course(src, broken=False)
    import_course_jsonl(store, src)
    store.save_edit(POST, "Corrected by a person.", author="ana")
    changed = [dict(r) for r in COURSE]
    changed[0]["caption_short"] = "A newer summary."
    src2 = src.with_name("v2.jsonl")
    src2.write_text("\n".join(json.dumps(r) for r in changed) + "\n", encoding="utf-8")
    rep = import_course_jsonl(store, src2)
    assert (rep.kept_edits, rep.unchanged) == (1, 3)
    rec = store.get(POST)
    assert (rec.text, rec.status, rec.summary) == ("Corrected by a person.", "edited", "A newer summary.")
    out = tmp_path / "out.jsonl"
    export_course_jsonl(store, out, images=[POST])
    line = json.loads(out.read_text())
    assert line == {"disaster": "guatemala-volcano", "image": POST, "caption": "Long text about lava.",
                    "caption_short": "Corrected by a person."}


def test_missing_course_file_is_a_clear_error(store, tmp_path):
    with pytest.raises(CaptionStoreError, match="Cannot read"):
        import_course_jsonl(store, tmp_path / "nope.jsonl")


# -- ControlNet metadata.jsonl -------------------------------------------------------------

def _scene(root: Path, sid: str, pre: bool = True, post: bool = True) -> Scene:
    d, tid = sid.rsplit("_", 1)
    img = root / "train" / "images"
    return Scene(scene_id=sid, disaster=d, split="train", part=None,
                 pre_image=img / f"{d}_{tid}_pre_disaster.png" if pre else None,
                 post_image=img / f"{d}_{tid}_post_disaster.png" if post else None)


def test_controlnet_pairs_and_metadata_format(store, tmp_path):
    root = tmp_path / "xbd"
    scenes = [_scene(root, "guatemala-volcano_00000004"),   # post caption
              _scene(root, "socal-fire_00000001"),          # only the pre is captioned
              _scene(root, "socal-fire_00000002"),          # no caption
              _scene(root, "socal-fire_00000003", pre=False)]  # no pre image
    _machine(store, caption="Lava on the post tile.")
    store.save_edit("socal-fire_00000001_pre_disaster.png", "Dry hills.", author="ana")
    store.save_edit("socal-fire_00000003_post_disaster.png", "Burnt.", author="ana")

    class Index:  # DatasetIndex stand-in: only `.scenes` is read
        pass

    Index.scenes = scenes
    pairs, skipped = controlnet_pairs(store, Index(), None, relative_to=root)
    assert skipped == 2
    assert pairs == [
        ("train/images/guatemala-volcano_00000004_post_disaster.png",
         "train/images/guatemala-volcano_00000004_pre_disaster.png", "Lava on the post tile."),
        ("train/images/socal-fire_00000001_post_disaster.png",
         "train/images/socal-fire_00000001_pre_disaster.png", "Dry hills.")]
    meta = root / "metadata.jsonl"
    assert export_controlnet_metadata(meta, pairs) == 2
    lines = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"image": "train/images/guatemala-volcano_00000004_post_disaster.png",
                        "conditioning_image": "train/images/guatemala-volcano_00000004_pre_disaster.png",
                        "text": "Lava on the post tile."}
    assert all(set(line) == {"image", "conditioning_image", "text"} for line in lines)
    abs_pairs, _ = controlnet_pairs(store, Index(), scenes[:1], relative_to=None)
    assert export_controlnet_metadata(tmp_path / "m.jsonl", abs_pairs) == 1
    assert Path(json.loads((tmp_path / "m.jsonl").read_text())["image"]).is_absolute()


# -- the course's 512 px file and the keys a line came with --------------------------------

def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_512px_file_with_only_single_caption_imports_and_exports_as_it_came(store, tmp_path):
    # captions_512.jsonl: disaster, image (a 512 px part tile) and single_caption, nothing else
    course = [{"disaster": "socal-fire", "image": f"socal-fire_00000001_post_disaster_part{n}.png",
               "single_caption": f"Burnt hills, part {n}."} for n in (1, 2, 3)]
    src = tmp_path / "captions_512.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in course), encoding="utf-8")
    rep = import_course_jsonl(store, src)
    assert (rep.added, rep.bad) == (3, [])
    part3 = store.get("socal-fire_00000001_post_disaster_part3.png")
    assert (part3.scene_id, part3.phase, part3.text, part3.status) == (
        "socal-fire_00000001_part3", "post", "Burnt hills, part 3.", "auto")
    out = tmp_path / "back.jsonl"
    export_course_jsonl(store, out)
    assert _lines(out) == course  # single_caption stays single_caption: no "caption" appears
    # a person's correction goes out under the key the file had
    store.save_edit(part3.image, "Burnt hills and two houses.", author="ana")
    export_course_jsonl(store, out, images=[part3.image])
    assert _lines(out) == [{**course[2], "single_caption": "Burnt hills and two houses."}]


def test_any_text_key_is_a_caption_and_an_empty_short_text_stays_empty(store, tmp_path):
    course = [
        {"disaster": "socal-fire", "image": "socal-fire_00000001_pre_disaster.png", "caption_short": "Dry hills."},
        {"disaster": "socal-fire", "image": "socal-fire_00000002_pre_disaster.png", "caption": "Long text.",
         "caption_short": ""},
        {"disaster": "socal-fire", "image": "socal-fire_00000003_pre_disaster.png", "caption": "Long.",
         "caption_short": "Short.", "single_caption": "Single.", "id": 7},
    ]
    src = tmp_path / "captions.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in course)
                   + json.dumps({"disaster": "socal-fire", "image": "socal-fire_00000004_pre_disaster.png"}) + "\n",
                   encoding="utf-8")
    rep = import_course_jsonl(store, src)
    assert rep.added == 3 and [n for n, _ in rep.bad] == [4]
    assert "no caption text" in rep.bad[0][1] and "single_caption" in rep.bad[0][1]
    assert store.get(course[0]["image"]).text == "Dry hills."
    empty = store.get(course[1]["image"])
    assert (empty.text, empty.summary) == ("Long text.", None)  # the long caption is the text to train on
    out = tmp_path / "back.jsonl"
    export_course_jsonl(store, out)
    assert _lines(out) == course  # the same keys, "" still "", the third text key as it was
    assert import_course_jsonl(store, out).unchanged == 3  # and importing the export changes nothing
    store.save_edit(course[1]["image"], "Now written by a person.", author="ana")
    export_course_jsonl(store, out, images=[course[1]["image"]])
    assert _lines(out) == [{**course[1], "caption_short": "Now written by a person."}]
