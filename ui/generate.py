"""Generate tab: the post-event image from the pre-event tile, with any backbone, and a
comparison grid across backbones or a parameter sweep.

The backbone-specific settings are rendered from the specs: one widget per declared
`Control` (core.backends.base), shown when the chosen backbone declares it. `build_generate`
lays out and wires; the handlers below it are plain functions of `lab` and widget values.
"""

from __future__ import annotations

import queue
from pathlib import Path
import threading

import gradio as gr

from core.errors import GenerationCancelled, LabError
from core.generation.compare import SWEEPS
from core.types import GenerationRequest
from ui.common import GPU, INTERNAL, first_on_disk, job_text, job_view, picture_file, stop_job, user_errors

META_FIELDS = ("lon", "lat", "gsd", "cloud_cover", "year", "month", "day")
SIZES = [64, 256, 512, 768, 1024]
# Inputs of the generate and compare events, before the META_FIELDS and the controls.
FORM = ("scene", "backbone", "prompt", "mode", "size", "seed", "num_images", "no_meta")


def declared_controls(specs) -> list:
    """Every control the backbones declare, once per name, in first-declared order (the
    first declaration sets the widget kind; ranges follow the chosen backbone)."""
    seen: dict = {}
    for spec in specs:
        for control in spec.controls:
            seen.setdefault(control.name, control)
    return list(seen.values())


def control_widget(control):
    """A hidden gradio widget for `control` (shown by `backbone_view`)."""
    common = {"label": control.label, "visible": False, "info": control.info or None,
              "elem_id": f"gen-control-{control.name}"}
    if control.kind == "slider":
        return gr.Slider(control.minimum, control.maximum, step=control.step, **common)
    if control.kind == "checkbox":
        return gr.Checkbox(**common)
    if control.kind == "dropdown":
        return gr.Dropdown(list(control.choices), **common)
    return gr.Textbox(lines=1, **common)


