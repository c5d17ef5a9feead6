"""A tiny-model batch on 2 processes against 1, in one run: the coordination overhead.

Run:  python bench/bench_distributed.py [--images 8] [--repeats 2] [--gpus N]
Builds the tiny random SD 2.1 backbone (plumbing only: its pictures are noise) and a batch
of `--images` images (64 px, 2 steps), then times, interleaved, from spawning the command to
its exit, each into a fresh runs folder:
  one:  python -m core generate --batch …                      (1 process, 2 torch threads)
  two:  accelerate launch --multi_gpu --num_processes 2 -m core generate --batch …
        (ACCELERATE_USE_CPU=1: two CPU ranks, 1 torch thread each)
On this 2-core machine both use both cores, so the ratio two/one shows what joining a
process group, loading the model twice and splitting the work cost; on a machine with one
GPU per process the work itself would also be split. Writes bench/results/distributed.json.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, arg_parser, machine_info, write_result


def main() -> int:
    ap = arg_parser(__doc__, "distributed.json")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gpus", type=int, default=0, help="compare 1 process with this many, one per GPU")
    args = ap.parse_args()

    from core.backends.tiny_models.sd import build_tiny_models
    from tests import xbd_trees as T

    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        tmp = Path(tmp)
        build_tiny_models(tmp / "models", ids=("tiny-sd21",))
        scenes = [("socal-fire", f"{i:08d}") for i in range(1, args.images + 1)]
        data = T.make_official(tmp / "data", {"train": scenes}, size=64)
        batch = tmp / "batch.jsonl"
        batch.write_text("".join(json.dumps({"backbone": "tiny-sd21", "scene": f"socal-fire_{tid}", "steps": 2,
                                             "size": 64, "seed": i}) + "\n" for i, (_, tid) in enumerate(scenes)))
        env = {**os.environ, "XBDLAB_TEST_BACKBONES": "1", "HF_HUB_OFFLINE": "1"}
        if not args.gpus:
            env["ACCELERATE_USE_CPU"] = "1"
        many = args.gpus or 2
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        commands = {
            "one": ([sys.executable, "-m", "core"], {"OMP_NUM_THREADS": "2"}),
            "two": ([accelerate, "launch", "--multi_gpu", "--num_processes", str(many), "-m", "core"],
                    {"OMP_NUM_THREADS": "1"}),
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for repeat in range(args.repeats):
            for name, (head, extra) in commands.items():
                runs = tmp / f"runs-{name}-{repeat}"
                command = head + ["--work", str(tmp / "work"), "generate", "--data", str(data), "--batch",
                                  str(batch), "--runs", str(runs), "--models", str(tmp / "models"), "--json"]
                start = time.perf_counter()
                subprocess.run(command, cwd=ROOT, env={**env, **extra}, check=True, capture_output=True)
                times[name].append(time.perf_counter() - start)
                assert len(list(runs.glob("*/run.json"))) == args.images
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": machine_info(), "images": args.images, "processes": many, "gpus": args.gpus,
              "seconds": times, "median_s": medians, "ratio_two_to_one": medians["two"] / medians["one"]}
    write_result(args.out, result)
    print(f"1 process {medians['one']:.1f} s, {many} processes {medians['two']:.1f} s: "
          f"ratio {result['ratio_two_to_one']:.2f}x for {args.images} tiny images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
