"""core.runs.store: run folders, records, scores, atomic writes and safety."""

import errno
import json
import math
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import RunError, SaveError
from core.io import LIBRARIES
from core.metrics.scoring import score_pair, scores_from_dict
from core.runs import store as store_module
from core.runs.store import PNG_PARAMS_KEY, Run, RunStore
from core.types import MetricSettings, Problem


def rand_u8(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


PARAMS = {"prompt": "flooded houses", "steps": 2, "guidance": 7.5, "seed": 1234,
          "size": [32, 32], "strength": None}


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


def make(store, seed=0, **kw):
    args = dict(kind="generation", backbone="sd15", scene_id="hurricane-harvey_00000001",
                params=PARAMS)
    args.update(kw)
    return store.create(rand_u8((24, 32, 3), seed), **args)


def test_create_writes_image_record_and_png_text(store):
    img = rand_u8((24, 32, 3), 0)
    run = store.create(img, kind="generation", backbone="sd15", scene_id="guatemala_00000002",
                       params=PARAMS, data_root="/data/xbd")
    assert run.path == store.root / run.run_id and run.path.is_dir()
    assert np.array_equal(run.image(), img)  # lossless
    with Image.open(run.image_path) as png:
        assert png.format == "PNG"
        assert json.loads(png.text[PNG_PARAMS_KEY]) == PARAMS
    record = json.loads((run.path / "run.json").read_text())
    assert record == run.record
    assert record["kind"] == "generation" and record["backbone"] == "sd15"
    assert record["scene_id"] == "guatemala_00000002" and record["data_root"] == "/data/xbd"
    assert record["params"] == PARAMS
    created = datetime.fromisoformat(record["created"])
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
    for key in ("python", "numpy", "pillow"):
        assert record["versions"][key]
    assert set(record["versions"]) <= {"python", "xbd-diffusion-lab", *LIBRARIES}
    assert {"torch", "diffusers", "transformers", "xbd-diffusion-lab"} <= set(record["versions"])
    assert run.scores() == [] and run.latest_scores() is None


def test_run_ids_are_safe_and_sortable(store):
    a = make(store, scene_id="weird/scene id:..\\x")
    b = make(store, kind="baseline", backbone="persistence", scene_id=None)
    for run in (a, b):
        assert re.fullmatch(r"[A-Za-z0-9._-]+", run.run_id)
        assert ".." not in run.run_id and "/" not in run.run_id
    assert a.run_id < b.run_id  # time first
    assert "baseline_persistence_no-scene" in b.run_id


def test_pil_images_and_param_types(store):
    pil = Image.fromarray(rand_u8((8, 8), 3), mode="L")
    run = store.create(pil, kind="upload", backbone="none", scene_id=None,
                       params={"path": Path("/tmp/x.png"), "w": np.float32(0.5),
                               "n": np.int64(3)})
    assert run.image().shape == (8, 8, 3)
    assert run.record["params"] == {"path": "/tmp/x.png", "w": 0.5, "n": 3}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="dream"), "Unknown run kind"),
        (dict(params={"bad": object()}), "JSON"),
        (dict(params={"nan": float("nan")}), "JSON"),
        (dict(backbone=""), "backbone"),
    ],
)
def test_create_rejects_bad_input(store, kwargs, match):
    with pytest.raises(RunError, match=match):
        make(store, **kwargs)
    assert store.list() == []


def test_create_rejects_float_images(store):
    with pytest.raises(RunError, match="uint8"):
        store.create(np.zeros((4, 4, 3)), kind="upload", backbone="none", scene_id=None,
                     params={})


def test_list_newest_first_and_filters(store):
    r1 = make(store, seed=1, scene_id="a_1", backbone="sd15")
    r2 = make(store, seed=2, scene_id="b_2", backbone="sdxl")
    r3 = make(store, seed=3, scene_id="a_1", backbone="sdxl")
    assert [r.run_id for r in store.list()] == [r3.run_id, r2.run_id, r1.run_id]
    assert [r.run_id for r in store.list(scene_id="a_1")] == [r3.run_id, r1.run_id]
    assert [r.run_id for r in store.list(backbone="sdxl")] == [r3.run_id, r2.run_id]
    assert [r.run_id for r in store.list(scene_id="a_1", backbone="sd15")] == [r1.run_id]
    assert store.problems == []
    assert RunStore(store.root / "nowhere").list() == []