def build_generate(lab, demo: gr.Blocks, folder: gr.State):
    """The Generate tab. Returns its scene dropdown (Browse sends scenes here), the buttons
    that send the newest run to Evaluate and to Attention, and the newest run's id."""
    specs = lab.backbones.specs()
    controls = declared_controls(specs)
    first = specs[0].id if specs else None  # until default_backbone picks one on disk
    with gr.Tab("Generate", id="generate") as tab:
        with gr.Row():
            scene = gr.Dropdown([], label="Scene", allow_custom_value=True, scale=2, elem_id="gen-scene")
            backbone = gr.Dropdown([(s.label, s.id) for s in specs], value=first, label="Backbone",
                                   scale=2, elem_id="gen-backbone")
        none_ready = gr.Markdown(visible=False, elem_id="gen-none-ready")
        ready = gr.Markdown(elem_id="gen-ready")
        download = gr.Button("Download this backbone's weights", visible=False)
        with gr.Accordion("Which backbones are on this machine", open=False):
            table = gr.Dataframe(headers=["backbone", "ready", "where", "size (GB)", "GPU memory (GB)", "missing"],
                                 interactive=False, wrap=True, elem_id="gen-readiness",
                                 column_widths=["15%", "7%", "25%", "8%", "10%", "35%"])
            table_btn = gr.Button("Check again", size="sm")
        with gr.Row():
            pre = gr.Image(label="Pre-event (input)", format="png", interactive=False, height=256)
            post = gr.Image(label="Real post-event (for comparison)", format="png", interactive=False, height=256)
        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="gen-prompt")
        tokens = gr.Markdown(elem_id="gen-tokens")
        with gr.Row():
            mode = gr.Radio(["img2img", "txt2img"], value="img2img", label="Mode")
            size = gr.Dropdown(SIZES, value=512, label="Size (px)")
            seed = gr.Number(value=0, precision=0, label="Seed")
            num_images = gr.Slider(1, 4, value=1, step=1, label="Images")
        with gr.Row():
            widgets = [control_widget(c) for c in controls]
        with gr.Group(visible=False) as meta_box:
            gr.Markdown("DiffusionSat metadata (from the scene's labels at the chosen size; edit to probe the model)")
            with gr.Row(equal_height=True):
                meta = [gr.Number(label=name, min_width=110) for name in META_FIELDS]
            no_meta = gr.Checkbox(label="No metadata (all seven values 0)")
        with gr.Tabs():
            with gr.Tab("One generation", id="gen-one"):
                with gr.Row():
                    record = gr.Checkbox(value=True, label="Record attention maps (one image)",
                                         elem_id="gen-record")
                    record_steps = gr.Checkbox(value=False, label="…and each step's maps (more memory)")
                with gr.Row():
                    run_btn = gr.Button("Generate", variant="primary", elem_id="gen-run")
                    stop_btn = gr.Button("Stop", variant="stop")
                with gr.Row():
                    preview = gr.Image(label="Preview while denoising", format="png", interactive=False, height=256,
                                       elem_id="gen-preview")
                    gallery = gr.Gallery(label="Results (saved as runs)", format="png", columns=2, height=320,
                                         elem_id="gen-results")
                info = gr.Markdown(elem_id="gen-info")
                with gr.Row():
                    to_evaluate = gr.Button("Score the newest result in Evaluate →", interactive=False)
                    to_attention = attention_button(False, first=True)
            with gr.Tab("Compare backbones or sweep a parameter", id="gen-compare-tab"):
                with gr.Row():
                    compare_with = gr.CheckboxGroup([(s.label, s.id) for s in specs], label="Backbones (rows)",
                                                    elem_id="gen-compare-backbones")
                    sweep = gr.Dropdown(list(SWEEPS), value="none", label="Sweep (columns)")
                    values = gr.Textbox(label="Values", placeholder="e.g. 0.4, 0.6, 0.8")
                with gr.Row():
                    compare_btn = gr.Button("Run comparison", variant="primary", elem_id="gen-compare")
                    compare_stop = gr.Button("Stop", variant="stop", elem_id="gen-compare-stop")
                compare_info = gr.Markdown(elem_id="gen-compare-info")
                grid = gr.Image(label="Comparison grid (download: one PNG)", format="png", interactive=False,
                                elem_id="gen-grid")
                cell_files = gr.Files(label="Its cells, one PNG each", elem_id="gen-cells")
            with gr.Tab("A batch file in the background", id="gen-batch-tab"):
                gr.Markdown("A JSONL file, one request a line (the fields of `python -m core generate --batch`, "
                            'e.g. `{"backbone": "sd21", "scene": "…", "seed": 3}`), made in processes of their own: '
                            "one per visible GPU. The page stays free meanwhile; images already made are skipped, "
                            "so a stopped batch resumes.")
                batch_file = gr.File(label="Batch file (.jsonl)", file_types=[".jsonl"], elem_id="gen-batch-file")
                with gr.Row():
                    batch_btn = gr.Button("Run it in the background", variant="primary", elem_id="gen-batch-run")
                    batch_stop = gr.Button("Stop the background batch", elem_id="gen-batch-stop")
                batch_note = gr.Markdown(elem_id="gen-batch-note")
                batch_job = gr.State(None)
                batch_timer = gr.Timer(2.0, active=False)
        token = gr.State(None)
        newest = gr.State(None)

    form = [scene, backbone, prompt, mode, size, seed, num_images, no_meta, *meta, *widgets]
    batch_btn.click(user_errors(lambda path, file: start_batch(lab, path, file)), [folder, batch_file],
                    [batch_job, batch_note, batch_timer], api_name="generate_in_background")
    batch_timer.tick(lambda job: batch_view(lab, job), batch_job, [batch_note, batch_timer], **INTERNAL)
    batch_stop.click(user_errors(lambda job: stop_batch(lab, job)), batch_job, [batch_note, batch_timer],
                     api_name="stop_background_generation")

    def to_request(values) -> GenerationRequest:
        return request_from_form(lab, controls, values)

    @user_errors
    def run(path, record_maps, record_steps_v, *values, progress=gr.Progress()):
        request = to_request(values)
        record_maps = bool(record_maps) and lab.generation.can_record_attention(request)
        cancel = _new_token()
        yield {token: cancel}
        try:
            runs = yield from stream_generation(lab, request, lab.datasets.open(path), cancel, progress, preview,
                                                record_maps, record_maps and bool(record_steps_v))
        except GenerationCancelled as err:
            gr.Info(str(err))
            return
        yield {gallery: [(r.image_path.as_posix(), f"seed {r.record['params']['seed']}") for r in runs],
               info: run_info(runs), newest: runs[-1].run_id, to_evaluate: gr.Button(interactive=True),
               to_attention: attention_button(record_maps)}

    @user_errors
    def compare(path, chosen, sweep_name, sweep_values, *values, progress=gr.Progress()):
        index = lab.datasets.open(path)
        base = to_request(values)
        cells = lab.generation.compare_cells(base, chosen or [base.backbone], sweep_name, sweep_values, index=index)
        cancel = _new_token()
        yield {token: cancel}
        results = lab.generation.compare(cells, index, cancel=cancel,
                                         on_cell=lambda i, n, cell: progress((i, n), desc=cell.label))
        picture, files, summary = compare_view(lab, index, base, sweep_name, sweep_values, results)
        yield {grid: picture, cell_files: files, compare_info: summary}

    negative = dict(zip((c.name for c in controls), widgets)).get("negative_prompt")
    counted = [backbone, prompt] + ([negative] if negative is not None else [])
    gr.on([w.change for w in counted], user_errors(lambda *v: token_text(lab, *v)), counted, tokens,
          api_name="count_tokens", trigger_mode="always_last")
    gr.on([demo.load, table_btn.click], lambda: readiness_rows(lab), None, table, api_name="readiness")
    gr.on([demo.load, folder.change], user_errors(lambda path: scene_choices(lab, path)), folder, scene,
          **INTERNAL)
    scene.change(user_errors(lambda path, scene_id: scene_view(lab, path, scene_id)), [folder, scene],
                 [pre, post, prompt], **INTERNAL)
    gr.on([scene.change, size.change], user_errors(lambda *v: metadata_view(lab, *v)), [folder, scene, size], meta,
          **INTERNAL)
    shown = [ready, download, mode, size, meta_box, *widgets]
    demo.load(lambda: default_backbone(lab), None, [backbone, none_ready], **INTERNAL).then(
        lambda backbone_id: backbone_view(lab, backbone_id, controls), backbone, shown, **INTERNAL)
    backbone.change(lambda backbone_id: backbone_view(lab, backbone_id, controls), backbone, shown, **INTERNAL)
    # A training run that finished since the page loaded is a backbone now (trained-<name>).
    tab.select(lambda backbone_id, chosen: backbone_choices(lab, backbone_id, chosen), [backbone, compare_with],
               [backbone, compare_with], api_name="backbone_choices")
    download.click(user_errors(lambda backbone_id, progress=gr.Progress(): download_backbone(lab, backbone_id,
                                                                                             progress)),
                   backbone, ready, api_name="download_backbone")
    run_btn.click(run, [folder, record, record_steps, *form],
                  [token, preview, gallery, info, newest, to_evaluate, to_attention], api_name="generate",
                  show_progress_on=[gallery], **GPU)  # one progress bar; the preview stays visible
    stop_btn.click(_stop, token, None, api_name="stop", queue=False)
    compare_btn.click(compare, [folder, compare_with, sweep, values, *form], [token, grid, cell_files, compare_info],
                      api_name="compare", show_progress_on=[grid], **GPU)
    compare_stop.click(_stop, token, None, api_name="stop_compare", queue=False)
    return scene, to_evaluate, to_attention, newest


