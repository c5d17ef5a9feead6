"""core.evaluation.leaderboard: means per backbone on hand-made score dicts (as runs store
them), the baseline first and beside every model on the same scenes."""

import pytest

from core.evaluation.leaderboard import LeaderboardRow, leaderboard_rows


def entry(mse, psnr, ssim, lpips):
    """A stored score dict, as `scores_to_dict` writes it (infinite PSNR is "inf")."""
    return {"mse": mse, "psnr": psnr, "ssim": ssim, "lpips": lpips, "lpips_error": None,
            "settings": {"range": "[0, 1]"}, "masked": None, "notes": []}


ENTRIES = [  # deliberately not in leaderboard order
    ("sd21", "A", entry(0.01, 24.0, 0.70, 0.20)),
    ("sd21", "A", entry(0.0, "inf", 1.0, 0.0)),  # identical to the truth: PSNR is counted, not averaged
    ("sd21", "B", entry(0.03, 18.0, 0.40, None)),  # LPIPS unavailable
    ("sd21", "D", entry(0.05, 15.0, 0.60, 0.40)),  # a scene without a baseline run
    ("alpha", "C", entry(0.10, 10.0, 0.10, 0.50)),
    ("baseline", "A", entry(0.02, 20.0, 0.50, 0.40)),
    ("baseline", "B", entry(0.04, 16.0, 0.30, 0.60)),
    ("baseline", "C", entry(0.06, 14.0, 0.20, None)),
]


def test_baseline_comes_first_then_backbones_by_name():
    rows = leaderboard_rows(ENTRIES)
    assert [r.backbone for r in rows] == ["baseline", "alpha", "sd21"]
    assert all(isinstance(r, LeaderboardRow) for r in rows)


def test_the_baseline_row_is_the_mean_of_its_runs_and_its_own_comparison():
    base = leaderboard_rows(ENTRIES)[0]
    assert (base.runs, base.scenes, base.psnr_infinite) == (3, 3, 0)
    assert base.mse == pytest.approx(0.04)  # (0.02 + 0.04 + 0.06) / 3
    assert base.psnr == pytest.approx(50 / 3)  # (20 + 16 + 14) / 3
    assert base.ssim == pytest.approx(1 / 3)  # (0.5 + 0.3 + 0.2) / 3
    assert base.lpips == pytest.approx(0.5)  # (0.4 + 0.6) / 2: the missing one is left out
    assert base.baseline_psnr == pytest.approx(50 / 3) and base.baseline_ssim == pytest.approx(1 / 3)


def test_a_model_row_counts_runs_scenes_and_infinite_psnr():
    sd21 = leaderboard_rows(ENTRIES)[2]
    assert (sd21.runs, sd21.scenes, sd21.psnr_infinite) == (4, 3, 1)
    assert sd21.mse == pytest.approx(0.0225)  # (0.01 + 0 + 0.03 + 0.05) / 4
    assert sd21.psnr == pytest.approx(19.0)  # (24 + 18 + 15) / 3: ∞ never averaged
    assert sd21.ssim == pytest.approx(0.675)  # (0.7 + 1.0 + 0.4 + 0.6) / 4
    assert sd21.lpips == pytest.approx(0.2)  # (0.2 + 0.0 + 0.4) / 3


def test_the_baseline_beside_a_model_covers_only_the_scenes_it_ran_on():
    rows = {r.backbone: r for r in leaderboard_rows(ENTRIES)}
    # sd21 ran on A (twice), B and D; the baseline has A and B: each scene once, D has none.
    assert rows["sd21"].baseline_psnr == pytest.approx(18.0)  # (20 + 16) / 2
    assert rows["sd21"].baseline_ssim == pytest.approx(0.4)  # (0.5 + 0.3) / 2
    assert rows["alpha"].baseline_psnr == pytest.approx(14.0) and rows["alpha"].baseline_ssim == pytest.approx(0.2)
    assert (rows["alpha"].runs, rows["alpha"].mse, rows["alpha"].lpips) == (1, pytest.approx(0.1), pytest.approx(0.5))


