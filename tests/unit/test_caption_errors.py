"""What a person is told when a caption cannot be saved: a disk that is full, read-only or
failing, an export that cannot be written, a name that is no tile of the dataset. Each is
a LabError with a plain message (what happened, what to do), in the service and the CLI,
and nothing saved before is damaged. No real disk is filled: SQLite's own limits
(max_page_count, query_only) and a connection that fails its COMMIT stand in."""

from __future__ import annotations

import errno
import json
import sqlite3

import pytest

from core.captions.formats import export_course_jsonl
from core.captions.store import CaptionStore, CaptionStoreError
from core.cli import main
from core.config import DEMO_SCENES, Settings
from core.errors import LabError
from tests.unit.test_caption_store import POST, PRE, _machine, store  # noqa: F401  (store: a fixture)


class FailingConnection:
    """A store connection whose statements starting with `when` fail as SQLite would."""

    def __init__(self, conn: sqlite3.Connection, when: str, message: str):
        self.conn, self.when, self.message = conn, when.upper(), message

    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith(self.when):
            raise sqlite3.OperationalError(self.message)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.conn, name)

    def __setattr__(self, name, value):
        if name in ("conn", "when", "message"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.conn, name, value)


def _intact(store, before):
    """The caption and history as they were before the failed write, and a sound file."""
    assert store.get(POST) == before
    assert [h.text for h in store.history(POST)] == ["Lava flows cover the village.", "Ana's words."]
    assert store._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not store._conn().in_transaction


def test_a_full_disk_is_said_plainly_and_keeps_what_was_saved(store):
    _machine(store)
    before = store.save_edit(POST, "Ana's words.", author="ana")
    conn = store._conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # SQLite's real SQLITE_FULL, no real disk filled
    with pytest.raises(CaptionStoreError) as err:
        store.save_edit(POST, "x" * 200_000, author="ana", expected_version=before.version)
    message = str(err.value)
    assert isinstance(err.value, LabError)
    assert "is full" in message and "database or disk is full" in message and "free some space" in message
    assert "everything saved before is intact" in message
    with pytest.raises(CaptionStoreError, match="is full"):  # a new image too
        store.save_edit(PRE, "y" * 200_000, author="ana")
    _intact(store, before)
    assert store.get(PRE) is None
    conn.execute("PRAGMA max_page_count=1073741823")
    assert store.save_edit(POST, "After freeing space.", author="ana").version == before.version + 1


def test_a_read_only_store_says_so_and_what_to_do(store):
    _machine(store)
    before = store.save_edit(POST, "Ana's words.", author="ana")
    store._conn().execute("PRAGMA query_only=ON")  # "attempt to write a readonly database"
    for write in (lambda: store.save_edit(POST, "More.", author="ana"),
                  lambda: store.set_status(POST, "reviewed", author="ana"),
                  lambda: store.restore(POST, store.history(POST)[0].id, author="ana"),
                  lambda: _machine(store, caption="Recaptioned.")):
        with pytest.raises(CaptionStoreError, match="read-only") as err:
            write()
        assert "writable" in str(err.value) and "--work" in str(err.value)
    assert store.get(POST) == before  # reading still works
    _intact(store, before)


def test_an_io_error_at_commit_rolls_back_and_the_next_save_works(store):
    _machine(store)
    before = store.save_edit(POST, "Ana's words.", author="ana")
    real = store._conn()
    store._local.conn = FailingConnection(real, "COMMIT", "disk I/O error")
    with pytest.raises(CaptionStoreError, match="input/output error") as err:
        store.save_edit(POST, "Lost to the disk.", author="ana")
    assert "disk I/O error" in str(err.value) and "Nothing of this change was written" in str(err.value)
    assert not real.in_transaction  # rolled back, not left open for the next write to trip on
    store._local.conn = real
    _intact(store, before)
    assert store.save_edit(POST, "Saved once the disk is back.", author="ana").version == before.version + 1


