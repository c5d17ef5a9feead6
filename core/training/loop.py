"""The ControlNet training loop, on accelerate: one process or many (`accelerate launch`,
`torchrun`, Slurm), data-parallel, with mixed precision and gradient accumulation.

What the loop guarantees (docs/training.md):
- only the ControlNet trains, in fp32 (accelerate's autocast around it under fp16/bf16);
  the UNet, VAE and text encoder are frozen in the chosen precision;
- every random draw of a step (VAE sample, noise, timesteps, prompt and metadata dropout)
  comes from a generator seeded by (seed, epoch, batch, process), and the data order and
  augmentation from (seed, epoch), so a run stopped and resumed from a checkpoint ends with
  the weights of one never stopped;
- a checkpoint (accelerate state + `controlnet/` + `state.json`) is written under a
  temporary name and renamed into place: a full disk leaves the previous one intact;
- validation makes images with the app's own ControlNet pipeline and scores them with the
  app's metrics against the real target and the persistence baseline.

Files in the output folder: `training.json` (settings, data, versions, status, last scores),
`log.jsonl` (one line per optimizer step), `validation.jsonl` (one line per validation),
`validation/step-N/*.png`, `checkpoint-N/`, `logs/` (TensorBoard), and at the end
`controlnet/` + `base_model.txt`, which the `controlnet` / `diffusionsat-controlnet`
backbones load unchanged.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core.errors import LabError
from core.io import atomic_write_text, dumps, library_versions, read_jsonl
from core.training.data import PairDataset, collate, prepared_images, split_validation, training_pairs
from core.training.models import (check_resolution, load_base, new_controlnet, validation_backend,
                                  validation_pipeline, write_base_hint)
from core.training.options import TrainingError, TrainOptions

STOP_FILE = "STOP"  # touching <out>/STOP asks a running training to checkpoint and stop
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
PROBE_PAIRS = 4  # training pairs of the fixed-noise loss, comparable from step to step
MEMORY_ADVICE = ("Options that save GPU memory: --gradient-checkpointing, --use-8bit-adam (needs bitsandbytes), "
                 "a smaller --batch-size with a larger --grad-accum (same effective batch), --mixed-precision "
                 "fp16 or bf16, a smaller --resolution.")


@dataclass
class Position:
    """Where training is: optimizer steps done, and batches consumed in the current epoch."""

    step: int = 0
    epoch: int = 0
    batches: int = 0


@dataclass
class Outcome:
    status: str  # "finished" or "stopped"
    step: int
    out: Path
    validation: dict = field(default_factory=dict)


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints in `out`, oldest first."""
    found = [p for p in Path(out).glob("checkpoint-*") if CHECKPOINT.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT.fullmatch(p.name).group(1)))


