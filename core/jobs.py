"""Batches the app starts in the background: the same CLI command a user would type
(`python -m core caption …`, `python -m core generate --batch …`), one process per visible
GPU under `accelerate launch` when there are several, so a class can caption a whole
disaster while it goes on browsing. The app stays one process; a job is a process group
with a folder of its own (`<work>/jobs/<id>/`):

    command.json      what was started
    console.log       everything the processes printed on stderr
    summary.json      the command's JSON result (written by the main process at the end)
    progress/*.json   each process's latest progress: {"process", "done", "total", "what"}

Stopping a job ends its processes (SIGTERM to the group); the batch commands resume where
they stopped, so nothing made is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import LabError
from core.io import atomic_write_text, dumps, tail_text

REPO_ROOT = Path(__file__).resolve().parents[1]
KINDS = ("caption", "generate")


@dataclass
class JobStatus:
    job_id: str
    kind: str
    state: str  # "running", "finished", "failed", "stopped"
    processes: list[dict]  # each process's latest progress
    summary: dict | None
    console_tail: str

    @property
    def done(self) -> int:
        return sum(int(p.get("done", 0)) for p in self.processes)

    @property
    def total(self) -> int:
        return sum(int(p.get("total", 0)) for p in self.processes)


def visible_gpus() -> int:
    """CUDA devices this machine shows (0 without a GPU or without torch)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def write_progress(folder: Path | str | None, shard, done: int, total: int, what: str) -> None:
    """Record a process's progress for a background job (no-op without a folder)."""
    if not folder:
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{shard.task}-{shard.rank}.json"
    atomic_write_text(folder / name, dumps({"process": shard.label or "all", "done": done, "total": total,
                                            "what": what, "time": time.time()}))


class BatchJobs:
    """Starts, watches and stops background batches under `work_dir/jobs`."""

    def __init__(self, work_dir: Path, *, env: dict | None = None) -> None:
        self.root = Path(work_dir) / "jobs"
        self.work_dir = Path(work_dir)
        self.env = dict(env or {})  # the app's settings for the processes (Settings.child_env)
        self._procs: dict[str, subprocess.Popen] = {}

    def command(self, kind: str, args: list[str], processes: int, folder: Path) -> list[str]:
        if kind not in KINDS:
            raise LabError(f"Unknown background batch {kind!r}; one of {', '.join(KINDS)}.")
        # port 0: the launcher takes a free port (two background batches run at once without
        # accelerate's 'port 29500 is already in use' fallback)
        head = ([str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
                 str(processes), "--main_process_port", "0", "-m", "core"] if processes > 1
                else [sys.executable, "-m", "core"])
        return head + ["--work", str(self.work_dir), kind, *args, "--json",
                       "--progress-dir", str(folder / "progress")]

    def start(self, kind: str, args: list[str], *, processes: int | None = None, env: dict | None = None) -> str:
        """Start `python -m core <kind> <args>` in the background on `processes` processes
        (default: one per visible GPU, at least one); returns the job id."""
        processes = max(1, processes if processes is not None else visible_gpus())
        job_id = time.strftime("%Y%m%d-%H%M%S") + f"-{kind}-{os.getpid() % 1000:03d}{len(self._procs):02d}"
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        command = self.command(kind, args, processes, folder)
        atomic_write_text(folder / "command.json", dumps({"kind": kind, "command": command, "processes": processes,
                                                          "started": time.time()}))
        with open(folder / "console.log", "ab") as console, open(folder / "summary.json", "wb") as summary:
            self._procs[job_id] = subprocess.Popen(command, stdout=summary, stderr=console, cwd=str(REPO_ROOT),
                                                   env={**os.environ, **self.env, **(env or {}), "PYTHONUNBUFFERED": "1"},
                                                   start_new_session=True)
        return job_id

    def stop(self, job_id: str) -> None:
        """End the job's processes; what they made is kept and a rerun resumes."""
        proc = self._procs.get(job_id)
        if proc is None or proc.poll() is not None:
            raise LabError("That background batch is not running.")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        (self.root / job_id / "stopped").touch()

    def wait(self, job_id: str, timeout: float | None = None) -> int:
        return self._procs[job_id].wait(timeout)

    def status(self, job_id: str) -> JobStatus:
        folder = self.root / job_id
        if not (folder / "command.json").is_file():
            raise LabError(f"No background batch {job_id!r}.")
        kind = json.loads((folder / "command.json").read_text(encoding="utf-8"))["kind"]
        processes = []
        for path in sorted((folder / "progress").glob("*.json")):
            try:
                processes.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        proc = self._procs.get(job_id)
        code = proc.poll() if proc is not None else None
        summary = None
        try:
            text = (folder / "summary.json").read_text(encoding="utf-8")
            summary = json.loads(text) if text.strip() else None
        except (OSError, ValueError):
            summary = None
        if proc is not None and code is None:
            state = "running"
        elif (folder / "stopped").exists():
            state = "stopped"
        else:
            state = "finished" if summary is not None and code in (0, None) else "failed"
        return JobStatus(job_id=job_id, kind=kind, state=state, processes=processes, summary=summary,
                         console_tail=tail_text(folder / "console.log"))


__all__ = ["BatchJobs", "JobStatus", "visible_gpus", "write_progress"]
