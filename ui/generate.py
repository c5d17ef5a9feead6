"""Generate tab: the post-event image from the pre-event tile, with any backbone, and a
comparison grid across backbones or a parameter sweep."""

from __future__ import annotations

import queue
import threading
from dataclasses import replace

import gradio as gr

from core.errors import GenerationCancelled, LabError
from core.types import GenerationRequest
from ui.common import GPU, INTERNAL, user_errors

SWEEPS = ["none", "strength", "guidance", "steps", "seed"]
META_FIELDS = ("lon", "lat", "gsd", "cloud_cover", "year", "month", "day")


def build_generate(lab, demo: gr.Blocks, folder: gr.State):
    """The Generate tab. Returns its scene dropdown (Browse sends scenes here), the buttons
    that send the newest run to Evaluate and to Attention, and the newest run's id."""
    specs = {s.id: s for s in lab.backbones.specs()}
    first = next(iter(specs), None)
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            scene = gr.Dropdown([], label="Scene", allow_custom_value=True, scale=2, elem_id="gen-scene")
            backbone = gr.Dropdown([(s.label, s.id) for s in specs.values()], value=first, label="Backbone",
                                   scale=2, elem_id="gen-backbone")
        ready = gr.Markdown(elem_id="gen-ready")
        download = gr.Button("Download this backbone's weights", visible=False)
        with gr.Accordion("Which backbones are on this machine", open=False):
            table = gr.Dataframe(headers=["backbone", "ready", "where", "size (GB)", "GPU memory (GB)", "missing"],
                                 interactive=False, wrap=True, elem_id="gen-readiness")
            table_btn = gr.Button("Check again", size="sm")
        with gr.Row():
            pre = gr.Image(label="Pre-event (input)", format="png", interactive=False, height=256)
            post = gr.Image(label="Real post-event (for comparison)", format="png", interactive=False, height=256)
        prompt = gr.Textbox(label="Prompt", lines=2, elem_id="gen-prompt")
        tokens = gr.Markdown(elem_id="gen-tokens")
        negative = gr.Textbox(label="Negative prompt", lines=1)
        with gr.Row():
            mode = gr.Radio(["img2img", "txt2img"], value="img2img", label="Mode")
            steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
            guidance = gr.Slider(0, 15, value=7.5, step=0.5, label="Guidance")
            strength = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="Strength (img2img)")
        with gr.Row():
            size = gr.Dropdown([64, 256, 512, 768, 1024], value=512, label="Size (px)")
            seed = gr.Number(value=0, precision=0, label="Seed")
            num_images = gr.Slider(1, 4, value=1, step=1, label="Images")
            record = gr.Checkbox(value=True, label="Record attention maps (one image)", elem_id="gen-record")
            record_steps = gr.Checkbox(value=False, label="…and each step's maps (more memory)")
            image_guidance = gr.Slider(1.0, 3.0, value=1.5, step=0.1, label="Image guidance", visible=False)
            control_scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="ControlNet scale", visible=False)
        with gr.Group(visible=False) as meta_box:
            gr.Markdown("DiffusionSat metadata (from the scene's labels; edit to probe the model)")
            with gr.Row():
                meta = [gr.Number(label=name) for name in META_FIELDS]
                no_meta = gr.Checkbox(label="No metadata (all seven values 0)")
        with gr.Row():
            run_btn = gr.Button("Generate", variant="primary", elem_id="gen-run")
            stop_btn = gr.Button("Stop", variant="stop")
        with gr.Row():
            preview = gr.Image(label="Preview", format="png", interactive=False, height=256, elem_id="gen-preview")
            gallery = gr.Gallery(label="Results (saved as runs)", format="png", columns=2, height=320,
                                 elem_id="gen-results")
        info = gr.Markdown(elem_id="gen-info")
        with gr.Row():
            to_evaluate = gr.Button("Score the newest result in Evaluate →", interactive=False)
            to_attention = gr.Button("See its attention maps →", interactive=False)
        with gr.Accordion("Compare backbones or sweep a parameter", open=False):
            with gr.Row():
                compare_with = gr.CheckboxGroup([(s.label, s.id) for s in specs.values()], label="Backbones",
                                                elem_id="gen-compare-backbones")
                sweep = gr.Dropdown(SWEEPS, value="none", label="Sweep")
                values = gr.Textbox(label="Values", placeholder="e.g. 0.4, 0.6, 0.8")
            compare_btn = gr.Button("Run comparison", elem_id="gen-compare")
            grid = gr.Image(label="Comparison grid", format="png", interactive=False, elem_id="gen-grid")
        token = gr.State(None)
        newest = gr.State(None)

    params = [scene, backbone, prompt, negative, mode, steps, guidance, strength, size, seed, num_images,
              image_guidance, control_scale, no_meta, *meta]

    @user_errors
    def scenes_of(path):
        ids = [s.scene_id for s in lab.datasets.open(path).scenes if s.pre_image is not None]
        return gr.Dropdown(ids, value=ids[0] if ids else None, label="Scene")

    @user_errors
    def on_scene(path, scene_id, backbone_id):
        from core.data.metadata import NO_METADATA, decode_metadata, scene_metadata

        index = lab.datasets.open(path)
        s = index.get(scene_id)
        images = [index.load_image(s, p) if s.image(p) else None for p in ("pre", "post")]
        vector = scene_metadata(index, s, resolution=512)
        decoded = decode_metadata(vector) if tuple(vector) != NO_METADATA else {k: 0 for k in META_FIELDS}
        return [*images, lab.generation.default_prompt(index, scene_id), *[decoded[k] for k in META_FIELDS]]

    def on_backbone(backbone_id):
        spec = lab.backbones.get(backbone_id).spec
        d, shown = spec.defaults, set(spec.controls)
        return [_readiness_text(lab, backbone_id), gr.Button(visible=bool(spec.hub_id)),
                gr.Radio(list(spec.modes), value=d.get("mode", spec.modes[0])),
                gr.Slider(value=d.get("steps", 20), visible="steps" in shown),
                gr.Slider(value=d.get("guidance", 7.5), visible="guidance" in shown),
                gr.Slider(value=d.get("strength", 0.8), visible="strength" in shown),
                gr.Dropdown(value=d.get("size", 512)),
                gr.Slider(value=d.get("image_guidance", 1.5), visible="image_guidance" in shown),
                gr.Slider(value=d.get("control_scale", 1.0), visible="control_scale" in shown),
                gr.Textbox(visible="negative_prompt" in shown),
                gr.Group(visible=spec.needs_metadata)]

    @user_errors
    def fetch(backbone_id, progress=gr.Progress()):
        from core.backends.sources import download as download_weights

        spec = lab.backbones.get(backbone_id).spec
        download_weights(spec, lab.backbones.source(backbone_id), progress=lambda done, total: progress((done, total)))
        return _readiness_text(lab, backbone_id)

    def run(path, record_maps, record_steps_v, *values, progress=gr.Progress()):
        request = _request(lab, values)
        record_maps = bool(record_maps) and lab.generation.can_record_attention(request)
        cancel = _new_token()
        yield {token: cancel}
        try:
            runs = yield from _stream(lab, request, lab.datasets.open(path), cancel, progress, preview, record_maps,
                                      record_maps and bool(record_steps_v))
        except GenerationCancelled as err:
            gr.Info(str(err))
            return
        except LabError as err:
            raise gr.Error(str(err), duration=None) from err
        yield {gallery: [(r.image_path.as_posix(), f"seed {r.record['params']['seed']}") for r in runs],
               info: _run_info(runs), newest: runs[-1].run_id, to_evaluate: gr.Button(interactive=True),
               to_attention: gr.Button(interactive=record_maps)}

    def stop(cancel):
        if cancel is not None:
            cancel.cancel()

    @user_errors
    def compare(path, chosen, sweep_name, sweep_values, *values, progress=gr.Progress()):
        from core.viz import labelled_grid

        base = _request(lab, values)
        index = lab.datasets.open(path)
        cells = _compare_cells(lab, base, chosen or [base.backbone], sweep_name, sweep_values)
        images, labels = [], []
        for i, (label, request) in enumerate(cells):
            progress((i, len(cells)), desc=f"{label}")
            run = lab.generation.generate(request, index, extra_params={"compare": label})[0]
            images.append(run.image())
            labels.append(label)
        s = index.get(base.scene_id)
        context = [(index.load_image(s, "pre"), "pre-event")]
        if s.post_image is not None:
            context.append((index.load_image(s, "post"), "real post-event"))
        return labelled_grid(context + list(zip(images, labels)), size=max(base.size, 256))

    @user_errors
    def count(backbone_id, text, negative_text):
        return _token_text(lab.backbones.token_report(backbone_id, text or "", negative_text or ""), text or "")

    gr.on([prompt.change, negative.change, backbone.change], count, [backbone, prompt, negative], tokens,
          api_name="count_tokens", trigger_mode="always_last")
    def readiness_rows():
        return [_readiness_row(lab, spec) for spec in lab.backbones.specs()]

    gr.on([demo.load, table_btn.click], readiness_rows, None, table, api_name="readiness")
    gr.on([demo.load, folder.change], scenes_of, folder, scene, **INTERNAL)
    scene.change(on_scene, [folder, scene, backbone], [pre, post, prompt, *meta], **INTERNAL)
    gr.on([demo.load, backbone.change], on_backbone, backbone,
          [ready, download, mode, steps, guidance, strength, size, image_guidance, control_scale, negative,
           meta_box], **INTERNAL)
    download.click(fetch, backbone, ready, api_name="download_backbone")
    run_btn.click(run, [folder, record, record_steps, *params], [token, preview, gallery, info, newest, to_evaluate, to_attention],
                  api_name="generate", **GPU)
    stop_btn.click(stop, token, None, api_name="stop", queue=False)
    compare_btn.click(compare, [folder, compare_with, sweep, values, *params], grid, api_name="compare", **GPU)
    return scene, to_evaluate, to_attention, newest


