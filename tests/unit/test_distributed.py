"""Batches split between processes and shards (tiny RANDOM models: plumbing): every item
done exactly once, the same images whatever the process count, resume across counts, and
one summary. The multi-process tests start two real CPU ranks the way the README says
(`accelerate launch --multi_gpu --num_processes 2` with ACCELERATE_USE_CPU=1; a plain
`--cpu --num_processes 2` starts one here) and check that two really ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.distributed import Shard, contiguous, current_shard
from core.errors import LabError
from tests import xbd_trees as T

ROOT = Path(__file__).resolve().parents[2]
SCENES = {"train": [("socal-fire", f"0000000{i}") for i in range(1, 4)]}


def test_contiguous_shares_cover_every_item_once():
    for n in range(0, 12):
        for count in (1, 2, 3, 5):
            parts = [contiguous(list(range(n)), i, count) for i in range(count)]
            assert [x for p in parts for x in p] == list(range(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_the_shard_comes_from_flags_else_slurm_array_variables():
    assert current_shard(env={}) == Shard()
    assert current_shard(3, 1, env={}) == Shard(task=1, tasks=3)
    slurm = {"SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5"}
    assert current_shard(env=slurm) == Shard(task=2, tasks=4)
    assert current_shard(2, 0, env=slurm) == Shard(task=0, tasks=2)  # the flags win
    with pytest.raises(LabError, match="between 0 and"):
        current_shard(2, 2, env={})


# -- real batches ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small xBD tree, the tiny SD 2.1 backbone and a batch of 3 requests × 2 images."""
    from core.backends.tiny_models.sd import build_tiny_models

    root = tmp_path_factory.mktemp("dist")
    models = root / "models"
    build_tiny_models(models, ids=("tiny-sd21",))
    data = T.make_official(root / "data", SCENES, size=64)
    batch = root / "batch.jsonl"
    batch.write_text("".join(json.dumps({"backbone": "tiny-sd21", "scene": f"socal-fire_0000000{i}",
                                         "num_images": 2, "seed": 10 * i, "steps": 2, "size": 64}) + "\n"
                             for i in range(1, 4)))
    return {"root": root, "models": models, "data": data, "batch": batch}


def env(**extra) -> dict:
    return {**os.environ, "XBDLAB_TEST_BACKBONES": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "XBDLAB_LPIPS_RANDOM_BACKBONE": "1", **extra}


def core_command(work: Path, *args: str, processes: int = 1) -> list[str]:
    launch = ([str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
               str(processes), "--main_process_port", "0", "-m", "core"] if processes > 1
              else [sys.executable, "-m", "core"])
    return launch + ["--work", str(work), *args]


