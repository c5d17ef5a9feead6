"""Browse tab: open an xBD folder, filter scenes, look at pre/post with footprints."""

from __future__ import annotations

import functools
import inspect
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import gradio as gr

from core.errors import ImageError, LabelError, LabError
from core.types import DAMAGE_CLASSES
from ui.common import INTERNAL, bind, notify, picture_file, report, user_errors

ALL = "All"
PAGE_SIZE = 48
GALLERY_COLUMNS = 3  # wide enough at 1400 px for a whole id under each thumbnail
SHOW_EVERY_S = 0.4  # while thumbnails are being made, the gallery grows this often
DAMAGE_FILTERS = [
    (ALL, ALL),
    ("has destroyed buildings", "destroyed"),
    ("has major damage", "major-damage"),
    ("has minor damage", "minor-damage"),
    ("has undamaged buildings", "no-damage"),
    ("has any damage", "any-damage"),
    ("no buildings", "no-buildings"),
]
METADATA_FIELDS = ("disaster", "disaster_type", "sensor", "capture_date", "gsd", "off_nadir_angle",
                   "sun_azimuth", "sun_elevation", "target_azimuth", "catalog_id", "width", "height")

NAME_THUMBNAILS_JS = """
const name = () => document.querySelectorAll('#browse-gallery .thumbnail-item').forEach(item => {
    const caption = item.querySelector('.caption-label');
    if (!caption) return;
    const id = caption.textContent.trim();
    caption.style.whiteSpace = 'normal';
    caption.style.overflowWrap = 'anywhere';
    for (const el of [item, item.querySelector('img')]) {
        if (el && el.title !== id) el.title = id;
    }
    const img = item.querySelector('img');
    if (img && img.alt !== id) img.alt = id;
});
const gallery = document.querySelector('#browse-gallery') || document.body;
new MutationObserver(name).observe(gallery, {subtree: true, childList: true, characterData: true});
name();
"""


@dataclass
class BrowseHandles:
    """Components other tabs wire to."""

    opened: gr.State  # the data folder currently open, as a string
    selected: gr.Textbox  # the id of the scene on show
    to_evaluate: gr.Button
    to_generate: gr.Button


