"""Train tab: train a ControlNet on the open xBD folder (pre → post, or post → pre), watch
its loss and validation images live, stop it, resume it, and use it in Generate.

A run is a separate process (core.training.service): this tab only writes its request,
reads the files it writes and touches its STOP file, so the web server never trains and
a run goes on when the page is closed. `build_train` lays out and wires; the handlers
below it are plain functions of `lab` and widget values.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import gradio as gr

from core.errors import LabError
from core.training.options import BASES, LR_SCHEDULERS, PRECISIONS, TrainingError, TrainOptions
from ui.browse import ALL, narrow_filters
from ui.common import ARROWS, INTERNAL, bind, fmt, picture_file, user_errors

DEFAULTS = TrainOptions(data=Path("."), out=Path("."))  # the authors' xBD recipe
RESOLUTIONS = [64, 128, 256, 512, 768, 1024]
TASK_CHOICES = [("future (pre → post)", "future"), ("past (post → pre)", "past")]
SAMPLE = ""  # the validation-split choice "a fixed sample of the training scenes"
WATCH_EVERY_S = 2.0
MAX_POINTS = 1000  # points of the loss curve drawn (longer runs: means of consecutive steps)
LIVE = ("running", "stopping")
METRICS = ("psnr", "ssim", "lpips", "mse")
SCORE_HEADERS = ["step", "probe loss"] + [h for m in METRICS for h in (f"{m.upper()} {ARROWS[m]}",
                                                                        f"baseline {m.upper()}")]
# The settings under the data, base, task and name, in the order the start event takes them.
HYPER = ("resolution", "learning_rate", "batch_size", "grad_accum", "max_steps", "lr_scheduler",
         "lr_warmup_steps", "mixed_precision", "gradient_checkpointing", "use_8bit_adam", "metadata_dropout",
         "prompt_dropout", "augment", "seed", "validate_every", "checkpoint_every", "keep_checkpoints",
         "val_count", "val_split", "validation_steps", "num_workers", "base_model")
INTRO = (
    "Train a ControlNet on the folder open in **Browse** (the filters below narrow it), from the pre-event tile "
    "to the post-event one (*future*) or back (*past*). The defaults are the DiffusionSat authors' xBD recipe. "
    "The run is a process of its own, writing into `{where}/<name>/`: closing the page does not stop it, and "
    "**Stop** writes a checkpoint that **Resume** goes on from. Starting a run frees the GPU; generation "
    "reloads its models on its next request, after training. A finished run is offered in Generate's backbone "
    "list as **trained-&lt;name&gt;**.")


def build_train(lab, demo: gr.Blocks, folder: gr.State) -> gr.Dropdown:
    """The Train tab, on the data folder open in Browse (`folder`). Returns the dropdown of
    runs (its value: the name of the run on show)."""
    d = DEFAULTS
    with gr.Tab("Train", id="train") as tab:
        gr.Markdown(INTRO.format(where=lab.settings.trained_dir), elem_id="train-intro")
        with gr.Row():
            split = gr.Dropdown([ALL], value=ALL, label="Split", elem_id="train-split")
            disaster = gr.Dropdown([ALL], value=ALL, label="Disaster", elem_id="train-disaster")
            dtype = gr.Dropdown([ALL], value=ALL, label="Disaster type", elem_id="train-dtype")
            base = gr.Dropdown(base_choices(lab), value=d.base, label="Base", elem_id="train-base")
            task = gr.Radio(TASK_CHOICES, value=d.task, label="Task", elem_id="train-task")
        base_note = gr.Markdown(elem_id="train-base-note")
        with gr.Row():
            name = gr.Textbox(label="Run name", placeholder="e.g. hurricanes-512", elem_id="train-name", scale=2)
            resolution = gr.Dropdown(RESOLUTIONS, value=d.resolution, label="Resolution (px)",
                                     elem_id="train-resolution")
            learning_rate = gr.Number(d.learning_rate, label="Learning rate", minimum=0, step=1e-6,
                                      elem_id="train-lr")
            batch_size = gr.Number(d.batch_size, label="Batch size", precision=0, minimum=1, elem_id="train-batch")
            grad_accum = gr.Number(d.grad_accum, label="Grad accumulation", precision=0, minimum=1,
                                   elem_id="train-accum")
            max_steps = gr.Number(d.max_steps, label="Max steps", precision=0, minimum=1, elem_id="train-steps")
        with gr.Accordion("More settings", open=False, elem_id="train-more"):
            with gr.Row():
                lr_scheduler = gr.Dropdown(list(LR_SCHEDULERS), value=d.lr_scheduler, label="LR scheduler")
                lr_warmup_steps = gr.Number(d.lr_warmup_steps, label="Warm-up steps", precision=0, minimum=0)
                mixed_precision = gr.Dropdown(list(PRECISIONS), value=d.mixed_precision, label="Mixed precision")
                seed = gr.Number(d.seed, label="Seed", precision=0)
                num_workers = gr.Number(d.num_workers, label="Data loader workers", precision=0, minimum=0)
            with gr.Row():
                metadata_dropout = gr.Slider(0, 1, value=d.metadata_dropout, step=0.05,
                                             label="Metadata dropout (per value)")
                prompt_dropout = gr.Slider(0, 1, value=d.prompt_dropout, step=0.05, label="Prompt dropout")
                with gr.Column():
                    gradient_checkpointing = gr.Checkbox(d.gradient_checkpointing, label="Gradient checkpointing")
                    use_8bit_adam = gr.Checkbox(d.use_8bit_adam, label="8-bit Adam (needs bitsandbytes)")
                    augment = gr.Checkbox(d.augment, label="Augment (random crops and flips)")
            with gr.Row():
                validate_every = gr.Number(d.validate_every, label="Validate every (steps)", precision=0,
                                           minimum=1, elem_id="train-validate-every")
                checkpoint_every = gr.Number(d.checkpoint_every, label="Checkpoint every (steps)", precision=0,
                                             minimum=1, elem_id="train-checkpoint-every")
                keep_checkpoints = gr.Number(d.keep_checkpoints, label="Keep checkpoints", precision=0, minimum=1)
                val_count = gr.Number(d.val_count, label="Validation scenes", precision=0, minimum=0,
                                      elem_id="train-val-count")
                validation_steps = gr.Number(d.validation_steps, label="Denoising steps (validation)",
                                             precision=0, minimum=1, elem_id="train-validation-steps")
            with gr.Row():
                val_split = gr.Dropdown(val_split_choices([]), value=SAMPLE, label="Validation scenes from",
                                        elem_id="train-val-split", scale=1)
                base_model = gr.Textbox(label="Base model folder (empty: the base backbone's usual source)",
                                        placeholder="a diffusers folder or hub id", elem_id="train-base-model",
                                        scale=2)
        with gr.Row(equal_height=True):
            start_btn = gr.Button("Start training", variant="primary", elem_id="train-start", scale=1)
            stop_btn = gr.Button("Stop (checkpoint first)", variant="stop", elem_id="train-stop", scale=1)
            resume_btn = gr.Button("Resume", elem_id="train-resume", scale=1)
            run = gr.Dropdown([], label="Run on show (pick one to watch or resume it)", allow_custom_value=True,
                              elem_id="train-run", scale=3)
        status = gr.Markdown("No run on show: start one, or pick one above.", elem_id="train-status")
        with gr.Accordion("Console (the run's last lines)", open=False, visible=False,
                          elem_id="train-console-box") as console_box:
            console = gr.Textbox(show_label=False, lines=12, max_lines=24, interactive=False,
                                 elem_id="train-console")
        with gr.Row():
            # A picture drawn here, not a gr.LinePlot: gradio 6's native plot keeps the axes and
            # series of its first value and shows each update one behind, so a live curve was wrong.
            loss_plot = gr.Image(label="Loss", format="png", interactive=False, height=300, elem_id="train-loss",
                                 scale=3, buttons=["download", "fullscreen"])
            gallery = gr.Gallery(label="Newest validation images, each beside the real tile",
                                 columns=4, height=300, format="png", object_fit="contain", allow_preview=True,
                                 elem_id="train-gallery", scale=2)
        scores = gr.Dataframe(headers=SCORE_HEADERS, label="Validation scores (whole tile) against the persistence "
                                                           "baseline (the condition tile as the prediction)",
                              interactive=False, wrap=True, elem_id="train-scores")
        timer = gr.Timer(WATCH_EVERY_S, active=False)
        seen = gr.State(None)

    filters = [split, disaster, dtype]
    hyper = [resolution, learning_rate, batch_size, grad_accum, max_steps, lr_scheduler, lr_warmup_steps,
             mixed_precision, gradient_checkpointing, use_8bit_adam, metadata_dropout, prompt_dropout, augment,
             seed, validate_every, checkpoint_every, keep_checkpoints, val_count, val_split, validation_steps,
             num_workers, base_model]
    view = [seen, status, loss_plot, gallery, scores, console_box, console, timer]

    gr.on([demo.load, folder.change], bind(data_filters, lab), folder, [*filters, val_split],
          **INTERNAL)
    for f in (split, disaster):  # each narrows the lists below it, as in Browse
        f.input(user_errors(bind(narrow_filters, lab)), [folder, *filters], [disaster, dtype], **INTERNAL)
    gr.on([demo.load, base.change, base_model.change], bind(base_text, lab), [base, base_model], base_note,
          api_name="training_base")
    gr.on([demo.load, tab.select], bind(run_choices, lab), run, run, api_name="training_runs")
    start_btn.click(user_errors(bind(start_run, lab)), [folder, *filters, base, task, name, *hyper],
                    [run, *view], api_name="start_training", concurrency_limit=1, concurrency_id="training")
    stop_btn.click(user_errors(bind(stop_run, lab)), run, view, api_name="stop_training")
    resume_btn.click(user_errors(bind(resume_run, lab)), run, view, api_name="resume_training",
                     concurrency_limit=1, concurrency_id="training")
    run.change(user_errors(bind(run_view, lab)), run, view, api_name="training_status")
    timer.tick(user_errors(bind(refresh_view, lab)), [run, seen], view, show_progress="hidden", **INTERNAL)
    return run


# -- handlers -----------------------------------------------------------------------------
def base_choices(lab) -> list[tuple[str, str]]:
    """(label, id) of each base a ControlNet can train on."""
    return [(lab.backbones.get(b).spec.label, b) for b in BASES]


def data_filters(lab, path) -> tuple:
    """The split, disaster and disaster-type filters of the folder at `path` (all at "All"),
    and the choices of the validation split."""
    try:
        index = lab.datasets.open(path)
    except LabError:  # Browse, which opens the folder, says what is wrong with it
        return [gr.skip()] * 4
    dropdown = lambda values, label: gr.Dropdown([ALL] + values, value=ALL, label=label)  # noqa: E731
    return (dropdown(index.splits(), "Split"), dropdown(index.disasters(), "Disaster"),
            dropdown(index.disaster_types(), "Disaster type"),
            gr.Dropdown(val_split_choices(index.splits()), value=SAMPLE, label="Validation scenes from"))


def val_split_choices(splits) -> list[tuple[str, str]]:
    return [("a fixed sample of the training scenes", SAMPLE)] + [(f"the {s} split", s) for s in splits]


def base_text(lab, base, base_model) -> str:
    """Whether the base can be trained on here: where it loads from, or what is missing."""
    from core.training.models import base_source

    try:
        where = base_source(lab.backbones, TrainOptions(data=Path("."), out=Path("."), base=base,
                                                        base_model=(base_model or "").strip() or None))
    except LabError as err:
        return f"⚠ {err} Or give its folder under *More settings → Base model folder*."
    return f"The base loads from `{where}`."


def options_from_form(lab, path, split, disaster, dtype, base, task, name, *values) -> TrainOptions:
    """The TrainOptions the form describes (`values`: one per HYPER name). TrainingError
    for a setting that cannot work, a base not on this machine or filters that leave no
    scene, before anything starts."""
    from core.training.models import base_source

    v = dict(zip(HYPER, values))
    index = lab.datasets.open(path)
    filters = {"split": _opt(split), "disaster": _opt(disaster), "disaster_type": _opt(dtype)}
    if not index.filter(**filters):
        raise TrainingError(f"No scene of {index.root} matches these filters: widen them.")
    try:
        options = TrainOptions(
            data=Path(index.root), out=lab.training.run_folder(name or ""), base=base, task=task, **filters,
            base_model=(v["base_model"] or "").strip() or None, val_split=v["val_split"] or None,
            learning_rate=float(v["learning_rate"]), lr_scheduler=v["lr_scheduler"],
            mixed_precision=v["mixed_precision"], gradient_checkpointing=bool(v["gradient_checkpointing"]),
            use_8bit_adam=bool(v["use_8bit_adam"]), augment=bool(v["augment"]),
            metadata_dropout=float(v["metadata_dropout"]), prompt_dropout=float(v["prompt_dropout"]),
            **{k: int(v[k]) for k in ("resolution", "batch_size", "grad_accum", "max_steps", "lr_warmup_steps",
                                      "seed", "validate_every", "checkpoint_every", "keep_checkpoints",
                                      "val_count", "validation_steps", "num_workers")})
    except (TypeError, ValueError) as err:  # an emptied number box
        raise TrainingError(f"Fill in every setting with a number ({err}).") from err
    options.check()
    base_source(lab.backbones, options)  # ModelNotAvailable, saying how to get it
    return options


def start_run(lab, path, split, disaster, dtype, base, task, name, *values) -> list:
    """Start a new run from the form; [the run dropdown showing it, *its view]."""
    options = options_from_form(lab, path, split, disaster, dtype, base, task, name, *values)
    out = lab.training.start(options)
    return [gr.update(choices=[p.name for p in lab.training.runs()], value=out.name), *run_view(lab, out.name)]


def stop_run(lab, name) -> list:
    """Ask the run on show to write a checkpoint and stop; its view (watched until it has)."""
    out = _run_folder(lab, name)
    state = lab.training.status(out)
    if not (lab.training.is_running(out) or state.record.get("status") == "running"):
        raise TrainingError(f"The run {out.name} is not running ({state.state}): there is nothing to stop.")
    lab.training.stop(out)
    return run_view(lab, name)


def resume_run(lab, name) -> list:
    """Go on with the run on show from its newest checkpoint, with the settings it began
    with; its view."""
    out = _run_folder(lab, name)
    state = lab.training.status(out)
    if state.state == "finished":
        raise TrainingError(f"The run {out.name} has finished ({state.record.get('step')} steps): there is nothing "
                            "to resume. Start a new run to train longer.")
    if not state.checkpoints and not lab.training.is_running(out):
        raise TrainingError(f"The run {out.name} has no checkpoint to resume from yet: start it again under "
                            "another name.")
    options = lab.training.request_of(out)
    options.resume = "latest"
    lab.training.start(options)
    return run_view(lab, name)


def run_choices(lab, selected=None):
    """An update of the runs dropdown (newest first). The value is sent only when `selected`
    is gone (then none), so a pick made meanwhile stays."""
    names = [p.name for p in lab.training.runs()]
    return gr.update(choices=names) if selected in names else gr.update(choices=names, value=None)


def run_view(lab, name) -> list:
    """[what was shown (for refresh_view), status line, loss curve, validation gallery,
    validation scores, console accordion, console text, timer] of the run `name`."""
    if not name:
        return [None, "No run on show: start one, or pick one above.", None, [], None,
                gr.Accordion(visible=False), "", gr.Timer(active=False)]
    out = _run_folder(lab, name)
    s = lab.training.status(out)
    live = s.state in LIVE or lab.training.is_running(out)
    failed = s.state == "failed"
    return [_seen(name, s), status_text(lab, name, s), loss_picture(loss_frame(s)), validation_gallery(lab, s),
            score_rows(s), gr.Accordion(visible=bool(s.console_tail), open=False,
                                        label="Console (the run's last lines)" + (": why it failed" if failed
                                                                                 else "")),
            s.console_tail, gr.Timer(active=live)]


def refresh_view(lab, name, seen) -> list:
    """run_view for the timer: every output left as it is while nothing changed."""
    try:
        s = lab.training.status(_run_folder(lab, name))
    except LabError:  # no run on show, or its folder is gone: stop watching
        return [gr.skip()] * 7 + [gr.Timer(active=False)]
    if _seen(name, s) == seen:
        live = s.state in LIVE or lab.training.is_running(s.out)
        return [gr.skip()] * 7 + [gr.Timer(active=live)]
    return run_view(lab, name)


def status_text(lab, name, s) -> str:
    """One line: the run's state, step of max steps, last losses; what to do next."""
    options = s.record.get("options") or _request(lab, s.out)
    total = options.get("max_steps", "?")
    step = s.losses[-1]["step"] if s.losses else s.record.get("step", 0)
    parts = [f"**{name}**: {s.state}", f"step {step} / {total}"]
    if s.losses:
        parts.append(f"loss {fmt(s.losses[-1].get('loss'))}")
    probe = next((v.get("probe_loss") for v in reversed(s.validations) if v.get("probe_loss") is not None), None)
    if probe is not None:
        parts.append(f"probe loss {fmt(probe)}")
    if s.checkpoints:
        parts.append(f"newest checkpoint {s.checkpoints[-1]}")
    line = " · ".join(parts)
    if s.state == "finished":
        line += f"\n\nFinished: Generate offers it as the backbone **trained-{s.out.name}**."
    elif s.state == "stopped":
        line += ("\n\nStopped: **Resume** goes on from its newest checkpoint." if s.checkpoints else
                 "\n\nStopped before its first checkpoint: start it again under another name.")
    elif s.state == "failed":
        line += f"\n\nThe run failed: {failure_reason(s.console_tail)} The console's last lines are below."
    elif s.state in ("running", "new") and not s.losses:
        line += " · loading the models and the data…"
    return line


