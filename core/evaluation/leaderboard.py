"""The leaderboard: mean scores per backbone, the persistence baseline first, each row with
the baseline's means on the same scenes. Every mean comes from `core.metrics.scoring.summarise`."""

from __future__ import annotations

from dataclasses import dataclass


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
    as `scores_to_dict` writes them. "baseline" comes first, then backbones by name. A
    scene with several baseline runs is compared with the last of them."""
    per_backbone: dict[str, list[tuple[str, dict]]] = {}
    for backbone, scene_id, entry in entries:
        per_backbone.setdefault(backbone, []).append((scene_id, entry))
    baseline = dict(per_backbone.get("baseline", []))
    order = sorted(per_backbone, key=lambda b: (b != "baseline", b))
    return [_row(b, per_backbone[b], baseline) for b in order]


def _row(backbone: str, entries: list[tuple[str, dict]], baseline: dict[str, dict]) -> LeaderboardRow:
    from core.metrics.scoring import summarise

    scenes = sorted({scene for scene, _ in entries})
    own = summarise(entry for _, entry in entries)
    same = summarise(baseline[s] for s in scenes if s in baseline)
    return LeaderboardRow(
        backbone=backbone,
        runs=own["n"],
        scenes=len(scenes),
        mse=own["mse"]["mean"],
        psnr=own["psnr"]["mean"],
        psnr_infinite=own["psnr"]["n_infinite"],
        ssim=own["ssim"]["mean"],
        lpips=own["lpips"]["mean"],
        baseline_psnr=same["psnr"]["mean"],
        baseline_ssim=same["ssim"]["mean"],
    )


__all__ = ["LeaderboardRow", "leaderboard_rows"]