def generate(setup, runs: Path, *extra: str, processes: int = 1) -> dict:
    command = core_command(setup["root"] / "work", "generate", "--data", str(setup["data"]), "--batch",
                           str(setup["batch"]), "--runs", str(runs), "--models", str(setup["models"]), "--json",
                           *extra, processes=processes)
    done = subprocess.run(command, cwd=ROOT, env=env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def images_by_seed(runs: Path) -> dict:
    """{(request key, seed): pixels} of every generation run in `runs`; fails on a duplicate."""
    from core.runs.store import RunStore

    found: dict = {}
    for run in RunStore(runs).list():
        params = run.record["params"]
        key = (params["request_key"], params["seed"])
        assert key not in found, f"{key} made twice"
        found[key] = run.image()
    return found


def descendants(pid: int) -> list[int]:
    """Every process started under `pid` (the launcher's workers may leave its process group)."""
    found, todo = [], [pid]
    while todo:
        children = Path(f"/proc/{todo.pop()}/task")
        for task in children.glob("*/children") if children.is_dir() else []:
            for child in task.read_text().split():
                found.append(int(child))
                todo.append(int(child))
    return found


def same_images(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(setup):
    """The batch made by one process: what every other split must equal."""
    runs = setup["root"] / "one-process"
    result = generate(setup, runs)
    assert result["written"] == 6
    return images_by_seed(runs)


def test_shards_run_one_after_the_other_equal_one_full_run(setup, reference):
    runs = setup["root"] / "shards"
    written = [generate(setup, runs, "--num-shards", "3", "--shard-index", str(i))["written"] for i in range(3)]
    assert written == [2, 2, 2]
    assert same_images(images_by_seed(runs), reference)


@pytest.mark.slow
def test_two_processes_make_the_same_images_once_with_one_summary(setup, reference):
    runs = setup["root"] / "two-processes"
    result = generate(setup, runs, processes=2)
    assert len(result["processes"]) == 2  # WORLD_SIZE really was 2
    assert [p["written"] for p in result["processes"]] == [3, 3] and result["written"] == 6
    assert same_images(images_by_seed(runs), reference)


def run_json(command: list[str]):
    done = subprocess.run(command, cwd=ROOT, env=env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def kill_when(command: list[str], done, least: int, cwd=ROOT) -> None:
    """Start `command`, and once `done()` counts at least `least` finished items, kill -9
    every process of it (as an out-of-memory killer or a preempted node would)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env(ACCELERATE_USE_CPU="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and done() < least:
        time.sleep(0.05)
    for pid in [*descendants(proc.pid), proc.pid]:  # the launcher's workers may leave its process group
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def progress_done(folder: Path) -> int:
    """Items finished so far by every process of a batch writing its progress to `folder`."""
    total = 0
    for path in folder.glob("*.json") if folder.is_dir() else []:
        try:
            total += json.loads(path.read_text())["done"]
        except (OSError, ValueError, KeyError):
            pass  # being replaced right now
    return total


@pytest.mark.slow
def test_a_batch_killed_on_two_processes_is_finished_on_one(setup, reference):
    runs = setup["root"] / "killed"
    command = core_command(setup["root"] / "work", "generate", "--data", str(setup["data"]), "--batch",
                           str(setup["batch"]), "--runs", str(runs), "--models", str(setup["models"]), processes=2)
    kill_when(command, lambda: len(list(runs.glob("*/run.json"))), 2)
    before = len(list(runs.glob("*/run.json")))
    assert 2 <= before < 6, "the kill came too late to test a resume"
    result = generate(setup, runs)
    assert result["written"] == 6 - before and result["skipped"] == before
    assert same_images(images_by_seed(runs), reference)  # nothing missing, nothing twice


@pytest.mark.slow
def test_two_processes_caption_every_tile_once_and_score_every_run_once(setup, reference, tmp_path):
    from core.captions.store import CaptionStore

    work = tmp_path / "work"
    result = run_json(core_command(work, "caption", "--data", str(setup["data"]), "--json", processes=2))
    assert [p["captioned"] for p in result["processes"]] == [3, 3] and result["captioned"] == 6
    store = CaptionStore(work / "captions.sqlite")
    names = [f"socal-fire_0000000{i}_{phase}_disaster.png" for i in range(1, 4) for phase in ("pre", "post")]
    assert all(store.get(n).machine_caption for n in names)  # both processes wrote to one store

    runs = setup["root"] / "one-process"
    command = core_command(work, "score", "--runs", str(runs), "--data", str(setup["data"]), "--json", processes=2)
    done = subprocess.run(command, cwd=ROOT, env=env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(done.stdout)
    assert "process 1/2: 3 scored" in done.stderr and "process 2/2: 3 scored" in done.stderr  # who did what
    assert sorted(e["run"] for e in scored) == sorted(p.name for p in runs.iterdir() if (p / "run.json").is_file())
    assert all("psnr" in e for e in scored)


@pytest.mark.slow
def test_torchrun_splits_the_baselines_between_two_processes(setup, tmp_path):
    runs = tmp_path / "runs"
    from tests.net import free_port

    command = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2",
               "--master_port", str(free_port()),
               "-m", "core", "--work", str(tmp_path / "work"), "baseline", "--data", str(setup["data"]),
               "--runs", str(runs), "--json"]
    done = subprocess.run(command, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert [p["written"] for p in result["processes"]] == [2, 1] and result["written"] == 3
    assert len(list(runs.glob("*/run.json"))) == 3  # one baseline per scene, none twice


@pytest.fixture(scope="module")
def vlm_models(tmp_path_factory):
    """A models folder holding the tiny random Qwen2-VL under its backbone id."""
    import shutil

    from tests.tiny.captions import tiny_qwen2_vl_folder

    models = tmp_path_factory.mktemp("vlm") / "models"
    shutil.copytree(tiny_qwen2_vl_folder(), models / "qwen2-vl")
    return models


@pytest.mark.slow
def test_two_processes_caption_with_a_tiny_vlm_each_tile_once(setup, vlm_models, tmp_path):
    from core.captions.store import CaptionStore

    work = tmp_path / "work"
    result = run_json(core_command(work, "caption", "--data", str(setup["data"]), "--captioner", "qwen2-vl",
                                   "--models", str(vlm_models), "--json", processes=2))
    assert [p["captioned"] for p in result["processes"]] == [3, 3] and not result["failed"]
    store = CaptionStore(work / "captions.sqlite")
    records = [store.get(f"socal-fire_0000000{i}_{phase}_disaster.png") for i in range(1, 4) for phase in ("pre", "post")]
    assert all(r.machine_model.startswith("qwen2-vl") for r in records)


@pytest.mark.slow
def test_captions_killed_on_one_process_are_finished_on_two(vlm_models, tmp_path):
    """The other way round from generate: kill -9 a one-process captioning of 12 tiles,
    then finish it with two processes; the tiles done before the kill are left alone."""
    from core.captions.store import CaptionStore

    data = T.make_official(tmp_path / "data", {"train": [("socal-fire", f"0000001{i}") for i in range(6)]}, size=64)
    work, progress = tmp_path / "work", tmp_path / "progress"
    caption = ["caption", "--data", str(data), "--captioner", "qwen2-vl", "--models", str(vlm_models)]
    kill_when(core_command(work, *caption, "--progress-dir", str(progress)), lambda: progress_done(progress), 2)
    store = CaptionStore(work / "captions.sqlite")
    names = [f"socal-fire_0000001{i}_{phase}_disaster.png" for i in range(6) for phase in ("pre", "post")]
    before = {n: store.get(n) for n in names if store.get(n) is not None}
    store.close()
    assert 2 <= len(before) < 12, "the kill came too late to test a resume"

    result = run_json(core_command(work, *caption, "--json", processes=2))
    assert result["captioned"] == 12 - len(before) and result["skipped"] == len(before) and not result["failed"]
    assert len(result["processes"]) == 2
    store = CaptionStore(work / "captions.sqlite")
    assert all(store.get(n).machine_model.startswith("qwen2-vl") for n in names)  # nothing missing
    assert all(store.get(n) == record for n, record in before.items())  # nothing done twice


@pytest.mark.slow
def test_scoring_killed_on_two_processes_is_finished_on_one(setup, tmp_path):
    """kill -9 `score --runs` of 18 runs on two processes; one process then scores only the
    runs the kill left unscored, and the runs scored before it keep their saved scores."""
    from core.runs.store import RunStore

    runs = tmp_path / "runs"
    store, rng = RunStore(runs), np.random.default_rng(0)
    for n in range(18):
        store.create(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), kind="upload", backbone="upload",
                     scene_id=f"socal-fire_0000000{n % 3 + 1}", params={"n": n})
    work, progress = tmp_path / "work", tmp_path / "progress"
    score = ["score", "--runs", str(runs), "--data", str(setup["data"]), "--size", "512", "--batch-size", "1"]
    kill_when(core_command(work, *score, "--progress-dir", str(progress), processes=2),
              lambda: len(list(runs.glob("*/scores.json"))), 2)
    before = {p.parent.name: p.read_text() for p in runs.glob("*/scores.json")}
    assert 2 <= len(before) < 18, "the kill came too late to test a resume"

    done = subprocess.run(core_command(work, *score, "--json"), cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(done.stdout)
    assert f"{18 - len(before)} scored, {len(before)} kept their saved scores" in done.stderr
    assert sorted(e["run"] for e in scored) == sorted(p.name for p in runs.iterdir())
    assert all("psnr" in e for e in scored)
    assert all((runs / name / "scores.json").read_text() == text for name, text in before.items())
    assert all(len(json.loads(p.read_text())) == 1 for p in runs.glob("*/scores.json"))