def build_browse(lab, demo: gr.Blocks) -> BrowseHandles:
    """The Browse tab; returns the components other tabs connect to."""
    with gr.Tab("Browse", id="browse"):
        with gr.Row():
            folder = gr.Textbox(value=str(lab.settings.data_dir), label="Data folder", scale=5,
                                info="An xBD folder: the official release, per-disaster folders, "
                                     "512 px course tiles or a flat folder of *_pre/post_disaster.png")
            open_btn = gr.Button("Open", scale=1, variant="primary")
            check_btn = gr.Button("Check files", scale=1, elem_id="browse-check")
        status = gr.Markdown(elem_id="browse-status")
        with gr.Row():
            split = gr.Dropdown([ALL], value=ALL, label="Split")
            disaster = gr.Dropdown([ALL], value=ALL, label="Disaster")
            dtype = gr.Dropdown([ALL], value=ALL, label="Disaster type")
            damage = gr.Dropdown(DAMAGE_FILTERS, value=ALL, label="Damage")
            query = gr.Textbox(label="Search id", placeholder="e.g. 00000003")
        opened = gr.State(str(lab.settings.data_dir))
        ids = gr.State([])
        page = gr.State(0)
        with gr.Row():
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Scenes (post-event thumbnails)", columns=GALLERY_COLUMNS, height=560,
                                     format="png", allow_preview=False, elem_id="browse-gallery")
                # The browser's own hover text (and alt) on each thumbnail: its full scene id; a
                # caption that does not fit wraps instead of being cut off.
                gr.HTML("", js_on_load=NAME_THUMBNAILS_JS, container=False, padding=False,
                        elem_id="browse-thumbnail-names")
                with gr.Row(equal_height=True, elem_id="browse-pager"):  # one line: small fixed-size buttons
                    prev_btn = gr.Button("◀ Previous", size="sm", scale=0, min_width=100)
                    page_info = gr.Markdown(elem_id="browse-page-info", min_width=120)
                    next_btn = gr.Button("Next ▶", size="sm", scale=0, min_width=80)
            with gr.Column(scale=3):
                title = gr.Markdown("Pick a scene on the left.", elem_id="browse-title")
                with gr.Row():
                    selected = gr.Textbox(label="Scene id", placeholder="pick a thumbnail or type an id",
                                          elem_id="browse-scene", scale=2)
                    view = gr.Radio(["Side by side", "Slider"], value="Side by side", label="View", scale=1)
                    overlay = gr.Checkbox(label="Show building footprints coloured by damage",
                                          elem_id="browse-overlay", scale=1)
                legend = gr.HTML(visible=False, elem_id="browse-legend")
                with gr.Row(visible=True) as pair:
                    pre = gr.Image(label="Pre-event", format="png", interactive=False, elem_id="browse-pre",
                                   buttons=["download", "fullscreen"])
                    post = gr.Image(label="Post-event", format="png", interactive=False, elem_id="browse-post",
                                    buttons=["download", "fullscreen"])
                slider = gr.ImageSlider(label="Pre ↔ post", format="png", visible=False,
                                        interactive=False, max_height=700)
                with gr.Row():
                    to_generate = gr.Button("Generate from this scene →", interactive=False)
                    to_evaluate = gr.Button("Score this scene in Evaluate →", interactive=False)
                # Stacked, each the column's full width, text wrapped: no hidden horizontal scrolling.
                counts = gr.Dataframe(headers=["damage class", "buildings"], label="Buildings (post label)",
                                      interactive=False, wrap=True, column_widths=["60%", "40%"],
                                      elem_id="browse-counts")
                meta = gr.Dataframe(headers=["field", "pre", "post"], label="Metadata", interactive=False,
                                    wrap=True, column_widths=["34%", "33%", "33%"], max_height=1600,  # every row shows
                                    elem_id="browse-meta")

    filters = [opened, split, disaster, dtype, damage, query]
    scene_outputs = [title, pre, post, slider, counts, meta, legend, to_evaluate, to_generate]

    listing = [ids, page, gallery, page_info]
    gr.on([demo.load, open_btn.click, folder.submit], bind(open_folder, lab), [folder, opened],
          [opened, status, split, disaster, dtype], api_name="open_folder").then(
        bind(apply_filters, lab), filters, listing, **INTERNAL)
    check_btn.click(bind(check_files, lab), opened, status, api_name="check_files")
    for f in (split, disaster):  # each narrows the lists below it, then the scenes
        f.input(bind(narrow_filters, lab), [opened, split, disaster, dtype], [disaster, dtype], **INTERNAL).then(
            bind(apply_filters, lab), filters, listing, **INTERNAL)
    for f in (dtype, damage):
        f.input(bind(apply_filters, lab), filters, listing, **INTERNAL)
    query.submit(bind(apply_filters, lab), filters, listing, api_name="filter_scenes")
    prev_btn.click(bind(previous_page, lab), [opened, ids, page], [page, gallery, page_info], **INTERNAL)
    next_btn.click(bind(next_page, lab), [opened, ids, page], [page, gallery, page_info], **INTERNAL)
    gallery.select(pick, [opened, ids, page], selected, **INTERNAL).then(
        bind(show, lab), [opened, selected, overlay, view], scene_outputs, **INTERNAL)
    gr.on([selected.submit, overlay.change], bind(show, lab), [opened, selected, overlay, view], scene_outputs,
          api_name="show_scene")
    view.change(switch_view, view, [pair, slider], **INTERNAL)
    return BrowseHandles(opened=opened, selected=selected, to_evaluate=to_evaluate, to_generate=to_generate)


# -- handlers: plain functions of the Lab and widget values ---------------------------------
@user_errors
def open_folder(lab, path, current=None):
    """Index the folder at `path` afresh. Returns its resolved path, the status line (scene
    count and problems) and the split, disaster and disaster-type filters, all at "All".
    An app reachable from other machines opens only folders under its --data folder
    (Settings.folder_roots). When `path` cannot be opened: one message, the status line
    says so and which folder (`current`) is still open, and everything else stays as it was."""
    try:
        index = lab.datasets.open(path, refresh=True, within=lab.settings.folder_roots)
    except LabError as err:
        report(open_folder, err)  # the toast and the log line every handler gives
        still = f" `{current}` is still open." if current else ""
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return (gr.skip(), f"⚠ Could not open `{path}`: {first}{still}",
                gr.skip(), gr.skip(), gr.skip())
    dropdown = lambda values, label: gr.Dropdown([ALL] + values, value=ALL, label=label)  # noqa: E731
    return (str(index.root), _status(index), dropdown(index.splits(), "Split"),
            dropdown(index.disasters(), "Disaster"), dropdown(index.disaster_types(), "Disaster type"))


@user_errors
def check_files(lab, path, progress=gr.Progress()):
    """Read every image and label of the folder at `path` in full (in parallel, with
    progress); the status line then lists every problem, each bad file with what is wrong."""
    index = lab.datasets.open(path)
    check = index.check_files(progress=lambda done, total: progress((done, total), desc="Checking files"))
    n_bad = len(check.problems)
    verdict = f"{n_bad} bad file(s) or pair(s), listed below" if n_bad else "every one is readable"
    return f"Checked {check.files} files: {verdict}.\n\n" + _status(index)