# -- handlers -----------------------------------------------------------------------------
def scene_choices(lab, path):
    """The scene dropdown for the dataset at `path`: scenes with a pre-event tile, the
    first one chosen."""
    ids = [s.scene_id for s in lab.datasets.open(path).scenes if s.pre_image is not None]
    return gr.Dropdown(ids, value=ids[0] if ids else None, label="Scene")


def scene_view(lab, path, scene_id) -> list:
    """[pre tile, post tile, default prompt] of a scene (tiles None when absent)."""
    index = lab.datasets.open(path)
    s = index.get(scene_id)
    images = [picture_file(index.load_image(s, p)) if s.image(p) else None for p in ("pre", "post")]
    return [*images, lab.generation.default_prompt(index, scene_id)]


def metadata_view(lab, path, scene_id, size) -> list:
    """The seven DiffusionSat values of the scene's post-event image generated at `size`
    px, decoded (gsd in m/px of the generated image, so it follows the size); zeros when
    its labels give none."""
    from core.data.metadata import NO_METADATA, decode_metadata, scene_metadata

    if not scene_id:
        return [gr.skip()] * len(META_FIELDS)
    index = lab.datasets.open(path)
    vector = scene_metadata(index, index.get(scene_id), resolution=int(size or 512))
    decoded = decode_metadata(vector) if tuple(vector) != NO_METADATA else {k: 0 for k in META_FIELDS}
    return [decoded[k] for k in META_FIELDS]