def test_a_model_without_any_baseline_scene_has_no_baseline_means():
    (row,) = leaderboard_rows([("sd21", "A", entry(0.01, 24.0, 0.7, 0.2))])
    assert row.baseline_psnr is None and row.baseline_ssim is None
    assert leaderboard_rows([]) == []


def test_a_scene_with_two_baseline_runs_is_compared_with_the_last():
    rows = leaderboard_rows([("baseline", "A", entry(0.02, 20.0, 0.5, None)),
                             ("baseline", "A", entry(0.01, 30.0, 0.7, None)),
                             ("sd21", "A", entry(0.03, 18.0, 0.4, None))])
    assert (rows[0].runs, rows[0].scenes, rows[0].psnr) == (2, 1, pytest.approx(25.0))
    assert rows[0].lpips is None
    assert rows[1].baseline_psnr == pytest.approx(30.0) and rows[1].baseline_ssim == pytest.approx(0.7)


def test_a_broken_run_is_listed_with_its_problem_and_the_board_keeps_the_others(tmp_path):
    import numpy as np

    from core.config import DEMO_SCENES
    from core.data.index import index_dataset
    from core.evaluation.service import EvaluationService
    from core.runs.store import RunStore
    from core.types import MetricSettings

    index = index_dataset(DEMO_SCENES, cache_dir=tmp_path / "cache")
    service = EvaluationService(runs=RunStore(tmp_path / "runs"), lpips_random_backbone=True)
    scenes = [s for s in index.scenes if s.pre_image and s.post_image][:2]
    service.write_baselines(index, scenes)
    scene = scenes[0].scene_id
    missing = service.write_upload(np.zeros((64, 64, 3), np.uint8), scene, "gone.png", index)
    (missing.path / "image.png").unlink()
    tiny = service.write_upload(np.zeros((8, 8, 3), np.uint8), scene, "tiny.png", index)
    problems: list = []
    rows = service.leaderboard(index, MetricSettings(), problems=problems)
    assert [r.backbone for r in rows] == ["baseline"] and rows[0].runs == 2
    reasons = {run.run_id: message for run, message in problems}
    assert set(reasons) == {missing.run_id, tiny.run_id}
    assert "cannot be read" in reasons[missing.run_id] and "SSIM needs at least 11 px" in reasons[tiny.run_id]


def test_runs_scored_while_lpips_was_unavailable_get_it_once_it_works(tmp_path, monkeypatch):
    """Scores saved without LPIPS (no AlexNet weights then) are kept while it stays
    unavailable, and scored again, LPIPS included, once it builds (random AlexNet: plumbing)."""
    from core.config import DEMO_SCENES
    from core.data.index import index_dataset
    from core.errors import LpipsUnavailable
    from core.evaluation.service import EvaluationService
    from core.metrics import lpips_model
    from core.runs.store import RunStore
    from core.types import MetricSettings

    index = index_dataset(DEMO_SCENES, cache_dir=tmp_path / "cache")
    runs = RunStore(tmp_path / "runs")
    settings = MetricSettings(size=64)
    build = lpips_model._build_lpips

    def missing_weights(*_):
        raise LpipsUnavailable("LPIPS is unavailable: the file is not there")

    monkeypatch.setattr(lpips_model, "_build_lpips", missing_weights)
    offline = EvaluationService(runs=runs, lpips_random_backbone=True)
    offline.write_baselines(index, index.scenes[:2])
    first = offline.scores_of(runs.list(), index, settings)
    assert all(e["lpips"] is None and "unavailable" in e["lpips_error"] for e in first)
    kept: list = []
    offline.scores_of(runs.list(), index, settings, kept=kept)
    assert len(kept) == 2  # still unavailable: the saved scores stand, nothing scored again

    monkeypatch.setattr(lpips_model, "_build_lpips", build)  # the weights are there now (a new app)
    online = EvaluationService(runs=runs, lpips_random_backbone=True)
    kept = []
    again = online.scores_of(runs.list(), index, settings, kept=kept)
    assert not kept and all(e["lpips"] is not None and not e["lpips_error"] for e in again)
    assert [e["mse"] for e in again] == [e["mse"] for e in first]