@user_errors
def narrow_filters(lab, path, split_v, disaster_v, dtype_v):
    """The Disaster and Disaster type filters narrowed to what the filters above them leave:
    the disasters of the chosen split, the types of those (or of the chosen disaster). A
    value no longer offered goes back to "All"."""
    index = lab.datasets.open(path)
    scenes = index.filter(split=_opt(split_v))
    disasters = sorted({s.disaster for s in scenes if s.disaster})
    disaster_v = disaster_v if disaster_v in disasters else ALL
    if _opt(disaster_v):
        scenes = [s for s in scenes if s.disaster == disaster_v]
    types = sorted({t for t in map(index.disaster_type, scenes) if t})
    dtype_v = dtype_v if dtype_v in types else ALL
    return (gr.Dropdown([ALL] + disasters, value=disaster_v, label="Disaster"),
            gr.Dropdown([ALL] + types, value=dtype_v, label="Disaster type"))


@user_errors
def apply_filters(lab, path, split_v, disaster_v, dtype_v, damage_v, query_v):
    """The scenes that pass the filters ("All" is no filter): their ids, page 0, and that
    page's thumbnails with the page caption. A generator: the thumbnails already made show
    at once, the others as they are made; the last value is the whole page."""
    index = lab.datasets.open(path)
    scenes = index.filter(split=_opt(split_v), disaster=_opt(disaster_v),
                          disaster_type=_opt(dtype_v), damage=_opt(damage_v), query=query_v or None)
    scene_ids = [s.scene_id for s in scenes]
    for shown in _page(lab, index, scene_ids, 0):
        yield (scene_ids, 0) + shown


