"""The Captions tab's handlers called directly, without a browser, on a real Lab with a
private work folder and the demo scenes: what a person correcting captions relies on."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import gradio as gr
import pytest

import ui.captions as tab
from core.config import DEMO_SCENES, Settings
from core.errors import LabError
from core.lab import Lab
from ui.browse import ALL

POST = "demo-volcano_00000005_post_disaster.png"
PRE = "demo-volcano_00000005_pre_disaster.png"
DATA = str(DEMO_SCENES)


@pytest.fixture
def lab(tmp_path):
    lab = Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work"))
    yield lab
    lab.captions.store.close()


def _names(lab, status=ALL, phase="post", disaster=ALL):
    names, dropdown = tab.apply_filters(lab, DATA, status, disaster, ALL, phase)
    assert dropdown.value == (names[0] if names else None)
    return names


def _caption_by_machine(lab, names):
    steps = list(tab.caption_these(lab, DATA, names, "template", "", progress=lambda *a, **k: None))
    return steps[-1][1]


def test_filters_select_tiles_by_phase_disaster_and_caption_status(lab):
    assert _names(lab) == [n for n in _names(lab, phase="both") if "_post_" in n]
    assert len(_names(lab, phase="both")) == 12
    assert _names(lab, disaster="demo-volcano", phase="both") == [PRE, POST]
    assert [c[1] for c in tab.fill_filters(lab, DATA).choices][:2] == [ALL, "demo-earthquake"]
    assert len(_names(lab, status="no caption yet")) == 6 and _names(lab, status="auto") == []
    tab.save(lab, DATA, POST, "By hand.", 0, "ana")
    assert _names(lab, status="edited") == [POST]
    assert POST not in _names(lab, status="no caption yet")


def test_machine_captions_fill_the_editor_and_a_rerun_resumes(lab):
    names = _names(lab)
    assert "6 captioned" in _caption_by_machine(lab, names)
    assert "0 captioned, 6 already done" in _caption_by_machine(lab, names)
    picture, text, machine, summary, saved, history, version = tab.show(lab, DATA, POST)
    assert Path(picture).suffix == ".png" and Path(picture).is_file()
    assert text == machine and "volcan" in machine.lower() and summary == ""
    assert "version 1" in saved and "auto" in saved and version == 1
    assert [row[3] for row in history] == ["machine"]


def test_caption_these_refuses_an_empty_list_and_hands_out_a_stop_token(lab):
    with pytest.warns(UserWarning, match="No tile matches"):
        assert list(tab.caption_these(lab, DATA, [], "template", "")) == [gr.skip()]
    steps = tab.caption_these(lab, DATA, [POST], "template", "", progress=lambda *a, **k: None)
    token, note = next(steps)
    assert note == "Captioning…"
    tab.stop_captioning(token)
    tab.stop_captioning(None)  # nothing running: no error
    assert "cancelled" in list(steps)[-1][1]
    assert tab.show(lab, DATA, POST)[1] == ""  # stopped before the first tile


def test_a_save_bumps_the_version_and_says_what_was_saved(lab):
    _caption_by_machine(lab, [POST])
    version = tab.show(lab, DATA, POST)[-1]
    version, line, history = tab.save(lab, DATA, POST, "Lava covers the east of the town.", version, "ana")
    assert version == 2 and "version 2" in line and "**edited**" in line and "by ana" in line
    assert history[0][2:5] == ["ana", "edit", "edited"]  # the table follows the save
    version, line, _ = tab.save(lab, DATA, POST, "Lava covers the east of the town; 76 houses gone.", version,
                                "ana")
    assert version == 3 and "version 3" in line
    assert tab.show(lab, DATA, POST)[1] == "Lava covers the east of the town; 76 houses gone."
    assert tab.save(lab, DATA, "", "Lost words.", 3, "ana")[:2] == (3, "Pick a tile first: nothing was saved.")


def test_a_save_from_a_stale_page_is_refused_with_a_message_not_lost(lab):
    ana_loaded = tab.show(lab, DATA, POST)[-1]
    ben_loaded = tab.show(lab, DATA, POST)[-1]
    ben_version, _, _ = tab.save(lab, DATA, POST, "Ben's words.", ben_loaded, "ben")
    version, line, history = tab.save(lab, DATA, POST, "Ana's words.", ana_loaded, "ana")
    assert history == gr.skip()
    assert version == ana_loaded  # the editor keeps what it had loaded
    assert line.startswith("**Not saved**") and "by ben" in line and "Reload" in line
    text, *_, saved, _, stored = tab.show(lab, DATA, POST)[1:]
    assert (text, stored) == ("Ben's words.", ben_version)
    # after reloading, Ana's save goes through
    assert tab.save(lab, DATA, POST, "Ana's words.", stored, "ana")[0] == stored + 1


def test_review_status_and_next_not_reviewed(lab):
    names = _names(lab)
    tab.save(lab, DATA, names[0], "Checked by hand.", 0, "ana")
    saved, history, version = tab.set_status(lab, names[0], "reviewed", "ana", 1)
    assert "**reviewed**" in saved and version == 2 and history[0][3] == "status"
    assert tab.next_unreviewed(lab, names, names[-1]) == names[1]  # wraps round, skips the reviewed one
    assert tab.next_unreviewed(lab, names, names[0]) == names[1]
    saved, _, _ = tab.set_status(lab, names[0], "edited", "ben", version)
    assert "**edited**" in saved and "by ben" in saved
    with pytest.warns(UserWarning, match="No caption stored"):
        assert tab.set_status(lab, names[1], "reviewed", "ana", 0) == gr.skip()  # every output kept


def test_when_every_tile_is_reviewed_next_not_reviewed_stays_put(lab):
    names = _names(lab, disaster="demo-volcano", phase="both")
    for name in names:
        tab.save(lab, DATA, name, "Done.", 0, "ana")
        tab.set_status(lab, name, "reviewed", "ana", 1)
    assert tab.next_unreviewed(lab, names, names[0]) == names[0]


def test_restore_brings_back_an_earlier_version(lab, monkeypatch):
    monkeypatch.setattr(tab, "AUTOSAVE_PAUSE_SECONDS", 0)  # as after a pause in typing: one version per save
    _caption_by_machine(lab, [POST])
    machine_text = tab.show(lab, DATA, POST)[2]
    tab.save(lab, DATA, POST, "First try.", 1, "ana")
    tab.save(lab, DATA, POST, "Second try.", 2, "ana")
    history = tab.show(lab, DATA, POST)[5]
    assert [row[3] for row in history] == ["edit", "edit", "machine"]  # newest first
    assert [row[5] for row in history] == ["−First +Second", "−" + machine_text + " +First try.",
                                           "+" + machine_text]  # what each version changed
    text, saved, history, version = tab.restore(lab, POST, history[-1][0], "ben", 3)
    assert (text, version) == (machine_text, 4)
    assert "**edited**" in saved and history[0][3] == "restore" and history[0][2] == "ben"
    tab.save(lab, DATA, PRE, "Another tile.", 0, "ana")
    with pytest.warns(UserWarning, match="does not belong"):
        assert tab.restore(lab, PRE, history[0][0], "ben", 1) == gr.skip()  # the editor keeps its text
    assert lab.captions.store.get(PRE).text == "Another tile."


def test_step_moves_through_the_list_and_wraps(lab):
    names = ["a", "b", "c"]
    assert [tab.step(names, "a", +1), tab.step(names, "c", +1), tab.step(names, "a", -1)] == ["b", "a", "c"]
    assert tab.step(names, "gone", +1) == "a" and tab.step([], "a", +1) is None


def test_exports_are_named_by_kind_and_time_in_the_work_folder(lab, tmp_path):
    exports = tmp_path / "work" / "exports"
    when = time.mktime((2024, 5, 6, 7, 8, 9, 0, 0, -1))
    assert lab.captions.export_path("captions", when=when) == exports / "captions-20240506-070809.jsonl"
    assert lab.captions.export_path("controlnet", when=when).name == "controlnet-20240506-070809.jsonl"
    with pytest.raises(LabError, match="captions, controlnet"):
        lab.captions.export_path("csv")

    _caption_by_machine(lab, _names(lab, phase="both"))
    tab.save(lab, DATA, POST, "Corrected by hand.", 1, "ana")
    note, button = tab.export(lab, "captions", DATA, [])
    path = exports / button.value["orig_name"]  # the button serves a copy of this file
    assert button.visible and path.is_file()
    assert re.fullmatch(r"captions-\d{8}-\d{6}\.jsonl", path.name) and f"`{path.name}`" in note
    assert note.startswith("12 captions written")
    lines = {line["image"]: line for line in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    assert lines[POST]["caption_short"] == "Corrected by hand."

    note, button = tab.export(lab, "controlnet", DATA, _names(lab, disaster="demo-volcano"))
    path = exports / button.value["orig_name"]
    assert path.is_file() and path.name.startswith("controlnet-")
    assert note.startswith("1 training pairs written") and "0 scenes skipped" in note
    (pair,) = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert Path(pair["image"]).name == POST and Path(pair["conditioning_image"]).name == PRE
    assert pair["text"] == "Corrected by hand."


def test_importing_a_course_file_reports_what_it_did(lab, tmp_path):
    course = tmp_path / "captions.jsonl"
    course.write_text(json.dumps({"disaster": "demo-volcano", "image": POST, "caption": "Lava everywhere.",
                                  "caption_short": "Lava."}) + "\nnot json\n", encoding="utf-8")
    note, button = tab.import_course(lab, str(course))
    assert "1 added" in note and "- line 2: not valid JSON" in note
    assert note.startswith("captions.jsonl: ") and str(tmp_path) not in note  # its name, not where it was put
    assert isinstance(button, dict)  # gr.skip(): the download button is left as it is
    assert tab.show(lab, DATA, POST)[1:4] == ["Lava.", "Lava everywhere.", "Lava."]
    assert tab.import_course(lab, None)[0] == gr.skip()
    with pytest.warns(UserWarning, match="Cannot read") as caught:
        assert tab.import_course(lab, str(tmp_path / "missing.jsonl")) == gr.skip()
    assert "missing.jsonl" in str(caught[0].message) and str(tmp_path) not in str(caught[0].message)


def test_show_without_a_tile_or_caption_says_so(lab):
    assert tab.show(lab, DATA, None)[4] == "No tile matches the filters."
    picture, text, *_, saved, history, version = tab.show(lab, DATA, PRE)
    assert picture is not None and (text, history, version) == ("", [], 0)
    assert saved.startswith("No caption yet")
    assert tab.count(lab, None, "some words") == ""


def test_mark_reviewed_and_restore_from_a_stale_page_are_refused_not_lost(lab):
    _caption_by_machine(lab, [POST])
    ana_loaded = tab.show(lab, DATA, POST)[-1]
    machine_entry = tab.show(lab, DATA, POST)[5][-1][0]
    ben_version, _, _ = tab.save(lab, DATA, POST, "Ben's words.", tab.show(lab, DATA, POST)[-1], "ben")
    saved, history, version = tab.set_status(lab, POST, "reviewed", "ana", ana_loaded)
    assert saved.startswith("**Not marked reviewed**") and "by ben" in saved and "Reload" in saved
    assert version == ana_loaded and history[0][2] == "ben"  # the table shows what Ben saved
    assert history[0][5].endswith("+Ben's words.")
    text, saved, _, version = tab.restore(lab, POST, machine_entry, "ana", ana_loaded)
    assert text == gr.skip() and saved.startswith("**Not restored**") and version == ana_loaded
    stored = lab.captions.store.get(POST)
    assert (stored.text, stored.status, stored.version) == ("Ben's words.", "edited", ben_version)
    # after reloading, both go through
    reloaded = tab.show(lab, DATA, POST)[-1]
    assert "**reviewed**" in tab.set_status(lab, POST, "reviewed", "ana", reloaded)[0]
    assert tab.restore(lab, POST, machine_entry, "ana", reloaded + 1)[0] == tab.show(lab, DATA, POST)[2]


def test_a_caption_for_a_name_the_dataset_does_not_know_is_refused(lab):
    for name in ("../../etc/passwd", "demo-volcano_00000099_post_disaster.png"):
        version, line, _ = tab.save(lab, DATA, name, "Sneaky.", 0, "ana")
        assert version == 0 and line.startswith("**Not saved**") and "is not a tile of the dataset" in line
    assert len(lab.captions.store) == 0
    assert tab.save(lab, DATA, POST, "A real tile.", 0, "ana")[0] == 1


def test_a_disk_that_refuses_a_save_is_said_plainly_and_the_saved_text_stays(lab, monkeypatch):
    import errno
    import sqlite3

    version, _, _ = tab.save(lab, DATA, POST, "Saved before.", 0, "ana")
    store = lab.captions.store
    real = store._conn()

    class FullDisk:  # the connection as SQLite behaves when the disk fills up at COMMIT
        in_transaction = property(lambda self: real.in_transaction)

        def execute(self, sql, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

    store._local.conn = FullDisk()
    new_version, line, _ = tab.save(lab, DATA, POST, "Lost to a full disk.", version, "ana")
    assert new_version == version and line.startswith("**Not saved**")
    assert "disk it is on is full" in line and "free some space" in line and "intact" in line
    with pytest.warns(UserWarning, match="is full"):
        assert tab.set_status(lab, POST, "reviewed", "ana", version) == gr.skip()
    store._local.conn = real
    assert tab.show(lab, DATA, POST)[1] == "Saved before."

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("core.captions.formats.atomic_write_text", no_space)
    with pytest.warns(UserWarning, match="No space left on device"):
        assert tab.export(lab, "captions", DATA, []) == gr.skip()


def test_token_counts_need_no_model_on_disk(lab):
    assert tab.count(lab, "sd21", "A flooded town.") == "CLIP: 4 / 75 tokens"
    sd3 = tab.count(lab, "sd3", "A flooded town.")
    assert sd3 == "CLIP: 4 / 75 tokens · CLIP 2: 4 / 75 tokens · T5: appears once the T5 files are on disk"


def test_the_token_counter_starts_on_a_backbone_that_counts_offline(lab):
    first = tab.count_backbone(lab)
    spec = lab.backbones.get(first).spec
    assert not spec.test_only and "clip" in spec.tokenizers
    assert tab.count(lab, first, "A flooded town.").startswith("CLIP: 4 / 75 tokens")


def test_a_backbone_not_on_disk_counts_or_says_so_without_an_error(lab, recwarn):
    for spec in lab.backbones.specs():
        assert tab.count(lab, spec.id, "A flooded town.")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_autosaves_while_typing_make_one_version_and_keep_the_last_text(lab):
    sentence = "Lava covers the east of the town and the school."
    version = 0
    for n in range(1, len(sentence) + 1, 2):  # a keystroke or two per save
        version, line, history = tab.save(lab, DATA, POST, sentence[:n], version, "ana")
    version, line, history = tab.save(lab, DATA, POST, sentence, version, "ana")
    assert 1 <= len(history) <= 2 and lab.captions.store.get(POST).text == sentence
    assert [h.text for h in lab.captions.store.history(POST)][-1] == sentence
    assert f"version {version}" in line  # each save still moves the version (the conflict check)
    # someone else's save is a version of its own, and still checked against what they loaded
    assert tab.save(lab, DATA, POST, "Ben's words.", 1, "ben")[1].startswith("**Not saved**")
    version, _, history = tab.save(lab, DATA, POST, "Ben's words.", version, "ben")
    assert [row[2] for row in history] == ["ben", "ana"]


def test_picking_a_history_row_offers_its_version_to_restore(lab):
    tab.save(lab, DATA, POST, "First words.", 0, "ana")
    history = tab.show(lab, DATA, POST)[5]
    history_id, note, button = tab.pick(lab, POST, history[0])
    assert history_id == history[0][0] and "First words." in note and "by ana" in note
    assert button.interactive
    with pytest.warns(UserWarning, match="not in this tile's history"):
        assert tab.pick(lab, PRE, history[0]) == gr.skip()


def test_word_diff_says_what_changed():
    assert tab.word_diff(None, "A town.") == "+A town."
    assert tab.word_diff("A town.", "A town.") == "(text unchanged)"
    assert tab.word_diff("Lava covers the east.", "Lava covers the west and north.") == "−east. +west and north."
    assert tab.word_diff("a b c", "a c") == "−b"
    assert tab.word_diff("a b c d", "x b c y") == "−a +x … −d +y"
    assert len(tab.word_diff(None, "word " * 200)) == tab.DIFF_CHARS


def test_the_tile_is_a_content_named_file_never_rewritten(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    first = Path(tab.show(lab, DATA, POST)[0])
    stat = first.stat()
    time.sleep(0.01)
    again = Path(tab.show(lab, DATA, POST)[0])
    assert again == first and again.stat().st_mtime_ns == stat.st_mtime_ns and again.stat().st_ino == stat.st_ino
    assert Path(tab.show(lab, DATA, PRE)[0]) != first
    assert first.parent == tmp_path / "gradio" / "xbdlab-pictures"
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staging file left
