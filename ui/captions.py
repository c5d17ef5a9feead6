"""Captions tab: read, correct and review tile captions; every keystroke-level save is
durable and every version can be restored.

`build_captions` only lays out the widgets and wires their events. Every handler is a
module-level function taking the `Lab` and plain widget values and returning plain values
or gradio updates, so it can be called (and tested) without a browser. What the CLI needs
as well (which tiles a filter selects, file names of exports, import and export) lives in
`core.captions.service.CaptionService`.
"""

from __future__ import annotations

import difflib
import os
from functools import partial
from pathlib import Path

import gradio as gr

from core.captions.service import AUTOSAVE_PAUSE_SECONDS, NO_CAPTION
from core.captions.store import ConflictError
from core.errors import LabError
from ui.browse import ALL, DAMAGE_FILTERS
from ui.common import GPU, INTERNAL, first_on_disk, job_text, job_view, picture_file, stop_job, user_errors

STATUS_FILTERS = [ALL, "auto", "edited", "reviewed", NO_CAPTION]
HISTORY_HEADERS = ["id", "when (UTC)", "author", "kind", "status", "change from the version before"]
RESTORE_HINT = "Pick a row of the history to restore that version."
DIFF_CHARS = 240  # longest change shown in a history row
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
            tile = gr.Image(label="Tile", format="png", interactive=False, height=420, scale=1, elem_id="cap-tile")
            with gr.Column(scale=1):
                editor = gr.Textbox(label="Caption (yours to correct)", lines=6, elem_id="cap-editor")
                saved = gr.Markdown(elem_id="cap-saved")
                with gr.Row():
                    backbone = gr.Dropdown(backbones, value=count_backbone(lab),
                                           label="Count tokens for", scale=2)
                    tokens = gr.Markdown(elem_id="cap-tokens")
                with gr.Row():
                    reviewed_btn = gr.Button("Mark reviewed ✓", variant="primary", elem_id="cap-reviewed")
                    edited_btn = gr.Button("Back to edited")
                machine = gr.Textbox(label="Machine caption", lines=4, interactive=False)
                summary = gr.Textbox(label="Summary", lines=2, interactive=False)
        with gr.Accordion("Caption these tiles by machine", open=False):
            with gr.Row():
                captioner = gr.Dropdown(captioner_choices(), value="template", label="Captioner")
                summarise_for = gr.Dropdown([("no summary", "")] + backbones, value="",
                                            label="Summarise with T5 to fit 77 CLIP tokens of")
                caption_btn = gr.Button("Caption the filtered tiles", variant="primary", elem_id="cap-run")
                stop_btn = gr.Button("Stop", variant="stop")
            batch_note = gr.Markdown(elem_id="cap-batch")
            cancel_state = gr.State(None)
            with gr.Row():
                # (the GPUs are counted when it starts: building the page imports no torch)
                bg_btn = gr.Button("Caption them in the background (one process per GPU)", elem_id="cap-bg-run")
                bg_stop = gr.Button("Stop the background batch", elem_id="cap-bg-stop")
            bg_note = gr.Markdown("A background batch goes on while you browse and edit; it captions the tiles of "
                                  "the disaster, damage and phase filters (whatever their status) and resumes where "
                                  "an earlier one stopped.", elem_id="cap-bg-note")
            bg_job = gr.State(None)
            bg_timer = gr.Timer(2.0, active=False)
        with gr.Accordion("History", open=False):
            history = gr.Dataframe(headers=HISTORY_HEADERS, interactive=False, wrap=True, elem_id="cap-history",
                                   column_widths=["6%", "18%", "10%", "9%", "9%", "48%"])
            picked = gr.Markdown(RESTORE_HINT, elem_id="cap-picked")
            with gr.Row():
                # Set by picking a row (hidden; an API parameter of restore_caption).
                restore_id = gr.Number(label="History id to restore", precision=0, visible=False)
                restore_btn = gr.Button("Restore the picked version", interactive=False, elem_id="cap-restore")
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
    shown = [tile, editor, machine, summary, saved, history, version]
    exported = [transfer_note, export_file]

    # The saving handlers take the author's name; gradio hands the request only to a
    # function that declares it, so these adapters read it there.
    def save_caption(path, name, text, current_version, request: gr.Request):
        return save(lab, path, name, text, current_version, author_of(request))

    def mark_reviewed(name, current_version, request: gr.Request):
        return set_status(lab, name, "reviewed", author_of(request), current_version)

    def mark_edited(name, current_version, request: gr.Request):
        return set_status(lab, name, "edited", author_of(request), current_version)

    def restore_version(name, history_id, current_version, request: gr.Request):
        return restore(lab, name, history_id, author_of(request), current_version)

    def pick_version(name, evt: gr.SelectData):
        return pick(lab, name, evt.row_value)

    caption_btn.click(partial(caption_these, lab), [folder, images, captioner, summarise_for],
                      [cancel_state, batch_note], api_name="caption_these", **GPU).then(
        partial(show, lab), [folder, image], shown, **INTERNAL)
    stop_btn.click(stop_captioning, cancel_state, None, queue=False, api_name="stop_captioning", **INTERNAL)
    bg_btn.click(partial(start_background, lab), [folder, captioner, summarise_for, disaster_f, damage_f, phase_f],
                 [bg_job, bg_note, bg_timer], api_name="caption_in_background")
    bg_timer.tick(partial(background_view, lab), bg_job, [bg_note, bg_timer], **INTERNAL).then(
        partial(refresh_untouched, lab), [folder, image, editor, version], shown, **INTERNAL)
    bg_stop.click(partial(stop_background, lab), bg_job, [bg_note, bg_timer], api_name="stop_background_captions")
    gr.on([demo.load, folder.change], partial(fill_filters, lab), folder, disaster_f, **INTERNAL)
    gr.on([demo.load, folder.change, status_f.input, disaster_f.input, damage_f.input, phase_f.input],
          partial(apply_filters, lab), filters, [images, image], api_name="caption_filter")
    image.change(partial(show, lab), [folder, image], shown, api_name="show_caption")
    editor.input(save_caption, [folder, image, editor, version], [version, saved, history],
                 api_name="save_caption", trigger_mode="always_last")
    gr.on([editor.change, backbone.change], partial(count, lab), [backbone, editor], tokens, **INTERNAL,
          trigger_mode="always_last")
    reviewed_btn.click(mark_reviewed, [image, version], [saved, history, version], api_name="mark_reviewed")
    edited_btn.click(mark_edited, [image, version], [saved, history, version], **INTERNAL)
    history.select(pick_version, image, [restore_id, picked, restore_btn], **INTERNAL)
    image.change(lambda: (None, RESTORE_HINT, gr.Button(interactive=False)), None,
                 [restore_id, picked, restore_btn], **INTERNAL)
    restore_btn.click(restore_version, [image, restore_id, version], [editor, saved, history, version],
                      api_name="restore_caption")
    prev_btn.click(partial(step, offset=-1), [images, image], image, **INTERNAL)
    next_btn.click(partial(step, offset=+1), [images, image], image, api_name="next_tile")
    unreviewed_btn.click(partial(next_unreviewed, lab), [images, image], image, api_name="next_unreviewed")
    course_file.upload(partial(import_course, lab), course_file, exported, api_name="import_captions")
    export_course.click(partial(export, lab, "captions"), [folder, images], exported, api_name="export_captions")
    export_controlnet.click(partial(export, lab, "controlnet"), [folder, images], exported,
                            api_name="export_controlnet")