def _new_token():
    from core.generation.progress import CancelToken

    return CancelToken()


def _request(lab, values) -> GenerationRequest:
    (scene_id, backbone_id, prompt, negative, mode, steps, guidance, strength, size, seed, num_images,
     image_guidance, control_scale, no_meta, *meta) = values
    from core.data.metadata import NO_METADATA, encode_metadata

    if not scene_id:
        raise LabError("Pick a scene first: its pre-event tile is the starting point.")
    spec = lab.backbones.get(backbone_id).spec
    metadata = None
    if spec.needs_metadata:
        metadata = NO_METADATA if no_meta else encode_metadata(*[float(v or 0) for v in meta])
    return GenerationRequest(
        backbone=backbone_id, prompt=prompt or "", negative_prompt=negative or "", mode=mode, scene_id=scene_id,
        steps=int(steps), guidance=float(guidance), strength=float(strength), size=int(size), seed=int(seed or 0),
        num_images=int(num_images), metadata=metadata, image_guidance=float(image_guidance),
        control_scale=float(control_scale))


def _stream(lab, request, index, cancel, progress, preview_out, attention=False, attention_steps=False):
    """Run the generation in a worker thread; yield previews while it runs; return its runs."""
    updates: queue.Queue = queue.Queue()
    outcome: dict = {}

    def on_step(step, total, preview=None):
        updates.put((step, total, preview))

    def work():
        try:
            outcome["runs"] = lab.generation.generate(request, index, on_step=on_step, preview_every=5, cancel=cancel,
                                           attention=attention, attention_steps=attention_steps)
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


