"""ControlNet training on tiny RANDOM models (plumbing, not quality): the loss falls when a
pair is overfitted, a stopped and resumed run ends with the weights of an uninterrupted
one, the output loads as a backbone, metadata reaches the right models, and bad input is
refused with a message."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from core.config import Settings
from core.errors import ModelNotAvailable
from core.io import read_jsonl
from core.training.loop import Trainer, checkpoints
from core.training.options import TrainingError, TrainOptions
from tests import xbd_trees as T

TWO_SCENES = {"train": [("hurricane-matthew", "00000001"), ("socal-fire", "00000003")]}
FIVE_SCENES = {"train": [("hurricane-matthew", f"0000000{i}") for i in range(1, 6)],
               "hold": [("mexico-earthquake", "00000007")]}


@pytest.fixture(scope="module")
def tiny_sd21(tmp_path_factory) -> Path:
    from core.backends.tiny_models.sd import build_tiny_models

    models = tmp_path_factory.mktemp("models")
    return build_tiny_models(models, ids=("tiny-sd21",))["tiny-sd21"]


@pytest.fixture(scope="module")
def tiny_diffusionsat(tmp_path_factory) -> Path:
    from tests.tiny.diffusionsat import write_pipeline_folder

    return write_pipeline_folder(tmp_path_factory.mktemp("diffusionsat") / "base")


def lab_for(tmp_path: Path, *, models: Path | None = None):
    from core.lab import Lab

    return Lab(Settings.load(env={}, work_dir=tmp_path / "work", models_dir=models, lpips_random_backbone=True))


def options(data: Path, out: Path, base_model: Path, **changes) -> TrainOptions:
    """Settings small enough for the CPU: 64 px, batch 2, a few steps."""
    values = dict(data=data, out=out, base="sd21", base_model=str(base_model) if base_model else None, resolution=64, batch_size=2,
                  grad_accum=1, max_steps=4, learning_rate=1e-3, validate_every=1000, checkpoint_every=1000,
                  validation_steps=2, val_count=0, num_workers=0, mixed_precision="no")
    values.update(changes)
    return TrainOptions(**values)


def later_post_dates(data: Path) -> Path:
    """Give every post-event label a later capture date than its pre-event label (the fake
    trees use one date for both), so the two metadata vectors differ."""
    for label in data.rglob("*_post_disaster.json"):
        record = json.loads(label.read_text())
        record["metadata"]["capture_date"] = "2018-10-12T16:05:00.000Z"
        label.write_text(json.dumps(record))
    return data


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("base", ["sd21", "diffusionsat"])
def test_overfitting_two_pairs_lowers_the_loss(tmp_path, base, tiny_sd21, tiny_diffusionsat):
    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)
    base_model = tiny_sd21 if base == "sd21" else tiny_diffusionsat
    o = options(data, tmp_path / "out", base_model, base=base, max_steps=40, validate_every=40,
                prompt_dropout=0.0, metadata_dropout=0.0)
    outcome = lab_for(tmp_path).training.train(o)
    assert outcome.status == "finished" and outcome.step == 40
    probes = [row["probe_loss"] for row in read_jsonl(tmp_path / "out" / "validation.jsonl")]
    assert [row["step"] for row in read_jsonl(tmp_path / "out" / "validation.jsonl")] == [0, 40]
    assert probes[1] < 0.7 * probes[0], probes  # the same pairs, the same noise: clearly lower
    losses = read_jsonl(tmp_path / "out" / "log.jsonl")
    assert [row["step"] for row in losses] == list(range(1, 41))


def test_a_stopped_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_sd21):
    """With accumulation, crops and flips, prompt dropout, and a stop in the middle of an
    epoch (5 pairs, batch 2, accumulation 2: steps 1-2 are epoch 0, step 3 half of epoch 1)."""
    data = T.make_official(tmp_path / "data", FIVE_SCENES, size=96)
    common = dict(max_steps=5, grad_accum=2, augment=True, checkpoint_every=1000, split="train")
    lab = lab_for(tmp_path)
    lab.training.train(options(data, tmp_path / "straight", tiny_sd21, **common))

    seen = []

    def stop_after_three():
        return len(seen) >= 3

    stopped = lab.training.train(options(data, tmp_path / "resumed", tiny_sd21, **common),
                                 on_event=lambda e: seen.append(e) if e["event"] == "step" else None,
                                 should_stop=stop_after_three)
    assert stopped.status == "stopped" and stopped.step == 3
    assert [p.name for p in checkpoints(tmp_path / "resumed")] == ["checkpoint-3"]
    finished = lab.training.train(options(data, tmp_path / "resumed", tiny_sd21, resume="latest", **common))
    assert finished.status == "finished" and finished.step == 5

    a, b = weights(tmp_path / "straight" / "controlnet"), weights(tmp_path / "resumed" / "controlnet")
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    steps = [row["step"] for row in read_jsonl(tmp_path / "resumed" / "log.jsonl")]
    assert steps == [1, 2, 3, 4, 5]  # nothing logged twice
    record = json.loads((tmp_path / "resumed" / "training.json").read_text())
    assert record["status"] == "finished" and [h["from_step"] for h in record["history"]] == [0, 3]


def test_the_output_loads_as_a_backbone_and_generates_like_any_other(tmp_path, tiny_sd21):
    data = T.make_official(tmp_path / "data", FIVE_SCENES, size=64)
    lab = lab_for(tmp_path)
    out = lab.settings.trained_dir / "my-run"
    o = options(data, out, tiny_sd21, max_steps=3, validate_every=3, val_split="hold", val_count=1,
                split="train")
    lab.training.train(o)

    record = json.loads((out / "training.json").read_text())
    assert record["status"] == "finished" and record["data"]["validation"] == ["mexico-earthquake_00000007"]
    assert len(record["data"]["train"]) == 5 and record["versions"]["torch"]
    assert record["validation"]["step"] == 3 and "psnr" in record["validation"]["mean"]
    last = read_jsonl(out / "validation.jsonl")[-1]
    assert (out / last["images"] / "mexico-earthquake_00000007.png").is_file()
    scene = last["scenes"]["mexico-earthquake_00000007"]
    assert "destroyed" in scene["controlnet"]["masked"] and "psnr" in scene["baseline"]

    assert "trained-my-run" in [s.id for s in lab.backbones.specs()]  # no restart
    assert lab.backbones.readiness("trained-my-run").ready
    index = lab.datasets.open(data)
    request = lab.generation.request_from({"backbone": "trained-my-run", "scene_id": "hurricane-matthew_00000001",
                                           "steps": 2, "size": 64}, index)
    run = lab.generation.generate(request, index)[0]
    assert run.record["backbone"] == "trained-my-run" and run.image().shape == (64, 64, 3)
    assert lab.backbones.get("controlnet").readiness(str(out)).ready  # the plain backbone loads it too


def test_metadata_is_dropped_per_value_and_only_the_target_s_reaches_the_unet(tmp_path, tiny_diffusionsat):
    import torch

    data = later_post_dates(T.make_official(tmp_path / "data", TWO_SCENES, size=64))
    seen: dict = {}

    class Spy(Trainer):
        def loss(self, batch, generator, *, dropout=True):
            if dropout and not seen:  # a training step (the probe loss drops nothing)
                controlnet = self.acc.unwrap_model(self.controlnet)
                controlnet.register_forward_pre_hook(lambda m, a, kw: seen.setdefault("controlnet", kw) and None,
                                                     with_kwargs=True)
                self.base.unet.register_forward_pre_hook(lambda m, a, kw: seen.setdefault("unet", kw) and None,
                                                         with_kwargs=True)
                seen["batch"] = batch
            return super().loss(batch, generator, dropout=dropout)

    o = options(data, tmp_path / "out", tiny_diffusionsat, base="diffusionsat", max_steps=1, metadata_dropout=0.5)
    Spy(o, lab_for(tmp_path)).run()
    given, cond_given = seen["batch"]["metadata"], seen["batch"]["cond_metadata"]
    cn, unet = seen["controlnet"], seen["unet"]
    assert set(cn) >= {"metadata", "cond_metadata"} and "cond_metadata" not in unet
    assert torch.equal(unet["metadata"], cn["metadata"])  # the UNet gets the target's, as dropped
    for sent, raw in ((cn["metadata"], given), (cn["cond_metadata"], cond_given)):
        kept = sent != 0
        assert torch.equal(sent[kept], raw[kept]) and 0 < int((~kept & (raw != 0)).sum()) < raw.numel()
    assert not torch.equal(given, cond_given)  # two different vectors: the post's and the pre's


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_sd21, monkeypatch):
    from accelerate import Accelerator

    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)
    real = Accelerator.save_state
    calls = []

    def full_on_second(self, output_dir=None, **kw):
        calls.append(output_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", full_on_second)
    with pytest.raises(TrainingError, match="checkpoint-2 is intact.*--resume latest"):
        lab_for(tmp_path).training.train(options(data, tmp_path / "out", tiny_sd21, checkpoint_every=2))
    assert [p.name for p in checkpoints(tmp_path / "out")] == ["checkpoint-2"]
    assert not list((tmp_path / "out").glob(".tmp-*"))
    assert json.loads((tmp_path / "out" / "training.json").read_text())["status"] == "failed"


def test_out_of_memory_on_the_first_step_says_which_options_save_memory(tmp_path, tiny_sd21, monkeypatch):
    import torch

    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)

    def oom(self, batch, generator, *, dropout=True):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(Trainer, "loss", oom)
    with pytest.raises(TrainingError, match="Out of GPU memory at step 1.*--gradient-checkpointing.*--use-8bit-adam"):
        lab_for(tmp_path).training.train(options(data, tmp_path / "out", tiny_sd21))


def test_bad_input_is_refused_before_training(tmp_path, tiny_sd21):
    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)
    lab = lab_for(tmp_path, models=tmp_path / "no-models")
    with pytest.raises(ModelNotAvailable, match="not on this machine"):
        lab.training.train(options(data, tmp_path / "a", None))
    with pytest.raises(TrainingError, match="multiple of 16.*try 64"):
        lab.training.train(options(data, tmp_path / "b", tiny_sd21, resolution=60))
    with pytest.raises(TrainingError, match="Too few scenes"):
        lab.training.train(options(data, tmp_path / "c", tiny_sd21, disaster="no-such-disaster"))
    with pytest.raises(TrainingError, match="between 0 and 1"):
        lab.training.train(options(data, tmp_path / "d", tiny_sd21, prompt_dropout=2.0))
    lab.training.train(options(data, tmp_path / "e", tiny_sd21, max_steps=1))
    with pytest.raises(TrainingError, match="already holds a training run.*--resume latest"):
        lab.training.train(options(data, tmp_path / "e", tiny_sd21, max_steps=1))
    with pytest.raises(TrainingError, match="No checkpoint to resume"):
        lab.training.train(options(data, tmp_path / "f", tiny_sd21, resume="latest"))


def test_resume_auto_starts_or_goes_on_for_a_requeued_job(tmp_path, tiny_sd21):
    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)
    lab = lab_for(tmp_path)
    first = lab.training.train(options(data, tmp_path / "o", tiny_sd21, max_steps=1, resume="auto"))
    again = lab.training.train(options(data, tmp_path / "o", tiny_sd21, max_steps=2, resume="auto"))
    assert (first.step, again.step) == (1, 2)
    assert [h["from_step"] for h in json.loads((tmp_path / "o" / "training.json").read_text())["history"]] == [0, 1]


def test_bad_pairs_are_skipped_and_counted_never_a_crash(tmp_path, tiny_sd21):
    data = T.make_official(tmp_path / "data", FIVE_SCENES, size=64)
    images = data / "train" / "images"
    T.write_corrupt_png(images / "hurricane-matthew_00000002_post_disaster.png")
    (images / "hurricane-matthew_00000003_post_disaster.png").unlink()
    lab = lab_for(tmp_path)
    outcome = lab.training.train(options(data, tmp_path / "out", tiny_sd21, max_steps=2, split="train"))
    assert outcome.status == "finished"
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert len(record["data"]["train"]) == 3 and len(record["data"]["skipped"]) == 2
    assert any("00000003" in s and "post-event image" in s for s in record["data"]["skipped"])


def test_pairs_follow_the_task_with_store_captions_else_the_template(tmp_path):
    from core.training.data import training_pairs

    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)
    lab = lab_for(tmp_path)
    index = lab.datasets.open(data)
    lab.captions.save_edit("socal-fire_00000003_post_disaster.png", "burnt houses along a road", author="t",
                           index=index)
    future, _ = training_pairs(index, index.scenes, options(data, tmp_path, None), lab.captions)
    past, _ = training_pairs(index, index.scenes, options(data, tmp_path, None, task="past"), lab.captions)
    assert future[0].metadata == past[0].cond_metadata and future[0].cond_metadata == past[0].metadata
    by_id = {p.scene_id: p for p in future}
    assert by_id["socal-fire_00000003"].caption_text() == "burnt houses along a road"
    assert by_id["hurricane-matthew_00000001"].caption_text().startswith("a satellite image after being affected")
    assert all(p.condition.name.endswith("_pre_disaster.png") and p.target.name.endswith("_post_disaster.png")
               for p in future)
    assert all(p.condition.name.endswith("_post_disaster.png") for p in past)
    assert {p.scene_id: p.caption_text() for p in past}["hurricane-matthew_00000001"].startswith(
        "a satellite image before being affected")


def test_the_diffusionsat_template_drops_its_bracketed_parts_sometimes(tmp_path):
    from core.training.data import template_parts, Pair

    parts = template_parts("diffusionsat", "future", "flooding")
    pair = Pair("s", Path("a"), Path("b"), parts, 64, (0.0,) * 7, (0.0,) * 7, (0.0,) * 7, (0.0,) * 7, None, None)
    assert pair.caption_text() == "a fmow satellite image after being affected by a flooding natural disaster"
    variants = {pair.caption_text(np.random.default_rng(i)) for i in range(200)}
    assert "a satellite image after being affected by a flooding natural disaster" in variants
    assert "a fmow satellite image" in variants and "a satellite image" in variants


def test_the_pairs_export_for_diffusers_own_script(tmp_path):
    from PIL import Image

    data = T.make_official(tmp_path / "data", TWO_SCENES, size=96)
    result = lab_for(tmp_path).training.export_upstream(options(data, tmp_path, None), tmp_path / "export")
    lines = [json.loads(line) for line in (tmp_path / "export" / "metadata.jsonl").read_text().splitlines()]
    assert result["written"] == 2 and len(lines) == 2
    for line in lines:
        assert set(line) == {"image", "conditioning_image", "text"}
        assert line["image"].startswith("images/") and line["conditioning_image"].startswith("conditioning_images/")
        assert Image.open(tmp_path / "export" / line["image"]).size == (64, 64)
        assert "after being affected" in line["text"]


def test_the_cli_trains_and_refuses_with_exit_2(tmp_path, tiny_sd21, capsys):
    from core.cli import main

    data = T.make_official(tmp_path / "data", TWO_SCENES, size=64)
    flags = ["--data", str(data), "--resolution", "64", "--batch-size", "2", "--grad-accum", "1",
             "--num-workers", "0", "--validation-steps", "2", "--val-count", "0", "--mixed-precision", "no"]
    assert main(["--work", str(tmp_path / "w"), "train", "controlnet", "--out", str(tmp_path / "o"),
                 "--base-model", str(tiny_sd21), "--max-steps", "2", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "finished"
    assert main(["--work", str(tmp_path / "w"), "train", "controlnet", "--out", str(tmp_path / "p"),
                 "--base-model", str(tmp_path / "nothing-here"), *flags]) == 2
    assert "error:" in capsys.readouterr().err


def test_finished_runs_are_offered_as_backbones_and_reread_only_when_they_change(tmp_path):
    """A catalog reads each run's training.json once; a run that finishes, or trains on,
    shows up without a restart (plumbing: no model is loaded)."""
    from core.backends.catalog import Backbones
    from core.io import atomic_write_text

    trained = tmp_path / "trained"
    catalog = Backbones(trained_dir=trained)
    run = trained / "flood-v1"
    run.mkdir(parents=True)
    atomic_write_text(run / "training.json", json.dumps({"status": "running", "base": "sd21", "step": 10}))
    assert "trained-flood-v1" not in [s.id for s in catalog.specs()]
    atomic_write_text(run / "training.json", json.dumps({"status": "finished", "base": "sd21", "step": 500}))
    first = catalog.get("trained-flood-v1")
    assert "500 steps" in first.spec.label and first.trained_folder == run
    assert catalog.get("trained-flood-v1") is first  # unchanged: not read again
    # a resumed run finishing again rewrites it
    atomic_write_text(run / "training.json", json.dumps({"status": "finished", "base": "sd21", "step": 1500}))
    assert "1500 steps" in catalog.get("trained-flood-v1").spec.label
    (run / "training.json").unlink()
    assert "trained-flood-v1" not in [s.id for s in catalog.specs()]