# -- handlers -----------------------------------------------------------------------------
@user_errors
def fill_filters(lab, path):
    """The Disaster filter for the dataset at `path`: All, then each of its disasters."""
    return gr.Dropdown([ALL] + lab.datasets.open(path).disasters(), value=ALL, label="Disaster")


@user_errors
def apply_filters(lab, path, status_v, disaster_v, damage_v, phase_v):
    """[image names the filters select, the Tile dropdown listing them with the first picked]."""
    names = filtered_images(lab, path, status_v, disaster_v, damage_v, phase_v)
    first = names[0] if names else None
    return [names, gr.Dropdown(names, value=first, label=f"Tile ({len(names)} match)")]


def filtered_images(lab, path, status_v, disaster_v, damage_v, phase_v) -> list[str]:
    """Image names of the dataset at `path` that the filters' values select (`ALL` = any;
    `phase_v` "pre", "post" or "both"), scene by scene."""
    index = lab.datasets.open(path)
    scenes = index.filter(disaster=_any(disaster_v), damage=_any(damage_v))
    phases = ("pre", "post") if phase_v == "both" else (phase_v,)
    return lab.captions.image_names(scenes, phases, status=_any(status_v))


@user_errors
def show(lab, path, name) -> list:
    """[tile picture, caption text, machine caption, summary, saved line, history rows,
    version] of image `name`; a hint in the saved line when there is no tile or no caption."""
    if not name:
        return [None, "", "", "", "No tile matches the filters.", [], 0]
    record = lab.captions.store.get(name)
    picture = tile_picture(lab, path, name)
    if record is None:
        return [picture, "", "", "", "No caption yet: type one, or caption these tiles by machine.", [], 0]
    return [picture, record.text or "", record.machine_caption or "", record.summary or "",
            saved_line(record), history_rows(lab, name), record.version]


