"""Every setting of a ControlNet training run, with the DiffusionSat authors' xBD recipe as
the defaults (docs/training.md): 512 px, lr 5e-5 constant without warm-up, batch 16 ×
accumulation 2, fp16, max grad norm 1, metadata dropped per value with p = 0.1.

`TrainOptions` is what the CLI parses, the Train tab fills, and `training.json` records; a
resumed run reads it back from there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import LabError

BASES = ("sd21", "diffusionsat")
TASKS = ("future", "past")  # future: pre → post (condition pre, target post); past: post → pre
PRECISIONS = ("fp16", "bf16", "no")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


class TrainingError(LabError):
    """A training run cannot start or go on as asked; the message says what to change."""


@dataclass
class TrainOptions:
    data: Path
    out: Path
    base: str = "sd21"
    base_model: str | None = None  # a folder or hub id; None: the base backbone's usual source
    task: str = "future"
    split: str | None = None
    disaster: str | None = None
    disaster_type: str | None = None
    val_split: str | None = None  # held-out scenes from this split; None: a fixed sample held out
    val_count: int = 4
    resolution: int = 512
    augment: bool = False  # random crops of larger tiles and flips, the same for both images
    learning_rate: float = 5e-5
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    batch_size: int = 16
    grad_accum: int = 2
    max_steps: int = 30000
    mixed_precision: str = "fp16"  # the frozen models' precision; the ControlNet trains in fp32
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0
    metadata_dropout: float = 0.1
    prompt_dropout: float = 0.1
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    validate_every: int = 1000
    validation_steps: int = 20  # denoising steps of a validation image
    num_workers: int = 2
    resume: str | None = None  # "latest", "auto" (latest if any, else start) or a checkpoint folder
    extra: dict = field(default_factory=dict)

    def check(self) -> "TrainOptions":
        """TrainingError for a setting that cannot work, before anything is loaded."""
        if self.base not in BASES:
            raise TrainingError(f"--base must be one of {', '.join(BASES)} (got {self.base!r}).")
        if self.task not in TASKS:
            raise TrainingError(f"--task must be future (pre → post) or past (post → pre), not {self.task!r}.")
        if self.mixed_precision not in PRECISIONS:
            raise TrainingError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}.")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise TrainingError(f"--lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}.")
        for name in ("batch_size", "grad_accum", "max_steps", "checkpoint_every", "validate_every",
                     "validation_steps", "keep_checkpoints", "resolution"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be at least 1.")
        for name in ("metadata_dropout", "prompt_dropout"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise TrainingError(f"--{name.replace('_', '-')} is a probability: between 0 and 1.")
        if not float(self.learning_rate) > 0:
            raise TrainingError("--learning-rate must be above 0 (the recipe uses 5e-5).")
        if self.val_count < 0 or self.num_workers < 0:
            raise TrainingError("--val-count and --num-workers cannot be negative.")
        return self

    def to_json(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, record: dict) -> "TrainOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        for name in ("data", "out"):
            values[name] = Path(values[name])
        return cls(**values)
