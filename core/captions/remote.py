"""Driving a captioning worker (core.captions.worker) from the app: start it on demand,
send requests, follow progress, cancel, restart it when it dies, stop it when a diffusion
model needs the GPU.

`WorkerCaptioner` is a Captioner like the others: the batch code and the ModelManager use it
unchanged. Its "model" is a `WorkerBundle` holding the `CaptionWorker` (the process), which
the manager keeps resident like any model; when another model needs the device, the
manager calls `release_device()` and the process exits, freeing all of its GPU memory (a
process's memory cannot be moved to the CPU cache); the next caption starts it again.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from core.captions.captioners import CaptionContext, Captioner, ModelBundle
from core.errors import LabError, ModelLoadError, OutOfMemory

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 1800.0  # loading 19B parameters from a slow disk can take many minutes
RESTARTS = 2  # per request: a worker that dies twice more on the same image gives up on it


class WorkerDied(LabError):
    """The captioning worker exited while it had work to do."""


class CaptionCancelled(LabError):
    """A caption request was cancelled before it finished."""


class CaptionWorker:
    """One worker process. `command` starts it (its first line must be "ready" or
    "failed"); `env` is its environment."""

    def __init__(self, command: list[str], *, env: dict | None = None, start_timeout: float = START_TIMEOUT_S,
                 log_path: Path | None = None) -> None:
        self.command = list(command)
        self.env = env
        self.start_timeout = float(start_timeout)
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.ready: dict | None = None
        self.starts = 0
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._ids = 0

    # -- life --------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> dict:
        """Start the process and wait for it to load; its "ready" message. ModelLoadError
        with the worker's own message when it cannot load."""
        self.close()
        self._events = queue.Queue()
        log = open(self.log_path, "ab") if self.log_path and Path(self.log_path).parent.is_dir() else \
            subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, env=self.env, cwd=str(REPO_ROOT), text=True,
                                            encoding="utf-8", bufsize=1)
        except OSError as err:
            raise ModelLoadError(f"Could not start the captioning worker {self.command[0]}: {err}") from err
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self.starts += 1
        threading.Thread(target=self._read, args=(self.process, self._events), daemon=True).start()
        first = self._next(self.start_timeout, what="to load its model")
        if first.get("event") != "ready":
            self.close()
            raise ModelLoadError(f"The captioning worker could not load its model: {first.get('message', first)}")
        self.ready = first
        return first

    def close(self, timeout: float = 10.0) -> None:
        """Ask the process to exit; kill it if it does not within `timeout` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.stdin.write(json.dumps({"op": "shutdown"}) + "\n")
                process.stdin.flush()
                process.wait(timeout)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    # -- requests ----------------------------------------------------------------------
    def caption(self, image_path: str | Path, context: CaptionContext, *,
                on_progress: Callable[[int], None] | None = None,
                cancel: Callable[[], bool] | None = None) -> dict:
        """The worker's "caption" message for one image (starting the worker if needed).
        WorkerDied when the process exits meanwhile; CaptionCancelled when `cancel()`
        turned true; OutOfMemory / LabError for the worker's own errors."""
        with self._lock:
            if not self.alive:
                self.start()
            self._ids += 1
            rid = f"r{self._ids}"
            self._send({"op": "caption", "id": rid, "image": str(image_path), "context": _context(context)})
            sent_cancel = False
            while True:
                if cancel is not None and not sent_cancel and cancel():
                    self._send({"op": "cancel", "id": rid})
                    sent_cancel = True
                event = self._next(0.2, what="to answer", allow_timeout=True)
                if event is None:
                    continue
                if event.get("id") != rid:
                    continue  # a late message about an earlier request
                kind = event.get("event")
                if kind == "progress" and on_progress is not None:
                    on_progress(int(event.get("tokens", 0)))
                elif kind == "caption":
                    return event
                elif kind == "cancelled":
                    raise CaptionCancelled("The caption was cancelled.")
                elif kind == "error":
                    if event.get("out_of_memory"):
                        raise OutOfMemory(f"The captioning worker ran out of GPU memory: {event.get('message')}. "
                                          "Use the int4 model, or free the GPU (no other model loaded).")
                    raise LabError(f"The captioning worker could not caption {Path(image_path).name}: "
                                   f"{event.get('message')}")

    def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError, AttributeError) as err:
            raise WorkerDied(f"The captioning worker is gone ({err}).") from err

    def _next(self, timeout: float, *, what: str, allow_timeout: bool = False) -> dict | None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            if not self.alive:
                raise WorkerDied(self._exit_text()) from None
            if allow_timeout:
                return None
            self.close()
            raise ModelLoadError(f"The captioning worker took more than {timeout:.0f} s {what}; it was stopped.")
        if event is None:  # the reader saw the end of the process's output
            raise WorkerDied(self._exit_text())
        return event

    def _exit_text(self) -> str:
        code = self.process.poll() if self.process is not None else None
        where = f" Its log: {self.log_path}." if self.log_path else ""
        return f"The captioning worker exited (code {code}).{where}"

    @staticmethod
    def _read(process: subprocess.Popen, events: queue.Queue) -> None:
        for line in process.stdout:
            try:
                events.put(json.loads(line))
            except ValueError:
                continue  # not a protocol line
        events.put(None)


