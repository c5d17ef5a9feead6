"""Scoring throughput: MSE+PSNR+SSIM on the CPU path (numpy/scipy) and the torch batched
path, in one run; and LPIPS, batched vs one image at a time.

Run:  python bench/bench_scoring.py [--device cpu|cuda] [--n 8] [--n-batched N]
                                    [--sizes 512 1024] [--batch 16] [--lpips-batch 8]
                                    [--repeats 3] [--no-lpips]
Writes bench/results/scoring.json (or --out; rewritten after each size, so a run cut short
keeps what it measured) and prints a table.

* CPU path: ``Scorer(..., device="cpu").score_many`` (what a machine without a GPU does).
* torch path: ``Scorer(..., device=DEVICE, use_torch=True, batch_size=BATCH).score_many``
  (what a GPU machine does), from the same uint8 pairs, so host work (preparing the pairs,
  copying them to the device) is counted; "kernels only" times
  ``core.metrics.batched.score_batch`` on uint8 batches already on the device.
* both with and without the five damage-class masks; the three measurements are
  interleaved, --repeats times, and the median kept; the JSON also records the largest
  difference between the two paths per metric (they must agree to 1e-6: the exit status is
  1 when they do not).

--device defaults to cuda when torch sees one, else cpu. LPIPS uses a RANDOM AlexNet
backbone (same cost as the real one, no weights needed) on --device; on a GPU the same
network on the CPU scores the same pairs, and the values must agree to 1e-5.
Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import math

import numpy as np
from common import alternate, arg_parser, machine_info, medians, timed, write_result

from core.metrics.lpips_model import LpipsScorer
from core.metrics.scoring import Scorer
from core.types import MASK_REGIONS, MetricSettings

DISTINCT_PAIRS = 16  # longer measurements cycle through these (cost does not depend on content)


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


def make_masks(size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Five region masks like class_masks gives: rectangles of buildings, split by class."""
    rng = np.random.default_rng(seed)
    classes = np.zeros((size, size), np.uint8)
    for _ in range(40):
        h, w = rng.integers(max(1, size // 40), max(2, size // 10), size=2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        classes[r : r + h, c : c + w] = rng.integers(1, 5)
    masks = {"building": classes > 0}
    for k, name in enumerate(MASK_REGIONS[1:], start=1):
        masks[name] = classes == k
    return masks


def max_diffs(a_list, b_list) -> dict[str, float]:
    """Largest |a - b| per metric (whole image and per region) between two score lists."""
    out = {k: 0.0 for k in ("mse", "psnr", "ssim", "masked_mse", "masked_psnr", "masked_ssim")}

    def diff(x, y):
        if (x is None and y is None) or x == y:  # None, or equal infinities
            return 0.0
        return math.inf if x is None or y is None else abs(x - y)

    for a, b in zip(a_list, b_list):
        for k in ("mse", "psnr", "ssim"):
            out[k] = max(out[k], diff(getattr(a, k), getattr(b, k)))
        for region, va in (a.masked or {}).items():
            vb = b.masked[region]
            for k in ("mse", "psnr", "ssim"):
                out[f"masked_{k}"] = max(out[f"masked_{k}"], diff(va and va[k], vb and vb[k]))
    return out


def main() -> int:
    import torch

    from core.metrics.batched import score_batch

    ap = arg_parser(__doc__, "scoring.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="the torch path's (and LPIPS') device (default: cuda when available)")
    ap.add_argument("--n", type=int, default=8, help="pairs per CPU-path and LPIPS measurement")
    ap.add_argument("--n-batched", type=int, default=None,
                    help="pairs per torch-path measurement (default: 64 on cuda, --n on cpu)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--batch", type=int, default=16, help="torch-path batch size (pairs)")
    ap.add_argument("--lpips-batch", type=int, default=8, help="LPIPS batch size")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median kept)")
    ap.add_argument("--no-lpips", action="store_true", help="skip the LPIPS rows")
    args = ap.parse_args()
    device = args.device
    n_batched = args.n_batched or (64 if device.startswith("cuda") else args.n)

    cpu_path = Scorer(MetricSettings(), lpips=None, device="cpu", use_torch=False)
    torch_path = Scorer(MetricSettings(), lpips=None, device=device, use_torch=True,
                        batch_size=args.batch)
    lp = None
    t_build = None
    if not args.no_lpips:
        lp = LpipsScorer(device=device, random_backbone=True)
        t_build = timed(lp.check)
    lp_cpu = None
    if lp is not None and device != "cpu":
        lp_cpu = LpipsScorer(device="cpu", random_backbone=True)
        lp_cpu.model.load_state_dict(lp.model.state_dict())
    machine = machine_info(
        device=device, torch_threads=torch.get_num_threads(), repeats=args.repeats,
        torch_path=f"float64, batches of {args.batch}",
        lpips_backbone="random (pnet_rand=True): same cost as the real AlexNet",
        lpips_build_s=None if t_build is None else round(t_build, 3),
    )
    rows, comparison, diffs = [], [], {}

    def row(size, what, pairs, secs):
        rows.append({"size": size, "what": what, "pairs": pairs, "seconds": round(secs, 4),
                     "pairs_per_s": round(pairs / secs, 3)})
        return pairs / secs

    for size in args.sizes:
        distinct = make_pairs(min(max(args.n, n_batched), DISTINCT_PAIRS), size)
        pairs = [distinct[i % len(distinct)] for i in range(max(args.n, n_batched))]
        masks = make_masks(size)
        for with_masks in (False, True):
            label = " + 5 masks" if with_masks else ""
            m = masks if with_masks else None
            cpu_items = [(p, t, m) for p, t in pairs[: args.n]]
            gpu_items = [(p, t, m) for p, t in pairs[:n_batched]]
            batches = [  # for "kernels only": N x H x W x 3 uint8 batches already on the device
                tuple(torch.from_numpy(np.stack([pair[j] for pair in pairs[i : i + args.batch]])).to(device)
                      for j in (0, 1))
                for i in range(0, n_batched, args.batch)
            ]
            region_masks = [m] * args.batch if m is not None else None
            got_cpu, got_torch = [], []

            def cpu_run():
                got_cpu[:] = cpu_path.score_many(cpu_items)

            def torch_run():
                got_torch[:] = torch_path.score_many(gpu_items)

            def kernels_run():
                for x, y in batches:
                    score_batch(x, y, region_masks and region_masks[: len(x)], device=device)

            # warm-up (imports, CUDA context, allocator), then interleaved repeats
            cpu_path.score_many(cpu_items[:1])
            torch_path.score_many(gpu_items[: args.batch])
            kernels_run()
            secs = medians(alternate([("cpu", cpu_run), ("torch", torch_run), ("kernels", kernels_run)],
                                     args.repeats, device))
            cpu_rate = row(size, f"cpu path{label}", len(cpu_items), secs["cpu"])
            torch_rate = row(size, f"torch {device}{label}", len(gpu_items), secs["torch"])
            kern_rate = row(size, f"torch {device} kernels only{label}", n_batched, secs["kernels"])
            del batches
            comparison.append({
                "size": size, "masks": with_masks, "device": device,
                "cpu_pairs_per_s": round(cpu_rate, 3), "torch_pairs_per_s": round(torch_rate, 3),
                "ratio": round(torch_rate / cpu_rate, 2),
                "kernels_only_pairs_per_s": round(kern_rate, 3),
            })
            d = max_diffs(got_torch[: len(got_cpu)], got_cpu)
            diffs[f"{size}{'_masks' if with_masks else ''}"] = {k: float(f"{v:.3g}") for k, v in d.items()}

        if lp is not None:
            preds01 = [p / 255.0 for p, _ in pairs[: args.n]]
            targets01 = [t / 255.0 for _, t in pairs[: args.n]]
            lp.score(preds01[:1], targets01[:1], batch_size=1)
            secs = medians(alternate(
                [("batched", lambda: lp.score(preds01, targets01, batch_size=args.lpips_batch)),
                 ("single", lambda: lp.score(preds01, targets01, batch_size=1))], args.repeats, device))
            row(size, f"lpips batch {args.lpips_batch}", args.n, secs["batched"])
            row(size, "lpips batch 1", args.n, secs["single"])
            if lp_cpu is not None:  # the same network on the CPU: do the values depend on the device?
                on_device = lp.score(preds01, targets01, batch_size=args.lpips_batch)
                on_cpu = lp_cpu.score(preds01, targets01, batch_size=args.lpips_batch)
                diffs[f"{size}_lpips_{device}_vs_cpu"] = {
                    "lpips": float(f"{max(abs(a - b) for a, b in zip(on_device, on_cpu)):.3g}")}
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        write_result(args.out, {"machine": machine, "results": rows, "comparison": comparison,
                                "max_abs_diff": diffs})

    print(f"{'size':>5}  {'what':<34} {'pairs':>5} {'seconds':>8} {'pairs/s':>9}")
    for r in rows:
        print(f"{r['size']:>5}  {r['what']:<34} {r['pairs']:>5} {r['seconds']:>8.3f} "
              f"{r['pairs_per_s']:>9.3f}")
    for c in comparison:
        print(f"{c['size']:>5}  torch {c['device']} / cpu path{' (masks)' if c['masks'] else ''}: "
              f"{c['ratio']}x")
    worst = max((v for k, d in diffs.items() if "lpips" not in k for v in d.values()), default=0.0)
    print(f"largest difference between the paths: {worst:.3g} (must be <= 1e-6)")
    worst_lpips = max((d["lpips"] for k, d in diffs.items() if "lpips" in k), default=0.0)
    if lp_cpu is not None:
        print(f"largest LPIPS difference, {device} against the CPU: {worst_lpips:.3g} (must be <= 1e-5)")
    print(machine)
    return 0 if worst <= 1e-6 and worst_lpips <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