def failure_reason(console: str) -> str:
    """The error line the run printed (its last `error:` line, else its last line)."""
    lines = [line.strip() for line in console.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    for line in reversed(lines):
        if ":" in line and line.split(":", 1)[0].endswith(("Error", "Exception")):
            return line
    return lines[-1] if lines else "it printed nothing."


def loss_frame(s):
    """The loss curve: the step losses ("train loss", at most MAX_POINTS means) and the
    probe loss of each validation ("probe loss", comparable from step to step)."""
    import pandas as pd

    rows = [(r["step"], r["loss"]) for r in s.losses
            if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])]
    k = max(1, math.ceil(len(rows) / MAX_POINTS))
    points = [(chunk[-1][0], sum(v for _, v in chunk) / len(chunk), "train loss")
              for chunk in (rows[i:i + k] for i in range(0, len(rows), k))]
    points += [(v["step"], v["probe_loss"], "probe loss") for v in s.validations
               if isinstance(v.get("probe_loss"), (int, float))]
    return pd.DataFrame(points, columns=["step", "loss", "series"])


def loss_picture(frame) -> str | None:
    """The loss curve as a PNG (see ui.common.picture_file): the train loss per step, its
    running mean once there are enough steps, and the probe loss of each validation."""
    if frame is None or frame.empty:
        return None
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    train = frame[frame["series"] == "train loss"]
    probe = frame[frame["series"] == "probe loss"]
    if len(train):
        ax.plot(train["step"], train["loss"], color="#6366f1", alpha=0.45 if len(train) >= 20 else 1.0,
                linewidth=1, marker="." if len(train) < 20 else None, label="train loss (per step)")
        if len(train) >= 20:
            window = max(5, len(train) // 20)
            mean = np.convolve(train["loss"], np.ones(window) / window, mode="valid")
            ax.plot(train["step"].iloc[window - 1:], mean, color="#3730a3", linewidth=2,
                    label=f"train loss (mean of {window})")
    if len(probe):
        ax.plot(probe["step"], probe["loss"], color="#ea580c", marker="o", linewidth=1.5,
                label="probe loss (fixed noise, no dropout)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    # above the axes, centred: clear of the block's label (left) and its buttons (right)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    figure.canvas.draw()
    picture = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    return picture_file(np.ascontiguousarray(picture))


def score_rows(s) -> list[list]:
    """One row per validation: step, probe loss, then each metric's mean over the
    validation scenes beside the persistence baseline's."""
    rows = []
    for v in s.validations:
        mean, base = v.get("mean") or {}, v.get("baseline_mean") or {}
        row = [v.get("step"), fmt(v.get("probe_loss"))]
        for m in METRICS:
            row += [fmt((mean.get(m) or {}).get("mean")), fmt((base.get(m) or {}).get("mean"))]
        rows.append(row)
    return rows


def validation_gallery(lab, s) -> list[tuple[str, str]]:
    """The newest validation's images, each beside the real tile it should become."""
    if not s.validations:
        return []
    newest = s.validations[-1]
    folder = s.out / newest.get("images", f"validation/step-{newest.get('step')}")
    options = s.record.get("options") or _request(lab, s.out)
    target = "post" if options.get("task", "future") == "future" else "pre"
    items = []
    for scene_id, scored in (newest.get("scenes") or {}).items():
        made = _png_file(str(folder / f"{scene_id}.png"))
        if made is None:
            continue
        psnr = (scored.get("controlnet") or {}).get("psnr")
        items.append((made, f"{scene_id} · generated at step {newest.get('step')} · PSNR {fmt(psnr, 2)}"))
        real = _real_tile(lab, str(options.get("data", "")), scene_id, target)
        if real is not None:
            items.append((real, f"{scene_id} · real {target}-event"))
    return items


# -- small helpers ------------------------------------------------------------------------
def _run_folder(lab, name) -> Path:
    """The folder of the run `name` (a name, never a path: run_folder keeps it in trained_dir)."""
    if not name:
        raise TrainingError("Pick a run first (or start one).")
    out = lab.training.run_folder(str(name))
    if not out.is_dir():
        raise TrainingError(f"There is no run named {name} in {lab.training.trained_dir}.")
    return out


def _request(lab, out) -> dict:
    try:
        return lab.training.request_of(out).to_json()
    except LabError:
        return {}


def _seen(name, s) -> tuple:
    """What a view shows changes only with these."""
    return (str(name), s.state, len(s.losses), len(s.validations), tuple(s.checkpoints), hash(s.console_tail[-400:]))


def _png_file(path: str) -> str | None:
    """A validation PNG as a picture the app may serve (see ui.common.picture_file)."""
    from PIL import Image
    import numpy as np

    try:
        with Image.open(path) as image:
            return picture_file(np.asarray(image.convert("RGB")))
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def _real_tile_cached(lab, data: str, scene_id: str, phase: str) -> str | None:
    index = lab.datasets.open(data)
    scene = index.get(scene_id)
    return picture_file(index.load_image(scene, phase)) if scene.image(phase) else None


def _real_tile(lab, data: str, scene_id: str, phase: str) -> str | None:
    try:
        return _real_tile_cached(lab, data, scene_id, phase)
    except LabError:  # the folder moved, or this app may not open it: the generated image alone
        return None


def _opt(value):
    return None if value in (None, "", ALL) else value
