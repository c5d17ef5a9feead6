"""Benchmark: the caption store at the size of the full xBD release.

Generates a course-format ``captions.jsonl`` with 22,000 records (the 19 disaster names,
pre and post images; a ~700-character "long" caption and a ~200-character summary each,
like CogVLM2 + T5), then, in one run:

- import into an empty store, import the same file again (nothing new), export it back
- durable single saves: `save_edit` one transaction per edit, as the app's autosave does
  (WAL + synchronous=FULL, so every save waits for the disk), with `expected_version`
- for reference, the same number of edits in ONE transaction (what durability costs)

Prints the figures and writes bench/results/captions_store.json. Run:

    .venv/bin/python bench/bench_captions_store.py [--records 22000] [--edits 1000] [--dir PATH]
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from common import arg_parser, machine_info, now_utc, write_result

from core.captions.formats import export_course_jsonl, import_course_jsonl
from core.captions.store import CaptionStore

DISASTERS = ["guatemala-volcano", "hurricane-florence", "hurricane-harvey", "hurricane-matthew",
             "hurricane-michael", "mexico-earthquake", "midwest-flooding", "palu-tsunami",
             "santa-rosa-wildfire", "socal-fire", "joplin-tornado", "lower-puna-volcano", "moore-tornado",
             "nepal-flooding", "pinery-bushfire", "portugal-wildfire", "sunda-tsunami",
             "tuscaloosa-tornado", "woolsey-fire"]
WORDS = ("the satellite image shows damaged buildings along flooded streets with debris scattered "
         "across the residential area while roads remain partially blocked and vegetation is "
         "submerged near the river banks emergency teams should prioritise access").split()


def _text(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out).capitalize() + "."


def generate(path: Path, records: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(records):
            d = DISASTERS[i % len(DISASTERS)]
            phase = "pre" if (i // len(DISASTERS)) % 2 == 0 else "post"
            tile = (i // (2 * len(DISASTERS)))
            fh.write(json.dumps({"disaster": d, "image": f"{d}_{tile:08d}_{phase}_disaster.png",
                                 "caption": _text(rng, 700), "caption_short": _text(rng, 200)}) + "\n")
    return path.stat().st_size


def main(argv: list[str] | None = None) -> dict:
    ap = arg_parser(__doc__, "captions_store.json")
    ap.add_argument("--records", type=int, default=22_000)
    ap.add_argument("--edits", type=int, default=1000)
    ap.add_argument("--dir", type=Path, default=None, help="where to work (default: a temp dir)")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-captions-", dir=args.dir))
    try:
        src = work / "captions.jsonl"
        t = time.perf_counter()
        size = generate(src, args.records)
        gen_s = time.perf_counter() - t
        print(f"generated {args.records} records ({size / 1e6:.1f} MB) in {gen_s:.2f} s")

        store = CaptionStore(work / "captions.sqlite")
        t = time.perf_counter()
        rep = import_course_jsonl(store, src)
        import_s = time.perf_counter() - t
        t = time.perf_counter()
        rep2 = import_course_jsonl(store, src)
        reimport_s = time.perf_counter() - t
        t = time.perf_counter()
        exported = export_course_jsonl(store, work / "export.jsonl")
        export_s = time.perf_counter() - t
        print(f"import {import_s:.2f} s ({rep.added} added, {len(rep.bad)} bad), re-import {reimport_s:.2f} s "
              f"({rep2.unchanged} unchanged), export {export_s:.2f} s ({exported} lines)")

        images = [r.image for r in store.list()]
        rng = random.Random(1)
        picks = [rng.choice(images) for _ in range(args.edits)]
        versions = {}
        t = time.perf_counter()
        for i, image in enumerate(picks):
            rec = store.save_edit(image, f"edit {i} of {image}", author="bench",
                                  expected_version=versions.get(image))
            versions[image] = rec.version
        durable_s = time.perf_counter() - t
        durable_eps = args.edits / durable_s

        # reference: the same edits in one transaction, straight SQL (no per-edit commit)
        conn = sqlite3.connect(work / "captions.sqlite", isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for i, image in enumerate(picks):
            conn.execute("UPDATE captions SET text=?, version=version+1 WHERE image=?", (f"batch {i}", image))
            conn.execute("INSERT INTO history(image, text, status, kind, author, time) VALUES (?,?,?,?,?,?)",
                         (image, f"batch {i}", "edited", "edit", "bench", "t"))
        conn.execute("COMMIT")
        batch_s = time.perf_counter() - t
        conn.close()
        store.close()
        db_mb = sum(p.stat().st_size for p in work.glob("captions.sqlite*")) / 1e6
        print(f"durable single saves: {durable_eps:.0f} edits/s ({durable_s * 1000 / args.edits:.2f} ms each); "
              f"one transaction for all: {args.edits / batch_s:.0f} edits/s; store {db_mb:.1f} MB")

        result = {
            "what": "caption store: import/export of a full-size course captions.jsonl and durable single saves",
            "records": args.records,
            "file_mb": round(size / 1e6, 2),
            "import_s": round(import_s, 3),
            "reimport_same_file_s": round(reimport_s, 3),
            "export_s": round(export_s, 3),
            "import_added": rep.added,
            "reimport_unchanged": rep2.unchanged,
            "durable_edits": {"edits": args.edits, "seconds": round(durable_s, 3),
                              "edits_per_s": round(durable_eps, 1),
                              "ms_per_edit": round(durable_s * 1000 / args.edits, 3),
                              "settings": "WAL, synchronous=FULL, one BEGIN IMMEDIATE transaction per save_edit, "
                                          "expected_version checked"},
            "reference_one_transaction": {"edits_per_s": round(args.edits / batch_s, 1),
                                          "note": "raw SQL, all edits in one commit: not durable per edit"},
            "store_mb": round(db_mb, 2),
            "sqlite": sqlite3.sqlite_version,
            "notes": "single run; the disk's fsync latency dominates durable saves",
            "machine": machine_info(work_dir=str(work.parent)),
            "date": now_utc(),
        }
        write_result(args.out, result)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
