"""Tabs whose features are still being built: each says what is coming."""

from __future__ import annotations

import gradio as gr

COMING = {
    "Attention": "See DAAM word-to-pixel attention maps of a generation, and how much of each "
                 "word's attention falls on buildings of each damage class.",
}


def build_placeholder(name: str) -> None:
    """A tab that explains what it will do; nothing interactive yet."""
    with gr.Tab(name, id=name.lower()):
        gr.Markdown(f"### {name} — coming soon\n\n{COMING[name]}")