def test_open_and_delete(store):
    run = make(store)
    opened = store.open(run.run_id)
    assert isinstance(opened, Run) and opened.record == run.record
    store.delete(run.run_id)
    assert not run.path.exists() and store.list() == []
    with pytest.raises(RunError, match="No run"):
        store.open(run.run_id)
    with pytest.raises(RunError, match="No run"):
        store.delete(run.run_id)
    assert [p for p in store.root.iterdir()] == []


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\\b", "..", ".tmp-x", "", "x/../y"])
def test_path_traversal_refused(store, bad):
    make(store)
    with pytest.raises(RunError, match="not a valid run id"):
        store.open(bad)
    with pytest.raises(RunError, match="not a valid run id"):
        store.delete(bad)


def test_broken_folders_are_skipped_and_reported(store):
    good = make(store)
    (store.root / "half").mkdir()
    (store.root / "half" / "run.json").write_text('{"run_id": "half", "kind": ')
    (store.root / "no-record").mkdir()
    (store.root / "stray.txt").write_text("not a run")
    (store.root / "moved").mkdir()
    (store.root / "moved" / "run.json").write_text(json.dumps({"run_id": "elsewhere"}))
    runs = store.list()
    assert [r.run_id for r in runs] == [good.run_id]
    assert {p.path.name for p in store.problems} == {"half", "no-record", "moved"}
    assert all(isinstance(p, Problem) and p.message for p in store.problems)
    with pytest.raises(RunError, match="not valid JSON"):
        store.open("half")


def test_rescoring_replaces_same_settings_and_keeps_others(store):
    run = make(store)
    target = rand_u8((24, 32, 3), 99)
    rgb = score_pair(run.image(), target, settings=MetricSettings())
    luma = score_pair(run.image(), target, settings=MetricSettings(luma=True))
    first = run.save_scores(rgb)
    run.save_scores(luma)
    again = run.save_scores(rgb)
    entries = store.open(run.run_id).scores()
    assert len(entries) == 2
    assert [e["settings"]["luma"] for e in entries] == [True, False]
    assert again["scored"] >= first["scored"]
    latest = run.latest_scores()
    assert latest["scored"] == again["scored"]
    assert scores_from_dict(run.latest_scores(MetricSettings(luma=True).to_dict())) == luma
    assert run.latest_scores(MetricSettings(size=512).to_dict()) is None


def test_identical_image_scores_store_inf(store):
    img = rand_u8((24, 32, 3), 5)
    run = store.create(img, kind="baseline", backbone="persistence", scene_id="s_1",
                       params={})
    run.save_scores(score_pair(img, img, settings=MetricSettings()))
    raw = json.loads((run.path / "scores.json").read_text())
    assert raw[0]["psnr"] == "inf"
    assert scores_from_dict(run.latest_scores()).psnr == math.inf


def test_broken_scores_file_is_reported_not_overwritten(store):
    run = make(store)
    run.scores_path.write_text("[{")
    with pytest.raises(RunError, match="scores.json is not valid JSON"):
        run.scores()
    img = run.image()
    with pytest.raises(RunError):
        run.save_scores(score_pair(img, img, settings=MetricSettings()))
    assert run.scores_path.read_text() == "[{"


