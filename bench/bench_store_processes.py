"""Caption-store writes from several processes: each process writing its own rows into the
one SQLite file (WAL, busy timeout: what a multi-process `caption` does today) against the
processes handing their rows to one writer (gathered to rank 0), in one run.

Run:  python bench/bench_store_processes.py [--processes 4] [--rows 300]
Each of `--processes` worker processes makes `--rows` machine captions (the text a
captioner would return; no model). "each writes": every worker calls
`CaptionStore.put_machine` itself as it goes, all at once. "gathered": the workers only
make the rows and the parent writes them all. Reports the wall time, rows stored and
errors (a "database is locked" that outlived the busy timeout would show up here). Writes
bench/results/store_processes.json. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from common import arg_parser, machine_info, write_result


def rows_for(worker: int, rows: int) -> list[dict]:
    return [{"image": f"bench-{worker:02d}_{i:06d}_post_disaster.png", "scene_id": f"bench-{worker:02d}_{i:06d}",
             "phase": "post", "disaster": "bench", "caption": f"caption {i} of worker {worker} " * 8,
             "model": "bench", "prompt": "Describe this post-event image."} for i in range(rows)]


def write_own(db: str, worker: int, rows: int, errors) -> None:
    from core.captions.store import CaptionStore

    store = CaptionStore(db)
    for row in rows_for(worker, rows):
        try:
            store.put_machine(row.pop("image"), **row)
        except Exception:  # counted: any failure to write is what this measures
            errors.value += 1


def make_only(worker: int, rows: int) -> list[dict]:
    return rows_for(worker, rows)


def main() -> int:
    ap = arg_parser(__doc__, "store_processes.json")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from core.captions.store import CaptionStore

    ctx = mp.get_context("spawn")
    times = {"each writes": [], "gathered": []}
    stored, errors_seen = {}, {}
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for repeat in range(args.repeats):
            db = str(Path(tmp) / f"own-{repeat}.sqlite")
            CaptionStore(db)  # created before the workers start, as the app does
            errors = ctx.Value("i", 0)
            start = time.perf_counter()
            procs = [ctx.Process(target=write_own, args=(db, w, args.rows, errors)) for w in range(args.processes)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            times["each writes"].append(time.perf_counter() - start)
            stored["each writes"] = _count(db)
            errors_seen["each writes"] = errors.value

            db = str(Path(tmp) / f"gathered-{repeat}.sqlite")
            store = CaptionStore(db)
            start = time.perf_counter()
            with ctx.Pool(args.processes) as pool:
                parts = pool.starmap(make_only, [(w, args.rows) for w in range(args.processes)])
            for part in parts:
                for row in part:
                    store.put_machine(row.pop("image"), **row)
            times["gathered"].append(time.perf_counter() - start)
            stored["gathered"] = _count(db)
            errors_seen["gathered"] = 0
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {"machine": machine_info(), "processes": args.processes, "rows_per_process": args.rows,
              "seconds": times, "median_s": medians, "rows_stored": stored, "errors": errors_seen}
    write_result(args.out, result)
    for k in times:
        print(f"{k:<12} {medians[k]:6.2f} s  {stored[k]} rows stored, {errors_seen[k]} errors")
    return 0


def _count(db: str) -> int:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0]


if __name__ == "__main__":
    raise SystemExit(main())
