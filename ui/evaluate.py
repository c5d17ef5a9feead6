"""Evaluate tab: score runs of a scene against the real post-event tile, and a leaderboard."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import gradio as gr

from core.errors import DataError, LabError, RunError
from core.types import MASK_REGIONS, MetricSettings
from ui.common import ARROWS, GPU, INTERNAL, bind, fmt, log, notify, run_label, user_errors

ALL = "every backbone"
SIZES = ["prediction's size", "256", "512", "1024"]
SCORE_HEADERS = ["run", "backbone", "region", "pixels"] + [f"{m.upper()} {ARROWS[m]}" for m in ARROWS]
BOARD_HEADERS = ["backbone", "runs", "scenes", "MSE ↓", "PSNR ↑", "PSNR = ∞", "SSIM ↑", "LPIPS ↓",
                 "baseline PSNR (same scenes)", "baseline SSIM (same scenes)"]


class EvaluateTab(NamedTuple):
    """What other tabs wire to: the scene dropdown, the run checkboxes and their backbone
    filter, and `show_run(scene_id, run_id)`, the checkboxes' fresh value with `run_id`
    listed and ticked (beside the runs ticked before when the scene stays the same)."""

    scene: gr.Dropdown
    runs: gr.CheckboxGroup
    backbone: gr.Dropdown
    refresh: Callable
    show_run: Callable


def build_evaluate(lab, demo: gr.Blocks, folder: gr.State) -> EvaluateTab:
    """The Evaluate tab. `folder` holds the data folder open in Browse: both tabs use the
    same dataset. Returns the widgets other tabs send scenes and runs to."""
    with gr.Tab("Evaluate", id="evaluate") as tab:
        with gr.Row():
            scene = gr.Dropdown([], label="Scene", scale=3, elem_id="eval-scene", allow_custom_value=True)
            baseline_btn = gr.Button("Add persistence baseline (post := pre)", scale=1)
        with gr.Row():
            with gr.Column(scale=3):
                backbone = gr.Dropdown([ALL], value=ALL, label="Show the runs of", elem_id="eval-filter")
                runs = gr.CheckboxGroup([], label="Runs of this scene to score", elem_id="eval-runs")
                ticked = gr.Gallery(label="Ticked runs", columns=8, rows=1, height=150, allow_preview=False,
                                    object_fit="contain", format="png", elem_id="eval-ticked")
            upload = gr.File(label="Upload predictions (PNG) for this scene (a file named after another "
                                   "scene is refused)", file_count="multiple", file_types=["image"], scale=2,
                             elem_id="eval-upload")
        with gr.Row():
            luma = gr.Checkbox(label="PSNR and SSIM on luma (Y) only, the course's way")
            size = gr.Dropdown(SIZES, value=SIZES[0], label="Evaluation size (px)")
            score_btn = gr.Button("Score selected runs", variant="primary", elem_id="eval-score")
        settings_md = gr.Markdown(_settings_text(lab, MetricSettings()), elem_id="eval-settings")
        table = gr.Dataframe(headers=SCORE_HEADERS, label="Scores (whole image and per damage class)",
                             interactive=False, elem_id="eval-table")
        notes = gr.Markdown()
        table_csv = gr.DownloadButton("Download scores (CSV)", visible=False)
        scored = gr.State([])  # the run ids the table shows, rescored when the settings change
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

    refresh = bind(refresh_runs, lab)
    gr.on([demo.load, folder.change], bind(scenes_of, lab), folder, scene, **INTERNAL)
    gr.on([scene.change], bind(runs_of, lab), scene, runs, api_name="list_runs")
    gr.on([scene.change], bind(backbones_of, lab), scene, backbone, **INTERNAL)
    # Runs made in another tab (or by the CLI) appear when the tab is opened again.
    gr.on([tab.select, backbone.input], refresh, [scene, runs, backbone], runs, **INTERNAL)
    runs.change(bind(ticked_view, lab), runs, ticked, **INTERNAL)
    baseline_btn.click(bind(add_baseline, lab), [folder, scene, runs, backbone], runs, api_name="add_baseline")
    upload.upload(bind(add_uploads, lab), [folder, scene, upload, runs, backbone], runs, api_name="add_uploads")
    looking = ([folder, inspect, luma, size], [compare, err, ssim_img])
    score_btn.click(bind(score, lab), [folder, scene, runs, luma, size],
                    [table, notes, table_csv, inspect, settings_md, scored], api_name="score_runs", **GPU)
    gr.on([luma.change, size.change], bind(settings_changed, lab), [folder, scored, luma, size],
          [table, notes, table_csv, inspect, settings_md, scored], api_name="rescore", **GPU).then(
        bind(look, lab), *looking, **INTERNAL)
    gr.on([inspect.change], bind(look, lab), *looking, api_name="look_at_run")
    board_btn.click(bind(leaderboard, lab), [folder, luma, size], [board, board_csv], api_name="leaderboard", **GPU)
    return EvaluateTab(scene, runs, backbone, refresh,
                       user_errors(lambda scene_id, run_id: runs_of(lab, scene_id, [run_id])))


# -- handlers: plain functions of the Lab and widget values ---------------------------------
@user_errors
def scenes_of(lab, path):
    """The scene dropdown for the folder at `path`: every scene with a post-event tile to
    score against, the first one chosen."""
    ids = [s.scene_id for s in lab.datasets.open(path).scenes if s.post_image is not None]
    return gr.Dropdown(ids, value=ids[0] if ids else None, label="Scene")


@user_errors
def runs_of(lab, scene_id, keep=None, backbone=None):
    """The run checkboxes of `scene_id`, newest first, each labelled by backbone, seed,
    steps, strength and time; `keep` (run ids) stays ticked, or every run when it is None.
    With a `backbone` (not ALL) only its runs are shown, and the ticked ones."""
    found = lab.runs.list(scene_id=scene_id) if scene_id else []
    ids = [r.run_id for r in found]
    chosen = [v for v in dict.fromkeys(keep if keep is not None else ids) if v in ids]
    shown = [r for r in found if backbone in (None, ALL) or r.backbone == backbone or r.run_id in chosen]
    label = "Runs of this scene to score"
    if len(shown) < len(found):
        label += f" ({len(shown)} of {len(found)} shown: the {backbone} runs and the ticked ones)"
    return gr.CheckboxGroup([(run_label(r), r.run_id) for r in shown], value=chosen, label=label)


@user_errors
def refresh_runs(lab, scene_id, chosen, backbone=ALL):
    """The run checkboxes listed again (runs made since appear, unticked); the ticked stay."""
    return runs_of(lab, scene_id, list(chosen or []), backbone)


@user_errors
def backbones_of(lab, scene_id):
    """The backbone filter of the run checkboxes: every backbone with a run of `scene_id`."""
    names = sorted({r.backbone for r in lab.runs.list(scene_id=scene_id)}) if scene_id else []
    return gr.Dropdown([ALL] + names, value=ALL, label="Show the runs of")


@user_errors
def ticked_view(lab, chosen):
    """Thumbnails of the ticked runs, each captioned like its checkbox."""
    out = []
    for run_id in chosen or []:
        try:
            run = lab.runs.open(run_id)
        except LabError:  # deleted meanwhile: its checkbox goes on the next refresh
            continue
        out.append((run.image_path.as_posix(), run_label(run)))
    return out


@user_errors
def add_baseline(lab, path, scene_id, chosen, backbone=ALL):
    """Write a persistence-baseline run for `scene_id` and tick it beside the `chosen` runs."""
    index = lab.datasets.open(path)
    run = lab.evaluation.write_baseline(index, index.get(scene_id))
    return runs_of(lab, scene_id, (chosen or []) + [run.run_id], backbone)


@user_errors
def add_uploads(lab, path, scene_id, files, chosen, backbone=ALL):
    """Save each uploaded image (file paths) as an upload run of `scene_id` and tick them.
    DataError, and nothing saved, when a file's name names another scene of the folder."""
    from core.data.images import load_rgb

    if not files:
        return runs_of(lab, scene_id, chosen, backbone)
    index = lab.datasets.open(path)
    if not scene_id:
        raise DataError("Pick the scene these predictions are of first, then upload them.")
    wrong = {Path(f).name: other for f in files if (other := _other_scene(Path(f).name, scene_id, index))}
    if wrong:
        named = "; ".join(f"{name} names {other}" for name, other in wrong.items())
        raise DataError(f"Not added: {named}, not the scene picked ({scene_id}). Pick that scene first, "
                        "or rename the file if it really is a prediction of this one.")
    added = [lab.evaluation.write_upload(load_rgb(f), scene_id, Path(f).name, index).run_id for f in files]
    return runs_of(lab, scene_id, (chosen or []) + added, backbone)