def backbone_view(lab, backbone_id, controls) -> list:
    """Updates for [readiness line, download button, mode, size, metadata box, *one per
    control]: the backbone's modes and defaults, and only the controls it declares shown
    (with its own ranges)."""
    spec = lab.backbones.get(backbone_id).spec
    own = {c.name: c for c in spec.controls}
    d = spec.defaults
    updates = [readiness_text(lab, backbone_id), gr.update(visible=bool(spec.hub_id)),
               gr.update(choices=list(spec.modes), value=d.get("mode", spec.modes[0])),
               gr.update(value=d.get("size", 512)), gr.update(visible=spec.needs_metadata)]
    for control in controls:
        declared = own.get(control.name)
        if declared is None:
            updates.append(gr.update(visible=False))
            continue
        value = spec.default_for(declared)
        if declared.kind == "slider":
            updates.append(gr.update(minimum=declared.minimum, maximum=declared.maximum, step=declared.step,
                                     value=value, label=declared.label, visible=True))
        elif declared.kind == "dropdown":
            updates.append(gr.update(choices=list(declared.choices), value=value, label=declared.label,
                                     visible=True))
        else:
            empty = False if declared.kind == "checkbox" else ""
            updates.append(gr.update(value=empty if value is None else value, label=declared.label, visible=True))
    return updates


def request_from_form(lab, controls, values) -> GenerationRequest:
    """The request the form describes: `values` are the FORM inputs, the seven metadata
    values, then one value per control of `controls`. Controls the backbone does not
    declare take its defaults; option controls go to `request.options`."""
    from core.data.metadata import NO_METADATA, encode_metadata

    n = len(FORM)
    scene_id, backbone_id, prompt, mode, size, seed, num_images, no_meta = values[:n]
    meta = values[n:n + len(META_FIELDS)]
    chosen = dict(zip((c.name for c in controls), values[n + len(META_FIELDS):]))
    if not scene_id:
        raise LabError("Pick a scene first: its pre-event tile is the starting point.")
    spec = lab.backbones.get(backbone_id).spec
    fields = {k: v for k, v in spec.defaults.items() if k in _REQUEST_FIELDS}
    options = dict(spec.defaults.get("options") or {})
    for control in spec.controls:
        value = chosen.get(control.name)
        if value is None:
            continue
        if control.option:
            options[control.name] = value
        else:
            fields[control.name] = value
    metadata = None
    if spec.needs_metadata:
        raw = [float(v or 0) for v in meta]
        metadata = NO_METADATA if no_meta or not any(raw) else encode_metadata(*raw)
    fields.update(backbone=backbone_id, prompt=prompt or "", mode=mode, scene_id=scene_id, size=int(size),
                  seed=int(seed or 0), num_images=int(num_images), metadata=metadata, options=options)
    return GenerationRequest(**_typed(fields))