class Trainer:
    """One training run. `lab` gives datasets, backbones, captions and evaluation;
    `on_event(dict)` hears every step, validation and checkpoint (main process only);
    `should_stop()` is asked after every step (any process may ask to stop)."""

    def __init__(self, options: TrainOptions, lab, *, on_event: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.options = options.check()
        self.lab = lab
        self.out = Path(options.out)
        self.on_event = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> Outcome:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        o = self.options
        resume_from = self._resume_checkpoint()
        precision = o.mixed_precision if torch.cuda.is_available() else "no"
        acc = Accelerator(mixed_precision=precision, gradient_accumulation_steps=o.grad_accum,
                          log_with="tensorboard" if _has_tensorboard() else None,
                          project_config=ProjectConfiguration(project_dir=str(self.out),
                                                              logging_dir=str(self.out / "logs")))
        self.acc = acc
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
        train_pairs, val_pairs, skipped = self._pairs(acc.num_processes)
        base = load_base(self.lab.backbones, o)
        check_resolution(base, o.resolution)
        self.base = base.frozen(acc.device, weight_dtype)
        self.weight_dtype = weight_dtype
        from accelerate.utils import set_seed

        set_seed(o.seed)  # the ControlNet's new layers start the same for the same seed
        controlnet = new_controlnet(base)
        if o.gradient_checkpointing:
            controlnet.enable_gradient_checkpointing()
        optimizer = _optimizer(controlnet, o)
        from diffusers.optimization import get_scheduler

        lr_scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps * acc.num_processes,
                                     num_training_steps=o.max_steps * acc.num_processes)
        self.dataset = PairDataset(train_pairs, o)
        loader = _loader(self.dataset, o)
        controlnet, optimizer, loader, lr_scheduler = acc.prepare(controlnet, optimizer, loader, lr_scheduler)
        self.controlnet, self.optimizer, self.lr_scheduler = controlnet, optimizer, lr_scheduler
        self.val_pairs, self.probe = val_pairs, train_pairs[:PROBE_PAIRS]

        pos = Position()
        if resume_from is not None:
            acc.load_state(str(resume_from))
            pos = Position(**json.loads((resume_from / "state.json").read_text(encoding="utf-8"))["position"])
            self._truncate_logs(pos.step)
        record = self._record(acc, precision, train_pairs, val_pairs, skipped, pos, resume_from)
        if acc.is_main_process:
            acc.init_trackers("controlnet", config=_flat(o.to_json()))
        self._event({"event": "start", "step": pos.step, "pairs": len(train_pairs), "validation": len(val_pairs),
                     "skipped": len(skipped), "processes": acc.num_processes, "resumed": str(resume_from or "")})
        try:
            if pos.step == 0:
                self.validate(0)  # the untrained ControlNet: where the curves and pictures start
            return self._finish(record, self._loop(loader, pos), pos)
        except torch.OutOfMemoryError as err:
            self._failed(f"out of GPU memory at step {pos.step + 1}")
            raise TrainingError(f"Out of GPU memory at step {pos.step + 1} (batch {o.batch_size} at {o.resolution} "
                                f"px). {MEMORY_ADVICE}") from err
        except BaseException as err:
            self._failed(str(err) or type(err).__name__)
            raise
        finally:
            acc.end_training()  # also ends the process group: after the last collective step

    def _loop(self, loader, pos: Position) -> str:
        acc, o = self.acc, self.options
        skip = pos.batches
        while pos.step < o.max_steps:
            self.dataset.use_epoch(pos.epoch)
            _use_epoch(loader, pos.epoch)
            batches = acc.skip_first_batches(loader, skip) if skip else loader
            pos.batches = skip
            losses = []
            for batch in batches:
                pos.batches += 1
                if not batch["size"]:  # every file of the batch became unreadable since the check
                    continue
                with acc.accumulate(self.controlnet):
                    loss = self.loss(batch, self._generator(pos))
                    acc.backward(loss)
                    if acc.sync_gradients and o.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.controlnet.parameters(), o.max_grad_norm)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach().float())
                if not acc.sync_gradients:
                    continue
                pos.step += 1
                self._log_step(pos, losses, batch)
                losses = []
                stop = self._stop_requested()
                finished = pos.step >= o.max_steps
                if pos.step % o.validate_every == 0 or (finished and self.val_pairs):
                    self.validate(pos.step)
                if pos.step % o.checkpoint_every == 0 or stop or finished:
                    self.save_checkpoint(pos)
                if stop:
                    return "stopped"
                if finished:
                    break
            else:
                pos.epoch, skip = pos.epoch + 1, 0
                continue
            break
        return "finished"

    # -- one step ----------------------------------------------------------------------------
    def loss(self, batch: dict, generator, *, dropout: bool = True):
        """The diffusion loss of `batch` (MSE against the noise, or the velocity for a
        v-prediction base), every random draw from `generator`."""
        import torch
        import torch.nn.functional as F

        base, device, dtype = self.base, self.acc.device, self.weight_dtype
        target = batch["target"].to(device, dtype=dtype)
        with torch.no_grad():
            latents = base.vae.encode(target).latent_dist.sample(generator=generator)
            latents = latents * base.vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype)
            steps = base.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator, device=device).long()
            noisy = base.noise_scheduler.add_noise(latents, noise, timesteps)
            captions = list(batch["caption"])
            if dropout and self.options.prompt_dropout > 0:
                drop = torch.rand(len(captions), generator=generator, device=device) < self.options.prompt_dropout
                captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
            ids = base.tokenizer(captions, max_length=base.tokenizer.model_max_length, padding="max_length",
                                 truncation=True, return_tensors="pt").input_ids.to(device)
            encoded = base.text_encoder(ids, return_dict=False)[0]
        metadata = self.metadata_inputs(batch, generator, dropout=dropout)
        down, mid = self.controlnet(noisy, timesteps, encoder_hidden_states=encoded,
                                    controlnet_cond=batch["condition"].to(device, dtype=dtype),
                                    return_dict=False, **metadata["controlnet"])
        pred = base.unet(noisy, timesteps, encoder_hidden_states=encoded,
                         down_block_additional_residuals=[r.to(dtype) for r in down],
                         mid_block_additional_residual=mid.to(dtype), return_dict=False, **metadata["unet"])[0]
        if base.noise_scheduler.config.prediction_type == "v_prediction":
            wanted = base.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            wanted = noise
        return F.mse_loss(pred.float(), wanted.float())

    def metadata_inputs(self, batch: dict, generator, *, dropout: bool = True) -> dict:
        """The metadata keyword arguments of the ControlNet (target's and condition's) and
        of the UNet (target's only), each value zeroed with p = metadata_dropout."""
        if not self.base.uses_metadata:
            return {"controlnet": {}, "unet": {}}
        import torch

        device = self.acc.device
        metadata = batch["metadata"].to(device)
        cond = batch["cond_metadata"].to(device)
        p = self.options.metadata_dropout if dropout else 0.0
        if p > 0:
            metadata = metadata * (torch.rand(metadata.shape, generator=generator, device=device) >= p)
            cond = cond * (torch.rand(cond.shape, generator=generator, device=device) >= p)
        return {"controlnet": {"metadata": metadata, "cond_metadata": cond}, "unet": {"metadata": metadata}}

    def _generator(self, pos: Position):
        import torch

        seed = np.random.SeedSequence([self.options.seed, pos.epoch, pos.batches, self.acc.process_index])
        return torch.Generator(device=self.acc.device).manual_seed(int(seed.generate_state(1)[0]))

    def probe_loss(self) -> float | None:
        """The loss on the first training pairs with fixed noise and no dropout: unlike the
        step losses, comparable between steps."""
        import torch

        if not self.probe:
            return None
        batch = collate([PairDataset(self.probe, self.options)[i] for i in range(len(self.probe))])
        if not batch["size"]:
            return None
        generator = torch.Generator(device=self.acc.device).manual_seed(self.options.seed)
        with torch.no_grad():
            return float(self.loss(batch, generator, dropout=False))

    # -- logging ---------------------------------------------------------------------------
    def _log_step(self, pos: Position, losses: list, batch: dict) -> None:
        import torch

        acc = self.acc
        local = torch.stack(losses).mean().reshape(1)
        loss = float(acc.gather(local.to(acc.device)).mean())
        row = {"step": pos.step, "loss": loss, "lr": float(self.lr_scheduler.get_last_lr()[0]),
               "epoch": pos.epoch, "time": round(time.time(), 3), "unreadable": int(batch.get("unreadable", 0))}
        acc.log({"train/loss": loss, "train/lr": row["lr"]}, step=pos.step)
        if acc.is_main_process:
            _append(self.out / "log.jsonl", row)
        self._event({"event": "step", **row, "max_steps": self.options.max_steps})

    def _event(self, event: dict) -> None:
        if self.acc.is_main_process:
            self.on_event(event)

    def _stop_requested(self) -> bool:
        """Whether any process was asked to stop (decided together, so all stop at once)."""
        import torch

        asked = self.should_stop() or (self.out / STOP_FILE).exists()
        flag = torch.tensor([1.0 if asked else 0.0], device=self.acc.device)
        return bool(self.acc.reduce(flag, reduction="sum").item() > 0)

    # -- validation ------------------------------------------------------------------------
    def validate(self, step: int) -> dict:
        """Images for the validation pairs with the current ControlNet, saved and scored
        (whole tile and per damage class) beside the persistence baseline."""
        acc = self.acc
        acc.wait_for_everyone()
        result: dict = {}
        if acc.is_main_process:
            result = self._validate_here(step)
        acc.wait_for_everyone()
        return result

    def _validate_here(self, step: int) -> dict:
        import torch
        from PIL import Image

        from core.metrics.scoring import scores_to_dict, summarise
        from core.types import GenerationRequest, MetricSettings

        controlnet = self.acc.unwrap_model(self.controlnet)
        controlnet.eval()
        folder = self.out / "validation" / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        backend = validation_backend(self.base)
        pipe = validation_pipeline(self.base, controlnet)
        settings = MetricSettings()
        scenes, made, baseline = {}, [], []
        o = self.options
        try:
            for pair in self.val_pairs:
                condition, target, _ = prepared_images(pair, o.resolution, augment=False, rng=None)
                picture = Image.fromarray(condition)
                request = GenerationRequest(
                    backbone=backend.spec.id, prompt=pair.caption_text(), scene_id=pair.scene_id,
                    mode="txt2img" if self.base.kind == "diffusionsat" else "img2img", steps=o.validation_steps,
                    guidance=7.5, strength=1.0, size=o.resolution, seed=o.seed, scheduler="ddim",
                    metadata=tuple(pair.metadata) if self.base.uses_metadata else None,
                    options={"cond_metadata": list(pair.cond_metadata)} if self.base.uses_metadata else {})
                generator = torch.Generator(device=self.acc.device).manual_seed(o.seed)
                with self.acc.autocast():
                    image = backend.run(pipe, request, init_image=picture, control_image=picture,
                                        generators=[generator])[0]
                pred = np.asarray(image.convert("RGB"))
                Image.fromarray(pred).save(folder / f"{pair.scene_id}.png")
                label = pair.post_label if o.task == "future" else None
                scores = self.lab.evaluation.score_images(pred, target, metric_settings=settings,
                                                          label_path=label, part=pair.part)
                still = self.lab.evaluation.score_images(condition, target, metric_settings=settings,
                                                         label_path=label, part=pair.part)
                made.append(scores)
                baseline.append(still)
                scenes[pair.scene_id] = {"controlnet": scores_to_dict(scores), "baseline": scores_to_dict(still)}
        finally:
            controlnet.train()
        row = {"step": step, "probe_loss": self.probe_loss(), "mean": summarise(made) if made else {},
               "baseline_mean": summarise(baseline) if baseline else {}, "scenes": scenes,
               "images": str(folder.relative_to(self.out))}
        _append(self.out / "validation.jsonl", row)
        self.acc.log(_tracker_scores(row), step=step)
        self._event({"event": "validation", "step": step, "probe_loss": row["probe_loss"],
                     "mean": row["mean"], "baseline_mean": row["baseline_mean"]})
        return row

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, pos: Position) -> Path:
        """Write checkpoint-<step> (see the module notes); keep the newest keep_checkpoints."""
        acc = self.acc
        final = self.out / f"checkpoint-{pos.step}"
        staging = self.out / f".tmp-checkpoint-{pos.step}"
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(staging))
            if acc.is_main_process:
                acc.unwrap_model(self.controlnet).save_pretrained(staging / "controlnet")
                atomic_write_text(staging / "state.json", dumps({"position": vars(pos).copy(),
                                                                   "saved": time.time()}))
                if final.exists():
                    shutil.rmtree(final)
                os.replace(staging, final)
        except OSError as err:
            if acc.is_main_process:
                shutil.rmtree(staging, ignore_errors=True)
            previous = checkpoints(self.out)
            kept = f"the previous checkpoint {previous[-1].name} is intact" if previous else "no checkpoint was kept"
            raise TrainingError(f"Could not write checkpoint-{pos.step} in {self.out} ({err.strerror or err}); "
                                f"{kept}. Free disk space and resume with --resume latest.") from err
        acc.wait_for_everyone()
        if acc.is_main_process:
            for old in checkpoints(self.out)[:-self.options.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            self._update_record(step=pos.step, checkpoint=final.name)
        self._event({"event": "checkpoint", "step": pos.step, "path": str(final)})
        return final

    def _resume_checkpoint(self) -> Path | None:
        o = self.options
        found = checkpoints(self.out)
        if o.resume is None:
            if found:
                raise TrainingError(f"{self.out} already holds a training run ({found[-1].name}): resume it with "
                                    "--resume latest, or give another --out.")
            return None
        if o.resume == "auto":  # a job that may be requeued: go on if there is something to go on from
            return found[-1] if found else None
        if o.resume == "latest":
            if not found:
                raise TrainingError(f"No checkpoint to resume in {self.out}: start without --resume.")
            return found[-1]
        path = Path(o.resume)
        if not (path / "state.json").is_file():
            raise TrainingError(f"{path} is not a checkpoint of this trainer (no state.json in it).")
        return path

    def _truncate_logs(self, step: int) -> None:
        """Drop log lines written after the checkpoint resumed from (they are redone)."""
        if not self.acc.is_main_process:
            return
        for name in ("log.jsonl", "validation.jsonl"):
            rows = [r for r in read_jsonl(self.out / name) if r.get("step", 0) <= step]
            if (self.out / name).exists():
                atomic_write_text(self.out / name, "".join(json.dumps(r) + "\n" for r in rows))

    # -- the record ------------------------------------------------------------------------
    def _pairs(self, processes: int):
        o = self.options
        index = self.lab.datasets.open(o.data)
        scenes = index.filter(split=o.split, disaster=o.disaster, disaster_type=o.disaster_type)
        pairs, skipped = training_pairs(index, scenes, o, self.lab.captions)
        held_out = None
        if o.val_split:
            held = index.filter(split=o.val_split, disaster=o.disaster, disaster_type=o.disaster_type)
            held_out, more = training_pairs(index, held, o, self.lab.captions)
            skipped += more
        train, val = split_validation(pairs, held_out, o.val_count, o.seed)
        if len(train) < processes:
            raise TrainingError(
                f"Too few scenes to train on: {len(train)} usable pre/post pair(s) in {o.data} with these filters "
                f"({len(skipped)} skipped), for {processes} process(es). Widen the filters or point --data at "
                "more scenes.")
        return train, val, skipped

    def _record(self, acc, precision, train, val, skipped, pos, resume_from) -> dict:
        o = self.options
        record = {
            "kind": "controlnet", "status": "running", "options": o.to_json(), "base": o.base,
            "base_source": self.base.source, "task": o.task, "processes": acc.num_processes,
            "precision_used": precision, "step": pos.step, "started": time.time(),
            "resumed_from": str(resume_from) if resume_from else None,
            "data": {"train": [p.scene_id for p in train], "validation": [p.scene_id for p in val],
                     "skipped": skipped},
            "versions": library_versions(), "validation": None,
        }
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            old = _read_record(self.out)
            record["history"] = (old.get("history", []) if old else []) + [{"started": record["started"],
                                                                             "from_step": pos.step}]
            atomic_write_text(self.out / "training.json", dumps(record))
        return record  # a STOP file is left alone here: a stop asked while loading still counts

    def _failed(self, why: str) -> None:
        acc = getattr(self, "acc", None)
        if acc is not None and acc.is_main_process:
            self._update_record(status="failed", error=why, ended=time.time())

    def _update_record(self, **changes) -> None:
        record = _read_record(self.out) or {}
        record.update(changes)
        atomic_write_text(self.out / "training.json", dumps(record))

    def _finish(self, record: dict, status: str, pos: Position) -> Outcome:
        acc = self.acc
        acc.wait_for_everyone()
        last = read_jsonl(self.out / "validation.jsonl")
        validation = last[-1] if last else {}
        if acc.is_main_process:
            if status == "finished":
                staging = self.out / ".tmp-controlnet"
                shutil.rmtree(staging, ignore_errors=True)
                acc.unwrap_model(self.controlnet).save_pretrained(staging)
                shutil.rmtree(self.out / "controlnet", ignore_errors=True)
                os.replace(staging, self.out / "controlnet")
                write_base_hint(self.out, self.base.source)
            (self.out / STOP_FILE).unlink(missing_ok=True)
            self._update_record(status=status, step=pos.step, ended=time.time(),
                                validation={k: validation.get(k) for k in ("step", "mean", "baseline_mean",
                                                                           "probe_loss")} if validation else None)
        self._event({"event": status, "step": pos.step, "out": str(self.out)})
        return Outcome(status=status, step=pos.step, out=self.out, validation=validation)


# -- helpers -------------------------------------------------------------------------------
def _read_record(out: Path) -> dict | None:
    try:
        return json.loads((Path(out) / "training.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _flat(config: dict) -> dict:
    """Settings TensorBoard's hparams accept (numbers, strings, booleans)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}


def _tracker_scores(row: dict) -> dict:
    out = {}
    if row.get("probe_loss") is not None:
        out["val/probe_loss"] = row["probe_loss"]
    for prefix, means in (("val", row.get("mean") or {}), ("baseline", row.get("baseline_mean") or {})):
        for metric, summary in (means.get("overall") or means).items():
            value = summary.get("mean") if isinstance(summary, dict) else summary
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[f"{prefix}/{metric}"] = value
    return out


def _optimizer(controlnet, o: TrainOptions):
    import torch

    if o.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise TrainingError("--use-8bit-adam needs bitsandbytes (a CUDA machine): pip install bitsandbytes, "
                                "or train without it.") from err
        return bnb.optim.AdamW8bit(controlnet.parameters(), lr=o.learning_rate)
    return torch.optim.AdamW(controlnet.parameters(), lr=o.learning_rate)


class EpochShuffle:
    """A sampler whose order is a permutation seeded by (seed, epoch): the same on every
    process and after a resume (accelerate shards it between processes). Its epoch is set
    with `use_epoch`, not `set_epoch`: accelerate calls `set_epoch` with its own count of
    passes over the loader, which restarts at 0 after a resume."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


def _loader(dataset: PairDataset, o: TrainOptions):
    from torch.utils.data import DataLoader

    sampler = EpochShuffle(len(dataset), o.seed)
    loader = DataLoader(dataset, batch_size=o.batch_size, sampler=sampler, collate_fn=collate,
                        num_workers=o.num_workers, drop_last=False)
    loader.epoch_sampler = sampler
    return loader


def _use_epoch(loader, epoch: int) -> None:
    """Set the epoch of the EpochShuffle inside a (prepared) loader."""
    seen = set()
    stack = [loader]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        if isinstance(obj, EpochShuffle):
            obj.use_epoch(epoch)
            return
        stack += [getattr(obj, name, None) for name in ("epoch_sampler", "batch_sampler", "sampler", "base_dataloader")]
    raise LabError("internal: the training sampler was not found in the prepared loader")
