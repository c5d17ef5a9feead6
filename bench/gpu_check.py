"""GPU check: in one call, the figures only a GPU can give, on models of the real sizes.

Run:  python bench/gpu_check.py              (a CUDA GPU; at most 7 minutes of sections: --budget)
      python bench/gpu_check.py --dry-run    (any machine, CPU only: tiny models, end to end)

No model hub is needed: every model is built from its architecture's config (written out
below) with RANDOM weights, saved with `save_pretrained` to a temporary folder and loaded
through the app's real backend `load` (`core.backends.get(id).load(folder, device, dtype)`),
then run through `core.generation.generate`. Random weights make noise images, but the time
and memory of a forward pass do not depend on the values of the weights.

Sections, in this order, each run in its own subprocess with its own timeout (a hung CUDA
call cannot hang the check); a section that fails or times out is recorded and the next
one runs. Every section gets at most what is left of the overall `--budget` (420 s, so the
whole call stays under 8 minutes; the figures below are caps, not estimates):

  environment          versions, the GPU, which packages import (cap 60 s)
  architectures        (--dry-run only) the real configs built on the meta device: are they
                       valid, and their parameter counts against the published ones
  generate_sd21        SD 2.1 (v-prediction UNet, OpenCLIP-H text encoder, VAE) txt2img at
                       512 px, 20 steps, fp16: s/image and peak VRAM, app path
                       (core.generation.generate) vs the diffusers pipeline called directly,
                       then both again with enable_model_cpu_offload (cap 125 s)
  attention_sd21       the same generation with and without the DAAM recorder (cap 60 s)
  controlnet_training  ControlNet training on that SD 2.1-sized base through the app's own
                       Trainer (the saved folder as --base-model), 512 px, batch 4, frozen
                       parts in fp16, the ControlNet in fp32 under autocast: s/step and peak
                       VRAM over 15 timed steps (after 3), without and with gradient
                       checkpointing, and bench_training.py's minimal hand-written step on the
                       same loaded models (the loop's overhead, app / minimal) (cap 120 s)
  generate_sdxl        SDXL base (20 steps, guidance 5) and SDXL Turbo (4 steps, guidance 0)
                       on one SDXL-sized model (UNet 2.6 B, CLIP-L + OpenCLIP-bigG), app vs
                       direct, and SDXL base with CPU offload (cap 150 s)
  scoring              bench/bench_scoring.py --device cuda as a subprocess; its JSON folded
                       in (cap 90 s)
  switch               ModelManager switching between the SD 2.1- and SDXL-sized pipelines
                       on the GPU (host <-> device moves) vs loading them fresh (cap 90 s)
  generate_sd3         if time is left: SD3 medium (MMDiT 2 B, two CLIP encoders; T5 dropped
                       with the app's drop_t5 option unless --sd3-t5), app vs direct, then
                       both with enable_model_cpu_offload (cap 130 s)

Timings: one warm-up call per path, then `--repeats` (3) interleaved timed calls, CUDA
synchronised around each; peak VRAM is torch.cuda.max_memory_allocated() after a reset
before every timed call (the maximum over the repeats is reported).

Writes bench/results/gpu_check.json (with --dry-run: gpu_check.dry-run.json in the temp
folder, so toy figures never land in bench/results/) and prints a table. Exit status 0 when
every section that ran finished, 1 when one failed or timed out. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from common import RESULTS, ROOT, machine_info, now_utc, sync, write_result

GIB = 1024**3
PROMPT = "A satellite image of flooded streets near damaged houses"
SCORING_SCRIPT = ROOT / "bench" / "bench_scoring.py"

# -- architectures: the published configs, written out ------------------------------------
# stabilityai/stable-diffusion-2-1: unet/config.json, vae/config.json, text_encoder (OpenCLIP
# ViT-H/14 text tower as CLIPTextModel, penultimate layer: 23 of 24 layers), scheduler.
SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, act_fn="silu",
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, use_linear_projection=True, center_input_sample=False, downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, act_fn="silu", norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
SD21_VAE = dict(SD_VAE, sample_size=768, scaling_factor=0.18215)
SD21_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                      num_train_timesteps=1000)
CLIP_VOCAB = 49408
# CLIP text towers: (hidden, intermediate, layers, heads, projection, activation).
OPENCLIP_H_TEXT = dict(hidden=1024, intermediate=4096, layers=23, heads=16, projection=512, act="gelu")
CLIP_L_TEXT = dict(hidden=768, intermediate=3072, layers=12, heads=12, projection=768, act="quick_gelu")
OPENCLIP_BIGG_TEXT = dict(hidden=1280, intermediate=5120, layers=32, heads=20, projection=1280, act="gelu")

# stabilityai/stable-diffusion-xl-base-1.0 (sdxl-turbo has the same architecture).
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, act_fn="silu",
    block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True,
    addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, flip_sin_to_cos=True, freq_shift=0, norm_num_groups=32,
)
SDXL_VAE = dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                      timestep_spacing="leading", prediction_type="epsilon", interpolation_type="linear",
                      use_karras_sigmas=False, num_train_timesteps=1000)

# stabilityai/stable-diffusion-3-medium-diffusers.
SD3_TRANSFORMER = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                       attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                       caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192)
SD3_VAE = dict(SD_VAE, latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
               use_quant_conv=False, use_post_quant_conv=False)
SD3_T5 = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
              relative_attention_max_distance=128, is_encoder_decoder=False, use_cache=False)

# Published parameter counts (millions), for the architectures section's check (±2 %).
PUBLISHED_PARAMS_M = {
    ("sd21", "unet"): 865.9, ("sd21", "text_encoder"): 340.4, ("sd21", "vae"): 83.7,
    ("sdxl", "unet"): 2567.5, ("sdxl", "text_encoder"): 123.1, ("sdxl", "text_encoder_2"): 694.7,
    ("sdxl", "vae"): 83.7, ("sd3", "transformer"): 2028.3, ("sd3", "text_encoder"): 123.7,
    ("sd3", "text_encoder_2"): 694.7, ("sd3", "vae"): 83.8, ("sd3", "text_encoder_3"): 4762.3,
}


def _clip_config(tokenizer, *, hidden, intermediate, layers, heads, projection, act):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=CLIP_VOCAB, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, max_position_embeddings=77, projection_dim=projection, hidden_act=act,
        layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_components(kind: str, *, with_t5: bool = False) -> dict:
    """The models (random weights) and tokenizers of architecture `kind` ("sd21", "sdxl",
    "sd3"). Call it under `with torch.device(...)` to build them there ("meta" to only
    check the configs). Tokenizers are built offline (core/backends/tiny_models/sd.py): the text encoders
    always read 77 padded positions, so a smaller vocabulary changes no cost."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from core.backends.tiny_models.sd import tiny_clip_tokenizer, tiny_t5_tokenizer

    if kind == "sd21":
        tok = tiny_clip_tokenizer(pad_token="!")
        return {"unet": UNet2DConditionModel(**SD21_UNET), "vae": AutoencoderKL(**SD21_VAE),
                "text_encoder": CLIPTextModel(_clip_config(tok, **OPENCLIP_H_TEXT)), "tokenizer": tok}
    if kind == "sdxl":
        tok, tok2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")
        return {"unet": UNet2DConditionModel(**SDXL_UNET), "vae": AutoencoderKL(**SDXL_VAE),
                "text_encoder": CLIPTextModel(_clip_config(tok, **CLIP_L_TEXT)),
                "text_encoder_2": CLIPTextModelWithProjection(_clip_config(tok2, **OPENCLIP_BIGG_TEXT)),
                "tokenizer": tok, "tokenizer_2": tok2}
    if kind == "sd3":
        tok, tok2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")
        parts = {"transformer": SD3Transformer2DModel(**SD3_TRANSFORMER), "vae": AutoencoderKL(**SD3_VAE),
                 "text_encoder": CLIPTextModelWithProjection(_clip_config(tok, **CLIP_L_TEXT)),
                 "text_encoder_2": CLIPTextModelWithProjection(_clip_config(tok2, **OPENCLIP_BIGG_TEXT)),
                 "tokenizer": tok, "tokenizer_2": tok2, "text_encoder_3": None, "tokenizer_3": None}
        if with_t5:
            from transformers import T5Config, T5EncoderModel

            tok3 = tiny_t5_tokenizer()
            parts.update(text_encoder_3=T5EncoderModel(T5Config(**SD3_T5, decoder_start_token_id=0,
                                                                pad_token_id=0, eos_token_id=1)),
                         tokenizer_3=tok3)
        return parts
    raise ValueError(f"unknown architecture {kind!r}")


