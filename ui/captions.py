"""Captions tab: read, correct and review tile captions; every keystroke-level save is
durable and every version can be restored."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from core.errors import LabError
from ui.browse import ALL, DAMAGE_FILTERS
from ui.common import GPU, INTERNAL, user_errors

STATUS_FILTERS = [ALL, "auto", "edited", "reviewed", "no caption yet"]
HISTORY_HEADERS = ["id", "time (UTC)", "author", "kind", "status", "text"]
# Alt+→ next, Alt+← previous, Alt+N next not reviewed (works while typing in the editor).
SHORTCUTS_JS = """
<script>
document.addEventListener('keydown', (e) => {
  if (!e.altKey) return;
  const ids = {ArrowRight: 'cap-next', ArrowLeft: 'cap-prev', n: 'cap-next-unreviewed', N: 'cap-next-unreviewed'};
  const id = ids[e.key];
  if (!id) return;
  const button = document.getElementById(id);
  if (button) { e.preventDefault(); button.click(); }
});
</script>
"""


def build_captions(lab, demo: gr.Blocks, folder: gr.State) -> None:
    """The Captions tab, on the dataset open in Browse and the shared caption store."""
    backbones = [(s.label, s.id) for s in lab.backbones.specs()]
    with gr.Tab("Captions", id="captions"):
        with gr.Row():
            status_f = gr.Dropdown(STATUS_FILTERS, value=ALL, label="Status")
            disaster_f = gr.Dropdown([ALL], value=ALL, label="Disaster")
            damage_f = gr.Dropdown(DAMAGE_FILTERS, value=ALL, label="Damage")
            phase_f = gr.Radio(["pre", "post", "both"], value="post", label="Tiles")
        with gr.Row():
            image = gr.Dropdown([], label="Tile", allow_custom_value=True, scale=4, elem_id="cap-image")
            prev_btn = gr.Button("◀ Previous", elem_id="cap-prev", scale=1)
            next_btn = gr.Button("Next ▶", elem_id="cap-next", scale=1)
            unreviewed_btn = gr.Button("Next not reviewed ▶▶", elem_id="cap-next-unreviewed", scale=1)
        gr.Markdown("Shortcuts: Alt+→ next, Alt+← previous, Alt+N next not reviewed. "
                    "Edits save as you type; the line under the editor says when the last one was saved.")
        with gr.Row():
            tile = gr.Image(label="Tile", format="png", interactive=False, height=420, scale=1)
            with gr.Column(scale=1):
                editor = gr.Textbox(label="Caption (yours to correct)", lines=6, elem_id="cap-editor")
                saved = gr.Markdown(elem_id="cap-saved")
                with gr.Row():
                    backbone = gr.Dropdown(backbones, value=backbones[0][1] if backbones else None,
                                           label="Count tokens for", scale=2)
                    tokens = gr.Markdown(elem_id="cap-tokens")
                with gr.Row():
                    reviewed_btn = gr.Button("Mark reviewed ✓", variant="primary", elem_id="cap-reviewed")
                    edited_btn = gr.Button("Back to edited")
                machine = gr.Textbox(label="Machine caption", lines=4, interactive=False)
                summary = gr.Textbox(label="Summary", lines=2, interactive=False)
        with gr.Accordion("Caption these tiles by machine", open=False):
            with gr.Row():
                captioner = gr.Dropdown(_captioners(), value="template", label="Captioner")
                summarise_for = gr.Dropdown([("no summary", "")] + backbones, value="",
                                            label="Summarise with T5 to fit 77 CLIP tokens of")
                caption_btn = gr.Button("Caption the filtered tiles", variant="primary", elem_id="cap-run")
                stop_btn = gr.Button("Stop", variant="stop")
            batch_note = gr.Markdown(elem_id="cap-batch")
            cancel_state = gr.State(None)
        with gr.Accordion("History", open=False):
            history = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, wrap=True, elem_id="cap-history")
            with gr.Row():
                restore_id = gr.Number(label="History id to restore", precision=0)
                restore_btn = gr.Button("Restore this version")
        with gr.Accordion("Import and export", open=False):
            with gr.Row():
                course_file = gr.File(label="Import the course's captions.jsonl", file_types=[".jsonl"])
                with gr.Column():
                    export_course = gr.Button("Export captions.jsonl (course format)")
                    export_controlnet = gr.Button("Export ControlNet metadata.jsonl for the filtered tiles")
                    export_file = gr.DownloadButton("Download the export", visible=False)
            transfer_note = gr.Markdown()
        images = gr.State([])
        version = gr.State(0)

    filters = [folder, status_f, disaster_f, damage_f, phase_f]
    shown = [image, tile, editor, machine, summary, saved, history, version]

    @user_errors
    def fill_filters(path):
        return gr.Dropdown([ALL] + lab.datasets.open(path).disasters(), value=ALL, label="Disaster")

    @user_errors
    def apply_filters(path, status_v, disaster_v, damage_v, phase_v):
        names = _filtered_images(lab, path, status_v, disaster_v, damage_v, phase_v)
        first = names[0] if names else None
        return [names, gr.Dropdown(names, value=first, label=f"Tile ({len(names)} match)")]

    @user_errors
    def show(path, name):
        if not name:
            return [None, "", "", "", "No tile matches the filters.", [], 0]
        record = lab.captions.store.get(name)
        picture = _tile(lab, path, name)
        if record is None:
            return [picture, "", "", "", "No caption yet: type one, or caption these tiles by machine.", [], 0]
        return [picture, record.text or "", record.machine_caption or "", record.summary or "",
                _saved_line(record), _history_rows(lab, name), record.version]

    def save(name, text, current_version, request: gr.Request):
        if not name:
            return current_version, "Pick a tile first: nothing was saved."
        try:
            record = lab.captions.store.save_edit(name, text, author=_author(request), expected_version=current_version)
        except LabError as err:
            return current_version, f"**Not saved**: {err}"
        return record.version, _saved_line(record)

    @user_errors
    def set_status(name, status, request: gr.Request):
        lab.captions.store.set_status(name, status, author=_author(request))
        record = lab.captions.store.get(name)
        return _saved_line(record), _history_rows(lab, name), record.version

    @user_errors
    def restore(name, history_id, request: gr.Request):
        record = lab.captions.store.restore(name, int(history_id or 0), author=_author(request))
        return record.text, _saved_line(record), _history_rows(lab, name), record.version

    def step(names, name, offset):
        if not names:
            return None
        i = names.index(name) if name in names else -1
        return names[(i + offset) % len(names)]

    def next_unreviewed(names, name):
        start = names.index(name) + 1 if name in names else 0
        for candidate in names[start:] + names[:start]:
            record = lab.captions.store.get(candidate)
            if record is None or record.status != "reviewed":
                return candidate
        gr.Info("Every tile in this list is reviewed.")
        return name

    @user_errors
    def count(backbone_id, text):
        from ui.generate import _token_text

        return _token_text(lab.backbones.token_report(backbone_id, text or ""), text or "") if backbone_id else ""

    @user_errors
    def import_course(path_file):
        if not path_file:
            return gr.skip(), gr.skip()
        report = lab.captions.store.import_course_jsonl(path_file)
        bad = "".join(f"\n- line {n}: {reason}" for n, reason in report.bad[:20])
        return report.summary() + bad, gr.skip()

    @user_errors
    def export(kind, path, names):
        out = Path(lab.settings.work_dir) / "exports" / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        if kind == "captions":
            n = lab.captions.store.export_course_jsonl(out)
            note = f"{n} captions written to `{out.name}`."
        else:
            from core.captions.store import controlnet_pairs

            index = lab.datasets.open(path)
            wanted = {_scene_of(name) for name in names}
            scenes = [s for s in index.scenes if s.scene_id in wanted]
            pairs, skipped = controlnet_pairs(index, scenes, lab.captions.store, relative_to=None)
            n = lab.captions.store.export_controlnet_metadata(out, pairs)
            note = f"{n} training pairs written to `{out.name}` ({skipped} scenes skipped: no caption or no pair)."
        return note, gr.DownloadButton(value=str(out), visible=True)

    def caption_these(path, names, captioner_id, backbone_id, progress=gr.Progress()):
        from core.generation.progress import CancelToken

        if not names:
            raise gr.Error("No tile matches the filters.")
        index = lab.datasets.open(path)
        wanted = {_scene_of(n) for n in names}
        scenes = [s for s in index.scenes if s.scene_id in wanted]
        phases = tuple(sorted({"pre" if "_pre_" in n else "post" for n in names}))
        token = CancelToken()
        yield {cancel_state: token, batch_note: "Captioning…"}
        try:
            report = lab.captions.caption_scenes(index, scenes, captioner_id, phases=phases,
                                        summarise_for=backbone_id or None, cancel=token,
                                        progress=lambda done, total, name: progress((done, total), desc=name))
        except LabError as err:
            raise gr.Error(str(err), duration=None) from err
        yield {batch_note: report.summary()}

    caption_btn.click(caption_these, [folder, images, captioner, summarise_for], [cancel_state, batch_note],
                      api_name="caption_these", **GPU).then(
        show, [folder, image], shown[1:], **INTERNAL)
    stop_btn.click(lambda t: t.cancel() if t is not None else None, cancel_state, None, queue=False,
                   **INTERNAL)
    gr.on([demo.load, folder.change], fill_filters, folder, disaster_f, **INTERNAL)
    gr.on([demo.load, folder.change, status_f.input, disaster_f.input, damage_f.input, phase_f.input],
          apply_filters, filters, [images, image], api_name="caption_filter")
    image.change(show, [folder, image], shown[1:], api_name="show_caption")
    editor.input(save, [image, editor, version], [version, saved], api_name="save_caption",
                 trigger_mode="always_last")
    gr.on([editor.change, backbone.change], count, [backbone, editor], tokens, **INTERNAL,
          trigger_mode="always_last")
    def mark_reviewed(name, request: gr.Request):
        return set_status(name, "reviewed", request)

    def mark_edited(name, request: gr.Request):
        return set_status(name, "edited", request)

    reviewed_btn.click(mark_reviewed, image, [saved, history, version], api_name="mark_reviewed")
    edited_btn.click(mark_edited, image, [saved, history, version], **INTERNAL)
    restore_btn.click(restore, [image, restore_id], [editor, saved, history, version], api_name="restore_caption")
    prev_btn.click(lambda ns, n: step(ns, n, -1), [images, image], image, **INTERNAL)
    next_btn.click(lambda ns, n: step(ns, n, +1), [images, image], image, api_name="next_tile")
    unreviewed_btn.click(next_unreviewed, [images, image], image, api_name="next_unreviewed")
    course_file.upload(import_course, course_file, [transfer_note, export_file], api_name="import_captions")
    export_course.click(lambda p, ns: export("captions", p, ns), [folder, images], [transfer_note, export_file],
                        api_name="export_captions")
    export_controlnet.click(lambda p, ns: export("controlnet", p, ns), [folder, images],
                            [transfer_note, export_file], api_name="export_controlnet")


def _captioners() -> list[tuple[str, str]]:
    from core.captions.captioners import CAPTIONERS

    labels = {"template": "Template from the labels (no model)", "cogvlm2": "CogVLM2 (bf16, ~42 GB)",
              "cogvlm2-int4": "CogVLM2 int4 (~16 GB)", "qwen2-vl": "Qwen2-VL 2B (lighter)"}
    return [(labels.get(c, c), c) for c in CAPTIONERS]


def _author(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "browser") if request is not None else "browser"


def _scene_of(image_name: str) -> str | None:
    from core.data.names import parse_name, scene_id_for

    parsed = parse_name(image_name)
    return scene_id_for(parsed) if parsed else None


def _filtered_images(lab, path, status_v, disaster_v, damage_v, phase_v) -> list[str]:
    index = lab.datasets.open(path)
    scenes = index.filter(disaster=None if disaster_v == ALL else disaster_v,
                          damage=None if damage_v == ALL else damage_v)
    phases = ("pre", "post") if phase_v == "both" else (phase_v,)
    names = [s.image(p).name for s in scenes for p in phases if s.image(p)]
    if status_v == ALL:
        return names
    records = {r.image: r for r in lab.captions.store.list(images=names)}
    if status_v == "no caption yet":
        return [n for n in names if n not in records]
    return [n for n in names if n in records and records[n].status == status_v]


def _tile(lab, path, name):
    index = lab.datasets.open(path)
    scene = index.get(_scene_of(name))
    phase = "pre" if scene.pre_image is not None and scene.pre_image.name == name else "post"
    return index.load_image(scene, phase)


def _saved_line(record) -> str:
    return (f"Saved: version {record.version}, **{record.status}**, "
            f"{record.updated} by {record.updated_by}")


def _history_rows(lab, name) -> list[list]:
    return [[h.id, h.time, h.author, h.kind, h.status, h.text] for h in reversed(lab.captions.store.history(name))]
