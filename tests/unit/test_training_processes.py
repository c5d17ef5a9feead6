"""Two real training processes on the CPU (gloo), started the way the README says a
multi-GPU run starts: `accelerate launch --multi_gpu --num_processes 2`. On a machine
without a GPU, `ACCELERATE_USE_CPU=1` makes accelerate start two CPU ranks (a plain
`--cpu --num_processes 2` starts one), so the test asserts that two really ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.io import read_jsonl
from core.training.loop import checkpoints
from tests import xbd_trees as T

ROOT = Path(__file__).resolve().parents[2]
SCENES = {"train": [("hurricane-matthew", f"0000000{i}") for i in range(1, 5)]}


@pytest.mark.slow
def test_two_processes_train_together_and_write_one_consistent_checkpoint(tmp_path):
    from diffusers import ControlNetModel

    from core.backends.tiny_models.sd import build_tiny_models

    base = build_tiny_models(tmp_path / "models", ids=("tiny-sd21",))["tiny-sd21"]
    data = T.make_official(tmp_path / "data", SCENES, size=64)
    out = tmp_path / "out"
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0",
               "-m", "core", "--work", str(tmp_path / "work"), "train", "controlnet", "--data", str(data),
               "--out", str(out), "--base-model", str(base), "--resolution", "64", "--batch-size", "1",
               "--grad-accum", "1", "--max-steps", "2", "--checkpoint-every", "2", "--validate-every", "2",
               "--val-count", "1", "--validation-steps", "2", "--num-workers", "0", "--json"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "XBDLAB_LPIPS_RANDOM_BACKBONE": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["status"] == "finished"  # one report, from the main process

    record = json.loads((out / "training.json").read_text())
    assert record["processes"] == 2 and record["status"] == "finished"  # WORLD_SIZE was really 2
    assert [row["step"] for row in read_jsonl(out / "log.jsonl")] == [1, 2]  # one line per step, not per rank
    (checkpoint,) = checkpoints(out)
    assert {"random_states_0.pkl", "random_states_1.pkl", "state.json"} <= {p.name for p in checkpoint.iterdir()}
    for folder in (checkpoint / "controlnet", out / "controlnet"):
        ControlNetModel.from_pretrained(folder)  # complete and loadable
