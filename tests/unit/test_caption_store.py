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

from core.captions.store import CaptionStore, CaptionStoreError, ConflictError, ImportedCaption
from core.errors import LabError

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


def test_imported_captions_keep_their_source_and_never_overwrite_a_persons_edit(store):
    def entry(image, caption, **kw):
        return ImportedCaption(image=image, scene_id="guatemala-volcano_00000004", phase=image.split("_")[2],
                               disaster="guatemala-volcano", caption=caption, **kw)

    first = [entry(POST, "Long.", summary="Short.", short_key="single_caption", extra='{"id": 7}'),
             entry(PRE, "Valley.")]
    assert store.put_imported(first, author="import", summary_model="t5") == ["added", "added"]
    assert store.put_imported(first, author="import", summary_model="t5") == ["unchanged", "unchanged"]
    store.save_edit(POST, "Mine.", author="ana")
    assert store.put_imported([entry(POST, "Longer."), entry(PRE, "Valley.")], author="import") == [
        "kept", "unchanged"]
    (post, caption_key, short_key, extra), (pre, *source) = store.list_with_source()
    assert (post.image, post.text, post.machine_caption, caption_key, short_key, extra) == (
        POST, "Mine.", "Longer.", None, None, None)
    assert (pre.text, pre.summary_model, source) == ("Valley.", None, [None, None, None])
    assert store.history(PRE)[-1].kind == "import"
    assert [r for r, *_ in store.list_with_source(images=[PRE])] == [store.get(PRE)]


def test_records_are_read_by_column_name(store):
    _machine(store)
    assert store._conn().row_factory is sqlite3.Row
    rec = store.get(POST)
    assert (rec.image, rec.status, rec.updated_by) == (POST, "auto", "captioner")
    assert len(store) == 1 and store.counts()["auto"] == 1


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


def test_a_file_that_is_not_sqlite_is_refused_with_a_message(tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CaptionStoreError, match="not a usable caption store"):
        CaptionStore(bad)


