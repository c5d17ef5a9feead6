"""Evaluate tab: score runs of a scene against the real post-event tile, and a leaderboard."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import gradio as gr

from core.types import MASK_REGIONS, MetricSettings
from ui.common import ARROWS, GPU, INTERNAL, bind, fmt, user_errors

SIZES = ["prediction's size", "256", "512", "1024"]
SCORE_HEADERS = ["run", "backbone", "region", "pixels"] + [f"{m.upper()} {ARROWS[m]}" for m in ARROWS]
BOARD_HEADERS = ["backbone", "runs", "scenes", "MSE ↓", "PSNR ↑", "PSNR = ∞", "SSIM ↑", "LPIPS ↓",
                 "baseline PSNR (same scenes)", "baseline SSIM (same scenes)"]


def build_evaluate(lab, demo: gr.Blocks, folder: gr.State) -> gr.Dropdown:
    """The Evaluate tab. `folder` holds the data folder open in Browse: both tabs use the
    same dataset. Returns the scene dropdown, so Browse can send a scene here."""
    with gr.Tab("Evaluate", id="evaluate"):
        with gr.Row():
            scene = gr.Dropdown([], label="Scene", scale=3, elem_id="eval-scene", allow_custom_value=True)
            baseline_btn = gr.Button("Add persistence baseline (post := pre)", scale=1)
        with gr.Row():
            runs = gr.CheckboxGroup([], label="Runs of this scene to score", scale=3, elem_id="eval-runs")
            upload = gr.File(label="Upload predictions (PNG) for this scene", file_count="multiple",
                             file_types=["image"], scale=2)
        with gr.Row():
            luma = gr.Checkbox(label="PSNR and SSIM on luma (Y) only, the course's way")
            size = gr.Dropdown(SIZES, value=SIZES[0], label="Evaluation size (px)")
            score_btn = gr.Button("Score selected runs", variant="primary", elem_id="eval-score")
        settings_md = gr.Markdown(_settings_text(lab, MetricSettings()))
        table = gr.Dataframe(headers=SCORE_HEADERS, label="Scores (whole image and per damage class)",
                             interactive=False, elem_id="eval-table")
        notes = gr.Markdown()
        table_csv = gr.DownloadButton("Download scores (CSV)", visible=False)
        with gr.Row():
            inspect = gr.Dropdown([], label="Look at run", scale=1, allow_custom_value=True)
        compare = gr.ImageSlider(label="Prediction ↔ real post-event", format="png", interactive=False,
                                 max_height=700, elem_id="eval-compare")
        with gr.Row():
            err = gr.Image(label="Error |prediction − truth| (blue 0 → red ≥ 0.5)", format="png",
                           interactive=False)
            ssim_img = gr.Image(label="SSIM map (blue ≤ 0 → red 1)", format="png", interactive=False)
        gr.Markdown("### Leaderboard\nEvery run of the open dataset, grouped by backbone, scored "
                    "with the settings above. The persistence baseline (nothing changed) comes first: "
                    "a model is only useful if it beats it on the same scenes.")
        board_btn = gr.Button("Update leaderboard", elem_id="eval-board-btn")
        board = gr.Dataframe(headers=BOARD_HEADERS, interactive=False, elem_id="eval-board")
        board_csv = gr.DownloadButton("Download leaderboard (CSV)", visible=False)

    gr.on([demo.load, folder.change], bind(scenes_of, lab), folder, scene, **INTERNAL)
    gr.on([scene.change], bind(runs_of, lab), scene, runs, api_name="list_runs")
    baseline_btn.click(bind(add_baseline, lab), [folder, scene, runs], runs, api_name="add_baseline")
    upload.upload(bind(add_uploads, lab), [folder, scene, upload, runs], runs, api_name="add_uploads")
    score_btn.click(bind(score, lab), [folder, scene, runs, luma, size],
                    [table, notes, table_csv, inspect, settings_md], api_name="score_runs", **GPU)
    gr.on([inspect.change], bind(look, lab), [folder, inspect, luma, size], [compare, err, ssim_img],
          api_name="look_at_run")
    board_btn.click(bind(leaderboard, lab), [folder, luma, size], [board, board_csv], api_name="leaderboard", **GPU)
    return scene


# -- handlers: plain functions of the Lab and widget values ---------------------------------
@user_errors
def scenes_of(lab, path):
    """The scene dropdown for the folder at `path`: every scene with a post-event tile to
    score against, the first one chosen."""
    ids = [s.scene_id for s in lab.datasets.open(path).scenes if s.post_image is not None]
    return gr.Dropdown(ids, value=ids[0] if ids else None, label="Scene")


def runs_of(lab, scene_id, keep=None):
    """The run checkboxes of `scene_id`, labelled by backbone and time; `keep` (run ids)
    stays ticked, or every run when it is not given."""
    choices = [(_run_label(r), r.run_id)
               for r in lab.runs.list(scene_id=scene_id)] if scene_id else []
    values = [c[1] for c in choices]
    chosen = [v for v in (keep or values) if v in values]
    return gr.CheckboxGroup(choices, value=chosen, label="Runs of this scene to score")


@user_errors
def add_baseline(lab, path, scene_id, chosen):
    """Write a persistence-baseline run for `scene_id` and tick it beside the `chosen` runs."""
    index = lab.datasets.open(path)
    run = lab.evaluation.write_baseline(index, index.get(scene_id))
    return runs_of(lab, scene_id, (chosen or []) + [run.run_id])


@user_errors
def add_uploads(lab, path, scene_id, files, chosen):
    """Save each uploaded image (file paths) as an upload run of `scene_id` and tick them."""
    from core.data.images import load_rgb

    if not files:
        return runs_of(lab, scene_id, chosen)
    index = lab.datasets.open(path)
    added = [lab.evaluation.write_upload(load_rgb(f), scene_id, Path(f).name, index).run_id for f in files]
    return runs_of(lab, scene_id, (chosen or []) + added)


@user_errors
def score(lab, path, scene_id, chosen, luma_v, size_v, progress=gr.Progress()):
    """Score the `chosen` runs against their scene's post-event tile. Returns the table rows
    (whole image, then each damage class), the notes as a Markdown list, the CSV download,
    the "Look at run" dropdown and the settings text."""
    if not chosen:
        raise gr.Error("Tick at least one run to score, or add the persistence baseline first.")
    settings = _metric_settings(luma_v, size_v)
    index = lab.datasets.open(path)
    rows, messages = [], set()
    for run_id in progress.tqdm(chosen, desc="Scoring"):
        run = lab.runs.open(run_id)
        scores = lab.evaluation.score_run(run, index, settings)
        rows.extend(_score_rows(run, scores))
        messages.update(scores.notes)
        if scores.lpips_error:
            messages.add("LPIPS not computed: " + scores.lpips_error)
    csv_path = _write_csv(lab, "scores", SCORE_HEADERS, rows)
    looks = [(_run_label(lab.runs.open(r)), r) for r in chosen]
    return (rows, "\n".join(f"- {m}" for m in sorted(messages)), gr.DownloadButton(value=csv_path, visible=True),
            gr.Dropdown(looks, value=chosen[0], label="Look at run"), _settings_text(lab, settings))


@user_errors
def look(lab, path, run_id, luma_v, size_v):
    """Pictures of one run: (prediction, truth) for the slider, the error map and the SSIM
    map, as uint8 RGB; three Nones when no run is chosen."""
    from core.viz import colorize

    if not run_id:
        return None, None, None
    view = lab.evaluation.inspect_run(lab.runs.open(run_id), lab.datasets.open(path), _metric_settings(luma_v, size_v))
    to_u8 = lambda a: (a * 255.0 + 0.5).astype("uint8")  # noqa: E731
    return ((to_u8(view.prediction), to_u8(view.truth)), colorize(view.error, vmax=0.5),
            colorize(view.ssim, vmin=0.0, vmax=1.0))


@user_errors
def leaderboard(lab, path, luma_v, size_v, progress=gr.Progress()):
    """The leaderboard of every run of the folder at `path`, the baseline first, as table
    rows and a CSV download."""
    settings = _metric_settings(luma_v, size_v)
    index = lab.datasets.open(path)
    board_rows = lab.evaluation.leaderboard(index, settings, progress=lambda i, n: progress((i, n), desc="Scoring runs"))
    rows = [[r.backbone, r.runs, r.scenes, fmt(r.mse), fmt(r.psnr, 2), r.psnr_infinite, fmt(r.ssim),
             fmt(r.lpips), fmt(r.baseline_psnr, 2), fmt(r.baseline_ssim)] for r in board_rows]
    if not rows:
        gr.Info("No runs yet: add a persistence baseline or upload a prediction first.")
    return rows, gr.DownloadButton(value=_write_csv(lab, "leaderboard", BOARD_HEADERS, rows), visible=True)


def _metric_settings(luma_v: bool, size_v: str) -> MetricSettings:
    return MetricSettings(luma=bool(luma_v), size=None if size_v == SIZES[0] else int(size_v))


def _settings_text(lab, settings: MetricSettings) -> str:
    d = settings.to_dict()
    text = (f"Settings: images as {d['range']}; PSNR data range 1; SSIM on {d['ssim']['channels']} "
            f"(Gaussian σ 1.5, population covariance); LPIPS AlexNet v0.1 on [−1, 1]; "
            f"evaluation size {settings.size or 'of the prediction'}; {d['resize']}.")
    if lab.settings.lpips_random_backbone:
        text += "\n\n⚠ **LPIPS runs on a random backbone (test mode): its numbers mean nothing.**"
    return text


def _run_label(run) -> str:
    """A short name for a run: its backbone and when it was made."""
    return f"{run.record['backbone']} · {run.record.get('created', '')[:19].replace('T', ' ')}"


def _score_rows(run, scores) -> list[list]:
    name, backbone = _run_label(run), run.record["backbone"]
    rows = [[name, backbone, "whole image", "all", fmt(scores.mse), fmt(scores.psnr, 2), fmt(scores.ssim),
             fmt(scores.lpips)]]
    for region in MASK_REGIONS:
        if scores.masked is None:
            break
        m = scores.masked.get(region)
        if m is None:
            rows.append([name, backbone, region, 0, "no pixels", "no pixels", "no pixels", "no pixels"])
        else:
            rows.append([name, backbone, region, m["pixels"], fmt(m["mse"]), fmt(m["psnr"], 2),
                         fmt(m["ssim"]), fmt(m.get("lpips"))])
    return rows


def _write_csv(lab, stem: str, headers: list[str], rows: list[list]) -> str:
    out = Path(lab.settings.work_dir) / "exports" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(headers)
        writer.writerows(rows)
    return str(out)