def assemble_pipeline(kind: str, parts: dict):
    """The diffusers pipeline of `kind` from `parts` plus its scheduler."""
    import diffusers

    if kind == "sd21":
        return diffusers.StableDiffusionPipeline(
            **parts, scheduler=diffusers.DDIMScheduler(**SD21_SCHEDULER), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    if kind == "sdxl":
        return diffusers.StableDiffusionXLPipeline(**parts, scheduler=diffusers.EulerDiscreteScheduler(**SDXL_SCHEDULER))
    return diffusers.StableDiffusion3Pipeline(
        **parts, scheduler=diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0))


def count_params(parts: dict) -> dict:
    """Parameters of every torch module in `parts` (a dict, or a pipeline's components)."""
    import torch

    return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()
            if isinstance(m, torch.nn.Module)}


def build_model_folder(kind: str, folder: Path, *, device: str, with_t5: bool = False) -> dict:
    """Build architecture `kind` with random weights on `device`, cast to fp16, save it with
    `save_pretrained` to `folder` (written beside it, then renamed, so a folder that
    exists is complete) and describe it."""
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(device):
        parts = build_components(kind, with_t5=with_t5)
    params = count_params(parts)
    for m in parts.values():
        if isinstance(m, torch.nn.Module):
            m.to(device="cpu", dtype=torch.float16)
    built_s = time.perf_counter() - t0
    pipe = assemble_pipeline(kind, parts)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    t1 = time.perf_counter()
    pipe.save_pretrained(partial)
    partial.rename(folder)
    save_s = time.perf_counter() - t1
    del pipe, parts
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"architecture": kind, "weights": "random", "dtype_saved": "fp16", "parameters": params,
            "parameters_total_m": round(sum(params.values()) / 1e6, 1), "build_s": round(built_s, 2),
            "save_s": round(save_s, 2), "bytes_on_disk": _folder_bytes(folder)}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


# -- settings and the child side ----------------------------------------------------------
@dataclass
class Settings:
    dry_run: bool
    device: str
    size: int
    steps: int
    turbo_steps: int
    repeats: int
    warmup: int
    budget_s: float
    sd3_t5: bool
    work: str
    train_steps: int = 15  # timed ControlNet training steps per run
    train_warmup: int = 3  # untimed steps before them
    train_batch: int = 4


