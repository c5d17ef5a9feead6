"""Helpers every tab shares: binding handlers to the Lab, turning core errors into
messages, formatting numbers."""

from __future__ import annotations

import functools
import inspect
import math

import gradio as gr

from core.errors import LabError

# Events that are plumbing between widgets, not an API worth documenting.
INTERNAL = {"api_visibility": "undocumented"}
# Every event that may use the GPU shares one queue slot: one job at a time.
GPU = {"concurrency_id": "gpu", "concurrency_limit": 1}
# Arrows telling which way is better, shown in table headers.
ARROWS = {"mse": "↓", "psnr": "↑", "ssim": "↑", "lpips": "↓"}


def bind(handler, lab):
    """`handler(lab, ...)` as an event function of the remaining arguments. Gradio still sees
    the handler's name (the default api_name), its `gr.Progress` defaults and its
    `gr.SelectData` annotations, so handlers stay plain module-level functions."""

    @functools.wraps(handler)
    def bound(*args, **kwargs):
        return handler(lab, *args, **kwargs)

    signature = inspect.signature(handler)
    bound.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
    return bound


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
