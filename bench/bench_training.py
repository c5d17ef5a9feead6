"""Steps per second of the app's ControlNet training loop vs a minimal hand-written diffusers step.

Run:  python bench/bench_training.py [--models small,tiny] [--resolution PX] [--batch-size 2]
                                     [--steps 20] [--warmup 5] [--repeats 3] [--threads 1]
Writes bench/results/training.json and prints a table. Not collected by pytest (no test_ prefix).

Both sides train the SAME random SD 2.1-layout base (v-prediction UNet with linear
projections, CLIP text encoder, 4-level VAE), saved with `save_pretrained` and read back from
that folder, with a ControlNet made by `ControlNetModel.from_unet` (identical starting
weights), AdamW at the recipe's learning rate (5e-5), fp32, on the CPU, one torch thread, the
same batch size and resolution. Two bases (`--models`, both by default): `small`
(`build_small_sd21`: the real UNet's 4 levels and block types at a tenth of the channels,
128 px: about 0.45 s a step, the order of a real SD 2.1 step on a GPU, so fixed per-step
costs weigh about as much as they would there) and `tiny` (tiny-sd21 of
core/backends/tiny_models/sd.py at 64 px: about 0.11 s a step, the strict case):

- app: the real `core.training.loop.Trainer` (`Trainer.run`, driven as the CLI drives it) on
  the demo scenes rewritten at the training resolution (see "data" below). Everything an
  iteration of the loop does is in the figure: the loader (num_workers 0: inside the step),
  epoch changes, per-step seeded generators, prompt dropout, accelerate's accumulate/backward,
  gradient clipping (max norm 1, the recipe), the LR scheduler, the loss gathered and logged
  (log.jsonl, TensorBoard, the event), the STOP-file check. Validation and checkpoints are off
  (validate_every/checkpoint_every above max_steps, no validation scenes);
- minimal: VAE encode -> noise -> add_noise -> text encoder -> ControlNetModel forward -> UNet
  forward with the residuals -> MSE (against the velocity, as for any v-prediction base) ->
  backward -> AdamW step, on one batch collated once from the app's own training pairs,
  nothing else. Its models are loaded by hand from the same folder.

How it is timed (the fair part). The loop's start-up (loading the base, building the
ControlNet, accelerate's prepare) and its end (the forced final checkpoint and export) are
not per-step costs, so neither is timed: the trainer's `on_event` hook sees every "step"
event (sent after the optimizer step and the logging), and an app step lasts from the end of
the previous step's hook to its own event, one whole iteration of the loop. After the last
timed step the hook raises, which ends the run there (through the loop's own `finally`), so
no checkpoint is written. The minimal step runs INSIDE that hook, after every app step and
outside the app's intervals: the two alternate step by step, so the load of a shared machine
hits both alike (whole runs one after the other differed by up to 1.5x on this machine).
The first `warmup` steps of both are not timed. Two variants of the app run in turn: the
recipe's defaults, and the same without gradient clipping (which the minimal step, by its
definition, lacks), `repeats` runs each of `steps` timed steps. The medians of all the timed
steps are compared (the means and the median of the step-by-step ratios are reported too),
in wall seconds and in CPU seconds of the process (`time.process_time`, every thread: the
TensorBoard writer's too), which time spent descheduled by other work on the machine does
not inflate. Target: app / minimal <= 1.05.

Data: the app's loader cost per batch is also measured on its own, from the rewritten tiles
and from the 1024 px demo tiles (what a step on the xBD release's tiles decodes and resizes).
With num_workers >= 1 (the app's default, 2) that cost runs in loader processes beside the
step; on a 2-core machine with one torch thread they would compete with it, hence 0 here.

`training_scenes`, `training_lab`, `train_options`, `time_trainer` and `MinimalStep` are also
used by bench/gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, arg_parser, machine_info, write_result

DEMO = ROOT / "assets" / "demo-scenes"


def build_small_sd21(folder: Path) -> Path:
    """Save a small random SD 2.1-layout pipeline to `folder`: the real UNet's 4 levels and
    block types (3 cross-attention levels, linear projections, v-prediction) at a tenth of
    its channels (32, 64, 128, 128), a 4-layer CLIP text encoder (hidden 64), the tiny
    4-level VAE. 8.6 M UNet parameters, 4.0 M in its ControlNet: about 0.45 CPU s per
    training step at 128 px, batch 2, one thread."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from core.backends.tiny_models.sd import tiny_clip_tokenizer

    torch.manual_seed(0)
    tok = tiny_clip_tokenizer(pad_token="!")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=64, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, hidden_act="gelu"))
    channels = (32, 64, 128, 128)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=64,
        attention_head_dim=tuple(c // 32 for c in channels), use_linear_projection=True, norm_num_groups=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32),
                        layers_per_block=1, norm_num_groups=8, sample_size=128)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(folder)
    return folder