def refresh_untouched(lab, path, name, text, loaded_version) -> list:
    """What `show` gives for tile `name` when the store holds a newer version than the page
    loaded (a background batch captioned it) and the editor holds nothing of the user's
    that could be lost (empty, or the stored text); else every output unchanged."""
    record = lab.captions.store.get(name) if name else None
    if record is None or record.version == loaded_version or (text.strip() and text != record.text):
        return [gr.skip()] * 7
    return show(lab, path, name)


@user_errors
def save(lab, path, name, text, current_version, author) -> tuple[int, str, list[list]]:
    """Save `text` as `author`'s caption of tile `name` of the dataset at `path`, if it is
    still at `current_version`. Returns (the version now loaded, the line under the editor,
    the history rows): the new version and what was saved, or the old version and why
    nothing was (a stale page, a name the dataset does not know, a disk that refused the
    write; said in the line, never raised, so autosave goes on). Autosaves by one author
    less than AUTOSAVE_PAUSE_SECONDS apart make one history entry (see
    `CaptionStore.save_edit`); the text saved last is always the stored one."""
    if not name:
        return current_version, "Pick a tile first: nothing was saved.", gr.skip()
    try:
        record = lab.captions.save_edit(name, text, author=author, expected_version=current_version,
                                        index=lab.datasets.open(path), coalesce_seconds=AUTOSAVE_PAUSE_SECONDS)
    except LabError as err:
        return current_version, f"**Not saved**: {err}", gr.skip()
    return record.version, saved_line(record), history_rows(lab, name)


@user_errors
def set_status(lab, name, status, author, current_version) -> tuple[str, list[list], int]:
    """Give `name`'s caption `status` ("edited" or "reviewed") as `author`, if it is still at
    `current_version` (the version this page loaded); returns (saved line, history rows,
    version). When someone saved since, nothing changes and the saved line says so."""
    try:
        record = lab.captions.store.set_status(name, status, author=author, expected_version=current_version)
    except ConflictError as err:
        return f"**Not marked {status}**: {err}", history_rows(lab, name), current_version
    return saved_line(record), history_rows(lab, name), record.version


@user_errors
def restore(lab, name, history_id, author, current_version) -> tuple[str, str, list[list], int]:
    """Make the text of history entry `history_id` `name`'s caption again, as `author`, if
    it is still at `current_version`; returns (text, saved line, history rows, version).
    When someone saved since, nothing changes (the editor is left as it is) and the saved
    line says so; any other refusal (an entry of another image) is a message, and every
    output, the editor included, keeps what it shows."""
    try:
        record = lab.captions.store.restore(name, int(history_id or 0), author=author,
                                            expected_version=current_version)
    except ConflictError as err:
        return gr.skip(), f"**Not restored**: {err}", history_rows(lab, name), current_version
    return record.text, saved_line(record), history_rows(lab, name), record.version


@user_errors
def pick(lab, name, row) -> tuple:
    """(history id, what restoring it would bring back, the Restore button made usable) for
    the History row `row` (its cells, id first) of image `name`."""
    history_id = int(row[0])
    entry = next((h for h in lab.captions.store.history(name) if h.id == history_id), None) if name else None
    if entry is None:
        raise LabError("That row is not in this tile's history any more: pick one from the table.")
    text = entry.text if len(entry.text) <= 600 else entry.text[:600] + "…"
    note = (f"Picked the version of {short_time(entry.time)} by {entry.author or 'unknown'} "
            f"({entry.kind}, {entry.status}). Restoring makes this text the caption again:\n\n> {text}")
    return history_id, note, gr.Button(f"Restore the version of {short_time(entry.time)}", interactive=True)