class Ctx:
    """What a section's child process has: the settings, the work folder and a way to save
    what it has measured so far (kept even when the section times out later)."""

    def __init__(self, settings: Settings, out: Path):
        self.s = settings
        self.work = Path(settings.work)
        self.out = out
        self.cuda = settings.device.startswith("cuda")

    def save(self, result: dict) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.out)

    # memory ---------------------------------------------------------------------------
    def reset_peak(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        return round(torch.cuda.max_memory_allocated() / GIB, 3)

    def allocated_gib(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        sync(self.s.device)
        return round(torch.cuda.memory_allocated() / GIB, 3)

    def free_memory(self) -> None:
        gc.collect()
        if self.cuda:
            import torch

            torch.cuda.empty_cache()

    # models ---------------------------------------------------------------------------
    def model_folder(self, kind: str) -> tuple[Path, dict]:
        """The saved folder of architecture `kind` (built on first use, then reused by the
        later sections); tiny random models from core/backends/tiny_models/sd.py with --dry-run."""
        models = self.work / "models"
        models.mkdir(parents=True, exist_ok=True)
        if self.s.dry_run:
            from core.backends.tiny_models import sd as tiny

            builder = {"sd21": tiny.tiny_random_sd21_folder, "sdxl": tiny.tiny_random_sdxl_turbo_folder,
                       "sd3": tiny.tiny_random_sd3_folder}[kind]
            t0 = time.perf_counter()
            folder = builder(models)
            return folder, {"architecture": f"tiny random {kind} (core/backends/tiny_models/sd.py), --dry-run",
                            "weights": "random", "build_s": round(time.perf_counter() - t0, 2),
                            "bytes_on_disk": _folder_bytes(folder)}
        name = kind + ("-t5" if kind == "sd3" and self.s.sd3_t5 else "")
        folder = models / name
        info_file = models / f"{name}.json"
        if folder.is_dir() and info_file.exists():
            return folder, dict(json.loads(info_file.read_text()), built_by="an earlier section")
        shutil.rmtree(folder, ignore_errors=True)  # saved by a section killed before it said so
        info = build_model_folder(kind, folder, device=self.s.device, with_t5=self.s.sd3_t5)
        info_file.write_text(json.dumps(info))
        return folder, info

    def load(self, backbone: str, folder: Path, **load_options):
        """(backend, pipeline, seconds): the app's backend `load` of `folder`."""
        from core.backends import get

        backend = get(backbone)
        t0 = time.perf_counter()
        pipe = backend.load(folder, device=self.s.device, dtype=backend.spec.dtype, **load_options)
        sync(self.s.device)
        return backend, pipe, time.perf_counter() - t0

    # timing ---------------------------------------------------------------------------
    def measure(self, paths: dict, *, repeats: int | None = None, warmup: int | None = None) -> dict:
        """Each path warmed up (`warmup` calls, the settings' by default), then timed
        `repeats` times, interleaved; per path the median/min seconds, every run and the
        peak VRAM over the timed runs."""
        from common import timed

        repeats = self.s.repeats if repeats is None else repeats
        warmup = self.s.warmup if warmup is None else warmup
        for fn in paths.values():
            for _ in range(warmup):
                fn()
        runs: dict[str, list[float]] = {name: [] for name in paths}
        peaks: dict[str, float | None] = {name: None for name in paths}
        for _ in range(repeats):
            for name, fn in paths.items():
                self.reset_peak()
                runs[name].append(timed(fn, self.s.device))
                peak = self.peak_gib()
                if peak is not None:
                    peaks[name] = max(peaks[name] or 0.0, peak)
        return {name: {"median_s": round(statistics.median(v), 4), "min_s": round(min(v), 4),
                       "runs_s": [round(x, 4) for x in v], "peak_vram_gib": peaks[name]}
                for name, v in runs.items()}


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _request(backbone: str, ctx: Ctx, **fields):
    from core.types import GenerationRequest

    return GenerationRequest(backbone=backbone, prompt=PROMPT, mode="txt2img", size=ctx.s.size, seed=0, **fields)


def _paths(ctx: Ctx, backend, pipe, request, extra_call: dict | None = None) -> dict:
    """The app path and the diffusers pipeline called directly, for `request`."""
    import numpy as np
    import torch

    from core.generation import generate

    def app():
        return generate(request, backend=backend, pipe=pipe).images[0]

    def direct():
        p = pipe.for_mode("txt2img")
        out = p(prompt=request.prompt, negative_prompt=None, num_inference_steps=int(request.steps),
                guidance_scale=float(request.guidance), height=request.size, width=request.size,
                generator=[torch.Generator("cpu").manual_seed(request.seed)], num_images_per_prompt=1,
                output_type="pil", **(extra_call or {}))
        return np.asarray(out.images[0])

    return {"app": app, "direct": direct}


def _rows_for(section: str, name: str, m: dict, note: str = "") -> list[dict]:
    return [{"section": section, "what": f"{name}, {path}", "s": v["median_s"], "peak_vram_gib": v["peak_vram_gib"],
             "note": note} for path, v in m.items()]


def _generate(ctx: Ctx, section: str, kind: str, runs: list[dict], *, offload: str | None,
              offload_direct: bool = False, load_options: dict | None = None) -> dict:
    """Build/load architecture `kind` once, then for each of `runs` ({backbone, steps,
    guidance, scheduler?, options?, call?}) app vs direct; then `offload`'s app path with
    enable_model_cpu_offload (what ModelManager(offload="model") applies), and with
    `offload_direct` the diffusers pipeline called directly under the same offload too. On
    a CPU (--dry-run) the offload code runs as plumbing only: nothing moves."""
    import numpy as np

    out: dict = {"size": ctx.s.size, "mode": "txt2img", "warmup": ctx.s.warmup, "repeats": ctx.s.repeats,
                 "backbones": {}, "rows": []}
    folder, info = ctx.model_folder(kind)
    out["model"] = info
    ctx.save(out)
    first = runs[0]["backbone"]
    backend, pipe, load_s = ctx.load(first, folder, **(load_options or {}))
    out["model"].update(load_s=round(load_s, 2), loaded_through=f"core.backends.get({first!r}).load",
                        loaded_parameters=count_params(pipe.components), weights_vram_gib=ctx.allocated_gib(),
                        dtype=pipe.dtype_name, device=pipe.device_name)
    ctx.save(out)
    from core.backends import get

    for run in runs:
        bid = run["backbone"]
        try:
            be = get(bid)
            request = _request(bid, ctx, steps=run["steps"], guidance=run["guidance"],
                               scheduler=run.get("scheduler"), options=run.get("options") or {})
            paths = _paths(ctx, be, pipe, request, run.get("call"))
            same = bool(np.array_equal(paths["app"](), paths["direct"]()))  # also the warm-up
            m = ctx.measure(paths, warmup=ctx.s.warmup - 1)
            ratio = m["app"]["median_s"] / m["direct"]["median_s"]
            out["backbones"][bid] = {"steps": run["steps"], "guidance": run["guidance"],
                                     "scheduler": request.scheduler or be.spec.defaults.get("scheduler"),
                                     "options": request.options, "timings": m,
                                     "ratio_app_over_direct": round(ratio, 4), "identical_images": same,
                                     "pipeline_from": first if bid != first else None}
            out["rows"] += _rows_for(section, bid, m, f"{run['steps']} steps, guidance {run['guidance']:g}")
            out["rows"].append({"section": section, "what": f"{bid}, app / direct", "s": round(ratio, 3),
                                "peak_vram_gib": None, "note": "ratio"})
        except Exception as err:
            out["backbones"][bid] = {"error": _error(err), "traceback": traceback.format_exc(limit=6)}
        ctx.save(out)

    if offload is not None:
        if not ctx.cuda and not ctx.s.dry_run:
            out["offload"] = {"backbone": offload, "status": "skipped",
                              "reason": "enable_model_cpu_offload needs a CUDA device"}
        else:
            try:
                run = next(r for r in runs if r["backbone"] == offload)
                be = get(offload)
                request = _request(offload, ctx, steps=run["steps"], guidance=run["guidance"],
                                   scheduler=run.get("scheduler"), options=run.get("options") or {})
                t0 = time.perf_counter()
                pipe.enable_model_cpu_offload(device=ctx.s.device)
                ctx.free_memory()
                enable_s = time.perf_counter() - t0
                both = _paths(ctx, be, pipe, request, run.get("call"))
                paths = {"app, model CPU offload": both["app"]}
                if offload_direct:
                    paths["direct, model CPU offload"] = both["direct"]
                m = ctx.measure(paths)
                base = out["backbones"].get(offload, {}).get("timings", {}).get("app", {})
                v = m["app, model CPU offload"]
                out["offload"] = {"backbone": offload, "status": "ok", "how": "pipe.enable_model_cpu_offload(device)",
                                  "enable_s": round(enable_s, 2), "resident_vram_gib": ctx.allocated_gib(),
                                  "timings": m,
                                  "slowdown_over_no_offload": round(v["median_s"] / base["median_s"], 3)
                                  if base else None,
                                  "peak_vram_saved_gib": round(base["peak_vram_gib"] - v["peak_vram_gib"], 3)
                                  if base and base.get("peak_vram_gib") is not None else None}
                if not ctx.cuda:
                    out["offload"]["note"] = "on the CPU (--dry-run): plumbing only, nothing is offloaded"
                out["rows"] += _rows_for(section, offload, m)
                if offload_direct:
                    ratio = v["median_s"] / m["direct, model CPU offload"]["median_s"]
                    out["offload"]["ratio_app_over_direct"] = round(ratio, 4)
                    out["rows"].append({"section": section, "what": f"{offload}, offload: app / direct",
                                        "s": round(ratio, 3), "peak_vram_gib": None, "note": "ratio"})
            except Exception as err:
                out["offload"] = {"backbone": offload, "status": "error", "error": _error(err),
                                  "traceback": traceback.format_exc(limit=6)}
        ctx.save(out)
    return out


def section_environment(ctx: Ctx) -> dict:
    """Versions, the device and which packages import."""
    import importlib

    out: dict = {"packages": {}, "missing": []}
    for name in ("torch", "diffusers", "transformers", "accelerate", "safetensors", "tokenizers", "lpips",
                 "skimage", "scipy", "PIL"):
        try:
            mod = importlib.import_module(name)
            out["packages"][name] = getattr(mod, "__version__", "?")
        except Exception as err:  # ImportError, or a package broken by a version mix
            out["packages"][name] = None
            out["missing"].append(f"{name} ({_error(err)})")
    import torch

    out["cuda_available"] = bool(torch.cuda.is_available())
    if out["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": props.name, "total_memory_gib": round(props.total_memory / GIB, 1),
                      "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
                      "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    out["machine"] = machine_info(device=ctx.s.device, torch_threads=torch.get_num_threads())
    out["rows"] = [{"section": "environment", "what": f"{'GPU ' + out['gpu']['name'] if out.get('gpu') else 'no GPU'}",
                    "s": None, "peak_vram_gib": out.get("gpu", {}).get("total_memory_gib"),
                    "note": "missing: " + ", ".join(m.split(" ")[0] for m in out["missing"]) if out["missing"] else
                    "all packages import"}]
    return out


def section_architectures(ctx: Ctx) -> dict:
    """The real configs built on the meta device (no memory): valid, and their counts."""
    import torch

    out: dict = {"device": "meta", "models": {}, "rows": []}
    for kind in ("sd21", "sdxl", "sd3"):
        try:
            with torch.device("meta"):
                parts = build_components(kind, with_t5=(kind == "sd3"))
            counts = count_params(parts)
            checks = {}
            for comp, n in counts.items():
                ref = PUBLISHED_PARAMS_M.get((kind, comp))
                checks[comp] = {"parameters_m": round(n / 1e6, 1), "published_m": ref,
                                "within_2pct": None if ref is None else abs(n / 1e6 - ref) <= 0.02 * ref}
            out["models"][kind] = checks
            bad = [c for c, v in checks.items() if v["within_2pct"] is False]
            out["rows"].append({"section": "architectures", "what": f"{kind} configs", "s": None, "peak_vram_gib": None,
                                "note": ", ".join(f"{c} {v['parameters_m']} M" for c, v in checks.items())
                                + (f"; OFF the published count: {', '.join(bad)}" if bad else "")})
        except Exception as err:
            out["models"][kind] = {"error": _error(err), "traceback": traceback.format_exc(limit=6)}
        ctx.save(out)
    return out


def section_generate_sd21(ctx: Ctx) -> dict:
    return _generate(ctx, "generate_sd21", "sd21",
                     [{"backbone": "sd21", "steps": ctx.s.steps, "guidance": 7.5}], offload="sd21",
                     offload_direct=True)


def section_generate_sdxl(ctx: Ctx) -> dict:
    return _generate(ctx, "generate_sdxl", "sdxl",
                     [{"backbone": "sdxl-base", "steps": ctx.s.steps, "guidance": 5.0},
                      {"backbone": "sdxl-turbo", "steps": ctx.s.turbo_steps, "guidance": 0.0, "scheduler": "euler_a"}],
                     offload="sdxl-base")


def section_generate_sd3(ctx: Ctx) -> dict:
    from core.generation.prompts import T5_MAX_SEQUENCE_LENGTH

    drop = not ctx.s.sd3_t5
    return _generate(ctx, "generate_sd3", "sd3",
                     [{"backbone": "sd3", "steps": ctx.s.steps, "guidance": 7.0, "options": {"drop_t5": drop},
                       "call": {"max_sequence_length": T5_MAX_SEQUENCE_LENGTH}}],
                     offload="sd3", offload_direct=True, load_options={"drop_t5": True} if drop else {})


def section_attention_sd21(ctx: Ctx) -> dict:
    """bench_attention.py's comparison on the SD 2.1-sized model: plain vs recording."""
    import numpy as np

    from core.attention.record import record_attention
    from core.generation import generate

    folder, info = ctx.model_folder("sd21")
    backend, pipe, load_s = ctx.load("sd21", folder)
    request = _request("sd21", ctx, steps=ctx.s.steps, guidance=7.5)
    out: dict = {"model": dict(info, load_s=round(load_s, 2)), "size": ctx.s.size, "steps": ctx.s.steps,
                 "guidance": 7.5, "repeats": ctx.s.repeats, "rows": []}

    def plain():
        return generate(request, backend=backend, pipe=pipe).images[0]

    def recorded():
        with record_attention(pipe, cfg=True) as rec:
            image = generate(request, backend=backend, pipe=pipe).images[0]
        rec.raw()  # the word maps' raw sums, upsampled once: part of what recording costs
        return image

    a, b = plain(), recorded()  # also the warm-up
    m = ctx.measure({"plain": plain, "recorded": recorded}, warmup=ctx.s.warmup - 1)
    ratio = m["recorded"]["median_s"] / m["plain"]["median_s"]
    out.update(timings=m, ratio_recorded_over_plain=round(ratio, 4), target_ratio=1.15,
               max_abs_pixel_difference=int(np.abs(a.astype(int) - b.astype(int)).max()))
    out["rows"] = _rows_for("attention_sd21", "sd21", m) + [
        {"section": "attention_sd21", "what": "recorded / plain", "s": round(ratio, 3), "peak_vram_gib": None,
         "note": "ratio (target <= 1.15)"}]
    return out


def section_switch(ctx: Ctx) -> dict:
    """bench_switch.py's measurement with the SD 2.1- and SDXL-sized pipelines: the manager
    bringing back a model from its CPU cache vs loading it fresh from disk (page cache)."""
    from core.backends import get
    from core.models import ModelManager
    from common import timed

    folders = {"sd21": ctx.model_folder("sd21")[0], "sdxl-base": ctx.model_folder("sdxl")[0]}
    manager = ModelManager(device=ctx.s.device, ram_budget_gb=64.0)
    loads = {k: 0 for k in folders}

    def loader_for(key):
        def load(device, dtype):
            loads[key] += 1
            return get(key).load(folders[key], device=device, dtype=dtype)
        return load

    def enter(key):
        with manager.use(key, loader_for(key), spec_dtype="fp16"):
            pass

    out: dict = {"models": list(folders), "rows": []}
    a, b = folders
    first = {a: timed(lambda: enter(a), ctx.s.device), b: timed(lambda: enter(b), ctx.s.device)}
    status = manager.status()
    out["bytes"] = {e["key"]: e["bytes"] for e in [status["resident"], *status["cached"]] if e}
    switches: dict[str, list[float]] = {a: [], b: []}
    for _ in range(max(2, ctx.s.repeats)):
        switches[a].append(timed(lambda: enter(a), ctx.s.device))
        switches[b].append(timed(lambda: enter(b), ctx.s.device))
    assert loads == {a: 1, b: 1}, f"the manager reloaded a cached model: {loads}"
    manager.unload_all()
    ctx.free_memory()
    fresh = {}
    for key in folders:
        holder = {}
        fresh[key] = timed(lambda: holder.update(p=get(key).load(folders[key], device=ctx.s.device, dtype="fp16")),
                           ctx.s.device)
        del holder
        ctx.free_memory()
    out.update(manager_first_load_s={k: round(v, 3) for k, v in first.items()},
               switch_to_cached_s={k: {"median": round(statistics.median(v), 6), "runs": [round(x, 6) for x in v]}
                                   for k, v in switches.items()},
               fresh_load_s={k: round(v, 3) for k, v in fresh.items()},
               note="a switch moves the previous model to host RAM and the cached one to the device; "
                    "fresh = backend.load from the saved folder (files in the page cache) onto the device")
    for key in folders:
        med = statistics.median(switches[key])
        nbytes = out["bytes"].get(key, 0)
        size = f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB / 4 else f"{nbytes / 2**20:.1f} MiB"
        out["rows"] += [
            {"section": "switch", "what": f"{key}: manager first load", "s": round(first[key], 3),
             "peak_vram_gib": None, "note": f"{size} of weights"},
            {"section": "switch", "what": f"{key}: fresh backend.load", "s": round(fresh[key], 3),
             "peak_vram_gib": None, "note": "page cache warm"},
            {"section": "switch", "what": f"{key}: switch back from CPU cache", "s": round(med, 6),
             "peak_vram_gib": None, "note": f"median of {len(switches[key])}; fresh / switch "
                                            f"{fresh[key] / med:.1f}x"}]
    return out


def section_controlnet_training(ctx: Ctx) -> dict:
    """ControlNet training on the SD 2.1-sized base through the app's own Trainer (the base
    saved by generate_sd21, passed as --base-model): s/step and peak VRAM without and with
    gradient checkpointing, and a minimal hand-written step on the same loaded models (the
    loop's overhead on a GPU). Timed as bench/bench_training.py does (see there): the steps
    after `train_warmup`, from the trainer's step events; the run is ended after the last
    timed step, so no checkpoint is written."""
    import math

    from bench_training import time_trainer, train_options, training_lab, training_scenes

    s = ctx.s
    size, batch, warmup, steps = s.size, s.train_batch, s.train_warmup, s.train_steps
    folder, info = ctx.model_folder("sd21")
    # enough pairs that the timed steps all fall in the first epoch (the loader's worker
    # processes start once, as on the xBD release's 2,799 pairs): 6 demo scenes, copied
    copies = math.ceil((warmup + steps) * batch / 6)
    data = ctx.work / f"training-data-{size}px-x{copies}"
    if not data.is_dir():
        partial = data.with_name(data.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        training_scenes(partial, size, copies=copies)
        partial.rename(data)
    lab = training_lab(ctx.work / "training-lab")
    precision = "fp16" if ctx.cuda else "no"
    out: dict = {"model": info, "base_model": "the saved sd21 folder, through core.training.models.load_base",
                 "size": size, "batch_size": batch, "warmup_steps": warmup, "timed_steps": steps,
                 "pairs": 6 * copies, "num_workers": 2, "optimizer": "AdamW, lr 5e-5, max grad norm 1",
                 "precision": ("frozen UNet, VAE, text encoder in fp16; ControlNet in fp32 under accelerate's "
                               "fp16 autocast with a GradScaler") if ctx.cuda else "fp32 (CPU: --dry-run)",
                 "runs": {}, "rows": []}
    ctx.save(out)
    for name, checkpointing in (("app", False), ("app, gradient checkpointing", True)):
        trainer = None
        try:
            opts = train_options(data, ctx.work / f"training-run-{len(out['runs'])}", folder, resolution=size,
                                 batch_size=batch, warmup=warmup, steps=steps, num_workers=2,
                                 mixed_precision=precision, gradient_checkpointing=checkpointing)
            ctx.free_memory()
            m = time_trainer(opts, lab, warmup=warmup, steps=steps, device=s.device)
            trainer = m.pop("trainer")
            peak = None if m["peak_bytes"] is None else round(m["peak_bytes"] / GIB, 3)
            out["runs"][name] = {
                "gradient_checkpointing": checkpointing, "s_per_step": round(m["s_per_step"], 4),
                "median_step_s": round(statistics.median(m["step_s"]), 4),
                "step_s": [round(x, 4) for x in m["step_s"]], "peak_vram_gib": peak,
                "startup_s": round(m["startup_s"], 2), "device": str(trainer.acc.device),
                "finite_losses": all(math.isfinite(x) for x in m["losses"])}
            note = f"batch {batch}, {size} px, mean of {steps} steps"
            if checkpointing and "app" in out["runs"] and "s_per_step" in out["runs"]["app"]:
                plain = out["runs"]["app"]
                note += f"; {m['s_per_step'] / plain['s_per_step']:.2f}x the time"
                if peak is not None and plain["peak_vram_gib"] is not None:
                    note += f", {plain['peak_vram_gib'] - peak:.2f} GiB less"
            out["rows"].append({"section": "controlnet_training", "what": f"sd21 ControlNet, {name}",
                                "s": round(m["s_per_step"], 4), "peak_vram_gib": peak, "note": note})
            ctx.save(out)
        except Exception as err:
            out["runs"][name] = {"error": _error(err), "traceback": traceback.format_exc(limit=8)}
        try:
            if trainer is not None and not checkpointing:
                mm = out["runs"]["minimal"] = _minimal_training(ctx, trainer, batch, warmup, steps)
                ratio = out["runs"][name]["s_per_step"] / mm["s_per_step"]
                mm["ratio_app_over_minimal"] = round(ratio, 4)
                out["rows"] += [
                    {"section": "controlnet_training", "what": "sd21 ControlNet, minimal step (same models)",
                     "s": mm["s_per_step"], "peak_vram_gib": mm["peak_vram_gib"],
                     "note": "hand-written step (bench_training.MinimalStep)"},
                    {"section": "controlnet_training", "what": "sd21 ControlNet, app / minimal", "s": round(ratio, 3),
                     "peak_vram_gib": None, "note": "ratio (target <= 1.05)"}]
        except Exception as err:
            out["runs"]["minimal"] = {"error": _error(err), "traceback": traceback.format_exc(limit=8)}
        finally:
            del trainer
            ctx.free_memory()
        ctx.save(out)
    return out


def _minimal_training(ctx: Ctx, trainer, batch_size: int, warmup: int, steps: int) -> dict:
    """MinimalStep on the trainer's own frozen models and (unwrapped) ControlNet, with a new
    AdamW; the trainer's optimizer is released first. Peak VRAM reset before the timed steps."""
    from bench_training import MinimalStep
    from core.training.data import collate

    acc, base = trainer.acc, trainer.base
    controlnet = acc.unwrap_model(trainer.controlnet, keep_fp32_wrapper=False)
    acc.free_memory()  # the prepared optimizer, scheduler and loader
    trainer.optimizer = trainer.lr_scheduler = trainer.controlnet = None
    ctx.free_memory()
    parts = {"tokenizer": base.tokenizer, "text_encoder": base.text_encoder, "vae": base.vae, "unet": base.unet,
             "noise_scheduler": base.noise_scheduler}
    minimal = MinimalStep(parts, device=acc.device, weight_dtype=trainer.weight_dtype, controlnet=controlnet)
    batch = collate([trainer.dataset[i] for i in range(batch_size)])
    for _ in range(warmup):
        minimal(batch)
    ctx.reset_peak()
    m = minimal.time(batch, warmup=0, steps=steps)
    return {"s_per_step": round(m["s_per_step"], 4), "peak_vram_gib": ctx.peak_gib(),
            "finite_losses": all(x == x for x in m["losses"])}


def section_caption_worker(ctx: Ctx) -> dict:
    """The captioning worker's cost (core/captions/worker.py): process start → "ready", and
    the per-request overhead (round trip minus the worker's own time), hosting the small
    test captioner in this environment on this device; then, when the CogVLM2 environment
    (`make cogvlm2`) is on this machine, the same with the tiny CogVLM2-shaped remote-code
    model of tests/tiny/cogvlm2_remote.py on transformers 4.41 (the real 19B weights are out
    of reach here)."""
    import time

    from core.captions import envs
    from core.captions.captioners import CaptionContext
    from core.captions.remote import WorkerCaptioner
    from tests import xbd_trees

    out: dict = {}
    context = CaptionContext("demo_00000001", "post", "demo", "flooding")
    with tempfile.TemporaryDirectory(prefix="gpu-check-worker-") as tmp:
        tile = xbd_trees.write_png(Path(tmp) / "tile.png", 512, seed=1)
        hosts = {"ticking test captioner": WorkerCaptioner(
            "test-ticking", python=sys.executable, spec_dtype="fp32",
            captioner_class="tests.tiny.worker_captioners:TickingCaptioner")}
        if (envs.env_dir() / "xbdlab-env.txt").is_file():
            from tests.tiny.cogvlm2_remote import build_tiny_cogvlm2

            folder = build_tiny_cogvlm2(Path(tmp) / "cogvlm2")
            hosts["tiny CogVLM2 (transformers 4.41)"] = WorkerCaptioner(
                "cogvlm2", python=str(envs.env_python()), source=str(folder), spec_dtype="bf16")
        else:
            out["tiny CogVLM2 (transformers 4.41)"] = {"skipped": f"no CogVLM2 environment at {envs.env_dir()}"}
        for name, captioner in hosts.items():
            start = time.perf_counter()
            worker = captioner.loader(ctx.s.device, None).model
            ready_s = time.perf_counter() - start
            rounds = []
            try:
                worker.caption(tile, context)  # the first request pays one-off imports
                for _ in range(5):
                    t0 = time.perf_counter()
                    answer = worker.caption(tile, context)
                    rounds.append((time.perf_counter() - t0) - answer["seconds"])
            finally:
                worker.close()
            out[name] = {"start_to_ready_s": round(ready_s, 3), "load_s": worker.ready["load_seconds"],
                         "overhead_ms_median": round(1000 * statistics.median(rounds), 2),
                         "overhead_ms_max": round(1000 * max(rounds), 2), "versions": worker.ready["versions"]}
    out["rows"] = [row for name, m in out.items() if "start_to_ready_s" in m for row in (
        {"section": "caption_worker", "what": f"{name}: start → ready", "s": m["start_to_ready_s"],
         "peak_vram_gib": None, "note": f"load {m['load_s']} s"},
        {"section": "caption_worker", "what": f"{name}: per-request overhead", "s": m["overhead_ms_median"] / 1000,
         "peak_vram_gib": None, "note": f"max {m['overhead_ms_max']} ms"})]
    return out


def section_batch_processes(ctx: Ctx) -> dict:
    """A generation batch on every GPU of the machine (one process each, accelerate launch)
    against one process, with bench/bench_distributed.py; skipped on a one-GPU machine."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return {"skipped": f"{count} GPU(s): 1 against all needs at least 2"}
    out = ctx.work / "distributed.json"
    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_distributed.py")), "--gpus", str(count),
                    "--images", str(4 * count), "--repeats", "1", "--out", str(out)], check=True)
    result = json.loads(out.read_text())
    return {**result, "rows": [{"section": "batch_processes", "what": f"1 process vs {count} GPUs (ratio)",
                                "s": result["ratio_two_to_one"], "peak_vram_gib": None, "note": ""}]}


CHILD_SECTIONS = {
    "environment": section_environment,
    "architectures": section_architectures,
    "generate_sd21": section_generate_sd21,
    "attention_sd21": section_attention_sd21,
    "generate_sdxl": section_generate_sdxl,
    "switch": section_switch,
    "generate_sd3": section_generate_sd3,
    "controlnet_training": section_controlnet_training,
    "caption_worker": section_caption_worker,
    "batch_processes": section_batch_processes,
}


def child_main(name: str, work: Path, out: Path) -> int:
    settings = Settings(**json.loads((work / "settings.json").read_text()))
    ctx = Ctx(settings, out)
    if settings.dry_run:
        import torch

        # toy models on a CPU that may be small and shared: more intra-op threads than free
        # cores make every op wait on the others (40x slower seen on a loaded 2-core machine)
        torch.set_num_threads(1)
    import transformers

    transformers.logging.set_verbosity_error()
    if name != "environment":
        # diffusers imports its pipelines lazily: import them now, so no timed load pays it
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image  # noqa: F401

        import core.backends  # noqa: F401

        core.backends.available()
    result = CHILD_SECTIONS[name](ctx)
    ctx.save(result)
    return 0


# -- the parent: sections, timeouts, the table --------------------------------------------
@dataclass
class Section:
    name: str
    cap_s: float  # its timeout, unless less of the budget is left
    min_s: float  # not started with less of the budget left
    kind: str = "child"  # "child" or "scoring"
    needs: tuple[str, ...] = ("torch", "diffusers", "transformers")
    dry_only: bool = False
    optional: bool = False  # "if time allows": the last ones, skipped first


SECTIONS = (
    Section("environment", 60, 10, needs=()),
    Section("architectures", 90, 20, dry_only=True),
    Section("generate_sd21", 125, 40),
    Section("attention_sd21", 60, 25),
    Section("controlnet_training", 120, 60, needs=("torch", "diffusers", "transformers", "accelerate")),
    Section("generate_sdxl", 150, 60),
    Section("scoring", 90, 20, kind="scoring", needs=("torch", "lpips")),
    Section("switch", 90, 30),
    Section("generate_sd3", 130, 50, optional=True),
    Section("caption_worker", 60, 20, needs=("torch",), optional=True),
    Section("batch_processes", 120, 40, needs=("torch", "accelerate"), optional=True),
)


def _run_subprocess(cmd: list[str], *, timeout: float, log: Path) -> tuple[str, float, int | None]:
    """Run `cmd` in its own process group, output to `log`; ("ok"|"error"|"timeout",
    seconds, return code). On timeout the whole group is killed."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        # its own process group (not session): killed as a whole on timeout, yet still part
        # of the caller's session, so whatever ends the session ends it too
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, process_group=0)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return "timeout", time.perf_counter() - t0, None
        except BaseException:  # Ctrl-C or SIGTERM: never leave a child holding the GPU
            _kill_group(proc)
            raise
    return ("ok" if rc == 0 else "error"), time.perf_counter() - t0, rc


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass  # stuck in the driver; its group was killed, do not wait on it


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _scoring_section(settings: Settings, work: Path, timeout: float) -> dict:
    text = SCORING_SCRIPT.read_text(encoding="utf-8") if SCORING_SCRIPT.exists() else ""
    if '"--device"' not in text and "'--device'" not in text:
        return {"status": "not run", "reason": "bench/bench_scoring.py has no --device flag yet"}
    out_json = work / "scoring.json"
    cmd = [sys.executable, str(SCORING_SCRIPT), "--device", settings.device, "--out", str(out_json)]
    if settings.dry_run:
        cmd += ["--n", "2", "--sizes", "64"]
    log = work / "scoring.log"
    status, secs, rc = _run_subprocess(cmd, timeout=timeout, log=log)
    entry: dict = {"status": status, "seconds": round(secs, 1), "timeout_s": round(timeout),
                   "command": " ".join([Path(cmd[0]).name, *[str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT))
                                                             else c for c in cmd[1:]]])}
    if out_json.exists():
        entry["result"] = json.loads(out_json.read_text())
        entry["rows"] = [{"section": "scoring", "what": f"{r.get('size')} px, {r.get('what')}",
                          "s": r.get("seconds"), "peak_vram_gib": None,
                          "note": f"{r.get('pairs_per_s')} pairs/s"} for r in entry["result"].get("results", [])
                         if isinstance(r, dict)]
    if status != "ok":
        entry["error"] = f"exit status {rc}" if status == "error" else f"timed out after {timeout:.0f} s"
        entry["log_tail"] = _tail(log)
    return entry


def _print_table(result: dict) -> None:
    rows = []
    for name, sec in result["sections"].items():
        sub = sec.get("result") or {}
        section_rows = sec.get("rows") or sub.get("rows") or []
        rows += section_rows
        if sec["status"] not in ("ok",):
            why = sec.get("error") or sec.get("reason") or ""
            rows.append({"section": name, "what": sec["status"].upper(), "s": None, "peak_vram_gib": None,
                         "note": why.splitlines()[0][:90] if why else ""})
    print()
    print(f"{'section':<20} {'what':<44} {'s (or ratio)':>12} {'peak GiB':>9}  note")
    for r in rows:
        s = "" if r.get("s") is None else f"{r['s']:.4g}"
        g = "" if r.get("peak_vram_gib") is None else f"{r['peak_vram_gib']:.2f}"
        print(f"{r['section']:<20} {str(r['what'])[:44]:<44} {s:>12} {g:>9}  {r.get('note') or ''}")
    print()


def parent_main(args) -> int:
    dry = args.dry_run
    settings = Settings(
        dry_run=dry, device="cpu" if dry else args.device,
        size=args.size or (64 if dry else 512), steps=args.steps or (2 if dry else 20),
        turbo_steps=2 if dry else 4, repeats=args.repeats or (1 if dry else 3), warmup=1,
        budget_s=args.budget or (900 if dry else 420), sd3_t5=args.sd3_t5, work="",
        train_steps=args.train_steps or (2 if dry else 15), train_warmup=1 if dry else 3, train_batch=4,
    )
    out_path = args.out or (Path(tempfile.gettempdir()) / "gpu_check.dry-run.json" if dry else RESULTS / "gpu_check.json")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    settings.work = str(work)
    (work / "settings.json").write_text(json.dumps(asdict(settings)))
    wanted = set(args.sections.split(",")) if args.sections else None
    t_start = time.perf_counter()
    deadline = t_start + settings.budget_s
    result: dict = {
        "what": "GPU check: architecture-sized models with RANDOM weights (configs in bench/gpu_check.py), "
                "saved, loaded through the app's backends, run through core.generation.generate",
        "dry_run": dry, "date": now_utc(),
        "settings": {k: v for k, v in asdict(settings).items() if k != "work"},
        "prompt": PROMPT, "sections": {},
    }
    missing: set[str] = set()
    failed = False
    print(f"GPU check{' (dry run: CPU, tiny models)' if dry else ''}: budget {settings.budget_s:.0f} s, "
          f"work folder {work}")
    try:
        for sec in SECTIONS:
            if wanted is not None and sec.name not in wanted:
                continue
            left = deadline - time.perf_counter()
            if sec.dry_only and not dry:
                result["sections"][sec.name] = {"status": "skipped",
                                                "reason": "--dry-run only (the generate sections count the "
                                                          "parameters of the models they build)"}
                continue
            lacking = [n for n in sec.needs if n in missing]
            if lacking:
                result["sections"][sec.name] = {"status": "skipped",
                                                "reason": f"{', '.join(lacking)} does not import here "
                                                          "(see environment.missing)"}
                continue
            if sec.name != "environment" and settings.device.startswith("cuda") and result["sections"].get(
                    "environment", {}).get("result", {}).get("cuda_available") is False:
                result["sections"][sec.name] = {"status": "skipped", "reason": "no CUDA device (use --dry-run)"}
                continue
            if left < sec.min_s:
                result["sections"][sec.name] = {"status": "skipped",
                                                "reason": f"out of the time budget ({left:.0f} s left, needs "
                                                          f"{sec.min_s:.0f} s{', optional' if sec.optional else ''})"}
                continue
            timeout = min(sec.cap_s * (args.timeout_scale or (2.0 if dry else 1.0)), left)
            print(f"-- {sec.name} (timeout {timeout:.0f} s) ...", flush=True)
            if sec.kind == "scoring":
                entry = _scoring_section(settings, work, timeout)
            else:
                child_out = work / f"{sec.name}.json"
                log = work / f"{sec.name}.log"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", sec.name, "--work", str(work),
                       "--child-out", str(child_out)]
                status, secs, rc = _run_subprocess(cmd, timeout=timeout, log=log)
                entry = {"status": status, "seconds": round(secs, 1), "timeout_s": round(timeout)}
                if child_out.exists():
                    entry["result"] = json.loads(child_out.read_text())
                if status != "ok":
                    entry["error"] = (f"timed out after {timeout:.0f} s (what it had measured is kept)"
                                      if status == "timeout" else f"exit status {rc}: " + _last_error(log))
                    entry["log_tail"] = _tail(log)
            sub_errors = _sub_errors(entry.get("result") or {})
            if sub_errors and entry["status"] == "ok":
                entry["status"] = "partial"
                entry["error"] = "; ".join(sub_errors)
            result["sections"][sec.name] = entry
            if sec.name == "environment" and entry.get("result"):
                missing = {m.split(" ")[0] for m in entry["result"].get("missing", [])}
                result["machine"] = entry["result"].get("machine")
            failed |= entry["status"] in ("error", "timeout", "partial")
            print(f"   {entry['status']} in {entry.get('seconds', 0):.1f} s"
                  + (f": {entry['error'].splitlines()[0][:160]}" if entry.get("error") else ""), flush=True)
            if entry.get("log_tail"):
                print("   | " + "\n   | ".join(entry["log_tail"].splitlines()[-8:]), flush=True)
            result["total_s"] = round(time.perf_counter() - t_start, 1)
            _quiet_write(out_path, result)
    finally:
        result["total_s"] = round(time.perf_counter() - t_start, 1)
        if not args.keep_work and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep_work:
            result["work"] = str(work)
    if "machine" not in result:  # no torch here: the environment section may have hung in it
        import platform

        result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                             "cpu_count": os.cpu_count(), "note": "the environment section gave none"}
    _print_table(result)
    print(f"total {result['total_s']:.0f} s of a {settings.budget_s:.0f} s budget")
    write_result(out_path, result)
    return 1 if failed else 0


