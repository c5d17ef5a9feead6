"""Benchmark: open a dataset the size of the full xBD release, lazily vs eagerly.

Generates in a temporary folder the official layout with 22,068 image names (train 2,799
pairs, test 933, tier3 6,369, hold 933, the real disaster names) and one real-format label
per image (buildings per label drawn from 0..200, about 76 on average like xBD; bytes are
copied from a few templates so generation is fast). Then, in the same run, it times:

- lazy: `index_dataset` (file names only) + filtering by disaster and by split
- naive: walking the tree and parsing every label with `load_label` at open, then the
  same filters on the parsed metadata
- extra: the first damage filter (light label summaries, written to the cache) and the same
  filter after re-opening with the warm summary cache

Prints the figures and writes bench/results/index.json. Run:

    .venv/bin/python bench/bench_index.py [--keep] [--dir PATH]
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import arg_parser, machine_info, now_utc, write_result

from core.data import labels as L
from core.data.index import index_dataset
from core.data.names import parse_name
from tests.xbd_trees import template_label_bytes, tiny_png_bytes

SPLIT_PAIRS = {"train": 2799, "test": 933, "tier3": 6369, "hold": 933}
TIER1 = ["guatemala-volcano", "hurricane-florence", "hurricane-harvey", "hurricane-matthew",
         "hurricane-michael", "mexico-earthquake", "midwest-flooding", "palu-tsunami",
         "santa-rosa-wildfire", "socal-fire"]
TIER3 = ["joplin-tornado", "lower-puna-volcano", "moore-tornado", "nepal-flooding", "pinery-bushfire",
         "portugal-wildfire", "sunda-tsunami", "tuscaloosa-tornado", "woolsey-fire"]
BUILDINGS_PER_TEMPLATE = (0, 20, 60, 100, 200)  # mean 76


def generate(root: Path) -> dict:
    png = tiny_png_bytes()
    templates = {
        (d, phase, k): template_label_bytes(d, "00000000", phase, n, seed=k)
        for d in TIER1 + TIER3 for phase in ("pre", "post")
        for k, n in enumerate(BUILDINGS_PER_TEMPLATE)
    }
    next_id = {d: 0 for d in TIER1 + TIER3}
    n_images = n_labels = label_bytes = 0
    for split, pairs in SPLIT_PAIRS.items():
        disasters = TIER3 if split == "tier3" else TIER1
        images, labels = root / split / "images", root / split / "labels"
        images.mkdir(parents=True)
        labels.mkdir(parents=True)
        for i in range(pairs):
            d = disasters[i % len(disasters)]
            tile = f"{next_id[d]:08d}"
            next_id[d] += 1
            k = i % len(BUILDINGS_PER_TEMPLATE)
            for phase in ("pre", "post"):
                stem = f"{d}_{tile}_{phase}_disaster"
                (images / f"{stem}.png").write_bytes(png)
                data = templates[(d, phase, k)]
                (labels / f"{stem}.json").write_bytes(data)
                n_images += 1
                n_labels += 1
                label_bytes += len(data)
    return {"images": n_images, "labels": n_labels, "label_mb": round(label_bytes / 1e6, 1)}


def lazy_open(root: Path, disaster: str, split: str) -> tuple[dict, int, int]:
    t0 = time.perf_counter()
    index = index_dataset(root)
    t1 = time.perf_counter()
    by_disaster = index.filter(disaster=disaster)
    by_split = index.filter(split=split)
    t2 = time.perf_counter()
    return {"index_s": t1 - t0, "filter_s": t2 - t1, "total_s": t2 - t0}, len(by_disaster), len(by_split)


def naive_open(root: Path, disaster: str, split: str) -> tuple[dict, int, int]:
    """What an eager implementation does: parse every label while opening."""
    L.clear_label_cache()
    t0 = time.perf_counter()
    parsed = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = parse_name(name)
            if p is not None and p.kind == "label":
                path = Path(folder) / name
                parsed.append((path.parent.parent.name, p, L.load_label(path)))
    t1 = time.perf_counter()
    by_disaster = {p.tile_id for s, p, lab in parsed if lab.metadata.disaster == disaster}
    by_split = {(p.disaster, p.tile_id) for s, p, lab in parsed if s == split}
    t2 = time.perf_counter()
    L.clear_label_cache()
    return {"index_s": t1 - t0, "filter_s": t2 - t1, "total_s": t2 - t0}, len(by_disaster), len(by_split)


def main(argv=None) -> dict:
    ap = arg_parser(__doc__, "index.json")
    ap.add_argument("--dir", type=Path, default=None, help="where to generate (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated tree")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="xbd-bench-", dir=args.dir))
    root, cache = work / "xbd", work / "cache"
    try:
        t0 = time.perf_counter()
        sizes = generate(root)
        gen_s = time.perf_counter() - t0
        print(f"generated {sizes['images']} images + {sizes['labels']} labels "
              f"({sizes['label_mb']} MB of labels) in {gen_s:.1f} s under {root}")

        disaster, split = "hurricane-michael", "tier3"
        lazy_runs = [lazy_open(root, disaster, split) for _ in range(3)]
        lazy = {k: statistics.median(r[0][k] for r in lazy_runs) for k in lazy_runs[0][0]}
        n_dis, n_split = lazy_runs[0][1], lazy_runs[0][2]
        print(f"lazy : index {lazy['index_s']:.3f} s + filters {lazy['filter_s'] * 1000:.1f} ms "
              f"(median of 3) -> {n_dis} {disaster} scenes, {n_split} {split} scenes")

        naive, nn_dis, nn_split = naive_open(root, disaster, split)
        print(f"naive: parse all labels {naive['index_s']:.2f} s + filters {naive['filter_s'] * 1000:.1f} ms")
        assert (nn_dis, nn_split) == (n_dis, n_split), "lazy and naive disagree"
        ratio = naive["total_s"] / lazy["total_s"]
        print(f"naive / lazy = {ratio:.0f}x")

        L.clear_label_cache()
        t0 = time.perf_counter()
        index = index_dataset(root, cache_dir=cache)
        destroyed = index.filter(damage="destroyed")
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = index_dataset(root, cache_dir=cache)
        destroyed2 = again.filter(damage="destroyed")
        warm = time.perf_counter() - t0
        assert len(destroyed) == len(destroyed2)
        print(f"damage filter (open + filter, {len(destroyed)} scenes with destroyed buildings): "
              f"cold {cold:.2f} s (light summaries, cache written), warm cache {warm:.2f} s")

        result = {
            "what": "open the full-release-sized tree: lazy index_dataset + filters vs parse-every-label",
            "tree": {**sizes, "splits": SPLIT_PAIRS, "generate_s": round(gen_s, 2),
                     "buildings_per_label": list(BUILDINGS_PER_TEMPLATE)},
            "lazy": {k: round(v, 4) for k, v in lazy.items()} | {"runs": 3, "statistic": "median"},
            "naive": {k: round(v, 4) for k, v in naive.items()} | {"runs": 1},
            "ratio_naive_over_lazy": round(ratio, 1),
            "damage_filter": {"cold_s": round(cold, 3), "warm_cache_s": round(warm, 3),
                              "matches": len(destroyed)},
            "filters": {"disaster": disaster, "disaster_matches": n_dis, "split": split, "split_matches": n_split},
            "notes": "files were just written, so the OS page cache is warm for both approaches",
            "machine": machine_info(),
            "date": now_utc(),
        }
        write_result(args.out, result)
        return result
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
