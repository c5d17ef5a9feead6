"""Scoring throughput: MSE+PSNR+SSIM and LPIPS, batched vs one image at a time.

Run:  python bench/bench_scoring.py [--n 8] [--sizes 512 1024] [--batch 8]
Writes bench/results/scoring.json and prints a table. LPIPS uses a RANDOM AlexNet backbone
(same cost as the real one, no weights needed), on the CPU unless --device says otherwise.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.metrics.lpips_model import LpipsScorer  # noqa: E402
from core.metrics.scoring import Scorer  # noqa: E402
from core.types import MetricSettings  # noqa: E402


def make_pairs(n: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """n (pred, target) uint8 pairs: a smooth scene plus noise, and a perturbed copy."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    pairs = []
    for i in range(n):
        base = np.stack([np.sin(6 * x + i), np.cos(5 * y), np.sin(3 * (x + y))], -1) * 0.4 + 0.5
        target = np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)
        pred = np.clip(target + rng.normal(0, 0.08, base.shape), 0, 1)
        pairs.append(((pred * 255).astype(np.uint8), (target * 255).astype(np.uint8)))
    return pairs


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="pairs per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--batch", type=int, default=8, help="LPIPS batch size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scoring.json")
    args = ap.parse_args()

    import torch

    lp = LpipsScorer(device=args.device, random_backbone=True)
    t_build = timed(lp.check)
    classic = Scorer(MetricSettings(), lpips=None)
    rows = []
    for size in args.sizes:
        pairs = make_pairs(args.n, size)
        preds01 = [p / 255.0 for p, _ in pairs]
        targets01 = [t / 255.0 for _, t in pairs]
        # warm-up (first-call costs: imports, allocator)
        classic.score_many([(pairs[0][0], pairs[0][1], None)])
        lp.score(preds01[:1], targets01[:1], batch_size=1)

        t_classic = timed(lambda: classic.score_many([(p, t, None) for p, t in pairs]))
        t_batched = timed(lambda: lp.score(preds01, targets01, batch_size=args.batch))
        t_single = timed(lambda: lp.score(preds01, targets01, batch_size=1))
        for what, secs in (
            ("mse+psnr+ssim", t_classic),
            (f"lpips batch {args.batch}", t_batched),
            ("lpips batch 1", t_single),
        ):
            rows.append(
                {
                    "size": size,
                    "what": what,
                    "pairs": args.n,
                    "seconds": round(secs, 4),
                    "pairs_per_s": round(args.n / secs, 3),
                }
            )

    machine = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "lpips_backbone": "random (pnet_rand=True): same cost as the real AlexNet",
        "lpips_build_s": round(t_build, 3),
    }
    print(f"{'size':>5}  {'what':<16} {'pairs':>5} {'seconds':>8} {'pairs/s':>8}")
    for r in rows:
        print(
            f"{r['size']:>5}  {r['what']:<16} {r['pairs']:>5} {r['seconds']:>8.3f} "
            f"{r['pairs_per_s']:>8.3f}"
        )
    print(json.dumps(machine))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
