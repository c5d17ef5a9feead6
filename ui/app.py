"""Composes the tabs into one Blocks app and launches it."""

from __future__ import annotations

import gradio as gr

from ui.attention import build_attention
from ui.browse import build_browse
from ui.captions import SHORTCUTS_JS, build_captions
from ui.evaluate import build_evaluate
from ui.generate import build_generate

TITLE = "xBD Diffusion Lab"
CSS = """
#browse-gallery .thumbnail-item { aspect-ratio: 1 / 1; }
footer { display: none !important; }
"""


def build_ui(lab) -> gr.Blocks:
    """The whole app for one `Lab`; nothing is loaded until a user asks for it."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nBrowse pre/post-disaster xBD tiles, generate the post-event image, "
                    "look inside the model, and score it against what really happened.")
        with gr.Tabs() as tabs:
            browse = build_browse(lab, demo)
            build_captions(lab, demo, browse.opened)
            gen_scene, gen_to_evaluate, gen_to_attention, gen_newest = build_generate(lab, demo, browse.opened)
            att_run, att_runs_with = build_attention(lab, demo, browse.opened, gen_scene)
            eval_scene = build_evaluate(lab, demo, browse.opened)
        browse.to_evaluate.click(
            lambda scene_id: (gr.Tabs(selected="evaluate"), gr.Dropdown(value=scene_id)),
            browse.selected, [tabs, eval_scene], api_name="send_to_evaluate")
        browse.to_generate.click(
            lambda scene_id: (gr.Tabs(selected="generate"), gr.Dropdown(value=scene_id)),
            browse.selected, [tabs, gen_scene], api_name="send_to_generate")
        gen_to_attention.click(
            lambda path, run_id: (gr.Tabs(selected="attention"), att_runs_with(path, run_id)),
            [browse.opened, gen_newest], [tabs, att_run], api_name="generation_to_attention")
        gen_to_evaluate.click(
            lambda scene_id: (gr.Tabs(selected="evaluate"), gr.Dropdown(value=scene_id)),
            gen_scene, [tabs, eval_scene], api_name="generation_to_evaluate")
    return demo


def launch_options(lab) -> dict:
    """Keyword arguments for `Blocks.launch`: bind address, login, and the only folders
    whose files may be served (the open datasets, the work and runs folders)."""
    s = lab.settings
    return {
        "server_name": s.host,
        "server_port": s.port,
        "auth": s.auth_pair(),
        "allowed_paths": [str(p) for p in lab.datasets.allowed_roots()],
        "theme": gr.themes.Soft(),
        "css": CSS,
        "footer_links": ["api"],
        "head": SHORTCUTS_JS,
    }


def launch(demo: gr.Blocks, lab, **overrides):
    """Queue GPU work in one slot and start serving; returns what `Blocks.launch` returns."""
    demo.queue(default_concurrency_limit=4)
    return demo.launch(**{**launch_options(lab), **overrides})