MODELS = {  # --model: (how it is made, default resolution, description)
    "small": (build_small_sd21, 128, "small random SD 2.1-layout base (bench_training.build_small_sd21: 4 levels, "
                                     "channels 32-128, UNet 8.6 M, ControlNet 4.0 M parameters)"),
    "tiny": (None, 64, "tiny random SD 2.1-layout base (core/backends/tiny_models/sd.py: 2 levels, channels 16-32)"),
}


class _Enough(Exception):
    """Raised by the event hook after the last timed step: ends the run there."""


def training_scenes(dest: Path, resolution: int, *, copies: int = 1) -> Path:
    """The demo scenes (train and test) rewritten into `dest/train` for training at
    `resolution`: images resized once (LANCZOS, what the trainer would do every step), labels
    copied (their img_name updated), each scene `copies` times under new tile ids (so an
    epoch can hold as many batches as a timed window needs). Returns `dest`."""
    from PIL import Image

    images, labels = dest / "train" / "images", dest / "train" / "labels"
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        for src in sorted((DEMO / split / "images").glob("*_disaster.png")):
            disaster, tile_id, rest = src.name.split("_", 2)
            label = json.loads((DEMO / split / "labels" / f"{src.stem}.json").read_text(encoding="utf-8"))
            with Image.open(src) as im:
                small = im.convert("RGB").resize((resolution, resolution), Image.LANCZOS)
            for copy in range(copies):
                name = f"{disaster}_{int(tile_id) + 1000 * copy:08d}_{rest}"
                if copy == 0:
                    small.save(images / name)
                    first = images / name
                else:  # the same bytes under another name
                    (images / name).write_bytes(first.read_bytes())
                label["metadata"]["img_name"] = name
                (labels / f"{Path(name).stem}.json").write_text(json.dumps(label), encoding="utf-8")
    return dest


def training_lab(work: Path):
    """A Lab for the trainer (datasets, backbones, captions, evaluation), env-independent."""
    from core.config import Settings
    from core.lab import Lab

    return Lab(Settings.load(env={}, work_dir=Path(work), lpips_random_backbone=True))


def train_options(data: Path, out: Path, base_model: Path, *, resolution: int, batch_size: int, warmup: int,
                  steps: int, num_workers: int = 0, **more):
    """TrainOptions for a timed run: no validation, no checkpoint before the end, one
    optimizer step per batch."""
    from core.training.options import TrainOptions

    return TrainOptions(data=data, out=out, base="sd21", base_model=str(base_model), resolution=resolution,
                        batch_size=batch_size, grad_accum=1, max_steps=warmup + steps + 1, val_count=0,
                        validate_every=10**9, checkpoint_every=10**9, num_workers=num_workers, **more)


def time_trainer(options, lab, *, warmup: int, steps: int, device: str = "cpu", between=None) -> dict:
    """Run the app's Trainer until step `warmup + steps` (see the module notes). Returns
    `step_s`, the seconds of each step after `warmup` (from the end of the previous step's
    event hook to this step's event: one whole iteration of the loop), `s_per_step` (their
    mean), the losses, the start-up seconds (to the first step's event), on a CUDA device the
    peak memory over the timed steps (reset at step `warmup`), and the trainer (its models
    stay loaded). `between(step, trainer)`, when given, runs in the hook after every step
    but the last, outside the timed intervals."""
    import torch

    from core.training.loop import Trainer

    if warmup < 1 or steps < 1:
        raise ValueError("warmup and steps must be at least 1")
    cuda = str(device).startswith("cuda")
    intervals: list[float] = []  # intervals[k - 2]: step k
    cpu: list[float] = []  # the same intervals in CPU seconds of this process (all its threads)
    losses: list[float] = []
    state: dict = {"last_end": None, "last_cpu": None, "first": None, "peak": None}

    def on_event(event: dict) -> None:
        if event["event"] != "step":
            return
        now, now_cpu = time.perf_counter(), time.process_time()  # the loss is a float now: CUDA is synced
        if state["last_end"] is None:
            state["first"] = now
        else:
            intervals.append(now - state["last_end"])
            cpu.append(now_cpu - state["last_cpu"])
        losses.append(float(event["loss"]))
        step = event["step"]
        if cuda and step == warmup:
            torch.cuda.reset_peak_memory_stats()
        if step >= warmup + steps:
            if cuda:
                state["peak"] = torch.cuda.max_memory_allocated()
            raise _Enough
        if between is not None:
            between(step, trainer)
        state["last_end"], state["last_cpu"] = time.perf_counter(), time.process_time()

    trainer = Trainer(options, lab, on_event=on_event)
    t0 = time.perf_counter()
    try:
        trainer.run()
    except _Enough:
        pass
    else:
        raise RuntimeError(f"the trainer stopped after {len(losses)} step(s), before step {warmup + steps}")
    timed = intervals[warmup - 1:warmup - 1 + steps]
    return {"s_per_step": sum(timed) / len(timed), "step_s": timed, "step_cpu_s": cpu[warmup - 1:warmup - 1 + steps],
            "startup_s": state["first"] - t0,
            "losses": losses, "peak_bytes": state["peak"], "trainer": trainer}