def test_an_export_the_disk_refuses_is_a_clear_error_and_leaves_the_old_file(store, tmp_path, monkeypatch):
    _machine(store)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(CaptionStoreError, match="folder"):
        export_course_jsonl(store, blocker / "captions.jsonl")
    out = tmp_path / "captions.jsonl"
    out.write_text("old export\n")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("core.captions.formats.atomic_write_text", full)
    with pytest.raises(CaptionStoreError, match="is full") as err:
        export_course_jsonl(store, out)
    assert "No space left on device" in str(err.value) and str(out) in str(err.value)
    assert "a file already there is unchanged" in str(err.value)
    assert out.read_text() == "old export\n"


def test_opening_a_store_the_disk_refuses_says_why(tmp_path, monkeypatch):
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: FailingConnection(real_connect(*a, **k), "BEGIN",
                                                                              "database or disk is full"))
    with pytest.raises(CaptionStoreError, match="is full"):
        CaptionStore(tmp_path / "new.sqlite")


# -- names the dataset does not know -------------------------------------------------------

@pytest.fixture
def lab(tmp_path):
    from core.lab import Lab

    lab = Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work"))
    yield lab
    lab.captions.store.close()


def test_only_tiles_of_the_dataset_or_an_imported_file_take_a_caption(lab, tmp_path):
    index = lab.datasets.open(DEMO_SCENES)
    demo = "demo-volcano_00000005_post_disaster.png"
    assert lab.captions.save_edit(demo, "By hand.", author="ana", index=index, expected_version=0).version == 1
    for bad in ("../../etc/passwd", "demo-volcano_00000099_post_disaster.png", "notes.txt",
                "demo-volcano_00000005_post_disaster.json", ""):
        with pytest.raises(CaptionStoreError, match="is not a tile of the dataset") as err:
            lab.captions.save_edit(bad, "Sneaky.", author="ana", index=index)
        assert str(DEMO_SCENES.resolve()) in str(err.value) and "Pick a tile" in str(err.value)
        assert lab.captions.store.get(bad) is None
    # an image an imported file named is known, with or without the dataset that has it
    course = tmp_path / "captions.jsonl"
    other = "palu-tsunami_00000002_pre_disaster.png"
    course.write_text(json.dumps({"disaster": "palu-tsunami", "image": other, "caption": "Sea."}) + "\n")
    lab.captions.import_course(course)
    assert lab.captions.save_edit(other, "The sea, corrected.", author="ana", index=index).version == 2
    assert lab.captions.save_edit(other, "Again.", author="ana").version == 3
    with pytest.raises(CaptionStoreError, match="is not a tile"):
        lab.captions.save_edit(demo.replace("volcano", "flood"), "No index given.", author="ana")


# -- the CLI -------------------------------------------------------------------------------

def test_the_cli_says_what_happened_when_the_disk_refuses(tmp_path, capsys, monkeypatch):
    course = tmp_path / "captions.jsonl"
    course.write_text(json.dumps({"disaster": "palu-tsunami", "image": "palu-tsunami_00000002_pre_disaster.png",
                                  "caption": "Sea."}) + "\n")
    work = ["--work", str(tmp_path / "work")]
    assert main([*work, "captions", "import", str(course)]) == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    capsys.readouterr()
    assert main([*work, "captions", "export", "--format", "course", "--out", str(blocker / "x.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot write") and "What to do" in err and "Traceback" not in err

    real_conn = CaptionStore._conn

    def full_conn(self):
        return FailingConnection(real_conn(self), "COMMIT", "database or disk is full")

    changed = tmp_path / "changed.jsonl"
    changed.write_text(course.read_text().replace("Sea.", "Sea, again."))
    monkeypatch.setattr(CaptionStore, "_conn", full_conn)
    assert main([*work, "captions", "import", str(changed)]) == 2
    err = capsys.readouterr().err
    assert "is full" in err and "free some space" in err and "Traceback" not in err
    monkeypatch.undo()
    with CaptionStore(tmp_path / "work" / "captions.sqlite") as s:  # the first import is intact
        assert s.get("palu-tsunami_00000002_pre_disaster.png").text == "Sea."
