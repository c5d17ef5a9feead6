"""Comparison grids: one generation per (backbone, swept value) cell, planned from a base
request. Rows are backbones, columns the swept values. Every cell is its own request with
its own seed, never a generator shared across a row (the course's bug).

Every cell uses the settings of the base request unless its backbone cannot: a setting the
backbone does not declare takes its default, a value outside the backbone's range is
brought inside it, a mode or scheduler it lacks becomes its default; the cell's `note`
says what was changed."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.errors import LabError
from core.types import GenerationRequest

SWEEPS = ("none", "strength", "guidance", "steps", "seed")
"""Parameters a grid can sweep ("none": one column)."""

_SETTINGS = ("steps", "guidance", "strength", "control_scale", "image_guidance")


@dataclass(frozen=True)
class Cell:
    """One cell of a comparison grid: where it sits, its label, the request it runs and
    what had to be changed for its backbone ("" when nothing)."""

    row: int
    column: int
    label: str
    request: GenerationRequest
    note: str = ""


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


def column_label(sweep: str, value) -> str:
    """The header of a grid column ("" for no sweep)."""
    return "" if value is None else f"{sweep} {_fmt(value)}"


def plan_cells(base: GenerationRequest, backbones: list, sweep: str = "none", text: str = "") -> list[Cell]:
    """The cells of a grid: for each backbone spec in `backbones` (rows) and each swept
    value (columns), `base` with that backbone, one image and the value, adapted to what
    the backbone can use (module docstring). Another backbone than the base request's
    takes DiffusionSat metadata from the scene (metadata None) at the grid's size and its
    own options."""
    values = sweep_values(sweep, text)
    cells = []
    for row, spec in enumerate(backbones):
        for column, value in enumerate(values):
            wanted = replace(base, backbone=spec.id, num_images=1)
            if value is not None:
                wanted = replace(wanted, **{sweep: value})
            request, changes = fit_to_backbone(wanted, spec, same_backbone=spec.id == base.backbone)
            label = spec.label + (f" · {column_label(sweep, value)}" if value is not None else "")
            cells.append(Cell(row, column, label, request, "; ".join(changes)))
    return cells


def fit_to_backbone(request: GenerationRequest, spec, *, same_backbone: bool = False):
    """`request` with what `spec`'s backbone cannot use replaced by what it can, and the
    list of changes in words ("guidance 0 (SDXL Turbo has no guidance setting)")."""
    own = GenerationRequest(backbone=spec.id, prompt="")
    controls = {c.name: c for c in spec.controls}
    fields, changes = {}, []
    for name in _SETTINGS:
        value, control = getattr(request, name), controls.get(name)
        default = spec.defaults.get(name, getattr(own, name))
        if control is None:
            if value != default:
                fields[name] = default
                changes.append(f"{_words(name)} {_fmt(default)} ({spec.label} has no {_words(name)} setting)")
            continue
        low = control.minimum if control.minimum is not None else value
        high = control.maximum if control.maximum is not None else value
        fitted = type(value)(min(max(value, low), high))
        if fitted != value:
            fields[name] = fitted
            changes.append(f"{_words(name)} {_fmt(fitted)} (its range is {_fmt(low)} to {_fmt(high)})")
    if request.mode not in spec.modes:
        fields["mode"] = spec.defaults.get("mode", spec.modes[0])
        changes.append(f"{fields['mode']} ({spec.label} cannot do {request.mode})")
    scheduler = next((c for c in spec.controls if c.name == "scheduler"), None)
    if request.scheduler is not None and (scheduler is None or request.scheduler not in scheduler.choices):
        fields["scheduler"] = spec.defaults.get("scheduler")
    if not same_backbone:
        fields["options"] = dict(spec.defaults.get("options") or {})
        fields["metadata"] = None
    return replace(request, **fields), changes


def _words(name: str) -> str:
    return name.replace("_", " ")


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = ["Cell", "SWEEPS", "column_label", "fit_to_backbone", "plan_cells", "sweep_values"]