class MinimalStep:
    """diffusers' ControlNet training step written out, nothing else (see the module notes).
    `parts` (tokenizer, text_encoder, vae, unet, noise_scheduler) frozen on `device` in
    `weight_dtype`; a fresh ControlNet from the UNet unless `controlnet` is given; on a
    reduced `weight_dtype` the ControlNet runs under autocast with a GradScaler (fp16)."""

    def __init__(self, parts: dict, *, device: str = "cpu", weight_dtype=None, lr: float = 5e-5, controlnet=None,
                 gradient_checkpointing: bool = False):
        import torch
        from diffusers import ControlNetModel

        self.p = parts
        self.device = device
        self.dtype = weight_dtype or torch.float32
        self.controlnet = (controlnet if controlnet is not None
                           else ControlNetModel.from_unet(parts["unet"])).float().to(device).train()
        if gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
        self.optimizer = torch.optim.AdamW(self.controlnet.parameters(), lr=lr)
        self.autocast = self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler(str(device).split(":")[0]) if self.dtype == torch.float16 else None

    @staticmethod
    def load_parts(folder: Path, *, device: str = "cpu", weight_dtype=None) -> dict:
        """The base's parts read from `folder` by hand, frozen on `device`."""
        import torch
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        parts = {"tokenizer": CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
                 "text_encoder": CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
                 "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
                 "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
                 "noise_scheduler": DDPMScheduler.from_pretrained(folder, subfolder="scheduler")}
        dtype = weight_dtype or torch.float32
        for name in ("text_encoder", "vae", "unet"):
            model = parts[name].requires_grad_(False).eval()
            model.to(device) if model.dtype == dtype else model.to(device, dtype=dtype)
        return parts

    def __call__(self, batch: dict):
        import torch
        import torch.nn.functional as F

        p, device, dtype = self.p, self.device, self.dtype
        with torch.no_grad():
            latents = p["vae"].encode(batch["target"].to(device, dtype=dtype)).latent_dist.sample()
            latents = latents * p["vae"].config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, p["noise_scheduler"].config.num_train_timesteps, (latents.shape[0],),
                                      device=device)
            noisy = p["noise_scheduler"].add_noise(latents, noise, timesteps)
            ids = p["tokenizer"](list(batch["caption"]), max_length=p["tokenizer"].model_max_length,
                                 padding="max_length", truncation=True, return_tensors="pt").input_ids.to(device)
            encoded = p["text_encoder"](ids, return_dict=False)[0]
        with torch.autocast(str(device).split(":")[0], dtype=dtype, enabled=self.autocast):
            down, mid = self.controlnet(noisy, timesteps, encoder_hidden_states=encoded,
                                        controlnet_cond=batch["condition"].to(device, dtype=dtype), return_dict=False)
        pred = p["unet"](noisy, timesteps, encoder_hidden_states=encoded,
                         down_block_additional_residuals=[r.to(dtype) for r in down],
                         mid_block_additional_residual=mid.to(dtype), return_dict=False)[0]
        if p["noise_scheduler"].config.prediction_type == "v_prediction":
            wanted = p["noise_scheduler"].get_velocity(latents, noise, timesteps)
        else:
            wanted = noise
        loss = F.mse_loss(pred.float(), wanted.float())
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def time(self, batch: dict, *, warmup: int, steps: int) -> dict:
        """`warmup` untimed steps, then s/step over `steps` steps in one window (CUDA
        synchronised at both ends); the losses of the timed steps."""
        from common import sync

        for _ in range(warmup):
            self(batch)
        sync(self.device)
        t0 = time.perf_counter()
        losses = [self(batch) for _ in range(steps)]
        sync(self.device)
        window = time.perf_counter() - t0
        return {"s_per_step": window / steps, "losses": [float(x) for x in losses]}