def _other_scene(name: str, scene_id: str, index) -> str | None:
    """The id of another scene of `index` that the file name `name` names (None when the
    name names `scene_id` or no scene)."""
    def names(sid):
        return re.search(rf"(?<![A-Za-z0-9]){re.escape(sid)}(?![0-9])", name, re.IGNORECASE)

    if names(scene_id):
        return None
    return next((s.scene_id for s in index.scenes if s.scene_id != scene_id and names(s.scene_id)), None)


@user_errors
def score(lab, path, scene_id, chosen, luma_v, size_v, progress=gr.Progress()):
    """Score the `chosen` runs against their scene's post-event tile. Returns the table rows
    (whole image, then each damage class), the notes as a Markdown list, the CSV download,
    the "Look at run" dropdown, the settings text and the run ids scored."""
    if not chosen:
        raise RunError("Tick at least one run to score, or add the persistence baseline first.")
    return _score(lab, path, chosen, _metric_settings(luma_v, size_v), progress)


@user_errors
def settings_changed(lab, path, scored, luma_v, size_v, progress=gr.Progress()):
    """The settings line for the new settings and, when the table shows scores, the same runs
    scored again with them (so the table never shows numbers of other settings). Should that
    fail, the table stays and the settings line says its numbers are of the old settings."""
    settings = _metric_settings(luma_v, size_v)
    if not scored:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip(), _settings_text(lab, settings), gr.skip()
    try:
        return _score(lab, path, scored, settings, progress)
    except LabError as err:
        log.warning("settings_changed: %s", str(err).splitlines()[0])
        notify(str(err))
        return (gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                _settings_text(lab, settings) + "\n\n⚠ **The scores below are of the previous settings: "
                "press Score selected runs again.**", gr.skip())


