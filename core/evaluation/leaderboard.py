"""The leaderboard: mean scores per backbone, the persistence baseline first, each row with
the baseline's means on the same scenes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LeaderboardRow:
    """Mean scores of one backbone over its runs (PSNR over finite values only)."""

    backbone: str
    runs: int
    scenes: int
    mse: float | None
    psnr: float | None
    psnr_infinite: int
    ssim: float | None
    lpips: float | None
    baseline_psnr: float | None  # persistence baseline on the same scenes
    baseline_ssim: float | None


def leaderboard_rows(entries: list[tuple[str, str, dict]]) -> list[LeaderboardRow]:
    """One row per backbone from (backbone, scene id, score dict) triples, the score dicts
    as `scores_to_dict` writes them. "baseline" comes first, then backbones by name."""
    per_backbone: dict[str, list[tuple[str, dict]]] = {}
    for backbone, scene_id, entry in entries:
        per_backbone.setdefault(backbone, []).append((scene_id, entry))
    baseline = dict(per_backbone.get("baseline", []))
    order = sorted(per_backbone, key=lambda b: (b != "baseline", b))
    return [_row(b, per_backbone[b], baseline) for b in order]


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _psnr(entry: dict) -> float:
    value = entry.get("psnr")
    return float("inf") if value == "inf" else value


def _row(backbone: str, entries: list[tuple[str, dict]], baseline: dict[str, dict]) -> LeaderboardRow:
    scenes = {scene for scene, _ in entries}
    same = [baseline[s] for s in scenes if s in baseline]
    psnrs = [_psnr(e) for _, e in entries]
    return LeaderboardRow(
        backbone=backbone,
        runs=len(entries),
        scenes=len(scenes),
        mse=_mean([e["mse"] for _, e in entries]),
        psnr=_mean(psnrs),
        psnr_infinite=sum(1 for p in psnrs if p == float("inf")),
        ssim=_mean([e["ssim"] for _, e in entries]),
        lpips=_mean([e.get("lpips") for _, e in entries]),
        baseline_psnr=_mean([_psnr(e) for e in same]),
        baseline_ssim=_mean([e["ssim"] for e in same]),
    )


__all__ = ["LeaderboardRow", "leaderboard_rows"]