def compare_view(lab, index, base: GenerationRequest, sweep: str, values: str, results) -> tuple:
    """(the labelled grid picture: the scene's tiles, then one row per backbone and one
    column per swept value; the cells' PNG files; a summary line) of a finished
    comparison. Failed or stopped cells are grey tiles saying why."""
    from core.generation.compare import column_label, sweep_values
    from core.viz import labelled_matrix

    s = index.get(base.scene_id)
    context = ("scene", [(index.load_image(s, "pre"), "pre-event")]
               + ([(index.load_image(s, "post"), "real post-event")] if s.post_image is not None else []))
    rows: dict[int, tuple[str, list]] = {}
    for r in results:
        label = lab.backbones.get(r.cell.request.backbone).spec.label
        cells = rows.setdefault(r.cell.row, (label, []))[1]
        cells.append((r.run.image() if r.run else None, r.cell.note if r.run else r.error))
    columns = [column_label(sweep, v) for v in sweep_values(sweep, values)]
    picture = labelled_matrix([rows[k] for k in sorted(rows)], columns=columns, context=context,
                              size=max(base.size, 256))
    made = [r for r in results if r.run is not None]
    failed = [r for r in results if r.run is None and r.error != "stopped"]
    stopped = sum(1 for r in results if r.error == "stopped")
    summary = f"Made {len(made)} of {len(results)} cells (each saved as a run)"
    summary += f"; {len(failed)} failed" if failed else ""
    summary += f"; stopped before {stopped}" if stopped else ""
    return picture, cell_files(lab, results, sweep), summary + "."


def cell_files(lab, results, sweep: str) -> list[str]:
    """The made cells copied under `<work>/exports/compare-<time>/` with names that say
    where each sits (`r1-c2_tiny-sd21_seed-2.png`), for download."""
    import shutil
    from datetime import datetime

    from core.generation.compare import column_label

    folder = lab.settings.work_dir / "exports" / f"compare-{datetime.now():%Y%m%d-%H%M%S-%f}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        if r.run is None:
            continue
        column = column_label(sweep, getattr(r.cell.request, sweep, None) if sweep != "none" else None)
        name = f"r{r.cell.row + 1}-c{r.cell.column + 1}_{r.cell.request.backbone}"
        name += f"_{column.replace(' ', '-')}" if column else ""
        target = folder / f"{name}.png"
        shutil.copyfile(r.run.image_path, target)
        paths.append(target.as_posix())
    return paths


def attention_button(recorded: bool, *, first: bool = False):
    """The "See its attention maps" button: usable when the newest run has maps, else
    saying why it is not."""
    if recorded:
        return gr.Button("See its attention maps →", interactive=True)
    why = "generate first" if first else "none recorded: tick Record with 1 image"
    label = f"See its attention maps → ({why})"
    return gr.Button(label, interactive=False) if first else gr.update(value=label, interactive=False)


def backbone_choices(lab, backbone_id, chosen) -> tuple:
    """Updates of (the backbone dropdown, the comparison's backbone checkboxes) listing the
    backbones as they are now (a training run finished since: its `trained-<name>`). A value
    is sent only when the chosen one is no longer offered, so a pick made meanwhile stays."""
    specs = lab.backbones.specs()
    ids = [s.id for s in specs]
    choices = [(s.label, s.id) for s in specs]
    dropdown = {} if backbone_id in ids else {"value": ids[0] if ids else None}
    kept = [c for c in chosen or [] if c in ids]
    boxes = {} if kept == list(chosen or []) else {"value": kept}
    return gr.update(choices=choices, **dropdown), gr.update(choices=choices, **boxes)