def test_crash_mid_write_leaves_no_half_run(store, monkeypatch):
    keep = make(store, seed=1)
    real_fsync = os.fsync

    def crash(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(store_module.os, "fsync", crash)
    with pytest.raises(SaveError, match="simulated"):
        make(store, seed=2)
    # nothing half-written is visible: one complete run, no stray run.json or temp files
    assert [r.run_id for r in store.list()] == [keep.run_id] and store.problems == []
    assert list(store.root.rglob("run.json")) == [keep.path / "run.json"]
    assert sorted(p.name for p in store.root.iterdir()) == [keep.run_id]

    # a failed re-score keeps the previous scores.json intact
    monkeypatch.setattr(store_module.os, "fsync", real_fsync)
    img = keep.image()
    keep.save_scores(score_pair(img, img, settings=MetricSettings()))
    before = keep.scores_path.read_text()
    monkeypatch.setattr(store_module.os, "fsync", crash)
    with pytest.raises(SaveError):
        keep.save_scores(score_pair(img, rand_u8(img.shape, 7), settings=MetricSettings()))
    assert keep.scores_path.read_text() == before
    assert sorted(p.name for p in keep.path.iterdir()) == ["image.png", "run.json",
                                                            "scores.json"]


def test_leftovers_of_a_killed_write_are_cleaned_and_fresh_ones_kept(store, tmp_path):
    run = store.create(np.zeros((8, 8, 3), np.uint8), kind="upload", backbone="upload", scene_id=None, params={})
    old_dir = store.root / ".tmp-20260101T000000Z_generation_x.abc"
    old_dir.mkdir()
    (old_dir / "image.png").write_bytes(b"half")
    old_file = run.path / ".tmp-scores.json.123"
    old_file.write_text("{")
    fresh = store.root / ".tmp-now.def"
    fresh.mkdir()
    hour_ago = time.time() - 3600
    for path in (old_dir, old_file):
        os.utime(path, (hour_ago, hour_ago))
    assert store.clean_leftovers() == 2
    assert not old_dir.exists() and not old_file.exists() and fresh.exists()
    assert [r.run_id for r in store.list()] == [run.run_id]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["image", "record", "rename", "folder"])
def test_a_full_disk_says_what_happened_and_what_to_do_and_keeps_saved_runs(store, monkeypatch, where):
    keep = make(store, seed=1)
    before = sorted(p.name for p in keep.path.iterdir())
    if where == "image":
        monkeypatch.setattr(Image.Image, "save", _no_space)
    elif where == "record":
        monkeypatch.setattr(store_module, "atomic_write_text", _no_space)
    elif where == "rename":
        monkeypatch.setattr(store_module.os, "replace", _no_space)
    else:
        monkeypatch.setattr(store_module.tempfile, "mkdtemp", _no_space)
    with pytest.raises(SaveError) as err:
        make(store, seed=2)
    assert str(err.value) == (f"Could not save the run in {store.root}: No space left on device. "
                              "Free some space or choose another --runs folder.")
    monkeypatch.undo()
    # the run folder appears complete or not at all; the run saved before is untouched
    assert sorted(p.name for p in store.root.iterdir()) == [keep.run_id]
    assert [r.run_id for r in store.list()] == [keep.run_id] and store.problems == []
    assert sorted(p.name for p in keep.path.iterdir()) == before and keep.image().shape == (24, 32, 3)


def test_scores_that_cannot_be_written_keep_the_previous_ones(store, monkeypatch):
    run = make(store)
    img = run.image()
    run.save_scores(score_pair(img, img, settings=MetricSettings()))
    before = run.scores_path.read_text()
    monkeypatch.setattr(store_module, "atomic_write_text", _no_space)
    with pytest.raises(SaveError, match=r"Could not save the scores of run .* No space left on device\. "
                                        r"Free some space or choose another --runs folder\."):
        run.save_scores(score_pair(img, rand_u8(img.shape, 3), settings=MetricSettings(luma=True)))
    assert run.scores_path.read_text() == before


def test_a_read_only_runs_folder_says_so(store):
    make(store)
    os.chmod(store.root, 0o555)
    try:
        if os.access(store.root, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        with pytest.raises(SaveError) as err:
            make(store, seed=5)
        assert f"Could not save the run in {store.root}: Permission denied." in str(err.value)
        assert "Make the folder writable or choose another --runs folder." in str(err.value)
        assert len(store.list()) == 1
    finally:
        os.chmod(store.root, 0o755)