def _compare_cells(lab, base: GenerationRequest, backbones: list[str], sweep: str, text: str):
    """(label, request) per grid cell; each cell has its own seed (never a shared generator)."""
    values = [v.strip() for v in (text or "").split(",") if v.strip()] if sweep != "none" else [None]
    if sweep != "none" and not values:
        raise LabError(f"Give the {sweep} values to sweep, separated by commas.")
    cells = []
    for backbone_id in backbones:
        spec = lab.backbones.get(backbone_id).spec
        for value in values:
            fields = {"backbone": backbone_id, "num_images": 1}
            if backbone_id != base.backbone:
                fields.update({k: v for k, v in spec.defaults.items() if k in ("steps", "guidance", "strength", "mode")})
            label = spec.label
            if value is not None:
                cast = int if sweep in ("steps", "seed") else float
                try:
                    fields[sweep] = cast(value)
                except ValueError as err:
                    raise LabError(f"{value!r} is not a valid {sweep} value.") from err
                label += f" · {sweep} {value}"
            cells.append((label, replace(base, **fields)))
    return cells


def _readiness_text(lab, backbone_id) -> str:
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


ENCODER_NAMES = {"clip": "CLIP", "clip2": "CLIP 2", "t5": "T5"}


def _token_text(report: dict | None, prompt: str) -> str:
    """Token counts per encoder; where an encoder would cut, the cut-off text in bold."""
    if report is None:
        return "Token counts appear once this backbone's files are on disk."
    parts = []
    for name, r in report.items():
        label = ENCODER_NAMES.get(name, name)
        if not r.get("used"):
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


def _readiness_row(lab, spec) -> list:
    try:
        state = lab.backbones.readiness(spec.id)
    except LabError as err:
        return [spec.label, "no", "", "", spec.vram_gb or "", str(err)]
    size = f"{state.size_bytes / 1e9:.2f}" if state.size_bytes else ""
    return [spec.label, "yes" if state.ready else "no", state.where, size, spec.vram_gb or "", state.missing]


def _run_info(runs) -> str:
    params = runs[0].record["params"]
    tokens = params.get("tokens") or params.get("token_counts")
    lines = [f"Saved {len(runs)} run(s): " + ", ".join(f"`{r.run_id}`" for r in runs),
             f"{params.get('steps')} steps · guidance {params.get('guidance')} · strength {params.get('strength')}"
             f" · {params.get('seconds', 0):.1f} s" if isinstance(params.get('seconds'), (int, float)) else ""]
    if tokens:
        lines.append("Tokens: " + ", ".join(f"{k}: {v.get('prompt_tokens')}" + (" (cut!)" if v.get("truncated") else "")
                                            for k, v in tokens.items() if isinstance(v, dict) and v.get("used")))
    return "\n\n".join(line for line in lines if line)
