"""Evaluate tab handlers, called directly with a real Lab on the demo scenes (no browser).
LPIPS runs on a random backbone: its numbers are plumbing only."""

import csv
from inspect import signature

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from core.config import DEMO_SCENES, Settings
from core.types import MASK_REGIONS
from ui.common import bind, fmt
from ui.evaluate import (ALL, SIZES, add_baseline, add_uploads, backbones_of, leaderboard, look, refresh_runs, runs_of,
                         scenes_of, score, settings_changed, ticked_view)

pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
DATA = str(DEMO_SCENES)
SKIP = {"__type__": "update"}  # gr.skip(): every output keeps its value


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path_factory.mktemp("work"),
                             lpips_random_backbone=True))


@pytest.fixture(scope="module")
def scene(lab):
    """A demo scene with destroyed buildings."""
    return lab.datasets.open(DEMO_SCENES).filter(damage="destroyed")[0]


@pytest.fixture(scope="module")
def baseline(lab, scene):
    """The run id of a persistence baseline of `scene`, added the way the button does."""
    (run_id,) = add_baseline(lab, DATA, scene.scene_id, []).value
    return run_id


def test_every_scene_with_a_post_tile_can_be_picked(lab):
    dropdown = scenes_of(lab, DATA)
    ids = [c[1] for c in dropdown.choices]
    assert ids == [s.scene_id for s in lab.datasets.open(DEMO_SCENES).scenes if s.post_image]
    assert dropdown.value == ids[0]


def test_a_folder_that_is_not_xbd_gives_a_clear_message(lab, tmp_path):
    with pytest.warns(UserWarning, match="xBD"):
        assert scenes_of(lab, str(tmp_path)) == SKIP


def test_adding_a_baseline_lists_and_ticks_it(lab, scene, baseline):
    boxes = runs_of(lab, scene.scene_id)
    assert [c[1] for c in boxes.choices] == [baseline] and boxes.value == [baseline]
    assert boxes.choices[0][0].startswith("baseline · ")
    assert runs_of(lab, None).choices == []


def test_scoring_nothing_says_what_to_do(lab, scene):
    with pytest.warns(UserWarning, match="Tick at least one run"):
        assert score(lab, DATA, scene.scene_id, [], False, "256") == SKIP


def test_a_bound_handler_keeps_its_signature_and_its_error_handling(lab, scene):
    bound = bind(score, lab)
    assert list(signature(bound).parameters)[:5] == ["path", "scene_id", "chosen", "luma_v", "size_v"]
    assert bound.__name__ == "score"
    with pytest.warns(UserWarning, match="Tick at least one run"):
        assert bound(DATA, scene.scene_id, [], False, "256") == SKIP
    with pytest.warns(UserWarning, match="No run 'nope'"):  # a run deleted meanwhile: a message, no crash
        assert bound(DATA, scene.scene_id, ["nope"], False, "256") == SKIP