def start_batch(lab, path, file) -> tuple:
    """Check the batch file (every line a request this dataset and its backbones accept),
    keep a copy in the work folder and start `python -m core generate --batch` on it in the
    background; (job id, status line, the timer that watches it)."""
    import shutil
    import time as clock

    from core.generation.service import read_batch

    if not file:
        raise LabError("Choose a batch file first: a .jsonl file with one request a line.")
    source = getattr(file, "name", file)
    index = lab.datasets.open(path)
    for fields in read_batch(source):  # refused here, not in a background log
        request = lab.generation.check(lab.generation.request_from(fields, index), index)
        state = lab.backbones.readiness(request.backbone)
        if not state.ready:
            raise LabError(f"{request.backbone} is not on this machine: {state.missing}")
    copy = lab.jobs.root / "batches" / f"{clock.strftime('%Y%m%d-%H%M%S')}-{Path(source).name}"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, copy)
    job = lab.jobs.start("generate", ["--data", str(index.root), "--batch", str(copy),
                                      "--runs", str(lab.settings.runs)])
    return job, job_text(lab.jobs.status(job), "images"), gr.Timer(active=True)


def batch_view(lab, job) -> tuple:
    return job_view(lab, job, "images")


def stop_batch(lab, job) -> tuple:
    return stop_job(lab, job, "images")


def default_backbone(lab) -> tuple:
    """(the backbone dropdown set to the first backbone whose files are on disk, the
    "none is on disk" banner): when none is, the dropdown stays as it is and the banner
    says so once, with the ways to get one."""
    ready = first_on_disk(lab, lab.backbones.specs())
    if ready:
        return gr.update(value=ready), gr.update(visible=False)
    return gr.update(), gr.update(value=none_on_disk_text(lab), visible=True)


def none_on_disk_text(lab) -> str:
    """What to do when no backbone's files are on this machine."""
    models = lab.settings.models_dir
    where = f"`{models}/<backbone id>/`" if models else "a folder given with `--models DIR`, as `DIR/<backbone id>/`"
    return ("**No backbone is on this machine yet**, so nothing can be generated. To get one:\n"
            "- pick a backbone below and press *Download this backbone's weights* (needs the internet "
            "or an `HF_ENDPOINT` mirror), or\n"
            f"- put a diffusers model folder at {where} and press *Check again* under "
            "*Which backbones are on this machine*, or\n"
            "- for a dry run without a GPU: `python -m core tiny-models --models DIR`, then restart with "
            "`XBDLAB_TEST_BACKBONES=1 python app.py --models DIR` (tiny random backbones: they test the "
            "plumbing and make noise, not pictures).")


def download_backbone(lab, backbone_id, progress=None) -> str:
    """Download the backbone's weights into the Hugging Face cache; its readiness line."""
    from core.backends.sources import download

    spec = lab.backbones.get(backbone_id).spec
    report = (lambda done, total: progress((done, total))) if progress is not None else None
    download(spec, lab.backbones.source(backbone_id), progress=report)
    return readiness_text(lab, backbone_id)


def stream_generation(lab, request, index, cancel, progress, preview_out, attention=False, attention_steps=False):
    """Run the generation in a worker thread; yield previews while it runs; return its runs."""
    updates: queue.Queue = queue.Queue()
    outcome: dict = {}

    def on_step(step, total, preview=None):
        updates.put((step, total, preview))

    def work():
        try:
            outcome["runs"] = lab.generation.generate(request, index, on_step=on_step, preview_every=5,
                                                      cancel=cancel, attention=attention,
                                                      attention_steps=attention_steps)
        except BaseException as err:  # handed to the UI thread below
            outcome["error"] = err
        finally:
            updates.put(None)

    threading.Thread(target=work, daemon=True).start()
    while (item := updates.get()) is not None:
        step, total, picture = item
        progress((step, total or step), desc="Denoising")
        if picture is not None:
            yield {preview_out: picture}
    if "error" in outcome:
        raise outcome["error"]
    return outcome["runs"]


def readiness_text(lab, backbone_id) -> str:
    """One backbone's line: ready (where, how big) or what is missing, then its notes."""
    spec = lab.backbones.get(backbone_id).spec
    try:
        state = lab.backbones.readiness(backbone_id)
    except LabError as err:
        return f"**{spec.label}** cannot be used: {err}"
    size = f" ({state.size_bytes / 1e9:.1f} GB)" if state.size_bytes else ""
    head = f"**{spec.label}** is ready: `{state.where}`{size}" if state.ready else \
        f"**{spec.label}** is not on this machine. {state.missing}"
    notes = spec.notes.replace("<", "&lt;")  # folder patterns like checkpoint-<step> are not HTML
    return head + (f"\n\n{notes}" if notes else "")


