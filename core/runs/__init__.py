"""Run folders: each generated, baseline or uploaded image with its record and scores."""

from core.runs.store import RUN_KINDS, Run, RunStore

__all__ = ["RUN_KINDS", "Run", "RunStore"]