def loader_seconds(data: Path, options, lab, batches: int = 5) -> float:
    """Median seconds to make one batch with the app's PairDataset + collate (in-process)."""
    from core.training.data import PairDataset, collate, training_pairs

    index = lab.datasets.open(data)
    pairs, _ = training_pairs(index, index.filter(), options, lab.captions)
    dataset = PairDataset(pairs, options)
    b = options.batch_size
    collate([dataset[i % len(dataset)] for i in range(b)])  # warm-up
    times = []
    for k in range(batches):
        t0 = time.perf_counter()
        collate([dataset[(k * b + i) % len(dataset)] for i in range(b)])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


VARIANTS = {  # the app's runs: name -> TrainOptions fields
    "app": {},
    "app, no gradient clipping": {"max_grad_norm": 0.0},
}


def _interleaved_run(variant: str, r: int, args, folder: Path, data: Path, lab, tmp: Path) -> dict:
    """One app run with the minimal step between its steps; both sides' timed steps."""
    import torch

    from core.training.data import collate

    torch.manual_seed(r)
    minimal = MinimalStep(MinimalStep.load_parts(folder))
    held: dict = {"steps": [], "cpu": [], "losses": []}

    def between(step, trainer):
        if "batch" not in held:  # the first batch of the app's own dataset, collated once
            held["batch"] = collate([trainer.dataset[i] for i in range(args.batch_size)])
        t0, c0 = time.perf_counter(), time.process_time()
        loss = float(minimal(held["batch"]))
        if step >= args.warmup:
            held["steps"].append(time.perf_counter() - t0)
            held["cpu"].append(time.process_time() - c0)
            held["losses"].append(loss)

    opts = train_options(data, tmp / f"run-{len(list(tmp.glob('run-*')))}", folder, resolution=args.resolution,
                         batch_size=args.batch_size, warmup=args.warmup, steps=args.steps, **VARIANTS[variant])
    app = time_trainer(opts, lab, warmup=args.warmup, steps=args.steps, between=between)
    del app["trainer"]
    return {"app": app["step_s"], "minimal": held["steps"], "app_cpu": app["step_cpu_s"], "minimal_cpu": held["cpu"],
            "startup_s": app["startup_s"], "options": opts,
            "finite": all(math.isfinite(x) for x in app["losses"] + held["losses"])}


