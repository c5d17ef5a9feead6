"""The caption store: edits are versioned, durable, shared and never lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.captions.store import (
    CaptionStore,
    CaptionStoreError,
    ConflictError,
    controlnet_pairs,
    export_controlnet_metadata,
)
from core.errors import LabError
from core.types import Scene

ROOT = Path(__file__).resolve().parents[2]
POST = "guatemala-volcano_00000004_post_disaster.png"
PRE = "guatemala-volcano_00000004_pre_disaster.png"


@pytest.fixture
def store(tmp_path):
    s = CaptionStore(tmp_path / "sub" / "captions.sqlite")
    yield s
    s.close()


def _machine(store, image=POST, caption="Lava flows cover the village.", **kw):
    args = dict(scene_id="guatemala-volcano_00000004", phase="post", disaster="guatemala-volcano",
                caption=caption, model="cogvlm2", prompt="Describe this post-event image.")
    args.update(kw)
    return store.put_machine(image, **args)


def test_put_and_get_create_the_file_in_wal_mode_with_full_sync(store, tmp_path):
    assert store.get(POST) is None
    rec = _machine(store, summary="Lava covers houses.", summary_model="t5-large")
    assert (tmp_path / "sub" / "captions.sqlite").exists()
    got = store.get(POST)
    assert got == rec
    assert (got.text, got.status, got.version) == ("Lava covers houses.", "auto", 1)
    assert (got.machine_caption, got.machine_model, got.summary_model) == (
        "Lava flows cover the village.", "cogvlm2", "t5-large")
    assert got.machine_prompt == "Describe this post-event image." and got.machine_time
    assert [h.kind for h in store.history(POST)] == ["machine", "summary"]
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # storing the same machine output again changes nothing
    assert _machine(store, summary="Lava covers houses.", summary_model="t5-large") == rec
    assert len(store.history(POST)) == 2


def test_edit_increments_version_and_keeps_history(store):
    _machine(store)
    a = store.save_edit(POST, "Ash covers roofs.", author="ana")
    b = store.save_edit(POST, "Ash covers the roofs.", author="ben")
    assert (a.version, b.version) == (2, 3)
    assert (b.text, b.status, b.updated_by) == ("Ash covers the roofs.", "edited", "ben")
    hist = store.history(POST)
    assert [(h.kind, h.author, h.text) for h in hist] == [
        ("machine", "captioner", "Lava flows cover the village."),
        ("edit", "ana", "Ash covers roofs."),
        ("edit", "ben", "Ash covers the roofs.")]
    assert hist[0].id < hist[1].id < hist[2].id
    assert hist[-1].time.endswith("+00:00")


def test_identical_save_is_a_no_op_but_a_status_change_is_recorded(store):
    _machine(store)
    a = store.save_edit(POST, "Ash.", author="ana")
    assert store.save_edit(POST, "Ash.", author="ana") == a
    assert len(store.history(POST)) == 2
    r = store.save_edit(POST, "Ash.", author="ana", status="reviewed")
    assert (r.status, r.version) == ("reviewed", a.version + 1)
    assert store.history(POST)[-1].kind == "status"
    s = store.set_status(POST, "edited", author="ben")
    assert (s.status, s.text, s.version) == ("edited", "Ash.", r.version + 1)
    assert store.set_status(POST, "edited", author="ben") == s
    with pytest.raises(CaptionStoreError):
        store.set_status(POST, "approved", author="ben")
    with pytest.raises(CaptionStoreError):
        store.set_status("nope_00000001_post_disaster.png", "reviewed", author="ben")


def test_restore_brings_back_an_earlier_text_as_a_new_edit(store):
    _machine(store)
    store.save_edit(POST, "first", author="ana")
    store.save_edit(POST, "second", author="ana")
    machine_entry = store.history(POST)[0]
    r = store.restore(POST, machine_entry.id, author="ben")
    assert (r.text, r.status, r.version) == ("Lava flows cover the village.", "edited", 4)
    hist = store.history(POST)
    assert [h.kind for h in hist] == ["machine", "edit", "edit", "restore"]
    assert hist[-1].author == "ben"
    _machine(store, image=PRE, phase="pre")
    with pytest.raises(CaptionStoreError, match="does not belong"):
        store.restore(PRE, hist[1].id, author="ben")


def test_machine_recaption_never_overwrites_a_persons_edit(store):
    _machine(store)
    edited = store.save_edit(POST, "My careful caption.", author="ana")
    r = _machine(store, caption="A new machine caption.", summary="New summary.", summary_model="t5")
    assert (r.text, r.status, r.version) == ("My careful caption.", "edited", edited.version)
    assert (r.machine_caption, r.summary) == ("A new machine caption.", "New summary.")
    store.set_status(POST, "reviewed", author="ana")
    assert _machine(store, caption="Third try.").text == "My careful caption."
    # an auto caption follows the machine
    _machine(store, image=PRE, phase="pre", caption="old")
    assert _machine(store, image=PRE, phase="pre", caption="new").text == "new"


def test_status_filter_counts_and_list_filters(store):
    for i in range(4):
        _machine(store, image=f"guatemala-volcano_0000000{i}_post_disaster.png")
    _machine(store, image=PRE, phase="pre", disaster="guatemala-volcano")
    store.save_edit("guatemala-volcano_00000001_post_disaster.png", "x", author="a")
    store.save_edit("guatemala-volcano_00000002_post_disaster.png", "y", author="a", status="reviewed")
    assert [r.image for r in store.list(status="edited")] == ["guatemala-volcano_00000001_post_disaster.png"]
    assert len(store.list(status="auto")) == 3
    assert len(store.list(phase="pre")) == 1
    assert len(store.list(disaster="guatemala-volcano", phase="post")) == 4
    assert len(store.list(disaster="socal-fire")) == 0
    some = store.list(images=[PRE, "guatemala-volcano_00000002_post_disaster.png", "missing.png"])
    assert [r.image for r in some] == ["guatemala-volcano_00000002_post_disaster.png", PRE]
    assert store.counts() == {"auto": 3, "edited": 1, "reviewed": 1, "total": 5}


def test_edit_of_an_uncaptioned_image_creates_it_from_its_name(store):
    r = store.save_edit(PRE, "Typed by hand.", author="ana", expected_version=0)
    assert (r.scene_id, r.phase, r.disaster, r.version, r.machine_caption) == (
        "guatemala-volcano_00000004", "pre", "guatemala-volcano", 1, None)


# -- durability ----------------------------------------------------------------------------

_CHILD = """
import sys
from core.captions.store import CaptionStore
s = CaptionStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    s.save_edit("img_%d.png" % (i % 7), "edit %d" % i, author="child")
    print(i, flush=True)
