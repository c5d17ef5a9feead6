"""The evaluation capability: baseline and upload runs, scores of runs against their
scene's real post-event tile (whole image and per damage class), and the leaderboard.
The app and the CLI both call this service."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import DataError, LabError, MetricError, RunError
from core.evaluation.leaderboard import LeaderboardRow, leaderboard_rows
from core.types import MetricSettings, Scene, Scores

# Runs scored together by `score_runs` (and so by the leaderboard): one batch of one image
# size for the GPU metrics and for LPIPS.
SCORE_BATCH = 16


@dataclass(frozen=True)
class RunInspection:
    """A run beside the truth, at the evaluation size: `prediction` and `truth` float64
    H x W x 3 in [0, 1]; `error` the absolute error per pixel averaged over channels, H x W
    in [0, 1]; `ssim` the local SSIM map, H x W in [-1, 1] (on luma when the settings say so)."""

    prediction: np.ndarray
    truth: np.ndarray
    error: np.ndarray
    ssim: np.ndarray


class EvaluationService:
    """Scores runs and ranks backbones.

    runs: the RunStore; lpips_random_backbone: build LPIPS on a random AlexNet (plumbing
    tests only: its numbers mean nothing); metrics_device: where MSE, PSNR, SSIM and LPIPS
    are computed ("cuda": batched torch, "cpu": numpy; None: "cuda" when torch sees a GPU at
    first use). The scores are the same either way, to 1e-6."""

    def __init__(self, *, runs, lpips_random_backbone: bool = False,
                 metrics_device: str | None = None) -> None:
        self.runs = runs
        self.lpips_random_backbone = lpips_random_backbone
        self.metrics_device = metrics_device
        self._lpips = None
        self._lock = threading.Lock()

    # -- runs to score --------------------------------------------------------------------
    def write_baseline(self, index, scene: Scene):
        """A persistence-baseline run for `scene`: the prediction is the pre-event tile."""
        from core.data.images import load_rgb

        if scene.pre_image is None:
            raise DataError(f"Scene {scene.scene_id} has no pre-event image, so it has no baseline.")
        return self.runs.create(load_rgb(scene.pre_image), kind="baseline", backbone="baseline",
                                scene_id=scene.scene_id,
                                params={"method": "persistence (prediction := pre-event tile)"},
                                data_root=str(index.root))

    def write_baselines(self, index, scenes: Iterable[Scene] | None = None,
                        progress: Callable[[int, int], None] | None = None) -> list:
        """Baseline runs for every scene (or `scenes`) that has a pre and a post image
        and no baseline run yet. Returns the runs written."""
        have = {r.record.get("scene_id") for r in self.runs.list(backbone="baseline")}
        todo = [s for s in (scenes if scenes is not None else index.scenes)
                if s.pre_image and s.post_image and s.scene_id not in have]
        written = []
        for i, scene in enumerate(todo):
            written.append(self.write_baseline(index, scene))
            if progress:
                progress(i + 1, len(todo))
        return written

    def write_upload(self, image: np.ndarray, scene_id: str | None, name: str, index=None):
        """A run holding an image the user uploaded, to score it like a generation."""
        return self.runs.create(image, kind="upload", backbone="upload", scene_id=scene_id,
                                params={"file": name}, data_root=str(index.root) if index is not None else None)

    # -- scoring --------------------------------------------------------------------------
    def lpips(self):
        """The shared LPIPS scorer, built on first use (never per image)."""
        from core.metrics.lpips_model import LpipsScorer

        with self._lock:
            if self._lpips is None:
                self._lpips = LpipsScorer(device=self._lpips_device(), random_backbone=self.lpips_random_backbone)
            return self._lpips

    def _lpips_ready(self) -> bool:
        """Whether LPIPS can be computed now (its network builds: the weights are on disk)."""
        from core.errors import LpipsUnavailable

        try:
            self.lpips().check()
        except LpipsUnavailable:
            return False
        return True

    def _lpips_device(self) -> str:
        """Where LPIPS runs: with the other metrics (a GPU when torch sees one, else the CPU)."""
        from core.metrics.batched import default_device

        return self.metrics_device or default_device()

    def scorer(self, metric_settings: MetricSettings, *, batch_size: int = 8):
        """A scorer with `metric_settings` that shares this service's LPIPS network. It
        scores on the GPU (torch) when one is available, else with numpy on the CPU; both
        give the same scores (see core.metrics.scoring.Scorer)."""
        from core.metrics.scoring import Scorer

        return Scorer(metric_settings, lpips=self.lpips(), batch_size=batch_size,
                      device=self.metrics_device)

    def score_images(self, pred: np.ndarray, target: np.ndarray, *, metric_settings: MetricSettings,
                     label_path: Path | None = None, part: int | None = None) -> Scores:
        """Scores of `pred` against `target`; per damage class when a post label is given."""
        masks = _damage_masks(pred, metric_settings, label_path, part)
        return self.scorer(metric_settings).score(pred, target, masks)

    def scene_of(self, run, index) -> Scene:
        """The scene of `index` a run was made for; a clear error if the run has none."""
        scene_id = run.record.get("scene_id")
        if not scene_id:
            raise RunError(f"Run {run.run_id} is not tied to a scene; pick a scene to score it against.")
        return index.get(scene_id)

    def truth_of(self, run, index) -> tuple[Scene, np.ndarray]:
        """The scene a run was made for and its real post-event tile (uint8 RGB); a clear
        error when the run has no scene or the scene no post-event image."""
        from core.data.images import load_rgb

        scene = self.scene_of(run, index)
        if scene.post_image is None:
            raise DataError(f"Scene {scene.scene_id} has no post-event image to score against.")
        return scene, load_rgb(scene.post_image)

    def score_run(self, run, index, metric_settings: MetricSettings) -> Scores:
        """Score a run against its scene's real post-event tile and save the scores in it."""
        scene, truth = self.truth_of(run, index)
        scores = self.score_images(run.image(), truth, metric_settings=metric_settings,
                                   label_path=scene.post_label, part=scene.part)
        run.save_scores(scores)
        return scores

    def score_runs(self, runs: Iterable, index, metric_settings: MetricSettings, *,
                   batch_size: int = SCORE_BATCH, progress: Callable[[int, int], None] | None = None,
                   problems: list | None = None) -> list[Scores | None]:
        """Score many runs like `score_run` (each against its scene's post-event tile, per
        damage class, the scores saved in the run), `batch_size` runs of one image size at a
        time. Returns the scores in the order of `runs`; `progress(done, total)` after each
        batch's runs. A run that cannot be scored (no scene, no post tile, an unreadable or
        missing image, one too small for SSIM): with a `problems` list, (run, message) is
        appended to it, its score is None and the others go on; without one, the error is
        raised after the runs read before it have been scored and saved."""
        runs = list(runs)
        scorer = self.scorer(metric_settings, batch_size=batch_size)
        size = metric_settings.size
        out: list[Scores | None] = [None] * len(runs)
        buckets: dict[tuple[int, int], list] = {}
        done = 0

        def flush(key) -> None:
            nonlocal done
            bucket = buckets.pop(key)
            scored = scorer.score_many([(pred, truth, masks) for _, pred, truth, masks in bucket])
            for (pos, *_), scores in zip(bucket, scored):
                runs[pos].save_scores(scores)
                out[pos] = scores
            done += len(bucket)
            if progress:
                progress(done, len(runs))

        try:
            for pos, run in enumerate(runs):
                try:
                    scene, truth, pred = self._scorable(run, index, metric_settings)
                except LabError as err:
                    if problems is None:
                        raise
                    problems.append((run, str(err)))
                    continue
                masks = _damage_masks(pred, metric_settings, scene.post_label, scene.part)
                key = (size, size) if size else (pred.shape[0], pred.shape[1])
                buckets.setdefault(key, []).append((pos, pred, truth, masks))
                if len(buckets[key]) == batch_size:
                    flush(key)
        except Exception:
            for key in list(buckets):
                flush(key)
            raise
        for key in list(buckets):
            flush(key)
        return out

    def _scorable(self, run, index, metric_settings: MetricSettings):
        """(scene, truth, prediction) of a run that scoring can take; LabError saying what is
        wrong otherwise (before any batch is built, so one bad run spoils no batch)."""
        from core.metrics.functional import SSIM_MIN_SIDE

        scene, truth = self.truth_of(run, index)
        pred = run.image()
        sides = (metric_settings.size,) * 2 if metric_settings.size else pred.shape[:2]
        if min(sides) < SSIM_MIN_SIDE:
            raise MetricError(f"Run {run.run_id}'s image is {pred.shape[1]}×{pred.shape[0]} px: SSIM needs at least "
                              f"{SSIM_MIN_SIDE} px a side. Score it at a larger evaluation size, or delete the run.")
        return scene, truth, pred

    def inspect_run(self, run, index, metric_settings: MetricSettings) -> RunInspection:
        """A run's prediction and its scene's real post-event tile brought to the evaluation
        size the way scoring does, with the error map and the SSIM map between them."""
        from core.metrics.functional import error_map, ssim_map
        from core.metrics.scoring import prepare_pair

        _, truth = self.truth_of(run, index)
        pred, truth, _ = prepare_pair(run.image(), truth, size=metric_settings.size)
        return RunInspection(prediction=pred, truth=truth, error=error_map(pred, truth),
                             ssim=ssim_map(pred, truth, luma=metric_settings.luma))

    def scores_of(self, runs: Iterable, index, metric_settings: MetricSettings, *, rescore: bool = False,
                  batch_size: int = SCORE_BATCH, progress: Callable[[int, int], None] | None = None,
                  problems: list | None = None, kept: list | None = None) -> list[dict | None]:
        """Each run's score entry under `metric_settings` (a `scores_to_dict` dict), in the
        order of `runs`: the one saved in the run, else scored now and saved (in batches, see
        `score_runs`), so a stopped scoring picks up where it was. A run is scored again with
        `rescore`, and when its saved scores lack LPIPS because it was unavailable then and
        it works now. `progress(done, total)` counts the saved ones first. A run that cannot
        be scored gets None, and (run, message) is appended to `problems`; the runs whose
        saved scores were used are appended to `kept` when given."""
        from core.metrics.scoring import scores_to_dict

        runs = list(runs)
        problems = problems if problems is not None else []
        wanted = self.scorer(metric_settings).settings_dict()
        entries: list[dict | None] = [None] * len(runs)
        todo: list[int] = []
        lpips_ready = functools.cache(self._lpips_ready)  # asked once per call, and only if needed
        for i, run in enumerate(runs):
            try:
                entries[i] = None if rescore else run.latest_scores(wanted)
            except LabError as err:  # e.g. a scores.json that is not JSON
                problems.append((run, str(err)))
                continue
            if entries[i] is not None and _without_lpips(entries[i]) and lpips_ready():
                entries[i] = None  # saved while LPIPS was unavailable; it works now
            if entries[i] is None:
                todo.append(i)
            elif kept is not None:
                kept.append(run)
        saved = len(runs) - len(todo)  # saved scores, and unreadable score files: nothing to do for either
        if progress and saved:
            progress(saved, len(runs))
        report = (lambda done, _: progress(saved + done, len(runs))) if progress else None
        fresh = self.score_runs([runs[i] for i in todo], index, metric_settings, batch_size=batch_size,
                                progress=report, problems=problems)
        for i, scores in zip(todo, fresh):
            entries[i] = scores_to_dict(scores) if scores is not None else None
        return entries

    def leaderboard(self, index, metric_settings: MetricSettings,
                    progress: Callable[[int, int], None] | None = None,
                    problems: list | None = None) -> list[LeaderboardRow]:
        """Mean scores per backbone over every run of `index`'s scenes, scoring runs that
        have no scores under `metric_settings` yet (see `scores_of`). The persistence
        baseline comes first. A run that cannot be scored is left out (and appended as
        (run, message) to `problems` when given); every other run still counts."""
        known = {s.scene_id for s in index.scenes}
        runs = [r for r in self.runs.list() if r.record.get("scene_id") in known]
        stored = self.scores_of(runs, index, metric_settings, progress=progress, problems=problems)
        entries = [(run.record["backbone"], run.record["scene_id"], entry)
                   for run, entry in zip(runs, stored) if entry is not None]
        return leaderboard_rows(entries)


def _without_lpips(entry: dict) -> bool:
    """Whether a saved score lacks LPIPS because LPIPS could not be built then."""
    from core.metrics.lpips_model import UNAVAILABLE

    return str(entry.get("lpips_error") or "").startswith(UNAVAILABLE)


def _damage_masks(pred: np.ndarray, metric_settings: MetricSettings, label_path: Path | None,
                  part: int | None) -> dict[str, np.ndarray] | None:
    """The damage-class masks of a post label at the evaluation size (the prediction's size
    when none is set), or None without a label."""
    if label_path is None:
        return None
    from core.data.labels import load_label
    from core.data.masks import class_masks

    size = metric_settings.size
    wh = (size, size) if size else (pred.shape[1], pred.shape[0])
    return class_masks(load_label(label_path), wh, part=part)


__all__ = ["EvaluationService", "RunInspection", "SCORE_BATCH"]