@user_errors
def turn_page(lab, path, scene_ids, page_no, step):
    """Move `step` pages from `page_no`, staying within the pages of `scene_ids`: the new
    page number, its thumbnails and its caption (a generator, like apply_filters)."""
    index = lab.datasets.open(path)
    last = max(0, (len(scene_ids) - 1) // PAGE_SIZE)
    page_no = min(max(0, page_no + step), last)
    for shown in _page(lab, index, scene_ids, page_no):
        yield (page_no,) + shown


def previous_page(lab, path, scene_ids, page_no):
    """The page before `page_no` (see turn_page)."""
    yield from turn_page(lab, path, scene_ids, page_no, -1)


def next_page(lab, path, scene_ids, page_no):
    """The page after `page_no` (see turn_page)."""
    yield from turn_page(lab, path, scene_ids, page_no, +1)


@user_errors
def pick(path, scene_ids, page_no, evt: gr.SelectData):
    """The id of the thumbnail clicked on page `page_no`: its caption (the full scene id),
    else its place on the page."""
    caption = (evt.value or {}).get("caption") if isinstance(evt.value, dict) else None
    if caption in scene_ids:
        return caption
    return scene_ids[page_no * PAGE_SIZE + evt.index]


@user_errors
def show(lab, path, scene_id, show_overlay, view_mode):
    """Everything shown for one scene: title, pre and post tiles (footprints drawn when
    `show_overlay`), the slider pair, building counts, metadata, legend, and the two
    "send to" buttons (active when the scene has the tile they need)."""
    return _scene_view(lab, lab.datasets.open(path), scene_id, show_overlay, view_mode)


@user_errors
def switch_view(view_mode):
    """Show the side-by-side row or the slider."""
    side = view_mode == "Side by side"
    return gr.Row(visible=side), gr.ImageSlider(visible=not side)

def _opt(value):
    return None if value in (None, "", ALL) else value


def _status(index) -> str:
    n_problems = len(index.problems)
    text = f"**{len(index.scenes)} scenes** in `{index.root}`"
    if n_problems:
        shown = "\n".join(f"- `{p.path.name}`: {p.message}" for p in index.problems[:20])
        more = (f"\n- … and {n_problems - 20} more (`python -m core index --data {index.root} --check` "
                "lists them all)") if n_problems > 20 else ""
        text += f" · ⚠ {n_problems} problem(s):\n{shown}{more}"
    return text


def _page(lab, index, scene_ids, page_no):
    """Gallery items (thumbnail path, caption = the full scene id, which the browser also
    shows on hover) and the page caption for one page, as a generator: first the
    thumbnails already in the cache (at once), then, while the others are made in
    parallel, the page as it grows; the last value is the whole page."""
    from core.data.images import cached_thumbnail, thumbnail

    cache = lab.settings.cache_dir
    chunk = scene_ids[page_no * PAGE_SIZE:(page_no + 1) * PAGE_SIZE]
    sources = {}
    for scene_id in chunk:
        scene = index.get(scene_id)
        image = scene.post_image or scene.pre_image
        if image is not None:
            sources[scene_id] = image
    made = {sid: cached_thumbnail(image, cache) for sid, image in sources.items()}
    todo = sorted({image for sid, image in sources.items() if made[sid] is None}, key=str)
    pages = max(1, -(-len(scene_ids) // PAGE_SIZE))
    info = f"{len(scene_ids)} scenes · page {page_no + 1} of {pages}" if scene_ids else "No scene matches."

    def items():
        return [(str(made[sid]), sid) for sid in chunk if made.get(sid) is not None]

    if not todo:
        yield items(), info
        return
    yield items(), f"{info} · making {len(todo)} thumbnail(s)…"
    failed, thumbs = {}, {}
    workers = max(1, min(8, os.cpu_count() or 2, len(todo)))
    with ThreadPoolExecutor(workers, thread_name_prefix="thumbnails") as pool:
        jobs = {pool.submit(thumbnail, image, cache): image for image in todo}
        shown_at = time.monotonic()
        for done, job in enumerate(as_completed(jobs), 1):
            try:
                thumbs[jobs[job]] = job.result()
            except LabError as err:  # a corrupt or huge file must not empty the whole page
                failed.setdefault(str(err))
            made.update({sid: thumbs[image] for sid, image in sources.items() if image in thumbs})
            if done < len(todo) and time.monotonic() - shown_at >= SHOW_EVERY_S:
                shown_at = time.monotonic()
                yield items(), f"{info} · making thumbnails ({done} of {len(todo)})…"
    for message in failed:  # once each: a full disk fails every thumbnail the same way
        notify(message)
    yield items(), info


def _scene_view(lab, index, scene_id, show_overlay, view_mode):
    from core.data.overlay import legend_html

    if not scene_id:
        return ("Pick a scene on the left.", None, None, None, None, None, gr.HTML(visible=False),
                gr.Button(interactive=False), gr.Button(interactive=False))
    scene = index.get(scene_id.strip())
    bad: list[str] = []
    images = {phase: _picture(index, scene, phase, show_overlay, bad) for phase in ("pre", "post")}
    info = index.scene_info(scene)
    title = f"### {scene.scene_id}\n{scene.disaster or 'unknown disaster'} · " \
            f"{info.disaster_type or 'type unknown'}" + (f" · split {scene.split}" if scene.split else "")
    if scene.post_image is None:
        title += "\n\n⚠ No post-event image for this scene."
    title += "".join(f"\n\n⚠ {message}" for message in bad)  # which file, and what to do
    both = images["pre"] is not None and images["post"] is not None
    return (title, images["pre"], images["post"], (images["pre"], images["post"]) if both else None,
            _counts_rows(info), _meta_rows(index, scene),
            gr.HTML(legend_html(), visible=bool(show_overlay)),
            gr.Button(interactive=images["post"] is not None), gr.Button(interactive=images["pre"] is not None))


def _picture(index, scene, phase, show_overlay, bad):
    """One tile of the scene (as a picture file), with footprints drawn when asked; None if the file is absent
    or cannot be read (then what is wrong with it is added to `bad`). A broken label only
    costs the overlay (with a warning), never the picture."""
    from core.data.overlay import draw_footprints

    if scene.image(phase) is None:
        return None
    try:
        image = index.load_image(scene, phase)
    except ImageError as err:
        bad.append(str(err))
        return None
    if show_overlay:
        label = _label_or_warn(index, scene, phase)
        if label is not None:
            image = draw_footprints(image, label, part=scene.part)
    return picture_file(image)


def _label_or_warn(index, scene, phase):
    try:
        return index.label(scene, phase)
    except LabelError as err:
        notify(str(err))
        return None


def _counts_rows(info):
    if not info.counts:
        return [["(no post label)", ""]]
    rows = [[name, info.counts.get(name, 0)] for name in DAMAGE_CLASSES + ("un-classified",)]
    return rows + [["total", info.counts.get("total", 0)]]


def _meta_rows(index, scene):
    labels = {phase: _label_or_warn(index, scene, phase) for phase in ("pre", "post")}
    rows = []
    for name in METADATA_FIELDS:
        values = [getattr(labels[p].metadata, name) if labels[p] else None for p in ("pre", "post")]
        if any(v is not None for v in values):
            rows.append([name] + ["" if v is None else str(v) for v in values])
    rows.extend(_diffusionsat_rows(index, scene))
    return rows or [["(no labels)", "", ""]]


def _diffusionsat_rows(index, scene):
    """DiffusionSat's conditioning for this scene, decoded, so users see what a model gets."""
    from core.data.metadata import NO_METADATA, decode_metadata, scene_metadata

    try:
        vector = scene_metadata(index, scene)
    except LabError:
        return []
    if tuple(vector) == NO_METADATA:
        return [["DiffusionSat metadata", "", "none (no labels): all seven values 0"]]
    decoded = decode_metadata(vector)
    return [[f"DiffusionSat {k}", "", f"{v:.4f}" if isinstance(v, float) else str(v)]
            for k, v in decoded.items()]