def _score(lab, path, chosen, settings: MetricSettings, progress) -> tuple:
    """Score the runs `chosen` (their saved scores under `settings` when they have them, in
    batches otherwise); a run that cannot be scored is named in a toast, the others shown."""
    from core.metrics.scoring import scores_from_dict

    index = lab.datasets.open(path)
    runs = [lab.runs.open(run_id) for run_id in chosen]
    problems: list = []
    entries = lab.evaluation.scores_of(runs, index, settings, problems=problems,
                                       progress=lambda done, total: progress((done, total), desc="Scoring"))
    for run, message in problems:
        notify(f"Not scored: {run_label(run)}: {message}", title="Run not scored")
    if not any(entries):
        raise LabError("None of the ticked runs could be scored: see the messages.")
    rows, messages = [], set()
    for run, entry in zip(runs, entries):
        if entry is None:
            continue
        scores = scores_from_dict(entry)
        rows.extend(_score_rows(run, scores))
        messages.update(scores.notes)
        if scores.lpips_error:
            messages.add("LPIPS not computed: " + scores.lpips_error)
    chosen = [run.run_id for run, entry in zip(runs, entries) if entry is not None]
    csv_path = _write_csv(lab, "scores", SCORE_HEADERS, rows)
    looks = [(run_label(lab.runs.open(r)), r) for r in chosen]
    return (rows, "\n".join(f"- {m}" for m in sorted(messages)), gr.DownloadButton(value=csv_path, visible=True),
            gr.Dropdown(looks, value=chosen[0], label="Look at run"), _settings_text(lab, settings), list(chosen))


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
    problems: list = []
    board_rows = lab.evaluation.leaderboard(index, settings, progress=lambda i, n: progress((i, n), desc="Scoring runs"),
                                            problems=problems)
    for run, message in problems:  # one broken run never hides the others
        notify(f"Left out of the leaderboard: {run_label(run)}: {message}", title="Run left out")
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


def _score_rows(run, scores) -> list[list]:
    name, backbone = run_label(run), run.record["backbone"]
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
