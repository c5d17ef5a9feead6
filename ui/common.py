"""Helpers every tab shares: binding handlers to the Lab, turning core errors into
messages, formatting numbers."""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import logging
import math
import os
import tempfile
from pathlib import Path

import gradio as gr
from PIL import Image

from core.errors import LabError

# Events that are plumbing between widgets, not an API worth documenting.
INTERNAL = {"api_visibility": "undocumented"}
# Every event that may use the GPU shares one queue slot: one job at a time.
GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}
# Arrows telling which way is better, shown in table headers.
ARROWS = {"mse": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓"}


def bind(handler, lab):
    """`handler(lab, ...)` as an event function of the remaining arguments. Gradio still sees
    the handler's name (the default api_name), its `gr.Progress` defaults and its
    `gr.SelectData` annotations (and a generator stays a generator), so handlers stay plain
    module-level functions."""

    if inspect.isgeneratorfunction(handler):  # Gradio streams only generator functions
        @functools.wraps(handler)
        def bound(*args, **kwargs):
            yield from handler(lab, *args, **kwargs)
    else:
        @functools.wraps(handler)
        def bound(*args, **kwargs):
            return handler(lab, *args, **kwargs)

    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


def first_on_disk(lab, specs) -> str | None:
    """The id of the first of `specs` whose files are on disk, or None when none is."""
    for spec in specs:
        try:
            if lab.backbones.readiness(spec.id).ready:
                return spec.id
        except LabError:
            continue
    return None


log = logging.getLogger("xbdlab.ui")

TOAST_SECONDS = 12
"""How long a message stays up before it dismisses itself."""


def notify(message: str, *, title: str = "Not done") -> None:
    """Show `message` once, as a toast that dismisses itself (outside an event: a Python
    warning, which tests can catch)."""
    gr.Warning(message, duration=TOAST_SECONDS, title=title)


def report(fn, err: BaseException) -> None:
    """Tell the user about `err` raised by handler `fn` (see `user_errors`)."""
    if isinstance(err, LabError):  # expected: the user can fix it; one line in the log
        log.warning("%s: %s", fn.__name__, str(err).splitlines()[0] if str(err) else type(err).__name__)
        notify(str(err))
    else:  # unexpected: its traceback once, and a short message
        log.exception("%s failed", fn.__name__)
        notify(f"Something went wrong ({type(err).__name__}: {err}). The details are in the server's log.",
               title="Error")


def user_errors(fn):
    """`fn` as an event handler no error can break: a LabError becomes one toast and one
    log line, anything else a short toast and its traceback logged once; either way every
    output keeps its previous value (gr.skip()) and every control stays usable. Works for
    generator handlers too (what they yielded before the error stays shown)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - reported, never re-raised into the page
                report(fn, err)
                yield gr.skip()
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - reported, never re-raised into the page
            report(fn, err)
            return gr.skip()

    return wrapper


def run_label(run, *, scene: bool = False) -> str:
    """A run told apart at a glance: backbone (and the scene when asked), then what set it
    apart (seed, steps, strength; an upload's file name), then when it was made (UTC, to the
    second). Only what the run recorded is shown."""
    record, p = run.record, run.record.get("params") or {}
    parts = [str(record.get("backbone", "?"))]
    if scene and record.get("scene_id"):
        parts.append(str(record["scene_id"]))
    if p.get("file"):
        parts.append(str(p["file"]))
    if p.get("seed") is not None:
        parts.append(f"seed {p['seed']}")
    if p.get("steps") is not None:
        parts.append(f"{p['steps']} steps")
    if p.get("strength") is not None:
        parts.append(f"strength {float(p['strength']):.2f}")
    parts.append(str(record.get("created", ""))[:19].replace("T", " "))
    return " · ".join(part for part in parts if part)


def fmt(value, digits: int = 4) -> str:
    """A score for display: '∞' for infinite PSNR, '—' for missing, fixed digits otherwise."""
    if value is None:
        return "—"
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "∞"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def picture_folder() -> Path:
    """Where pictures shown in the app are written: in gradio's upload folder (always servable)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio") / "xbdlab-pictures"


def immutable_png(array, folder: Path | None = None) -> Path:
    """`array` (H×W×3 uint8) as `<folder>/<sha256 of the PNG>.png`: written once, under a
    temporary name renamed into place, and never rewritten (same picture, same file)."""

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    data = buffer.getvalue()
    folder = Path(folder) if folder is not None else picture_folder()
    target = folder / f"{hashlib.sha256(data).hexdigest()}.png"
    if target.is_file() and target.stat().st_size == len(data):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=folder, prefix=".tile-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return target


def picture_file(array) -> str | None:
    """What to give a `gr.Image` for a picture the app computed: the path of its
    content-addressed PNG (`immutable_png`), or None for no picture.

    Never the array itself: gradio writes an array to `<cache>/<hash>/image.png` again on
    every event that shows it, truncating the file in place, so a browser still reading
    that URL (a reload, two events showing one tile) gets a short body and a broken image.
    A path is copied into gradio's cache once and reused."""
    return None if array is None else str(immutable_png(array))


def job_text(status, unit: str) -> str:
    """A background batch (core.jobs.JobStatus) as Markdown: how far it is (`unit`: what it
    counts, "tiles" or "images"), a line per process, and how it ended."""
    head = {"running": "Running in the background", "finished": "The background batch finished",
            "stopped": "The background batch was stopped (run it again to resume)",
            "failed": "The background batch failed"}[status.state]
    if status.total:
        lines = [f"**{head}**: {status.done} of {status.total} {unit} done."]
    else:  # no process has reported a count yet (starting, or nothing was left to do)
        lines = [f"**{head}**" + (": starting…" if status.state == "running" else ".")]
    if len(status.processes) == 1:  # one process: what it is at, without a per-process list
        lines.append(f"- last: {status.processes[0]['what']}")
    else:
        lines += [f"- {p['process']}: {p['done']}/{p['total']} ({p['what']})" for p in status.processes]
    if status.state == "finished" and status.summary and status.summary.get("summary"):
        lines.append(f"\n{status.summary['summary']}")
    if status.state == "failed":
        last = [ln for ln in status.console_tail.splitlines() if ln.strip()][-1:] or ["(no output)"]
        lines.append(f"\nIts last line: `{last[0][:200]}`")
    return "\n".join(lines)


def job_view(lab, job, unit: str) -> tuple:
    """(status line, timer) of background job `job`; the timer stops once it has ended."""
    if not job:
        return gr.skip(), gr.Timer(active=False)
    status = lab.jobs.status(job)
    return job_text(status, unit), gr.Timer(active=status.state == "running")


def stop_job(lab, job, unit: str) -> tuple:
    """End background job `job` (what it made is kept); its final status line, the timer off."""
    if not job:
        raise LabError("No background batch was started from this page.")
    lab.jobs.stop(job)
    lab.jobs.wait(job, timeout=30)
    return job_text(lab.jobs.status(job), unit), gr.Timer(active=False)
