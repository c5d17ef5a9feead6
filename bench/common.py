"""What every bench script shares: the repository on sys.path, the hub offline, an argument
parser with `--out`, timing helpers, the machine description and the JSON result writer.

Import it first, before torch or diffusers (a script run as `python bench/x.py` has bench/
on sys.path, so `from common import ...` finds this file):

    from common import RESULTS, ROOT, arg_parser, machine_info, write_result

Importing it puts the repository root on sys.path (so `core` and `tests` import) and sets
HF_HUB_OFFLINE=1 unless the environment already says otherwise: no bench script downloads.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def arg_parser(doc: str | None, result_name: str) -> argparse.ArgumentParser:
    """A parser described by the first line of `doc`, with `--out` defaulting to
    bench/results/`result_name`."""
    ap = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] if doc else None)
    ap.add_argument("--out", type=Path, default=RESULTS / result_name, help="where to write the JSON result")
    return ap


def sync(device: str | None) -> None:
    """Wait for queued CUDA work when `device` is a CUDA device (no-op otherwise)."""
    if device and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str | None = None) -> float:
    """Seconds `fn()` took, CUDA work included when `device` is a CUDA device."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def alternate(paths, repeats: int, device: str | None = None) -> dict[str, list[float]]:
    """Time each (name, fn) of `paths` in turn, `repeats` rounds (interleaved, so drift on a
    busy machine hits every path alike); seconds per name, in call order."""
    paths = list(paths.items()) if isinstance(paths, dict) else list(paths)
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(repeats):
        for name, fn in paths:
            times[name].append(timed(fn, device))
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """The median of each list of `times`."""
    return {k: statistics.median(v) for k, v in times.items()}


def machine_info(**extra) -> dict:
    """platform, python, cpu_count and processor; torch's version when torch imports, and
    the CUDA device's name (and CUDA version) when a GPU is present; then `extra`, which
    may override any of them. A `device="cuda:N"` in extra names that device's GPU."""
    info: dict = {"platform": platform.platform(), "python": platform.python_version(),
                  "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        info["torch"] = torch.__version__
        try:
            if torch.cuda.is_available():
                device = str(extra.get("device") or "cuda")
                index = torch.device(device if device.startswith("cuda") else "cuda")
                info["gpu"] = torch.cuda.get_device_name(index)
                info["cuda"] = torch.version.cuda
        except Exception as err:  # a broken driver must not lose the result
            info["gpu_error"] = f"{type(err).__name__}: {err}"
    info.update(extra)
    return info


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_result(path, result) -> None:
    """Write `result` as JSON (indent 2, trailing newline) to `path`, creating its folder,
    and print "wrote PATH"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