def readiness_rows(lab) -> list[list]:
    """The readiness table: one row per backbone (label, ready, where, size, VRAM, missing)."""
    rows = []
    for spec in lab.backbones.specs():
        try:
            state = lab.backbones.readiness(spec.id)
        except LabError as err:
            rows.append([spec.label, "no", "", "", spec.vram_gb or "", str(err)])
            continue
        size = f"{state.size_bytes / 1e9:.2f}" if state.size_bytes else ""
        rows.append([spec.label, "yes" if state.ready else "no", state.where, size, spec.vram_gb or "",
                     state.missing])
    return rows


ENCODER_NAMES = {"clip": "CLIP", "clip2": "CLIP 2", "t5": "T5"}


def token_text(lab, backbone_id, prompt, negative="") -> str:
    """Token counts per encoder of the backbone; where an encoder would cut, the cut-off
    text in bold. CLIP counts need no model on disk; an encoder that does (T5) says so."""
    prompt = prompt or ""
    report = lab.backbones.token_report(backbone_id, prompt, negative or "")
    if report is None:
        return "Token counts appear once this backbone's files are on disk."
    parts = []
    for name, r in report.items():
        label = ENCODER_NAMES.get(name, name)
        if r.get("needs_files"):
            parts.append(f"{label}: appears once the {label} files are on disk")
        elif not r.get("used"):
            parts.append(f"{label}: not used")
        elif r["truncated"]:
            cut = r.get("truncated_at_char")
            tail = f": it would drop **“{prompt[cut:].strip()[:200]}”**" if cut is not None else ""
            parts.append(f"{label}: {r['prompt_tokens']} tokens, over its {r['limit']}{tail}")
        elif r.get("windows", 1) > 1:
            parts.append(f"{label}: {r['prompt_tokens']} tokens, sent whole in {r['windows']} windows of "
                         f"{r['limit']}")
        else:
            parts.append(f"{label}: {r['prompt_tokens']} / {r['limit']} tokens")
    return " · ".join(parts)


def run_info(runs) -> str:
    """What was saved: run ids, the main parameters and time, tokens per encoder."""
    params = runs[0].record["params"]
    tokens = params.get("tokens") or params.get("token_counts")
    seconds = params.get("seconds")
    lines = [f"Saved {len(runs)} run(s): " + ", ".join(f"`{r.run_id}`" for r in runs),
             f"{params.get('steps')} steps · guidance {params.get('guidance')} · strength {params.get('strength')}"
             f" · {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""]
    if tokens:
        lines.append("Tokens: " + ", ".join(f"{k}: {v.get('prompt_tokens')}" + (" (cut!)" if v.get("truncated") else "")
                                            for k, v in tokens.items() if isinstance(v, dict) and v.get("used")))
    return "\n\n".join(line for line in lines if line)


# -- small helpers ------------------------------------------------------------------------
_REQUEST_FIELDS = ("mode", "steps", "guidance", "strength", "scheduler", "image_guidance", "control_scale",
                   "negative_prompt")
_NUMBERS = {"steps": int, "guidance": float, "strength": float, "image_guidance": float, "control_scale": float}


def _typed(fields: dict) -> dict:
    """Widget values as the request's types (sliders send floats; empty text is none)."""
    out = dict(fields)
    for name, cast in _NUMBERS.items():
        if out.get(name) is not None:
            out[name] = cast(out[name])
    out["negative_prompt"] = out.get("negative_prompt") or ""
    out["scheduler"] = out.get("scheduler") or None
    return out


def _new_token():
    from core.generation.progress import CancelToken

    return CancelToken()


def _stop(cancel):
    if cancel is not None:
        cancel.cancel()
