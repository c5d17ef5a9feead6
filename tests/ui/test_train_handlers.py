"""The Train tab's handlers called directly with a real Lab on the demo scenes: real
background training runs on a tiny RANDOM SD 2.1 (plumbing only: the losses and images
mean nothing), watched, stopped, resumed, and offered to Generate when finished."""

import json
import time

import pytest

from core.config import DEMO_SCENES, Settings
from ui import generate as gen
from ui import train as tab
from ui.common import user_errors

SKIP = {"__type__": "update"}
# Positions in run_view's outputs.
SEEN, STATUS, PLOT, GALLERY, SCORES, CONSOLE_BOX, CONSOLE, TIMER = range(8)


@pytest.fixture(scope="module")
def env():
    """The background runs inherit os.environ: LPIPS on a random AlexNet, no hub."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBDLAB_LPIPS_RANDOM_BACKBONE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from core.backends.tiny_models.sd import build_tiny_models

    folder = tmp_path_factory.mktemp("models")
    build_tiny_models(folder, ids=("tiny-sd21",))
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory, models, env):
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path_factory.mktemp("work"),
                             test_backbones=True, models_dir=models))


def form(models, name, **changes) -> list:
    """start_run's arguments after `lab`: data folder, filters, base, task, name, HYPER."""
    hyper = dict(resolution=64, learning_rate=1e-4, batch_size=2, grad_accum=1, max_steps=6,
                 lr_scheduler="constant", lr_warmup_steps=0, mixed_precision="no", gradient_checkpointing=False,
                 use_8bit_adam=False, metadata_dropout=0.1, prompt_dropout=0.1, augment=False, seed=0,
                 validate_every=3, checkpoint_every=3, keep_checkpoints=3, val_count=1, val_split="",
                 validation_steps=2, num_workers=0, base_model=str(models / "tiny-sd21"))
    assert tuple(hyper) == tab.HYPER
    head = dict(path=str(DEMO_SCENES), split=tab.ALL, disaster=tab.ALL, dtype=tab.ALL, base="sd21",
                task="future", name=name)
    for key, value in changes.items():
        (head if key in head else hyper)[key] = value
    return [*head.values(), *hyper.values()]


def watch(lab, name, until, timeout=180.0, every=0.05):
    """run_view of `name` every `every` s until `until(view)`; every view seen."""
    views, deadline = [], time.time() + timeout
    while time.time() < deadline:
        views.append(tab.run_view(lab, name))
        if until(views[-1]):
            return views
        time.sleep(every)
    pytest.fail(f"{name}: not there after {timeout} s; last status: {views[-1][STATUS]}")


def step_of(view) -> int:
    """The step the status line says the run is at."""
    return int(view[STATUS].split("step ", 1)[1].split(" /", 1)[0])


def state_of(view) -> str:
    return view[STATUS].split("**: ", 1)[1].split(" ·", 1)[0]


@pytest.fixture(scope="module")
def finished(lab, models):
    """A run started from the form and watched until it ended: (name, every view seen)."""
    before = [s.id for s in lab.backbones.specs()]
    assert "trained-first" not in before
    started = tab.start_run(lab, *form(models, "first"))
    assert started[0]["value"] == "first" and "first" in started[0]["choices"]
    assert started[1 + TIMER].active is True  # watched while it runs
    views = [started[1:]] + watch(lab, "first", lambda v: state_of(v) not in tab.LIVE)
    return "first", views


def test_a_started_run_shows_its_losses_growing_then_finishes(lab, finished):
    from PIL import Image

    name, views = finished
    counts = [step_of(v) for v in views]
    assert counts == sorted(counts)  # it only goes on
    assert any(0 < c < 6 for c in counts) and counts[-1] == 6  # seen part-way, then whole
    assert any("running" in v[STATUS] and "loss " in v[STATUS] and v[PLOT] for v in views)  # a live curve
    assert views[0][PLOT] is None  # no curve before the first step
    last = views[-1]
    assert state_of(last) == "finished", last[STATUS] + last[CONSOLE]
    assert "step 6 / 6" in last[STATUS] and "trained-first" in last[STATUS]
    assert last[TIMER].active is False  # nothing more to watch
    with Image.open(last[PLOT]) as curve:
        assert curve.size == (800, 300)
    plot = tab.loss_frame(lab.training.status(lab.training.run_folder(name)))
    assert list(plot.query("series == 'train loss'")["step"]) == [1, 2, 3, 4, 5, 6]
    # validations every 3 steps (and, when the trainer makes one, of the untrained ControlNet at step 0)
    assert [s for s in plot.query("series == 'probe loss'")["step"] if s] == [3, 6]
    assert [row[0] for row in last[SCORES] if row[0]] == [3, 6]
    psnr, baseline_psnr = last[SCORES][-1][2], last[SCORES][-1][3]
    assert float(psnr) > 0 and float(baseline_psnr) > 0
    pictures = last[GALLERY]
    assert len(pictures) == 2  # one validation scene: generated, then its real post-event tile
    assert "step 6" in pictures[0][1] and pictures[1][1].endswith("real post-event")
    assert pictures[0][1].split(" ·")[0] == pictures[1][1].split(" ·")[0]


