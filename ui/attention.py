"""Attention tab: DAAM word maps of a generation, as pictures and as numbers per damage class."""

from __future__ import annotations

import gradio as gr

from core.types import MASK_REGIONS
from ui.common import GPU, INTERNAL, bind, first_on_disk, fmt, run_label, user_errors

# The course's probes (course.md): what the maps of these words should show.
PROBES = {
    "flood description": "A satellite image of a devastating flood: waterlogged streets, houses submerged, "
                         "greenery and landscape under water",
    "quadrant: top-left": "buildings on the top-left are being flooded",
    "quadrant: top-right": "buildings on the top-right are being flooded",
    "quadrant: bottom-left": "buildings on the bottom-left are being flooded",
    "quadrant: bottom-right": "buildings on the bottom-right are being flooded",
    "damage: no damage": "Buildings are no damage after a flooding",
    "damage: minor damage": "Buildings are minor damage after a flooding",
    "damage: major damage": "Buildings are major damage after a flooding",
    "damage: destroyed": "Buildings are destroyed after a flooding",
}
STATS_HEADERS = ["word", "raw total"] + [f"{r}: attention / pixels" for r in MASK_REGIONS]


def build_attention(lab, demo: gr.Blocks, folder: gr.State, scene: gr.Dropdown):
    """The Attention tab. `scene` is Generate's scene dropdown (the probe runs on it).
    Returns the run dropdown and `runs_with_maps(folder, run_id)`, its fresh value with
    `run_id` chosen, so Generate can open a run here."""
    unet = [(s.label, s.id) for s in lab.backbones.specs() if s.attention in ("unet", "joint")]
    with gr.Tab("Attention", id="attention") as tab:
        gr.Markdown("DAAM word maps: how much each word of the prompt attended to each pixel, summed over "
                    "every cross-attention layer, head and denoising step. Generate with *Record attention "
                    "maps* on, or run one of the course's probes here.")
        with gr.Row():
            run = gr.Dropdown([], label="Run with attention maps", allow_custom_value=True, scale=3,
                              elem_id="att-run")
            refresh = gr.Button("Refresh", scale=1)
        with gr.Row():
            words = gr.CheckboxGroup([], label="Words", scale=3, elem_id="att-words")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", scale=1,
                              elem_id="att-alpha")
            step = gr.Slider(0, 1, value=0, step=1, label="Step (0 = all steps summed)", visible=False,
                             scale=1, elem_id="att-step")
        grid = gr.Gallery(label="Word maps over the generated image (jet: blue low, red high)", columns=4,
                          format="png", height=420, elem_id="att-grid")
        stats = gr.Dataframe(headers=STATS_HEADERS, interactive=False, wrap=True, elem_id="att-stats",
                             label="Share of each word's attention inside building footprints and each "
                                   "damage class, against the share of pixels they cover")
        arrays = gr.DownloadButton("Download the maps as float arrays (.npz)", visible=False)
        with gr.Accordion("Run a probe on the scene chosen in Generate", open=False):
            with gr.Row():
                probe = gr.Dropdown(list(PROBES), value="flood description", label="Probe")
                backbone = gr.Dropdown(unet, value=unet[0][1] if unet else None, label="Backbone")
            probe_prompt = gr.Textbox(PROBES["flood description"], label="Prompt", lines=2)
            probe_btn = gr.Button("Generate with attention maps", variant="primary", elem_id="att-probe")

    runs_with = bind(runs_with_maps, lab)
    gr.on([demo.load, folder.change, refresh.click], runs_with, folder, run, api_name="attention_runs")
    # Runs recorded in another tab appear when this one is opened again; the chosen one stays.
    tab.select(runs_with, [folder, run], run, **INTERNAL)
    run.change(bind(open_run, lab), run, [words, arrays, step], api_name="attention_words").then(
        bind(show, lab), [folder, run, words, alpha, step], [grid, stats], **INTERNAL)
    # alpha.change, not .release: the slider's number box changes the value without a release.
    gr.on([words.input, alpha.change, step.release], bind(show, lab), [folder, run, words, alpha, step],
          [grid, stats], api_name="attention_maps", trigger_mode="always_last")
    probe.change(user_errors(lambda name: PROBES[name]), probe, probe_prompt, **INTERNAL)
    probe_specs = [s for s in lab.backbones.specs() if s.attention in ("unet", "joint")]
    demo.load(lambda: gr.update(value=first_on_disk(lab, probe_specs) or backbone.value), None, backbone,
              **INTERNAL)  # start on a backbone that is on disk
    probe_btn.click(bind(run_probe, lab), [folder, scene, backbone, probe_prompt], run, api_name="attention_probe",
                    **GPU)
    return run, runs_with