sys.stdin.read()
"""


def test_every_committed_edit_survives_sigkill(tmp_path):
    db = tmp_path / "c.sqlite"
    kill_after = 40
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(db), "100000"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    last = -1
    try:
        for line in proc.stdout:
            last = int(line)
            if last >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and last == kill_after
    with CaptionStore(db) as s:
        assert s._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        texts = [h.text for img in (f"img_{j}.png" for j in range(7)) for h in s.history(img)]
        done = sorted(int(t.split()[1]) for t in texts)
        assert done[: kill_after + 1] == list(range(kill_after + 1))  # every printed edit is there
        assert done == list(range(len(done)))  # and nothing half-written after it
        assert s.get(f"img_{kill_after % 7}.png").version >= kill_after // 7 + 1


# -- concurrency ---------------------------------------------------------------------------

def test_two_threads_two_store_objects_no_lost_update(tmp_path):
    db = tmp_path / "shared.sqlite"
    a, b = CaptionStore(db), CaptionStore(db)
    try:
        _machine(a)
        errors: list[BaseException] = []

        def writer(store, prefix):
            try:
                for i in range(15):
                    store.save_edit(f"{prefix}_{i}.png", f"{prefix} {i}", author=prefix)
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=writer, args=(a, "a")), threading.Thread(target=writer, args=(b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        assert b.get("a_14.png").text == "a 14" and a.get("b_14.png").text == "b 14"

        # both users loaded version 1 of the same caption and save at once
        loaded = a.get(POST).version
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def save(store, who):
            barrier.wait()
            try:
                outcome[who] = store.save_edit(POST, f"text by {who}", author=who, expected_version=loaded)
            except ConflictError as err:
                outcome[who] = err

        threads = [threading.Thread(target=save, args=(a, "ana")), threading.Thread(target=save, args=(b, "ben"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        conflicts = [v for v in outcome.values() if isinstance(v, ConflictError)]
        wins = [v for v in outcome.values() if not isinstance(v, ConflictError)]
        assert len(conflicts) == 1 and len(wins) == 1
        err, won = conflicts[0], wins[0]
        assert isinstance(err, LabError) and err.current == won and "Reload" in str(err)
        assert won.version == loaded + 1
        loser = "ben" if won.updated_by == "ana" else "ana"
        # the loser reloads and saves again: both saves end up in the history
        store = b if loser == "ben" else a
        store.save_edit(POST, f"text by {loser}, merged", author=loser, expected_version=won.version)
        other = a if store is b else b
        assert other.get(POST).text == f"text by {loser}, merged"
        assert [h.author for h in other.history(POST) if h.kind == "edit"] == [won.updated_by, loser]
    finally:
        a.close()
        b.close()


def test_a_store_is_shared_by_threads_with_their_own_connections(store):
    seen = []

    def work():
        store.save_edit(PRE, "from a worker thread", author="w")
        seen.append(id(store._conn()))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert store.get(PRE).text == "from a worker thread"
    assert seen[0] != id(store._conn())


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
    rep = store.import_course_jsonl(src)
    assert (rep.added, rep.updated, rep.unchanged) == (4, 0, 0)
    assert [n for n, _ in rep.bad] == [3, 6]
    assert "JSON" in rep.bad[0][1] and "notes.txt" in rep.bad[1][1]
    part = store.get("socal-fire_00000001_post_disaster_part2.png")
    assert (part.scene_id, part.phase, part.text, part.summary) == (
        "socal-fire_00000001_part2", "post", "Burnt hills.", "Burnt hills.")
    assert store.history(PRE)[-1].kind == "import"

    again = store.import_course_jsonl(src)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    assert sum(len(store.history(r["image"])) for r in COURSE) == 7

    out = tmp_path / "out" / "captions.jsonl"
    assert store.export_course_jsonl(out) == 4
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    key = lambda r: r["image"]  # noqa: E731
    assert sorted(exported, key=key) == sorted(COURSE, key=key)

    store.export_course_jsonl(out, images=[POST])
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == [POST]


def test_import_never_overwrites_a_persons_edit_and_export_carries_it(store, tmp_path):
    src = tmp_path / "captions.jsonl"
    _write_course(src, broken=False)
    store.import_course_jsonl(src)
    store.save_edit(POST, "Corrected by a person.", author="ana")
    changed = [dict(r) for r in COURSE]
    changed[0]["caption_short"] = "A newer summary."
    src2 = src.with_name("v2.jsonl")
    src2.write_text("\n".join(json.dumps(r) for r in changed) + "\n", encoding="utf-8")
    rep = store.import_course_jsonl(src2)
    assert (rep.kept_edits, rep.unchanged) == (1, 3)
    rec = store.get(POST)
    assert (rec.text, rec.status, rec.summary) == ("Corrected by a person.", "edited", "A newer summary.")
    out = tmp_path / "out.jsonl"
    store.export_course_jsonl(out, images=[POST])
    line = json.loads(out.read_text())
    assert line == {"disaster": "guatemala-volcano", "image": POST, "caption": "Long text about lava.",
                    "caption_short": "Corrected by a person."}


def test_missing_course_file_is_a_clear_error(store, tmp_path):
    with pytest.raises(CaptionStoreError, match="Cannot read"):
        store.import_course_jsonl(tmp_path / "nope.jsonl")


def test_a_file_that_is_not_sqlite_is_refused_with_a_message(tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CaptionStoreError, match="not a usable caption store"):
        CaptionStore(bad)


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
    pairs, skipped = controlnet_pairs(Index(), None, store, relative_to=root)
    assert skipped == 2
    assert pairs == [
        ("train/images/guatemala-volcano_00000004_post_disaster.png",
         "train/images/guatemala-volcano_00000004_pre_disaster.png", "Lava on the post tile."),
        ("train/images/socal-fire_00000001_post_disaster.png",
         "train/images/socal-fire_00000001_pre_disaster.png", "Dry hills.")]
    meta = root / "metadata.jsonl"
    assert store.export_controlnet_metadata(meta, pairs) == 2
    lines = [json.loads(line) for line in meta.read_text(encoding="utf-8").splitlines()]
    assert lines[0] == {"image": "train/images/guatemala-volcano_00000004_post_disaster.png",
                        "conditioning_image": "train/images/guatemala-volcano_00000004_pre_disaster.png",
                        "text": "Lava on the post tile."}
    assert all(set(line) == {"image", "conditioning_image", "text"} for line in lines)
    abs_pairs, _ = controlnet_pairs(Index(), scenes[:1], store, relative_to=None)
    assert export_controlnet_metadata(tmp_path / "m.jsonl", abs_pairs) == 1
    assert Path(json.loads((tmp_path / "m.jsonl").read_text())["image"]).is_absolute()


def test_store_module_is_light():
    code = ("import sys, core.captions, core.captions.store; "
            "print(sorted(m for m in ('torch', 'gradio', 'diffusers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert sqlite3.sqlite_version  # stdlib only