@user_errors
def step(names, name, offset):
    """The image `offset` places from `name` in `names`, wrapping round (from the start
    when `name` is not listed); None for an empty list."""
    if not names:
        return None
    i = names.index(name) if name in names else -1
    return names[(i + offset) % len(names)]


@user_errors
def next_unreviewed(lab, names, name):
    """The next image after `name` in `names` whose caption is not reviewed; `name` itself,
    with a notice, when every one is."""
    found = lab.captions.next_not_reviewed(names, name)
    if found is None:
        gr.Info("Every tile in this list is reviewed.")
        return name
    return found


@user_errors
def count(lab, backbone_id, text) -> str:
    """Token counts of `text` for each text encoder of the backbone ("" with no backbone)."""
    from ui.generate import token_text

    return token_text(lab, backbone_id, text or "") if backbone_id else ""


@user_errors
def import_course(lab, path_file):
    """Import an uploaded course captions.jsonl; returns (what it did with up to 20 bad
    lines, no change to the download button)."""
    if not path_file:
        return gr.skip(), gr.skip()
    try:
        report = lab.captions.import_course(path_file)
    except LabError as err:  # said with the file's own name, not the server's upload path
        raise LabError(_own_name(str(err), path_file)) from err
    bad = "".join(f"\n- line {n}: {reason}" for n, reason in report.bad[:20])
    return _own_name(report.summary(), path_file) + _own_name(bad, path_file), gr.skip()


@user_errors
def export(lab, kind, path, names):
    """Export "captions" (every caption, course format) or "controlnet" (training pairs of
    the scenes of `names` in the dataset at `path`) to a new file in the exports folder;
    returns (what was written, the download button showing that file)."""
    out = lab.captions.export_path(kind)
    if kind == "captions":
        n = lab.captions.export_course(out)
        note = f"{n} captions written to `{out.name}`."
    else:
        index = lab.datasets.open(path)
        n, skipped = lab.captions.export_controlnet(out, index, lab.captions.scenes_of(index, names))
        note = f"{n} training pairs written to `{out.name}` ({skipped} scenes skipped: no caption or no pair)."
    return note, gr.DownloadButton(value=str(out), visible=True)


@user_errors
def caption_these(lab, path, names, captioner_id, backbone_id, progress=gr.Progress()):
    """Machine-caption the tiles `names` with `captioner_id` (summarised for `backbone_id`
    when given). Yields (cancel token, "Captioning…") first, then (no change, the report).
    A refusal (no tile, a model not on disk) is a message; the note then says nothing was done."""
    from core.generation.progress import CancelToken

    if not names:
        raise LabError("No tile matches the filters: change them so that some tiles are listed.")
    index = lab.datasets.open(path)
    token = CancelToken()
    yield token, "Captioning…"
    try:
        report = lab.captions.caption_scenes(index, lab.captions.scenes_of(index, names), captioner_id,
                                             phases=lab.captions.phases_of(names),
                                             summarise_for=backbone_id or None, cancel=token,
                                             progress=lambda done, total, name: progress((done, total), desc=name))
    except LabError:
        yield gr.skip(), "Not captioned: see the message."
        raise
    yield gr.skip(), report.summary()


@user_errors
def start_background(lab, path, captioner_id, backbone_id, disaster_v, damage_v, phase_v):
    """Start `python -m core caption` on the filters as a background job, one process per
    GPU; (job id, its status line, the timer that watches it)."""
    from core.captions.captioners import get_captioner

    index = lab.datasets.open(path)
    if not index.filter(disaster=_any(disaster_v), damage=_any(damage_v)):
        raise LabError("No scene matches the disaster and damage filters: change them first.")
    captioner = get_captioner(captioner_id)
    captioner.check_ready(lab.settings.models_dir)  # before a process starts: the same message as here
    args = ["--data", str(index.root), "--captioner", captioner_id, "--phase", phase_v]
    for flag, value in (("--summarise", backbone_id or None), ("--disaster", _any(disaster_v)),
                        ("--damage", _any(damage_v))):
        if value:
            args += [flag, value]
    job = lab.jobs.start("caption", args)
    return job, job_text(lab.jobs.status(job), "tiles"), gr.Timer(active=True)


