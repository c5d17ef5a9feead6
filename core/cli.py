"""Command line: the same operations as the app, headless. `--json` prints JSON on stdout."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from core.config import Settings
from core.errors import LabError
from core.types import MetricSettings


def _shard_arguments(p) -> None:
    p.add_argument("--progress-dir", type=Path, help="write each process's progress there as JSON "
                   "(what the app reads for a batch it started in the background)")
    p.add_argument("--num-shards", type=int, help="split the batch into N shards (array jobs; default: "
                   "SLURM_ARRAY_TASK_COUNT); under accelerate launch / torchrun each process takes its part too")
    p.add_argument("--shard-index", type=int, help="which shard this job does, 0..N-1 (default: SLURM_ARRAY_TASK_ID)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    parser.add_argument("--work", type=Path, help="work folder for caches (default: lab-work)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="count scenes, buildings and problems of an xBD folder")
    p.add_argument("--data", type=Path, required=True, help="the xBD folder")
    p.add_argument("--check", action="store_true",
                   help="also read every image and label in full, in parallel, and list each bad file")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("score", help="score a prediction against a target, or every run")
    _shard_arguments(p)
    p.add_argument("--pred", type=Path, help="the generated image (PNG)")
    p.add_argument("--target", type=Path, help="the real post-event image")
    p.add_argument("--labels", type=Path, help="the post-event label JSON, for per-class scores")
    p.add_argument("--runs", type=Path, help="score every run in this folder instead")
    p.add_argument("--data", type=Path, help="with --runs: the xBD folder holding the scenes")
    p.add_argument("--luma", action="store_true", help="PSNR and SSIM on luma, as the course did")
    p.add_argument("--size", type=int, help="evaluation size in px (default: the prediction's)")
    p.add_argument("--rescore", action="store_true",
                   help="with --runs: score runs again even when they hold scores under these settings")
    p.add_argument("--batch-size", type=int, default=16,
                   help="with --runs: runs scored together (lower it if the GPU runs out of memory)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("baseline", help="write persistence-baseline runs (post := pre) for every scene")
    _shard_arguments(p)
    p.add_argument("--data", type=Path, required=True, help="the xBD folder")
    p.add_argument("--runs", type=Path, required=True, help="the runs folder to write to")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("generate", help="generate post-event images from pre-event tiles")
    _shard_arguments(p)
    p.add_argument("--data", type=Path, required=True, help="the xBD folder")
    p.add_argument("--batch", type=Path, help="a JSONL file, one request a line; finished ones are skipped")
    p.add_argument("--backbone", help="backbone id (see `python -m core backbones`)")
    p.add_argument("--scene", help="scene id, e.g. hurricane-matthew_00000066")
    p.add_argument("--prompt", help="default: a template from the scene's disaster type")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--mode", choices=["img2img", "txt2img"], help="default: the backbone's")
    for name, kind in (("steps", int), ("guidance", float), ("strength", float), ("size", int),
                       ("seed", int), ("num-images", int)):
        p.add_argument(f"--{name}", type=kind, help="default: the backbone's")
    p.add_argument("--runs", type=Path, help="runs folder (default: <work>/runs)")
    p.add_argument("--models", type=Path, help="folder of local model folders, one per backbone id")
    p.add_argument("--attention", action="store_true",
                   help="record DAAM word maps into each run (UNet backbones, --num-images 1)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("backbones", help="list backbones and whether their weights are on disk")
    p.add_argument("--models", type=Path, help="folder of local model folders, one per backbone id")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("caption", help="machine-caption tiles into the caption store (resumes)")
    _shard_arguments(p)
    p.add_argument("--data", type=Path, required=True, help="the xBD folder")
    p.add_argument("--captioner", default="template", help="template, cogvlm2, cogvlm2-int4 or qwen2-vl")
    p.add_argument("--summarise", metavar="BACKBONE",
                   help="summarise with T5 and fit the summary to this backbone's 77 CLIP tokens")
    p.add_argument("--phase", choices=["pre", "post", "both"], default="both")
    p.add_argument("--disaster", help="only this disaster")
    p.add_argument("--split", help="only this split")
    p.add_argument("--damage", help="only scenes with this damage (e.g. destroyed, any-damage)")
    p.add_argument("--models", type=Path, help="folder of local model folders")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("captions", help="import or export captions")
    csub = p.add_subparsers(dest="captions_command", required=True)
    c = csub.add_parser("import", help="import the course's captions.jsonl")
    c.add_argument("file", type=Path)
    c.add_argument("--json", action="store_true", help="print JSON")
    c = csub.add_parser("export", help="export captions")
    c.add_argument("--format", choices=["course", "controlnet"], required=True,
                   help="course: captions.jsonl; controlnet: diffusers training metadata.jsonl")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--data", type=Path, help="controlnet: the xBD folder whose pairs to export")
    c.add_argument("--disaster", help="controlnet: only this disaster")
    c.add_argument("--split", help="controlnet: only this split")
    c.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("train", help="train a ControlNet on xBD pre/post pairs, or export them for diffusers")
    tsub = p.add_subparsers(dest="train_command", required=True)
    t = tsub.add_parser("controlnet", help="train (also under accelerate launch / torchrun; resumes)")
    _training_arguments(t)
    t.add_argument("--options", type=Path, help="read every setting from this JSON file (what the app writes)")
    t = tsub.add_parser("export", help="write the pairs as an image folder for diffusers' train_controlnet.py")
    _training_arguments(t, export=True)

    p = sub.add_parser("demo-scenes", help="regenerate the synthetic demo scenes")
    p.add_argument("--out", type=Path, required=True, help="folder to write them to")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("tiny-models", help="build the tiny RANDOM test backbones (noise: a no-GPU dry run)")
    p.add_argument("--models", type=Path, required=True, help="the models folder to write them into")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _training_arguments(t, *, export: bool = False) -> None:
    """The flags of `train controlnet` and `train export` (defaults: the authors' xBD recipe)."""
    from core.training.options import BASES, LR_SCHEDULERS, PRECISIONS, TASKS, TrainOptions

    d = TrainOptions(data=Path("."), out=Path("."))
    t.add_argument("--data", type=Path, help="the xBD folder (any layout the index reads)")
    t.add_argument("--out", type=Path, help="output folder (the trained ControlNet, or the exported pairs)")
    t.add_argument("--base", choices=BASES, default=d.base, help="base model (default sd21)")
    t.add_argument("--base-model", help="the base's folder or hub id (default: where its backbone loads from)")
    t.add_argument("--task", choices=TASKS, default=d.task, help="future: pre → post (default); past: post → pre")
    for name in ("split", "disaster", "disaster-type"):
        t.add_argument(f"--{name}", help=f"only scenes of this {name.replace('-', ' ')}")
    t.add_argument("--resolution", type=int, default=d.resolution, help="training size in px (default 512)")
    t.add_argument("--json", action="store_true", help="print JSON")
    if export:
        return
    t.add_argument("--val-split", help="validate on this split's scenes (default: a fixed sample held out)")
    t.add_argument("--val-count", type=int, default=d.val_count, help="validation scenes (default 4)")
    t.add_argument("--augment", action="store_true", help="random crops of larger tiles and flips")
    numbers = (("learning-rate", float), ("lr-warmup-steps", int), ("batch-size", int), ("grad-accum", int),
               ("max-steps", int), ("max-grad-norm", float), ("metadata-dropout", float),
               ("prompt-dropout", float), ("seed", int), ("checkpoint-every", int), ("keep-checkpoints", int),
               ("validate-every", int), ("validation-steps", int), ("num-workers", int))
    for name, kind in numbers:
        t.add_argument(f"--{name}", type=kind, default=getattr(d, name.replace("-", "_")),
                       help=f"default {getattr(d, name.replace('-', '_'))}")
    t.add_argument("--lr-scheduler", choices=LR_SCHEDULERS, default=d.lr_scheduler)
    t.add_argument("--mixed-precision", choices=PRECISIONS, default=d.mixed_precision,
                   help="the frozen models' precision on a GPU (the ControlNet trains in fp32)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="less GPU memory, ~20%% slower")
    t.add_argument("--use-8bit-adam", action="store_true", help="8-bit AdamW (bitsandbytes, CUDA)")
    t.add_argument("--resume", help="latest, auto (latest if there is one, else start: for requeued jobs), "
                                    "or a checkpoint-N folder")
    t.add_argument("--models", type=Path, help="folder of local model folders, one per backbone id")


def _training_options(args):
    """TrainOptions from the flags (or from --options FILE)."""
    import dataclasses

    from core.training.options import TrainOptions

    if getattr(args, "options", None):
        try:
            return TrainOptions.from_json(json.loads(args.options.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise LabError(f"Could not read the training options {args.options}: {err}") from err
    if args.data is None or args.out is None:
        raise LabError("Give --data (the xBD folder) and --out (the output folder).")
    known = {f.name for f in dataclasses.fields(TrainOptions)}
    return TrainOptions(**{k: v for k, v in vars(args).items() if k in known and v is not None})


def cmd_train(args) -> dict:
    options = _training_options(args)
    lab = _lab(args, models_dir=getattr(args, "models", None))
    if args.train_command == "export":
        return lab.training.export_upstream(options, options.out)
    import signal

    from core.training.loop import STOP_FILE

    if not getattr(args, "options", None):  # started by hand: a STOP left by an earlier run is stale
        (Path(options.out) / STOP_FILE).unlink(missing_ok=True)  # (the app clears it when it starts one)
    asked = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: asked.append(True))  # checkpoint, then stop
    outcome = lab.training.train(options, on_event=_print_training_event, should_stop=lambda: bool(asked))
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    means = (outcome.validation or {}).get("mean") or {}
    baseline = (outcome.validation or {}).get("baseline_mean") or {}
    return {"status": outcome.status, "step": outcome.step, "out": str(outcome.out),
            "validation": {m: means[m]["mean"] for m in ("mse", "psnr", "ssim", "lpips") if m in means},
            "baseline": {m: baseline[m]["mean"] for m in ("mse", "psnr", "ssim", "lpips") if m in baseline}}


def _print_training_event(event: dict) -> None:
    kind = event["event"]
    if kind == "step":
        print(f"step {event['step']}/{event['max_steps']} loss {event['loss']:.4f}", file=sys.stderr, flush=True)
    elif kind == "start":
        print(f"training on {event['pairs']} pairs ({event['skipped']} skipped, {event['validation']} for "
              f"validation) in {event['processes']} process(es)", file=sys.stderr, flush=True)
    else:
        print(f"{kind} at step {event['step']}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit code (2 for a user error, 1 when
    `index --check` found bad files)."""
    args = build_parser().parse_args(argv)
    from core.distributed import leave_process_group

    try:
        result = COMMANDS[args.command](args)
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    leave_process_group()  # under accelerate launch / torchrun: every process is done with the others
    if result is None:  # another process of a multi-process run: the main one reports
        return 0
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(_as_text(result))
    return _exit_code(args, result)


def _exit_code(args, result) -> int:
    """0, or 1 when `index --check` found a bad file (so a script or CI step can stop on it)."""
    return 1 if args.command == "index" and args.check and result["problems"] else 0


def _lab(args, **overrides):
    from core.lab import Lab

    lab = Lab(Settings.load(work_dir=args.work, **overrides))
    lab.runs.clean_leftovers()  # what a killed run left behind
    return lab


def _shard(args):
    from core.distributed import current_shard

    return current_shard(getattr(args, "num_shards", None), getattr(args, "shard_index", None))


def _progress(args, shard, done: int, total: int, what: str) -> None:
    """One progress line on stderr, and the process's progress file for a background job."""
    from core.jobs import write_progress

    shard.log(f"[{done}/{total}] {what}")
    write_progress(getattr(args, "progress_dir", None), shard, done, total, what)


def _summary(shard, result: dict) -> dict | None:
    """The result to print: this process's, or on the main process of a process group the
    totals with one entry per process (None on the other processes)."""
    gathered = shard.gather({"process": shard.label or "all", **result})
    if gathered is None:
        return None
    if len(gathered) == 1:
        return {**result, **({"shard": shard.label} if shard.parallel else {})}
    totals = {k: sum(g[k] for g in gathered) for k, v in result.items() if isinstance(v, int)}
    lists = {k: [x for g in gathered for x in g[k]] for k, v in result.items() if isinstance(v, list)}
    return {**totals, **lists, "processes": [{k: v for k, v in g.items() if not isinstance(v, list)}
                                             for g in gathered]}


def cmd_index(args) -> dict:
    index = _lab(args).datasets.open(args.data)
    # with --check every bad file becomes one of the problems listed
    check = index.check_files(progress=_print_checked) if args.check else None
    counts = index.counts()
    if check is not None:
        counts["checked_files"] = check.files
    counts["problems"] = [{"path": str(p.path), "message": p.message} for p in index.problems]
    return counts


def _print_checked(done: int, total: int) -> None:
    print(f"  checked {done}/{total} files", file=sys.stderr, end="\r" if done != total else "\n")


def cmd_score(args) -> dict | list:
    settings = MetricSettings(luma=args.luma, size=args.size)
    if args.runs:
        return _score_runs(args, settings)
    if not (args.pred and args.target):
        raise LabError("score needs --pred and --target, or --runs and --data.")
    from core.data.images import load_rgb
    from core.metrics.scoring import scores_to_dict

    lab = _lab(args)
    scores = lab.evaluation.score_images(load_rgb(args.pred), load_rgb(args.target),
                              metric_settings=settings, label_path=args.labels)
    return scores_to_dict(scores)


def _score_runs(args, settings: MetricSettings) -> list[dict] | None:
    """Every run of the folder against its scene's post tile; runs already scored under
    these settings keep their saved scores (so a stopped scoring resumes), unless --rescore."""
    if not args.data:
        raise LabError("score --runs needs --data: the xBD folder holding the runs' scenes.")
    if args.batch_size < 1:
        raise LabError("--batch-size must be at least 1.")
    lab = _lab(args, runs_dir=args.runs)
    index = lab.datasets.open(args.data)
    shard = _shard(args)
    runs = shard.take(sorted(lab.runs.list(), key=lambda r: r.run_id))
    problems: list = []
    kept: list = []
    entries = lab.evaluation.scores_of(runs, index, settings, rescore=args.rescore, batch_size=args.batch_size,
                                       problems=problems, kept=kept,
                                       progress=lambda done, total: _progress(args, shard, done, total, "runs scored"))
    why = {run.run_id: message for run, message in problems}
    out = [{"run": run.run_id, "backbone": run.record.get("backbone"), "scene": run.record.get("scene_id"),
            **(entry if entry is not None else {"error": why.get(run.run_id, "not scored")})}
           for run, entry in zip(runs, entries)]
    counts = {"runs": len(runs), "scored": len(runs) - len(kept) - len(problems), "kept": len(kept),
              "failed": len(problems)}
    summary = _summary(shard, counts)
    if summary is not None:
        shard.log(_score_summary(summary))
    gathered = shard.gather(out)
    return None if gathered is None else [entry for part in gathered for entry in part]


def _score_summary(summary: dict) -> str:
    """One line: runs scored now, kept (saved before), failed; per process when several."""
    def line(c: dict) -> str:
        return f"{c['scored']} scored, {c['kept']} kept their saved scores, {c['failed']} could not be scored"

    processes = summary.get("processes")
    if not processes:
        return line(summary)
    return line(summary) + " (" + "; ".join(f"{p['process']}: {line(p)}" for p in processes) + ")"


def cmd_baseline(args) -> dict:
    lab = _lab(args, runs_dir=args.runs)
    index = lab.datasets.open(args.data)
    shard = _shard(args)
    scenes = shard.take([s for s in index.scenes if s.pre_image and s.post_image])
    runs = lab.evaluation.write_baselines(index, scenes)
    result = _summary(shard, {"scenes": len(scenes), "written": len(runs), "runs": [r.run_id for r in runs]})
    return None if result is None else {**result, "folder": str(args.runs)}


def cmd_tiny_models(args) -> dict:
    from core.backends.tiny_models import build_all

    print("Building tiny RANDOM backbones: their pictures are noise, they check the plumbing only.",
          file=sys.stderr)
    folders = build_all(args.models)
    return {"built": sorted(folders), "folder": str(args.models),
            "use": f"XBDLAB_TEST_BACKBONES=1 python app.py --models {args.models}"}


def cmd_demo_scenes(args) -> dict:
    from core.data.synthetic import write_demo_scenes

    files = write_demo_scenes(args.out)
    return {"written": len(files), "folder": str(args.out)}


def cmd_generate(args) -> dict:
    lab = _lab(args, runs_dir=args.runs, models_dir=args.models)
    index = lab.datasets.open(args.data)
    if args.batch:
        from core.generation.service import read_batch

        lines = read_batch(args.batch)
    else:
        if not (args.backbone and args.scene):
            raise LabError("generate needs --backbone and --scene, or --batch FILE.jsonl.")
        fields = {"backbone": args.backbone, "scene_id": args.scene, "prompt": args.prompt,
                  "negative_prompt": args.negative, "mode": args.mode, "steps": args.steps,
                  "guidance": args.guidance, "strength": args.strength, "size": args.size,
                  "seed": args.seed, "num_images": args.num_images}
        lines = [{k: v for k, v in fields.items() if v is not None}]
    shard = _shard(args)
    result = lab.generation.generate_batch(lines, index, attention=args.attention, shard=shard,
                                           on_start=lambda i, n, r: _progress(args, shard, i - 1, n,
                                                                               f"{r.backbone} on {r.scene_id}"),
                                           on_step=None if shard.parallel else _print_step)
    _progress(args, shard, result["images"], result["images"], "done")
    if args.attention:
        _print_shares(lab, result["runs"])
    return _summary(shard, result)


def _print_shares(lab, run_ids: list[str]) -> None:
    """Each run's saved attention shares (attention/shares.json) as a short table on stderr:
    per word, its share of attention inside each region; the pixels row is each region's
    share of the image ("-": the region has no pixels)."""
    from core.attention.analysis import SHARES_FILE, load_shares
    from core.types import MASK_REGIONS

    for run_id in run_ids:
        folder = lab.runs.open(run_id).path / "attention"
        shares = load_shares(folder)
        if not shares:
            print(f"{run_id}: no attention shares (no post-event label, or no words)", file=sys.stderr)
            continue
        pixels = {r: p for r, (_, p) in next(iter(shares.values())).items()}
        width = max(len("(pixels)"), *(len(w) for w in shares))
        print(f"{run_id}: share of each word's attention per region ({folder / SHARES_FILE})", file=sys.stderr)
        rows = [("word", {r: r for r in MASK_REGIONS}), ("(pixels)", {r: f"{p:.1%}" for r, p in pixels.items()})]
        rows += [(w, {r: f"{a:.1%}" if pixels[r] > 0 else "-" for r, (a, _) in by.items()}) for w, by in shares.items()]
        for name, cells in rows:
            print("  " + f"{name:<{width}}" + "".join(f"  {cells[r]:>{len(r)}}" for r in MASK_REGIONS),
                  file=sys.stderr)


def _print_step(step: int, total: int | None, **_) -> None:
    print(f"  step {step}/{total or '?'}", file=sys.stderr, end="\r" if step != total else "\n")


def cmd_backbones(args) -> dict:
    lab = _lab(args, models_dir=args.models)
    out = {}
    for spec in lab.backbones.specs():
        try:
            state = lab.backbones.readiness(spec.id)
            out[spec.id] = {"label": spec.label, "ready": state.ready, "where": state.where,
                            "size_bytes": state.size_bytes, "missing": state.missing}
        except LabError as err:
            out[spec.id] = {"label": spec.label, "ready": False, "missing": str(err)}
    return out


def cmd_caption(args) -> dict:
    lab = _lab(args, models_dir=args.models)
    index = lab.datasets.open(args.data)
    scenes = index.filter(disaster=args.disaster, split=args.split, damage=args.damage)
    phases = ("pre", "post") if args.phase == "both" else (args.phase,)
    shard = _shard(args)
    report = lab.captions.caption_scenes(index, scenes, args.captioner, phases=phases, summarise_for=args.summarise,
                                         shard=shard,
                                         progress=lambda done, total, name: _progress(args, shard, done, total, name))
    result = _summary(shard, {"captioned": len(report.captioned), "skipped": len(report.skipped),
                              "failed": [list(f) if isinstance(f, tuple) else f for f in report.failed]})
    return None if result is None else {"summary": report.summary() if not shard.parallel else
                                        f"{result['captioned']} captioned, {result['skipped']} already done", **result}


def cmd_captions(args) -> dict:
    lab = _lab(args)
    if args.captions_command == "import":
        report = lab.captions.import_course(args.file)
        return {"summary": report.summary(), "bad_lines": [{"line": n, "reason": r} for n, r in report.bad]}
    if args.format == "course":
        return {"written": lab.captions.export_course(args.out), "file": str(args.out)}
    if not args.data:
        raise LabError("--format controlnet needs --data: the xBD folder holding the image pairs.")
    index = lab.datasets.open(args.data)
    scenes = index.filter(disaster=args.disaster, split=args.split)
    written, skipped = lab.captions.export_controlnet(args.out, index, scenes)
    return {"written": written, "skipped": skipped, "file": str(args.out)}


COMMANDS = {"index": cmd_index, "caption": cmd_caption, "captions": cmd_captions, "score": cmd_score, "baseline": cmd_baseline,
            "generate": cmd_generate, "backbones": cmd_backbones, "demo-scenes": cmd_demo_scenes,
            "tiny-models": cmd_tiny_models, "train": cmd_train}


def _as_text(result) -> str:
    """A readable rendering of a command's JSON result."""
    if isinstance(result, list):
        return "\n\n".join(_as_text(item) for item in result) or "(nothing)"
    lines = []
    for key, value in result.items():
        if isinstance(value, dict):
            lines.append(f"{key}:")
            lines.extend(f"  {k}: {_fmt(v)}" for k, v in value.items())
        elif isinstance(value, list):
            lines.append(f"{key}: {len(value)}")
            lines.extend(f"  - {_fmt(v)}" for v in value)
        else:
            lines.append(f"{key}: {_fmt(value)}")
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.4f}"
    if value == "inf":
        return "∞"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)
