"""Attention tab: DAAM word maps of a generation, as pictures and as numbers per damage class."""

from __future__ import annotations

import gradio as gr
import numpy as np

from core.types import GenerationRequest, MASK_REGIONS
from ui.common import GPU, INTERNAL, fmt, user_errors

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
    with gr.Tab("Attention", id="attention"):
        gr.Markdown("DAAM word maps: how much each word of the prompt attended to each pixel, summed over "
                    "every cross-attention layer, head and denoising step. Generate with *Record attention "
                    "maps* on, or run one of the course's probes here.")
        with gr.Row():
            run = gr.Dropdown([], label="Run with attention maps", allow_custom_value=True, scale=3,
                              elem_id="att-run")
            refresh = gr.Button("Refresh", scale=1)
        with gr.Row():
            words = gr.CheckboxGroup([], label="Words", scale=3, elem_id="att-words")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", scale=1)
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

    @user_errors
    def runs_with_maps(path, keep=None):
        root = str(lab.datasets.open(path).root)
        found = [(f"{r.record['backbone']} · {r.record.get('scene_id')} · {r.record.get('created', '')[:19]}",
                  r.run_id) for r in lab.runs.list()
                 if (r.path / "attention" / "words.json").exists() and r.record.get("data_root") == root]
        ids = [c[1] for c in found]
        return gr.Dropdown(found, value=keep if keep in ids else (ids[0] if ids else None),
                           label="Run with attention maps")

    @user_errors
    def open_run(run_id):
        from core.attention.analysis import load_maps

        from core.attention.analysis import load_step_maps

        if not run_id:
            return gr.CheckboxGroup([], value=[]), gr.DownloadButton(visible=False), gr.Slider(visible=False)
        folder_path = lab.runs.open(run_id).path
        names = list(load_maps(folder_path))
        steps = load_step_maps(folder_path)
        n_steps = len(next(iter(steps.values()))) if steps else 0
        return (gr.CheckboxGroup(names, value=names, label="Words"),
                gr.DownloadButton(value=str(folder_path / "attention" / "maps.npz"), visible=True),
                gr.Slider(0, max(n_steps, 1), value=0, step=1, visible=n_steps > 0,
                          label=f"Step (0 = all {n_steps} steps summed)"))

    @user_errors
    def show(path, run_id, chosen, opacity, step_no=0):
        from dataclasses import replace

        from core.attention.analysis import load_maps, load_step_maps, overlay

        if not run_id:
            return [], []
        r = lab.runs.open(run_id)
        maps = load_maps(r.path)
        steps = load_step_maps(r.path) if step_no else None
        if steps:  # one step's maps instead of the total
            maps = {w: replace(m, map=steps[w][int(step_no) - 1]) for w, m in maps.items() if w in steps}
        image = r.image()
        pictures = [(overlay(image, maps[w].map, alpha=float(opacity)), w) for w in chosen or [] if w in maps]
        return pictures, _stats_rows(lab, path, r, [maps[w] for w in chosen or [] if w in maps])

    @user_errors
    def run_probe(path, scene_id, backbone_id, prompt, progress=gr.Progress()):
        spec = lab.backbones.get(backbone_id).spec
        index = lab.datasets.open(path)
        fields = {k: v for k, v in spec.defaults.items() if k in ("steps", "guidance", "strength", "size", "mode")}
        request = GenerationRequest(backbone=backbone_id, prompt=prompt, scene_id=scene_id, num_images=1,
                                    **fields)
        runs = lab.generation.generate(lab.generation.complete_request(request, index), index, attention=True,
                            on_step=lambda step, total, **_: progress((step, total or step), desc="Denoising"))
        return runs_with_maps(path, runs[0].run_id)

    gr.on([demo.load, folder.change, refresh.click], runs_with_maps, folder, run, api_name="attention_runs")
    run.change(open_run, run, [words, arrays, step], api_name="attention_words").then(
        show, [folder, run, words, alpha, step], [grid, stats], **INTERNAL)
    gr.on([words.input, alpha.release, step.release], show, [folder, run, words, alpha, step], [grid, stats],
          api_name="attention_maps")
    probe.change(lambda name: PROBES[name], probe, probe_prompt, **INTERNAL)
    probe_btn.click(run_probe, [folder, scene, backbone, probe_prompt], run, api_name="attention_probe", **GPU)
    return run, runs_with_maps


def _stats_rows(lab, path, run, maps) -> list[list]:
    """Per word: share of attention inside each region vs the share of pixels it covers."""
    from core.attention.analysis import share_inside
    from core.data.labels import load_label
    from core.data.masks import class_masks

    scene_id = run.record.get("scene_id")
    scene = lab.datasets.open(path).get(scene_id) if scene_id else None
    if scene is None or scene.post_label is None:
        return [[m.word, fmt(m.raw_total, 3)] + ["no labels"] * len(MASK_REGIONS) for m in maps]
    rows = []
    for m in maps:
        h, w = np.asarray(m.map).shape
        shares = share_inside(m.map, class_masks(load_label(scene.post_label), (w, h), part=scene.part))
        cells = [f"{a:.1%} / {p:.1%}" if p > 0 else "no pixels" for a, p in (shares[r] for r in MASK_REGIONS)]
        rows.append([m.word, fmt(m.raw_total, 3)] + cells)
    return rows