def modules_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport json, sys; print(json.dumps(sorted(m for m in {modules!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_store_module_is_light():
    code = "import core.captions, core.captions.store, core.captions.formats"
    assert modules_after(code, ("torch", "gradio", "diffusers", "numpy")) == []
    assert sqlite3.sqlite_version  # stdlib only


# -- conflicts beyond saves ----------------------------------------------------------------

def test_restore_and_status_from_a_stale_version_are_refused_and_keep_the_other_text(store):
    _machine(store)
    ana_loaded = store.get(POST).version
    machine_entry = store.history(POST)[0]
    ben = store.save_edit(POST, "Ben's words.", author="ben", expected_version=ana_loaded)
    with pytest.raises(ConflictError, match="by ben") as err:
        store.set_status(POST, "reviewed", author="ana", expected_version=ana_loaded)
    assert err.value.current == ben and "Reload" in str(err.value)
    with pytest.raises(ConflictError, match="by ben") as err:
        store.restore(POST, machine_entry.id, author="ana", expected_version=ana_loaded)
    assert err.value.current == ben
    assert store.get(POST) == ben and len(store.history(POST)) == 2  # Ben's text and status survive
    # from the version Ben left, both go through
    assert store.set_status(POST, "reviewed", author="ana", expected_version=ben.version).status == "reviewed"
    restored = store.restore(POST, machine_entry.id, author="ana", expected_version=ben.version + 1)
    assert restored.text == "Lava flows cover the village."


def test_a_path_is_not_an_image_name(store):
    for bad in ("../../etc/passwd", "sub/img.png", "..\\x.png", "", "  ", ".."):
        with pytest.raises(CaptionStoreError, match="not an image file name"):
            store.save_edit(bad, "text", author="ana")
        with pytest.raises(CaptionStoreError, match="not an image file name"):
            _machine(store, image=bad)
    assert len(store) == 0


# -- schema --------------------------------------------------------------------------------

def test_a_store_of_schema_1_opens_migrated_with_its_captions(tmp_path):
    db = tmp_path / "old.sqlite"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE captions (image TEXT PRIMARY KEY, scene_id TEXT, phase TEXT, disaster TEXT,
            text TEXT NOT NULL, status TEXT NOT NULL, version INTEGER NOT NULL, machine_caption TEXT,
            machine_model TEXT, machine_prompt TEXT, machine_time TEXT, summary TEXT, summary_model TEXT,
            updated TEXT NOT NULL, updated_by TEXT, short_key TEXT, extra TEXT);
        CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL, text TEXT NOT NULL,
            status TEXT NOT NULL, kind TEXT NOT NULL, author TEXT, time TEXT NOT NULL);
        INSERT INTO captions VALUES ('a_00000001_post_disaster.png', 'a_00000001', 'post', 'a', 'Old text.',
            'edited', 3, 'Machine.', 'm', NULL, 't', NULL, NULL, 't', 'ana', 'single_caption', NULL);
        PRAGMA user_version=1;
    """)
    conn.close()
    with CaptionStore(db) as s:
        rec = s.get("a_00000001_post_disaster.png")
        assert (rec.text, rec.status, rec.version) == ("Old text.", "edited", 3)
        assert s._conn().execute("PRAGMA user_version").fetchone()[0] == 3
        (source,) = s.list_with_source()
        assert (source.caption_key, source.short_key) == (None, "single_caption")
        assert s.save_edit(rec.image, "New text.", author="ben", expected_version=3).version == 4
        s.save_edit(rec.image, "New text, typed on.", author="ben", coalesce_seconds=5)  # history.started exists
        assert [h.text for h in s.history(rec.image)] == ["New text, typed on."]
    with CaptionStore(db) as s:  # opening a current store again is a no-op
        assert s.get(rec.image).text == "New text, typed on."


def test_quick_autosaves_by_one_author_make_one_version_and_keep_the_last_text(store):
    sentence = "Lava flows cover the village and the road to the school."
    version = 0
    for n in range(1, len(sentence) + 1):  # one save per keystroke
        version = store.save_edit(POST, sentence[:n], author="ana", expected_version=version,
                                  coalesce_seconds=5).version
    history = store.history(POST)
    assert 1 <= len(history) <= 2 and history[-1].text == sentence
    assert store.get(POST).text == sentence and version == len(sentence)  # every save still counted
    # someone else: a version of their own, still checked against what they loaded
    with pytest.raises(ConflictError):
        store.save_edit(POST, "Ben's text.", author="ben", expected_version=1, coalesce_seconds=5)
    store.save_edit(POST, "Ben's text.", author="ben", expected_version=version, coalesce_seconds=5)
    assert [h.author for h in store.history(POST)][-2:] == ["ana", "ben"]
    # and after ben, ana's next edit is a new version too, not a rewrite of hers
    store.save_edit(POST, "Ana again.", author="ana", coalesce_seconds=5)
    assert [h.text for h in store.history(POST)][-3:] == [sentence, "Ben's text.", "Ana again."]


def test_autosaves_after_a_pause_or_a_status_change_are_versions_of_their_own(store, monkeypatch):
    import core.captions.store as module

    clock = iter(["2026-01-01T10:00:00.000000+00:00", "2026-01-01T10:00:02.000000+00:00",
                  "2026-01-01T10:00:09.000000+00:00", "2026-01-01T10:00:10.000000+00:00",
                  "2026-01-01T10:00:11.000000+00:00", "2026-01-01T10:00:12.000000+00:00"])
    monkeypatch.setattr(module, "_now", lambda: next(clock))
    store.save_edit(POST, "A", author="ana", coalesce_seconds=5)
    store.save_edit(POST, "AB", author="ana", coalesce_seconds=5)      # 2 s later: same version
    store.save_edit(POST, "ABC", author="ana", coalesce_seconds=5)     # 7 s pause: a new one
    store.set_status(POST, "reviewed", author="ana")                    # a status change is its own
    store.save_edit(POST, "ABCD", author="ana", status="reviewed", coalesce_seconds=5)
    assert [(h.kind, h.text) for h in store.history(POST)] == [
        ("edit", "AB"), ("edit", "ABC"), ("status", "ABC"), ("edit", "ABCD")]
    assert store.save_edit(POST, "ABCDE", author="ana", status="reviewed").version == 6  # no coalescing: as before
    assert len(store.history(POST)) == 5


def test_a_long_burst_of_typing_still_leaves_a_version_a_minute(store, monkeypatch):
    import core.captions.store as module

    seconds = iter(range(0, 200, 2))  # a save every 2 s for 200 s: never a 5 s pause
    monkeypatch.setattr(module, "_now", lambda: f"2026-01-01T10:{(s := next(seconds)) // 60:02d}:{s % 60:02d}+00:00")
    for n in range(100):
        store.save_edit(POST, "x" * (n + 1), author="ana", coalesce_seconds=5)
    history = store.history(POST)
    assert len(history) == 4  # versions begun at 0, 60, 120 and 180 s
    assert [len(h.text) for h in history] == [30, 60, 90, 100] and history[-1].time.endswith("10:03:18+00:00")


def _open_at(path: str, start: float) -> str | None:
    """Open (so create) the store at `path` at the moment `start`; the error, if any."""
    import time

    while time.time() < start:
        pass
    try:
        CaptionStore(path).close()
    except Exception as err:  # noqa: BLE001 - the test reports it
        return f"{type(err).__name__}: {err}"
    return None


def test_processes_opening_a_new_store_at_the_same_moment_all_get_it(tmp_path):
    """The processes of a batch open a fresh store together; SQLite refuses a concurrent
    switch to WAL at once ("database is locked"), which the store must wait out."""
    import multiprocessing
    import time

    errors = []
    with multiprocessing.get_context("fork").Pool(4) as pool:
        for n in range(10):
            start = time.time() + 0.3
            errors += pool.starmap(_open_at, [(str(tmp_path / f"s{n}" / "captions.sqlite"), start)] * 4)
    assert [e for e in errors if e] == []