def test_a_scored_run_shows_its_numbers_per_damage_class(lab, scene, baseline):
    rows, notes, download, inspect, settings, scored = score(lab, DATA, scene.scene_id, [baseline], False, "256")
    assert scored == [baseline]
    assert [r[2] for r in rows] == ["whole image", *MASK_REGIONS]
    saved = lab.runs.open(baseline).latest_scores()
    assert saved["settings"]["size"] == 256
    assert rows[0][4:] == [fmt(saved["mse"]), fmt(saved["psnr"], 2), fmt(saved["ssim"]), fmt(saved["lpips"])]
    destroyed = rows[1 + MASK_REGIONS.index("destroyed")]
    assert destroyed[3] == saved["masked"]["destroyed"]["pixels"] > 0
    assert destroyed[4] == fmt(saved["masked"]["destroyed"]["mse"])
    assert "resized" in notes and "random backbone" in settings.lower()
    assert download.visible and download.value["orig_name"].startswith("scores-")
    with open(download.value["path"], newline="", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    assert table[0][:3] == ["run", "backbone", "region"] and table[1][2] == "whole image"
    assert inspect.value == baseline and [c[1] for c in inspect.choices] == [baseline]


def test_a_run_that_cannot_be_scored_is_named_and_the_others_are_shown(own_lab, scene):
    (good,) = add_baseline(own_lab, DATA, scene.scene_id, []).value
    tiny = own_lab.runs.create(np.zeros((4, 4, 3), np.uint8), kind="upload", backbone="upload",
                               scene_id=scene.scene_id, params={})  # too small for SSIM
    with pytest.warns(UserWarning, match="Not scored: .*SSIM needs at least"):
        rows, *_, scored = score(own_lab, DATA, scene.scene_id, [tiny.run_id, good], False, SIZES[0])
    assert scored == [good] and {r[1] for r in rows} == {"baseline"}
    with pytest.warns(UserWarning, match="None of the ticked runs could be scored"):
        assert score(own_lab, DATA, scene.scene_id, [tiny.run_id], False, SIZES[0]) == SKIP


def test_looking_at_a_run_shows_prediction_truth_error_and_ssim(lab, baseline):
    (pred, truth), error, ssim = look(lab, DATA, baseline, False, "256")
    assert pred.shape == truth.shape == error.shape == ssim.shape == (256, 256, 3)
    assert pred.dtype == truth.dtype == error.dtype == ssim.dtype == np.uint8
    assert not np.array_equal(pred, truth)  # the baseline is the pre-event tile
    assert look(lab, DATA, None, False, "256") == (None, None, None)


def test_an_upload_is_scored_and_the_leaderboard_puts_the_baseline_first(lab, scene, baseline, tmp_path):
    truth = tmp_path / "perfect.png"
    Image.open(scene.post_image).convert("RGB").save(truth)
    boxes = add_uploads(lab, DATA, scene.scene_id, [str(truth)], [baseline])
    assert len(boxes.value) == 2 and baseline in boxes.value
    rows, download = leaderboard(lab, DATA, False, "256")
    assert [r[0] for r in rows] == ["baseline", "upload"]
    base, upload = rows
    assert base[1:3] == [1, 1] and upload[1:3] == [1, 1]
    assert upload[4] == "—" and upload[5] == 1  # the truth itself: PSNR ∞, counted, not averaged
    assert upload[3] == fmt(0.0) and upload[6] == fmt(1.0)
    assert upload[8:] == base[4:5] + base[6:7]  # the baseline on the same scene, beside it
    assert download.visible and download.value["orig_name"].startswith("leaderboard-")


@pytest.fixture()
def own_lab(tmp_path):
    """A Lab with its own runs, so these runs stay out of the leaderboard above."""
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work", lpips_random_backbone=True))


def fake_generation(lab, scene_id, backbone, seed, steps=20, strength=0.6):
    return lab.runs.create(np.full((64, 64, 3), seed * 20, np.uint8), kind="generation", backbone=backbone,
                           scene_id=scene_id, params={"seed": seed, "steps": steps, "strength": strength},
                           data_root=str(lab.datasets.open(DATA).root)).run_id


def test_runs_are_told_apart_filtered_by_backbone_and_shown_as_thumbnails(own_lab, scene):
    lab, sid = own_lab, scene.scene_id
    a = fake_generation(lab, sid, "tiny-sd21", 1)
    b = fake_generation(lab, sid, "tiny-sd21", 2, steps=30, strength=0.8)
    c = fake_generation(lab, sid, "tiny-sdxl-turbo", 3)
    labels = dict((v, k) for k, v in runs_of(lab, sid).choices)
    assert labels[a].startswith("tiny-sd21 · seed 1 · 20 steps · strength 0.60 · 20")
    assert "seed 2 · 30 steps · strength 0.80" in labels[b] and labels[c].startswith("tiny-sdxl-turbo · seed 3")
    assert len(set(labels.values())) == 3
    assert backbones_of(lab, sid).choices == [(ALL, ALL), ("tiny-sd21", "tiny-sd21"),
                                              ("tiny-sdxl-turbo", "tiny-sdxl-turbo")]
    turbo = runs_of(lab, sid, [a], "tiny-sdxl-turbo")  # its runs, and the ticked one
    assert {v for _, v in turbo.choices} == {a, c} and turbo.value == [a] and "2 of 3 shown" in turbo.label
    assert {v for _, v in runs_of(lab, sid, [a], ALL).choices} == {a, b, c}
    pictures = ticked_view(lab, [a, c, "gone"])
    assert [caption for _, caption in pictures] == [labels[a], labels[c]]
    assert all(path.endswith("image.png") for path, _ in pictures)


def test_a_refresh_lists_new_runs_and_keeps_the_ticks(own_lab, scene):
    lab, sid = own_lab, scene.scene_id
    old = fake_generation(lab, sid, "tiny-sd21", 1)
    assert refresh_runs(lab, sid, []).value == []  # nothing ticked stays nothing ticked
    new = fake_generation(lab, sid, "tiny-sd21", 2)
    boxes = refresh_runs(lab, sid, [old])
    assert [v for _, v in boxes.choices] == [new, old] and boxes.value == [old]
    assert runs_of(lab, sid, [new]).value == [new]  # what Generate's "Score the newest" shows


def test_changing_the_settings_rescores_the_table_or_just_says_the_settings(own_lab, scene):
    lab, sid = own_lab, scene.scene_id
    run = fake_generation(lab, sid, "tiny-sd21", 1)
    untouched = settings_changed(lab, DATA, [], True, "512")
    assert untouched[:4] == (SKIP,) * 4 and untouched[5] == SKIP
    assert "SSIM on Y" in untouched[4] and "evaluation size 512" in untouched[4]
    rows, _, _, look_at, text, scored = settings_changed(lab, DATA, [run], True, "512")
    assert rows[0][2] == "whole image" and scored == [run] and "evaluation size 512" in text
    assert lab.runs.open(run).latest_scores()["settings"]["size"] == 512
    lab.runs.root.joinpath(run, "image.png").unlink()  # the run broke meanwhile
    with pytest.warns(UserWarning):
        broken = settings_changed(lab, DATA, [run], False, "256")
    assert broken[:4] == (SKIP,) * 4 and "previous settings" in broken[4] and "evaluation size 256" in broken[4]


def test_an_upload_named_after_another_scene_is_refused(own_lab, scene, tmp_path):
    lab, sid = own_lab, scene.scene_id
    other = next(s.scene_id for s in lab.datasets.open(DATA).scenes if s.scene_id != sid)
    wrong, right, plain = (tmp_path / f"{other}_prediction.png", tmp_path / f"{sid}_prediction.png",
                           tmp_path / "my_prediction.png")
    for f in (wrong, right, plain):
        Image.new("RGB", (32, 32)).save(f)
    with pytest.warns(UserWarning, match=rf"{wrong.name} names {other}, not the scene picked \({sid}\)"):
        assert add_uploads(lab, DATA, sid, [str(right), str(wrong)], []) == SKIP
    assert lab.runs.list() == []  # none of them saved
    boxes = add_uploads(lab, DATA, sid, [str(right), str(plain)], [])
    assert len(boxes.value) == 2 and all(label.startswith("upload · ") for label, _ in boxes.choices)