def _context(context: CaptionContext) -> dict:
    return {"scene_id": context.scene_id, "phase": context.phase, "disaster": context.disaster,
            "disaster_type": context.disaster_type, "counts": context.counts}


class WorkerBundle(ModelBundle):
    """The ModelManager's view of a worker: moving it to the CPU stops the process."""

    def to(self, device: Any) -> "WorkerBundle":
        self.extra["device"] = str(device)
        return self

    def release_device(self) -> None:
        """Another model needs the GPU, or the model is dropped: stop the process (it starts
        again on demand)."""
        self.model.close()


class WorkerCaptioner(Captioner):
    """`inner` (a captioner id) run in a worker process started with `python` (the
    interpreter of the environment it needs). `source`, `int4`, `max_new_tokens` are the
    inner captioner's options; `captioner_class` hosts any Captioner by `module:Class`."""

    needs_model = True

    def __init__(self, inner: str, *, python: str | Path, source: str | None = None, int4: bool = False,
                 label: str | None = None, prompt_template: Callable[[CaptionContext], str] | None = None,
                 captioner_class: str | None = None, spec_dtype: str = "bf16", env: dict | None = None,
                 log_path: Path | None = None, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.id = inner + ("-int4" if int4 and not inner.endswith("-int4") else "")
        self.label = label or self.id
        self.inner, self.python, self.source, self.int4 = inner, str(python), source, bool(int4)
        self.captioner_class, self.spec_dtype = captioner_class, spec_dtype
        self.env, self.log_path, self.extra_args = env, log_path, tuple(extra_args)
        self._prompt = prompt_template
        self.should_cancel: Callable[[], bool] | None = None  # asked while a tile is in progress
        self.on_progress: Callable[[int], None] | None = None
        self.worker: CaptionWorker | None = None  # the newest process handle `loader` made

    def command(self, device: str, dtype_name: str) -> list[str]:
        command = [self.python, "-m", "core.captions.worker", "--device", device, "--dtype", dtype_name]
        command += ["--captioner-class", self.captioner_class] if self.captioner_class else \
            ["--captioner", self.inner]
        if self.source:
            command += ["--source", str(self.source)]
        if self.int4:
            command += ["--int4"]
        return command + list(self.extra_args)

    def loader(self, device: Any, dtype: Any) -> WorkerBundle:
        from core.models.dtypes import dtype_name

        env = {**os.environ, **(self.env or {}), "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        name = dtype_name(dtype) if dtype is not None else self.spec_dtype
        worker = CaptionWorker(self.command(str(device), name), env=env,
                               log_path=self.log_path)
        worker.start()
        self.worker = worker
        return WorkerBundle(model=worker)

    def prompt(self, context: CaptionContext) -> str | None:
        return self._prompt(context) if self._prompt is not None else None

    def caption(self, image: Any, context: CaptionContext) -> str:
        """The worker's caption of `image`. A worker that dies is started again and asked
        again (RESTARTS times), so a batch goes on where it stopped."""
        worker: CaptionWorker = self._require_bundle().model
        with tempfile.TemporaryDirectory(prefix="xbdlab-caption-") as tmp:
            path = Path(tmp) / "tile.png"
            _save_png(image, path)
            for attempt in range(RESTARTS + 1):
                try:
                    return worker.caption(path, context, on_progress=self.on_progress, cancel=self.should_cancel)["text"]
                except WorkerDied:
                    if attempt == RESTARTS:
                        raise
                    time.sleep(0.5 * (attempt + 1))
        raise AssertionError("unreachable")


def _save_png(image: Any, path: Path) -> None:
    from core.captions.captioners import to_pil

    to_pil(image).save(path, format="PNG", compress_level=1)


__all__ = ["CaptionCancelled", "CaptionWorker", "WorkerBundle", "WorkerCaptioner", "WorkerDied"]
