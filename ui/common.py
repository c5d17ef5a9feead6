"""Helpers every tab shares: turning core errors into messages, formatting numbers."""

from __future__ import annotations

import functools
import math

import gradio as gr

from core.errors import LabError

# Events that are plumbing between widgets, not an API worth documenting.
INTERNAL = {"api_visibility": "undocumented"}
# Every event that may use the GPU shares one queue slot: one job at a time.
GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}
# Arrows telling which way is better, shown in table headers.
ARROWS = {"mse": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓"}


def user_errors(fn):
    """Show a LabError as a clear message in the browser instead of a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LabError as err:
            raise gr.Error(str(err), duration=None) from err

    return wrapper


def fmt(value, digits: int = 4) -> str:
    """A score for display: '∞' for infinite PSNR, '—' for missing, fixed digits otherwise."""
    if value is None:
        return "—"
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "∞"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)
