"""Tabs whose features are still being built: each says what is coming."""

from __future__ import annotations

import gradio as gr

COMING = {
    "Captions": "Caption a tile with CogVLM2 or a lighter vision-language model, shorten it "
                "with T5 until it fits CLIP's 77 tokens, and correct it here. Every edit is kept.",
    "Attention": "See DAAM word-to-pixel attention maps of a generation, and how much of each "
                 "word's attention falls on buildings of each damage class.",
}


def build_placeholder(name: str) -> None:
    """A tab that explains what it will do; nothing interactive yet."""
    with gr.Tab(name, id=name.lower()):
        gr.Markdown(f"### {name} — coming soon\n\n{COMING[name]}")
