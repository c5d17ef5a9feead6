"""The composition root: one `Lab` per app or CLI process builds every service from
`Settings` and hands them out. It holds no capability of its own.

    lab.datasets    open xBD folders (core.data.index), cached per folder
    lab.backbones   the registry as this process sees it (core.backends.catalog)
    lab.models      the one ModelManager: the only owner of GPU memory
    lab.runs        the RunStore under the runs folder
    lab.captions    CaptionService: the caption store and machine captioning
    lab.generation  GenerationService: requests, generation, batches, comparison grids
    lab.evaluation  EvaluationService: baselines, scores, the leaderboard
    lab.training    TrainingService: ControlNet training, here or in a background process
    lab.jobs        BatchJobs: caption and generation batches started in the background

Building a Lab opens no file and imports no torch: stores open and models load on first use.
"""

from __future__ import annotations

from pathlib import Path

from core.backends.catalog import Backbones
from core.captions.service import CaptionService
from core.config import Settings
from core.data.datasets import Datasets
from core.evaluation.service import EvaluationService
from core.generation.service import GenerationService
from core.jobs import BatchJobs
from core.models.manager import ModelManager
from core.runs.store import RunStore
from core.training.service import TrainingService


class Lab:
    """The services of one process, built from `settings`. Safe to share between threads."""

    def __init__(self, settings: Settings):
        s = self.settings = settings
        self.datasets = Datasets(default_dir=s.data_dir, cache_dir=s.cache_dir, always_allowed=(s.work_dir, s.runs))
        self.backbones = Backbones(models_dir=s.models_dir, test_backbones=s.test_backbones,
                                   trained_dir=s.trained_dir)
        self.models = ModelManager(ram_budget_gb=s.ram_budget_gb, offload=s.offload,
                                   attention_slicing=s.attention_slicing, vae_tiling=s.vae_tiling)
        self.runs = RunStore(Path(s.runs))
        self.captions = CaptionService(Path(s.work_dir) / "captions.sqlite", models=self.models,
                                       backbones=self.backbones, models_dir=s.models_dir)
        self.generation = GenerationService(backbones=self.backbones, models=self.models, runs=self.runs,
                                            captions=self.captions)
        self.evaluation = EvaluationService(runs=self.runs, lpips_random_backbone=s.lpips_random_backbone)
        self.training = TrainingService(datasets=self.datasets, backbones=self.backbones, captions=self.captions,
                                        evaluation=self.evaluation, models=self.models,
                                        trained_dir=s.trained_dir, work_dir=s.work_dir, env=s.child_env())
        self.jobs = BatchJobs(Path(s.work_dir), env=s.child_env())
