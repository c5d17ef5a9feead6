"""Cost of recording DAAM word maps: the same generation with and without the recorder.

Run:  python bench/bench_attention.py [--size 64] [--steps 10] [--repeats 9]
Same tiny random SD 2.1-style pipeline (tests/tiny/sd.py), same request and seed on both
sides; calls alternate after a warm-up and medians are compared (target: ≤ 1.15×). The
images must be identical within 1/255. Writes bench/results/attention.json.
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "attention.json")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import core.backends.tiny  # noqa: F401 - registers the tiny backbones
    from core.attention.record import record_attention
    from core.backends import get
    from core.generation import generate
    from core.types import GenerationRequest
    from tests.tiny.sd import tiny_random_sd21_folder

    backend = get("tiny-sd21")
    pipe = backend.load(tiny_random_sd21_folder(), device="cpu")
    request = GenerationRequest(backbone="tiny-sd21", prompt="flooded streets near damaged houses",
                                mode="txt2img", steps=args.steps, guidance=7.5, size=args.size, seed=0)

    def plain():
        return generate(request, backend=backend, pipe=pipe).images[0]

    def recorded():
        with record_attention(pipe, cfg=True):
            return generate(request, backend=backend, pipe=pipe).images[0]

    same = int(np.abs(plain().astype(int) - recorded().astype(int)).max()) <= 1  # warm-up too
    times = {"plain": [], "recorded": []}
    for _ in range(args.repeats):
        for name, fn in (("plain", plain), ("recorded", recorded)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": "tiny random SD 2.1-style pipeline (tests/tiny/sd.py), txt2img, guidance 7.5",
        "size": args.size, "steps": args.steps, "repeats": args.repeats,
        "median_s": med, "ratio_recorded_over_plain": round(med["recorded"] / med["plain"], 4),
        "target_ratio": 1.15, "identical_images_within_1": same,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "torch_threads": 1},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"plain {med['plain']:.4f} s  recorded {med['recorded']:.4f} s  "
          f"ratio {result['ratio_recorded_over_plain']:.3f} (target <= 1.15); same image: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
