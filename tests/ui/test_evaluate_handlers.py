"""Evaluate tab handlers, called directly with a real Lab on the demo scenes (no browser).
LPIPS runs on a random backbone: its numbers are plumbing only."""

import csv

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from core.config import DEMO_SCENES, Settings
from core.types import MASK_REGIONS
from ui.common import fmt
from ui.evaluate import add_baseline, add_uploads, leaderboard, look, runs_of, scenes_of, score

pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")
DATA = str(DEMO_SCENES)


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
    with pytest.raises(gr.Error, match="xBD"):
        scenes_of(lab, str(tmp_path))


def test_adding_a_baseline_lists_and_ticks_it(lab, scene, baseline):
    boxes = runs_of(lab, scene.scene_id)
    assert [c[1] for c in boxes.choices] == [baseline] and boxes.value == [baseline]
    assert boxes.choices[0][0].startswith("baseline · ")
    assert runs_of(lab, None).choices == []


def test_scoring_nothing_says_what_to_do(lab, scene):
    with pytest.raises(gr.Error, match="Tick at least one run"):
        score(lab, DATA, scene.scene_id, [], False, "256")


def test_a_scored_run_shows_its_numbers_per_damage_class(lab, scene, baseline):
    rows, notes, download, inspect, settings = score(lab, DATA, scene.scene_id, [baseline], False, "256")
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