# -- handlers: plain functions of the Lab and widget values ---------------------------------
@user_errors
def runs_with_maps(lab, path, keep=None):
    """The run dropdown: every run of the folder at `path` that has word maps, `keep` (a
    run id) chosen when it is one of them, else the first."""
    from core.attention.analysis import has_maps

    root = str(lab.datasets.open(path).root)
    found = [(run_label(r, scene=True), r.run_id) for r in lab.runs.list()
             if has_maps(r.path) and r.record.get("data_root") == root]
    ids = [c[1] for c in found]
    return gr.Dropdown(found, value=keep if keep in ids else (ids[0] if ids else None),
                       label="Run with attention maps")


@user_errors
def open_run(lab, run_id):
    """For one run: its words (all ticked), the download of its float arrays, and the step
    slider (shown only when the run kept each step's maps)."""
    from core.attention.analysis import load_maps, step_count

    if not run_id:
        return gr.CheckboxGroup([], value=[]), gr.DownloadButton(visible=False), gr.Slider(visible=False)
    folder_path = lab.runs.open(run_id).path
    names = list(load_maps(folder_path))
    n_steps = step_count(folder_path)
    return (gr.CheckboxGroup(names, value=names, label="Words"),
            gr.DownloadButton(value=str(folder_path / "attention" / "maps.npz"), visible=True),
            gr.Slider(0, max(n_steps, 1), value=0, step=1, visible=n_steps > 0,
                      label=f"Step (0 = all {n_steps} steps summed)"))


@user_errors
def show(lab, path, run_id, chosen, opacity, step_no=0):
    """The `chosen` words of a run at step `step_no` (0: all steps summed): (overlay, word)
    pictures at `opacity`, and the table of each word's share of attention per region."""
    from core.attention.analysis import maps_at_step, overlay

    if not run_id:
        return [], []
    r = lab.runs.open(run_id)
    maps = maps_at_step(r.path, step_no)
    image = r.image()
    pictures = [(overlay(image, maps[w].map, alpha=float(opacity)), w) for w in chosen or [] if w in maps]
    return pictures, _stats_rows(lab, path, r, [maps[w] for w in chosen or [] if w in maps], step_no)


@user_errors
def run_probe(lab, path, scene_id, backbone_id, prompt, progress=gr.Progress()):
    """Generate one image of `scene_id` with `prompt` on `backbone_id` (its default settings),
    recording attention maps; returns the run dropdown with the new run chosen."""
    index = lab.datasets.open(path)
    request = lab.generation.request_from({"backbone": backbone_id, "prompt": prompt, "scene_id": scene_id,
                                           "num_images": 1}, index)
    runs = lab.generation.generate(request, index, attention=True,
                                   on_step=lambda step, total, **_: progress((step, total or step), desc="Denoising"))
    return runs_with_maps(lab, path, runs[0].run_id)


def _stats_rows(lab, path, run, maps, step_no=0) -> list[list]:
    """Per word: share of attention inside each region vs the share of pixels it covers.
    The maps summed over all steps show the shares the generation saved with the run
    (attention/shares.json); a step's maps, or an older run without the file, are
    computed here against the scene's post-event label."""
    from core.attention.analysis import load_shares, scene_shares

    shares = None if step_no else load_shares(run.path)
    if shares is None or any(m.word not in shares for m in maps):
        scene_id = run.record.get("scene_id")
        shares = scene_shares(maps, lab.datasets.open(path).get(scene_id) if scene_id else None)
    if shares is None:
        return [[m.word, fmt(m.raw_total, 3)] + ["no labels"] * len(MASK_REGIONS) for m in maps]
    return [[m.word, fmt(m.raw_total, 3)] + [f"{a:.1%} / {p:.1%}" if p > 0 else "no pixels"
                                             for a, p in (shares[m.word][r] for r in MASK_REGIONS)]
            for m in maps]