def _bench_model(name: str, args, tmp: Path) -> dict:
    """Every run of one base (`MODELS[name]`): its comparisons, runs and loader figures."""
    import torch

    from core.backends.tiny_models.sd import build_tiny_models

    build, default_resolution, described = MODELS[name]
    args = argparse.Namespace(**vars(args))
    args.resolution = args.resolution or default_resolution
    if build is None:
        folder = build_tiny_models(tmp / "models", ids=("tiny-sd21",))["tiny-sd21"]
    else:
        folder = build(tmp / "models" / name)
    data = training_scenes(tmp / f"data-{args.resolution}", args.resolution)
    lab = training_lab(tmp / "work")
    steps = {v: {"app": [], "minimal": [], "app_cpu": [], "minimal_cpu": []} for v in VARIANTS}
    per_run = []
    finite = True
    for r in range(args.repeats):
        for variant in VARIANTS:  # the variants alternate too
            run = _interleaved_run(variant, r, args, folder, data, lab, tmp)
            finite &= run["finite"]
            for side in steps[variant]:
                steps[variant][side] += run[side]
            row = {"variant": variant, "run": r + 1, "app_startup_s": round(run["startup_s"], 3),
                   **{f"{side}_median_s": round(statistics.median(run[side]), 5) for side in ("app", "minimal")}}
            per_run.append(row)
            print(f"{name}, run {r + 1}/{args.repeats}, {variant}: median s/step {row['app_median_s']:.4f}, "
                  f"minimal beside it {row['minimal_median_s']:.4f}", flush=True)
    opts = run["options"]
    loader = {"tiles at the training resolution (in the app's figure)": loader_seconds(data, opts, lab),
              "1024 px demo tiles (resized per item)": loader_seconds(DEMO, opts, lab)}
    comparisons = {}
    for variant, sides in steps.items():
        wall = {k: sides[k] for k in ("app", "minimal")}
        med = {k: statistics.median(v) for k, v in wall.items()}
        mean = {k: statistics.fmean(v) for k, v in wall.items()}
        cpu = {k: statistics.median(sides[f"{k}_cpu"]) for k in ("app", "minimal")}
        comparisons[variant] = {
            "timed_steps": len(sides["app"]),
            "median_s_per_step": {k: round(v, 5) for k, v in med.items()},
            "mean_s_per_step": {k: round(v, 5) for k, v in mean.items()},
            "steps_per_s": {k: round(1 / v, 3) for k, v in med.items()},
            "ratio_app_over_minimal": round(med["app"] / med["minimal"], 4),
            "ratio_of_means": round(mean["app"] / mean["minimal"], 4),
            "median_paired_ratio": round(statistics.median(a / b for a, b in zip(wall["app"], wall["minimal"])), 4),
            "median_cpu_s_per_step": {k: round(v, 5) for k, v in cpu.items()},
            "cpu_ratio_app_over_minimal": round(cpu["app"] / cpu["minimal"], 4),
        }
    del torch
    return {"model": f"{described}, ControlNet from its UNet", "resolution": args.resolution,
            "comparisons": comparisons, "per_run": per_run, "finite_losses": bool(finite),
            "loader_s_per_batch": {k: round(v, 5) for k, v in loader.items()}}


def main() -> int:
    ap = arg_parser(__doc__, "training.json")
    ap.add_argument("--models", default="small,tiny",
                    help="comma-separated, of: small (a step of about 0.45 s, like a real step on a GPU), "
                         "tiny (tiny-sd21, about 0.11 s)")
    ap.add_argument("--resolution", type=int, default=None, help="px (128 for small, 64 for tiny)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per run before the timed ones")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each variant (each interleaves app and minimal)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown or not names:
        ap.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODELS)}")

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    load_before = os.getloadavg()
    models = {}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        for name in names:
            models[name] = _bench_model(name, args, Path(tmp) / name)
    load_after = os.getloadavg()
    result = {
        "what": "ControlNet training s/step: the app's Trainer vs a minimal hand-written diffusers step",
        "batch_size": args.batch_size, "optimizer": "AdamW, lr 5e-5", "precision": "fp32", "device": "cpu",
        "warmup_steps": args.warmup, "timed_steps_per_run": args.steps, "runs_per_variant": args.repeats,
        "method": "app: Trainer.run, each step timed from the end of the previous step's event hook to its own "
                  "event (start-up and the final checkpoint excluded); minimal: the hand-written step, run "
                  "inside that hook after every app step (interleaved step by step, outside the app's times); "
                  "wall seconds (perf_counter) and CPU seconds of the process (process_time, all threads)",
        "variants": {v: o or "the recipe's defaults (max_grad_norm 1)" for v, o in VARIANTS.items()},
        "target_ratio": 1.05,
        "models": models,
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before],
                                "after": [round(x, 2) for x in load_after]},
        "machine": machine_info(torch_threads=torch.get_num_threads(), device="cpu"),
    }
    print()
    print(f"{'model, variant':<36} {'app s/step':>11} {'minimal':>9} {'ratio':>7} {'of means':>9} {'paired':>7} "
          f"{'CPU-s ratio':>11}")
    for name, block in models.items():
        for variant, c in block["comparisons"].items():
            m = c["median_s_per_step"]
            print(f"{name + ', ' + variant:<36} {m['app']:>11.4f} {m['minimal']:>9.4f} "
                  f"{c['ratio_app_over_minimal']:>7.3f} {c['ratio_of_means']:>9.3f} {c['median_paired_ratio']:>7.3f} "
                  f"{c['cpu_ratio_app_over_minimal']:>11.3f}")
    print("target ratio <= 1.05 (medians of the timed steps); finite losses: "
          + ", ".join(f"{n} {b['finite_losses']}" for n, b in models.items()))
    for name, block in models.items():
        for k, v in block["loader_s_per_batch"].items():
            print(f"{name} ({block['resolution']} px): loader, one batch of {args.batch_size}, {k}: {v * 1000:.1f} ms")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
