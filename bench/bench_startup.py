"""Start-up time: the app's first page against the floor gradio sets.

Run:  python bench/bench_startup.py [--repeats 3]
Times, in fresh processes on this machine, from spawning the process until `GET /` answers
200 (the first page can be drawn):
  import:   `python -c "import gradio"` to its exit (no server at all)
  minimal:  a one-Markdown gr.Blocks launched on a free port (the least a gradio app costs)
  app:      `python app.py` on the bundled demo scenes, in a fresh work folder
Writes bench/results/startup.json and prints a table; the ratio app/minimal is the app's own
start-up cost. Thumbnails are made after the page is up and are not part of these figures.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, arg_parser, machine_info, write_result

MINIMAL = """
import sys, gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("minimal")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), prevent_thread_lock=True)
import threading; threading.Event().wait()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_page_seconds(argv: list[str], port: int, env: dict, limit: float = 120.0) -> float:
    """Seconds from spawning `argv` until http://127.0.0.1:`port`/ answers 200."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < limit:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv} exited with {proc.returncode} before serving")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{argv} did not serve within {limit} s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def import_seconds(env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio"], cwd=ROOT, env=env, check=True)
    return time.perf_counter() - start


def main() -> int:
    ap = arg_parser(__doc__, "startup.json")
    ap.add_argument("--repeats", type=int, default=3, help="fresh starts of each kind (interleaved)")
    args = ap.parse_args()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    times: dict[str, list[float]] = {"import": [], "minimal": [], "app": []}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        for i in range(args.repeats):
            times["import"].append(import_seconds(env))
            port = free_port()
            times["minimal"].append(first_page_seconds([sys.executable, "-c", MINIMAL, str(port)], port, env))
            port = free_port()
            work = Path(tmp) / f"work{i}"  # a fresh work folder: no label or thumbnail cache yet
            times["app"].append(first_page_seconds(
                [sys.executable, "app.py", "--port", str(port), "--work", str(work)], port, env))
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": machine_info(), "repeats": args.repeats, "seconds": times, "median_s": medians,
              "ratio_app_to_minimal": medians["app"] / medians["minimal"]}
    write_result(args.out, result)
    print(f"{'start':<10}{'median s':>10}")
    for k, v in medians.items():
        print(f"{k:<10}{v:>10.2f}")
    print(f"app / minimal gradio app: {result['ratio_app_to_minimal']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
