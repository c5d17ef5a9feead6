"""Comparison grids: one generation per (backbone, swept value) cell, planned from a base
request. Every cell is its own request with its own seed, never a generator shared across
a row (the course's bug)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.errors import LabError
from core.types import GenerationRequest

SWEEPS = ("none", "strength", "guidance", "steps", "seed")
"""Parameters a grid can sweep ("none": one column)."""

# Fields a backbone other than the base request's takes from its own defaults.
_OWN_DEFAULTS = ("steps", "guidance", "strength", "mode", "scheduler", "control_scale", "image_guidance",
                 "options")


@dataclass(frozen=True)
class Cell:
    """One cell of a comparison grid: its label and the request it runs."""

    label: str
    request: GenerationRequest


def sweep_values(sweep: str, text: str) -> list:
    """The values of `sweep` parsed from comma-separated `text` (ints for steps and seed,
    floats otherwise); [None] for no sweep. LabError for an unknown sweep, no values or a
    value that does not parse."""
    if sweep not in SWEEPS:
        raise LabError(f"Unknown sweep {sweep!r}; use one of {', '.join(SWEEPS)}.")
    if sweep == "none":
        return [None]
    items = [v.strip() for v in (text or "").split(",") if v.strip()]
    if not items:
        raise LabError(f"Give the {sweep} values to sweep, separated by commas.")
    cast = int if sweep in ("steps", "seed") else float
    try:
        return [cast(v) for v in items]
    except ValueError:
        bad = next(v for v in items if not _parses(cast, v))
        raise LabError(f"{bad!r} is not a valid {sweep} value.") from None


def _parses(cast, text: str) -> bool:
    try:
        cast(text)
    except ValueError:
        return False
    return True


def plan_cells(base: GenerationRequest, backbones: list, sweep: str = "none", text: str = "") -> list[Cell]:
    """The cells of a grid: for each backbone spec in `backbones` (rows) and each swept
    value (columns), `base` with that backbone, one image, and the value. A backbone other
    than the base request's uses its own defaults for what only it knows (steps, guidance,
    strength, mode, scheduler, its options) and takes DiffusionSat metadata from the scene
    (metadata None) at the grid's size."""
    values = sweep_values(sweep, text)
    cells = []
    for spec in backbones:
        for value in values:
            fields: dict = {"backbone": spec.id, "num_images": 1}
            if spec.id != base.backbone:
                own = GenerationRequest(backbone=spec.id, prompt="")
                fields.update({k: spec.defaults.get(k, getattr(own, k)) for k in _OWN_DEFAULTS})
                fields["metadata"] = None
            label = spec.label
            if value is not None:
                fields[sweep] = value
                label += f" · {sweep} {_fmt(value)}"
            cells.append(Cell(label, replace(base, **fields)))
    return cells


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = ["Cell", "SWEEPS", "plan_cells", "sweep_values"]