def _sub_errors(res: dict) -> list[str]:
    """Errors recorded inside a section that otherwise finished (one backbone, offload)."""
    errs = []
    for bid, v in (res.get("backbones") or {}).items():
        if isinstance(v, dict) and "error" in v:
            errs.append(f"{bid}: {v['error']}")
    off = res.get("offload")
    if isinstance(off, dict) and off.get("status") == "error":
        errs.append(f"offload: {off['error']}")
    for kind, v in (res.get("models") or {}).items() if isinstance(res.get("models"), dict) else ():
        if isinstance(v, dict) and "error" in v:
            errs.append(f"{kind}: {v['error']}")
    for name, v in (res.get("runs") or {}).items() if isinstance(res.get("runs"), dict) else ():
        if isinstance(v, dict) and "error" in v:
            errs.append(f"{name}: {v['error']}")
    return errs


def _last_error(log: Path) -> str:
    lines = [ln for ln in _tail(log, 60).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith((" ", "\t")) and ("Error" in ln or "Exception" in ln or ":" in ln):
            return ln.strip()
    return lines[-1].strip() if lines else "no output"


def _quiet_write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU only, tiny models: checks the script end to end")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu runs the real architectures on the CPU, slowly (ignored with --dry-run)")
    ap.add_argument("--size", type=int, default=None, help="px (512; 64 with --dry-run)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (20; 2 with --dry-run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per path (3; 1 with --dry-run)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (420; 900 with --dry-run)")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="timed ControlNet training steps per run (15; 2 with --dry-run), after 3 (1) untimed")
    ap.add_argument("--sections", default=None, help="comma-separated subset of: "
                    + ", ".join(s.name for s in SECTIONS))
    ap.add_argument("--timeout-scale", type=float, default=None,
                    help="multiply every section's timeout (1; 2 with --dry-run, as a shared CPU may be slow; "
                         "more for the real architectures on a CPU)")
    ap.add_argument("--sd3-t5", action="store_true", help="build and run SD3 with its T5-XXL encoder (+9.5 GB)")
    ap.add_argument("--out", type=Path, default=None, help="the JSON result (bench/results/gpu_check.json)")
    ap.add_argument("--work", default=None, help="folder for the saved models (kept; reused when run again)")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child, Path(args.work), args.child_out)
    signal.signal(signal.SIGTERM, _terminated)  # so a killed check still kills its section
    return parent_main(args)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
