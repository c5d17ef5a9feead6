"""The training capability: train a ControlNet here (the CLI, or a process the app starts),
watch and stop a run from its files, export the pairs for diffusers' own script, and list
the ControlNets trained under the work folder (which the backbone list offers).

A run started from the app is a separate process (`python -m core train controlnet
--options <out>/request.json`), never a thread of the web server: its record is its output
folder (training.json, log.jsonl, validation.jsonl, checkpoints), which `status` reads; a
`STOP` file asks it to checkpoint and stop. Before it starts, the model manager frees the
GPU; generation loads its models back on the next request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from core.io import JsonlFollower, atomic_write_text, dumps, tail_text
from core.training.loop import STOP_FILE, Outcome, Trainer, checkpoints
from core.training.options import TrainingError, TrainOptions

REQUEST_FILE = "request.json"
CONSOLE_FILE = "console.log"


@dataclass
class RunStatus:
    """What a training folder says about its run."""

    out: Path
    state: str  # "running", "stopping", "stopped", "finished", "failed" or "new"
    record: dict
    losses: list[dict]
    validations: list[dict]
    checkpoints: list[str]
    console_tail: str


class TrainingService:
    """datasets, backbones, captions, evaluation: the collaborators the trainer uses;
    models: the ModelManager (freed before a background run); trained_dir: where the app
    puts the runs it starts (each a folder the backbone list offers once finished);
    work_dir: handed to background runs."""

    def __init__(self, *, datasets, backbones, captions, evaluation, models, trained_dir: Path,
                 work_dir: Path, env: dict | None = None) -> None:
        self.datasets = datasets
        self.backbones = backbones
        self.captions = captions
        self.evaluation = evaluation
        self.models = models
        self.trained_dir = Path(trained_dir)
        self.work_dir = Path(work_dir)
        self.env = dict(env or {})  # the app's settings for the training process (Settings.child_env)
        self._jobs: dict[Path, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._logs = JsonlFollower()  # a status poll reads only the steps logged since the last one

    # -- in this process ---------------------------------------------------------------------
    def train(self, options: TrainOptions, *, on_event=None, should_stop=None) -> Outcome:
        """Train here (the CLI, or each process of `accelerate launch`)."""
        return Trainer(options, self, on_event=on_event, should_stop=should_stop).run()

    def export_upstream(self, options: TrainOptions, folder: Path | str) -> dict:
        """The filtered pairs as an image folder for diffusers' `train_controlnet.py`."""
        from core.training.data import export_upstream, training_pairs

        index = self.datasets.open(options.data)
        scenes = index.filter(split=options.split, disaster=options.disaster, disaster_type=options.disaster_type)
        pairs, skipped = training_pairs(index, scenes, options.check(), self.captions)
        written = export_upstream(pairs, folder, options.resolution)
        return {"written": written, "skipped": skipped, "folder": str(folder),
                "metadata": str(Path(folder) / "metadata.jsonl")}

    # -- in the background ----------------------------------------------------------------
    def run_folder(self, name: str) -> Path:
        """The output folder of a run the app starts under the name `name`."""
        clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.strip()).strip(".-")
        if not clean:
            raise TrainingError("Give the run a name (letters, digits, - and _).")
        return self.trained_dir / clean

    def start(self, options: TrainOptions) -> Path:
        """Start training in a background process; returns its output folder. The GPU is
        freed first (the model manager drops every model)."""
        from core.training.models import base_source

        options.check()
        base_source(self.backbones, options)  # a base not on disk is said here, not in a background log
        out = Path(options.out)
        with self._lock:
            if self.is_running(out):
                raise TrainingError(f"A training run is already going on in {out}: stop it first.")
            if options.resume is None and checkpoints(out):
                raise TrainingError(f"{out} already holds a run: resume it, or pick another name.")
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / REQUEST_FILE, dumps(options.to_json()))
            (out / STOP_FILE).unlink(missing_ok=True)
            self.models.unload_all()
            console = open(out / CONSOLE_FILE, "ab")
            command = [sys.executable, "-m", "core", "--work", str(self.work_dir), "train", "controlnet",
                       "--options", str(out / REQUEST_FILE)]
            if self.backbones.models_dir is not None:
                command += ["--models", str(self.backbones.models_dir)]
            self._jobs[out.resolve()] = subprocess.Popen(
                command, stdout=console, stderr=subprocess.STDOUT, cwd=str(Path(__file__).resolve().parents[2]),
                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"})
            console.close()
        return out

    def stop(self, out: Path | str) -> None:
        """Ask the run in `out` to write a checkpoint and stop (it may take a step)."""
        out = Path(out)
        if not out.is_dir():
            raise TrainingError(f"No training run in {out}.")
        (out / STOP_FILE).touch()

    def is_running(self, out: Path | str) -> bool:
        job = self._jobs.get(Path(out).resolve())
        return job is not None and job.poll() is None

    def wait(self, out: Path | str, timeout: float | None = None) -> int | None:
        """Wait for the background run in `out` to end; its exit code (None if none ran)."""
        job = self._jobs.get(Path(out).resolve())
        return None if job is None else job.wait(timeout)

    def status(self, out: Path | str) -> RunStatus:
        """The run in `out` as its files (and its process, when this app started it) tell."""
        out = Path(out)
        try:
            record = json.loads((out / "training.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        state = record.get("status", "new")
        job = self._jobs.get(out.resolve())
        if job is not None:
            code = job.poll()
            if code is None:
                state = "stopping" if (out / STOP_FILE).exists() else "running"
            elif code != 0 and state in ("running", "new"):
                state = "failed"
        elif state == "running":
            state = "stopped"  # its process is gone (killed, or another app's): resume from its checkpoint
        return RunStatus(out=out, state=state, record=record, losses=self._logs.rows(out / "log.jsonl"),
                         validations=self._logs.rows(out / "validation.jsonl"),
                         checkpoints=[p.name for p in checkpoints(out)], console_tail=tail_text(out / CONSOLE_FILE))

    def runs(self) -> list[Path]:
        """The run folders under trained_dir, newest first."""
        if not self.trained_dir.is_dir():
            return []
        found = [p for p in self.trained_dir.iterdir()
                 if p.is_dir() and ((p / REQUEST_FILE).is_file() or (p / "training.json").is_file())]
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def request_of(self, out: Path | str) -> TrainOptions:
        """The options a run in `out` was started with (to resume it)."""
        try:
            return TrainOptions.from_json(json.loads((Path(out) / REQUEST_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TrainingError(f"{out} has no readable {REQUEST_FILE}: start a new run instead.") from err


__all__ = ["RunStatus", "TrainingService"]