def background_view(lab, job):
    return job_view(lab, job, "tiles")


@user_errors
def stop_background(lab, job):
    return stop_job(lab, job, "tiles")


@user_errors
def stop_captioning(token) -> None:
    """Ask the machine captioning holding `token` to stop after the tile in progress."""
    if token is not None:
        token.cancel()


# -- small helpers ------------------------------------------------------------------------
def captioner_choices() -> list[tuple[str, str]]:
    """(label, id) of every captioner, for the Captioner dropdown."""
    from core.captions.captioners import CAPTIONERS

    labels = {"template": "Template from the labels (no model)", "cogvlm2": "CogVLM2 (bf16, ~42 GB)",
              "cogvlm2-int4": "CogVLM2 int4 (~16 GB)", "qwen2-vl": "Qwen2-VL 2B (lighter)"}
    return [(labels.get(c, c), c) for c in CAPTIONERS]


def author_of(request: gr.Request | None) -> str:
    """The signed-in user's name, else "browser"."""
    return (getattr(request, "username", None) or "browser") if request is not None else "browser"


def tile_picture(lab, path, name) -> str:
    """The picture of image `name` of the dataset at `path`, as the path of a PNG named by
    its content.

    Not the array: gradio writes an array to `<cache>/<hash of its bytes>/image.png`
    again on every event that shows it, truncating the file in place, so a browser still
    reading that URL (a reload, two events showing one tile) got a short body and a
    Content-Length mismatch: a broken image (see `ui.common.picture_file`)."""
    index = lab.datasets.open(path)
    return picture_file(index.load_image(*lab.captions.locate(index, name)))


def saved_line(record) -> str:
    """The line under the editor: which version was saved, its status, when and by whom."""
    return (f"Saved: version {record.version}, **{record.status}**, "
            f"{short_time(record.updated)} UTC by {record.updated_by}")


def history_rows(lab, name) -> list[list]:
    """The History table of `name`, newest change first: id, time, author, kind, status
    and the change of the text from the entry before (`word_diff`)."""
    entries = lab.captions.store.history(name) if name else []
    rows, before = [], None
    for h in entries:
        rows.append([h.id, short_time(h.time), h.author or "", h.kind, h.status, word_diff(before, h.text)])
        before = h.text
    return rows[::-1]


def word_diff(old: str | None, new: str, limit: int = DIFF_CHARS) -> str:
    """What changed from `old` to `new`, word by word: "+words" added, "−words" removed
    (a replacement is both), the changes in order, separated by " … "; the whole text
    with "+" for the first version, "(text unchanged)" when only the status changed.
    At most `limit` characters."""
    if old is None:
        out = "+" + new if new else "(empty)"
    elif old == new:
        out = "(text unchanged)"
    else:
        a, b = old.split(), new.split()
        hunks = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            hunk = []
            if op in ("replace", "delete"):
                hunk.append("−" + " ".join(a[i1:i2]))
            if op in ("replace", "insert"):
                hunk.append("+" + " ".join(b[j1:j2]))
            if hunk:
                hunks.append(" ".join(hunk))
        out = " … ".join(hunks) or "(spacing only)"
    return out if len(out) <= limit else out[:limit - 1] + "…"


def short_time(iso: str) -> str:
    """An ISO time of the store as "YYYY-MM-DD HH:MM:SS" (UTC)."""
    return iso[:19].replace("T", " ") if isinstance(iso, str) else ""


def count_backbone(lab) -> str | None:
    """The backbone the token counter starts on: the first whose files are on disk; with
    none, the first whose CLIP count works without files (not a test backbone); else the
    first one."""
    specs = lab.backbones.specs()
    ready = first_on_disk(lab, specs)
    if ready:
        return ready
    for spec in specs:
        if not spec.test_only and any(name.startswith("clip") for name in spec.tokenizers):
            return spec.id
    return specs[0].id if specs else None


def _own_name(text: str, path) -> str:
    """`text` with the server's path of an uploaded file (and its folder) replaced by the
    file's own name."""
    full = str(path)
    name = Path(full).name
    text = text.replace(full, name)
    folder = str(Path(full).parent)
    return text.replace(folder + os.sep, "").replace(folder, "the upload") if folder not in ("", ".") else text


def _any(value):
    """None (no filter) for the `ALL` choice, else the value."""
    return None if value == ALL else value