def test_a_finished_run_is_a_backbone_in_generate_without_a_restart(lab, finished):
    dropdown, boxes = gen.backbone_choices(lab, "tiny-sd21", ["tiny-sd21", "gone"])
    ids = [value for _, value in dropdown["choices"]]
    assert "trained-first" in ids
    assert "value" not in dropdown  # the choice stays (and a pick made meanwhile is not undone)
    assert boxes["value"] == ["tiny-sd21"]  # a ticked backbone no longer offered is dropped
    assert [value for _, value in boxes["choices"]] == ids
    dropdown, boxes = gen.backbone_choices(lab, "removed-meanwhile", ["tiny-sd21"])
    assert dropdown["value"] == ids[0] and "value" not in boxes
    assert "first" in tab.run_choices(lab, "first")["choices"] and "value" not in tab.run_choices(lab, "first")
    assert tab.run_choices(lab, "deleted-meanwhile")["value"] is None


def test_the_timer_leaves_the_view_alone_while_nothing_changes(lab, finished):
    name, views = finished
    again = tab.refresh_view(lab, name, views[-1][SEEN])
    assert again[:7] == [SKIP] * 7 and again[TIMER].active is False
    fresh = tab.refresh_view(lab, name, None)
    assert fresh[STATUS] == views[-1][STATUS]


def test_stopped_mid_run_then_resumed_it_ends_at_max_steps_with_its_first_settings(lab, models):
    name = "stop-resume"
    tab.start_run(lab, *form(models, name, max_steps=12, validate_every=100, checkpoint_every=100))
    out = lab.training.run_folder(name)
    stopping = tab.stop_run(lab, name)  # while it still loads: honoured at its first step
    assert state_of(stopping) in ("stopping", "stopped")
    lab.training.wait(out, timeout=120)
    stopped = tab.run_view(lab, name)
    assert state_of(stopped) == "stopped", stopped[STATUS] + stopped[CONSOLE]
    at = json.loads((out / "training.json").read_text())["step"]
    assert 1 <= at < 12 and "Resume" in stopped[STATUS]
    assert stopped[TIMER].active is False

    resumed = tab.resume_run(lab, name)
    assert resumed[TIMER].active is True
    lab.training.wait(out, timeout=180)
    last = tab.run_view(lab, name)
    assert state_of(last) == "finished", last[STATUS] + last[CONSOLE]
    record = json.loads((out / "training.json").read_text())
    assert record["step"] == 12 and record["resumed_from"].endswith(f"checkpoint-{at}")
    assert record["options"]["max_steps"] == 12 and record["options"]["resolution"] == 64
    plot = tab.loss_frame(lab.training.status(out))
    assert list(plot.query("series == 'train loss'")["step"]) == list(range(1, 13))  # each step once
    with pytest.warns(UserWarning, match="has finished"):
        assert user_errors(tab.resume_run)(lab, name) == SKIP


def test_a_base_not_on_this_machine_is_a_toast_and_nothing_starts(lab, models, tmp_path):
    nowhere = str(tmp_path / "no-model-here")
    with pytest.warns(UserWarning, match="not on this machine"):
        assert user_errors(tab.start_run)(lab, *form(models, "nobase", base_model=nowhere)) == SKIP
    assert not lab.training.run_folder("nobase").exists()
    assert "not on this machine" in tab.base_text(lab, "sd21", nowhere)
    assert str(models / "tiny-sd21") in tab.base_text(lab, "sd21", str(models / "tiny-sd21"))


def test_form_mistakes_are_toasts(lab, models):
    start = user_errors(tab.start_run)
    with pytest.warns(UserWarning, match="Give the run a name"):
        assert start(lab, *form(models, "  ")) == SKIP
    with pytest.warns(UserWarning, match="No scene"):
        assert start(lab, *form(models, "x", split="test", disaster="demo-flood")) == SKIP
    with pytest.warns(UserWarning, match="learning-rate"):
        assert start(lab, *form(models, "x", learning_rate=0)) == SKIP
    with pytest.warns(UserWarning, match="Pick a run"):
        assert user_errors(tab.stop_run)(lab, None) == SKIP
    with pytest.warns(UserWarning, match="no run named"):
        assert user_errors(tab.resume_run)(lab, "../../etc") == SKIP


def test_starting_over_a_finished_run_says_to_pick_another_name(lab, models, finished):
    with pytest.warns(UserWarning, match="already holds a run"):
        assert user_errors(tab.start_run)(lab, *form(models, "first")) == SKIP
    with pytest.warns(UserWarning, match="not running"):
        assert user_errors(tab.stop_run)(lab, "first") == SKIP


def test_a_failed_run_shows_why_and_its_console(lab):
    out = lab.training.run_folder("broken")
    out.mkdir(parents=True)
    (out / "training.json").write_text(json.dumps({"status": "failed", "options": {"max_steps": 9}}))
    (out / "console.log").write_text("training on 5 pairs\nerror: Out of GPU memory at step 1 (batch 16).\n")
    view = tab.run_view(lab, "broken")
    assert "The run failed: Out of GPU memory at step 1 (batch 16)." in view[STATUS]
    assert view[CONSOLE_BOX].visible is True and view[CONSOLE_BOX].open is False
    assert "error: Out of GPU memory" in view[CONSOLE]
    assert view[TIMER].active is False


def test_the_filters_follow_the_open_folder(lab):
    split, disaster, dtype, val_split = tab.data_filters(lab, str(DEMO_SCENES))
    assert split.choices[0][0] == tab.ALL and {c[1] for c in split.choices} >= {"train", "test"}
    assert ("the test split", "test") in [tuple(c) for c in val_split.choices]
    assert tab.data_filters(lab, "/no/such/folder") == [SKIP] * 4  # Browse says what is wrong
