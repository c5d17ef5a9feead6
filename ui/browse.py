"""Browse tab: open an xBD folder, filter scenes, look at pre/post with footprints."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from core.errors import ImageError, LabelError, LabError
from core.types import DAMAGE_CLASSES
from ui.common import INTERNAL, bind, user_errors

ALL = "All"
PAGE_SIZE = 48
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
                gallery = gr.Gallery(label="Scenes (post-event thumbnails)", columns=4, height=560, format="png",
                                     allow_preview=False, elem_id="browse-gallery")
                with gr.Row():
                    prev_btn = gr.Button("◀ Previous", size="sm")
                    page_info = gr.Markdown()
                    next_btn = gr.Button("Next ▶", size="sm")
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
                with gr.Row():
                    counts = gr.Dataframe(headers=["damage class", "buildings"], label="Buildings (post label)",
                                          interactive=False, scale=1)
                    meta = gr.Dataframe(headers=["field", "pre", "post"], label="Metadata",
                                        interactive=False, scale=2, wrap=True)

    filters = [opened, split, disaster, dtype, damage, query]
    scene_outputs = [title, pre, post, slider, counts, meta, legend, to_evaluate, to_generate]

    gr.on([demo.load, open_btn.click, folder.submit], bind(open_folder, lab), folder,
          [opened, status, split, disaster, dtype], api_name="open_folder").then(
        bind(apply_filters, lab), filters, [ids, page, gallery, page_info], **INTERNAL)
    check_btn.click(bind(check_files, lab), opened, status, api_name="check_files")
    for f in (split, disaster, dtype, damage):
        f.input(bind(apply_filters, lab), filters, [ids, page, gallery, page_info], **INTERNAL)
    query.submit(bind(apply_filters, lab), filters, [ids, page, gallery, page_info], api_name="filter_scenes")
    prev_btn.click(lambda p, i, n: turn_page(lab, p, i, n, -1), [opened, ids, page],
                   [page, gallery, page_info], **INTERNAL)
    next_btn.click(lambda p, i, n: turn_page(lab, p, i, n, +1), [opened, ids, page],
                   [page, gallery, page_info], **INTERNAL)
    gallery.select(pick, [opened, ids, page], selected, **INTERNAL).then(
        bind(show, lab), [opened, selected, overlay, view], scene_outputs, **INTERNAL)
    gr.on([selected.submit, overlay.change], bind(show, lab), [opened, selected, overlay, view], scene_outputs,
          api_name="show_scene")
    view.change(switch_view, view, [pair, slider], **INTERNAL)
    return BrowseHandles(opened=opened, selected=selected, to_evaluate=to_evaluate, to_generate=to_generate)


# -- handlers: plain functions of the Lab and widget values ---------------------------------
@user_errors
def open_folder(lab, path):
    """Index the folder at `path` afresh. Returns its resolved path, the status line (scene
    count and problems) and the split, disaster and disaster-type filters, all at "All".
    An app reachable from other machines opens only folders under its --data folder
    (Settings.folder_roots)."""
    index = lab.datasets.open(path, refresh=True, within=lab.settings.folder_roots)
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
def apply_filters(lab, path, split_v, disaster_v, dtype_v, damage_v, query_v):
    """The scenes that pass the filters ("All" is no filter): their ids, page 0, and that
    page's thumbnails with the page caption."""
    index = lab.datasets.open(path)
    scenes = index.filter(split=_opt(split_v), disaster=_opt(disaster_v),
                          disaster_type=_opt(dtype_v), damage=_opt(damage_v), query=query_v or None)
    scene_ids = [s.scene_id for s in scenes]
    return (scene_ids, 0) + _page(lab, index, scene_ids, 0)


@user_errors
def turn_page(lab, path, scene_ids, page_no, step):
    """Move `step` pages from `page_no`, staying within the pages of `scene_ids`: the new
    page number, its thumbnails and its caption."""
    index = lab.datasets.open(path)
    last = max(0, (len(scene_ids) - 1) // PAGE_SIZE)
    page_no = min(max(0, page_no + step), last)
    return (page_no,) + _page(lab, index, scene_ids, page_no)


def pick(path, scene_ids, page_no, evt: gr.SelectData):
    """The id of the thumbnail clicked on page `page_no`."""
    return scene_ids[page_no * PAGE_SIZE + evt.index]


@user_errors
def show(lab, path, scene_id, show_overlay, view_mode):
    """Everything shown for one scene: title, pre and post tiles (footprints drawn when
    `show_overlay`), the slider pair, building counts, metadata, legend, and the two
    "send to" buttons (active when the scene has the tile they need)."""
    return _scene_view(lab, lab.datasets.open(path), scene_id, show_overlay, view_mode)


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
    """Gallery items (thumbnail path, caption) and the page caption for one page."""
    from core.data.images import thumbnail

    chunk = scene_ids[page_no * PAGE_SIZE:(page_no + 1) * PAGE_SIZE]
    items, failed = [], {}
    for scene_id in chunk:
        scene = index.get(scene_id)
        image = scene.post_image or scene.pre_image
        try:
            items.append((str(thumbnail(image, lab.settings.cache_dir)), scene_id))
        except LabError as err:  # a corrupt or huge file must not empty the whole page
            failed.setdefault(str(err))
    for message in failed:  # once each: a full disk fails every thumbnail the same way
        gr.Warning(message)
    pages = max(1, -(-len(scene_ids) // PAGE_SIZE))
    info = f"{len(scene_ids)} scenes · page {page_no + 1} of {pages}" if scene_ids else "No scene matches."
    return items, info


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
    """One tile of the scene, with footprints drawn when asked; None if the file is absent
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
    return image


def _label_or_warn(index, scene, phase):
    try:
        return index.label(scene, phase)
    except LabelError as err:
        gr.Warning(str(err))
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
