"""Tiny, randomly initialised Stable Diffusion pipelines for tests and dry runs (no downloads).

Every builder makes a pipeline from configs in code with random weights, saves it with
`save_pretrained` and returns the folder, so tests exercise the real `from_pretrained`
path offline. The images these models make are noise: they test plumbing, never quality.

- `tiny_random_sd21_folder()`: SD 2.1 layout (UNet with linear projections, v-prediction,
  DDIM), one CLIP text encoder.
- `tiny_random_sdxl_turbo_folder()`: SDXL layout (two CLIP text encoders, the second with a
  projection; "text_time" added conditioning), Euler Ancestral with trailing timesteps.
- `tiny_random_sd3_folder()`: SD3 layout (MMDiT transformer, two CLIP encoders with
  projections and a T5 encoder, 16-channel VAE), FlowMatch Euler with shift 3.

Folders are built once per process under one temporary folder (or under `root` when
given) and reused. `build_tiny_models(models_dir)` writes all three as
`models_dir/<backbone id>`, the layout `core.backends.sources.resolve_source` looks for, so
the test-only backbones of `core.backends.tiny` find them.

Tokenizers are built offline: CLIP's byte-level BPE from the 256-symbol byte alphabet plus
a few merges (any English text tokenizes, mostly one token per letter, which makes long
prompts cheap to write), T5's Unigram from single-character pieces.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

TINY_IDS = ("tiny-sd21", "tiny-sdxl-turbo", "tiny-sd3")

_lock = threading.Lock()
_built: dict[tuple[str, str], Path] = {}
_tmp_root: Path | None = None

# A few frequent English pairs, so that common words take fewer tokens than letters.
_MERGES = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("e", "r"), ("a", "n"), ("o", "n</w>"),
           ("e", "d</w>"), ("r", "e"), ("a", "t")]


def _process_root() -> Path:
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = Path(tempfile.mkdtemp(prefix="xbd-tiny-random-models-"))
        atexit.register(shutil.rmtree, _tmp_root, True)
    return _tmp_root


def _cached(kind: str, root: Path | None, build) -> Path:
    base = Path(root) if root is not None else _process_root()
    key = (kind, str(base.resolve()))
    with _lock:
        folder = _built.get(key)
        if folder is not None and (folder / "model_index.json").exists():
            return folder
        folder = base / kind
        if not (folder / "model_index.json").exists():
            build(folder)
        _built[key] = folder
        return folder


# -- tokenizers ---------------------------------------------------------------------------
def tiny_clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIP BPE tokenizer over the byte alphabet (max length 77), built offline."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    for a, b in _MERGES:
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(_MERGES), pad_token=pad_token, model_max_length=77)


def tiny_t5_tokenizer():
    """A T5 Unigram tokenizer whose pieces are single characters (with and without the
    word-start marker), built offline."""
    import string

    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces.append(("\u2581" + ch, -3.0))
        pieces.append((ch, -4.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, additional_special_tokens=[], model_max_length=512)


def _clip_text_config(tokenizer, *, hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=projection,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="gelu",
    )


def _vae(latent_channels: int = 4, **extra):
    """A 4-level VAE (scale factor 8, like the real ones) with few channels."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
        **extra,
    )


# -- SD 2.1 -------------------------------------------------------------------------------
def build_tiny_random_sd21(folder: Path) -> Path:
    """Save a tiny random SD 2.1-style pipeline (v-prediction, DDIM) to `folder`."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer(pad_token="!")
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(4), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def tiny_random_sd21_folder(root: Path | None = None) -> Path:
    """Folder of the tiny random SD 2.1-style pipeline, built once per process and root."""
    return _cached("tiny-sd21", root, build_tiny_random_sd21)


# -- SDXL Turbo ---------------------------------------------------------------------------
def build_tiny_random_sdxl_turbo(folder: Path) -> Path:
    """Save a tiny random SDXL-style pipeline (two text encoders, Euler Ancestral with
    trailing timesteps as SDXL Turbo ships) to `folder`."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer(pad_token="!")
    text_encoder = CLIPTextModel(_clip_text_config(tokenizer))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, projection=32))
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64,
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=8,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 1),
        # 6 time ids (original size, crop, target size), each embedded in time_dim, plus the
        # pooled embedding of the second text encoder.
        projection_class_embeddings_input_dim=6 * time_dim + 32,
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="trailing", prediction_type="epsilon",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(4, force_upcast=False), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
    )
    pipe.save_pretrained(folder)
    return folder


def tiny_random_sdxl_turbo_folder(root: Path | None = None) -> Path:
    """Folder of the tiny random SDXL-style pipeline, built once per process and root."""
    return _cached("tiny-sdxl-turbo", root, build_tiny_random_sdxl_turbo)


# -- SD 3 ---------------------------------------------------------------------------------
def build_tiny_random_sd3(folder: Path) -> Path:
    """Save a tiny random SD3-style pipeline (MMDiT, CLIP x2 + T5, FlowMatch Euler shift 3)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_clip_tokenizer()
    tokenizer_3 = tiny_t5_tokenizer()
    text_encoder = CLIPTextModelWithProjection(_clip_text_config(tokenizer, projection=32))
    text_encoder_2 = CLIPTextModelWithProjection(_clip_text_config(tokenizer_2, projection=32))
    t5_dim = 64  # = both CLIP hidden sizes side by side, as in the real model (768+1280 < 4096)
    text_encoder_3 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_3), d_model=t5_dim, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        is_encoder_decoder=False, use_cache=False,
    ))
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=t5_dim,
        caption_projection_dim=16, pooled_projection_dim=64, pos_embed_max_size=16,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    vae = _vae(16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
               scaling_factor=1.5305)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer,
        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(folder)
    return folder


def tiny_random_sd3_folder(root: Path | None = None) -> Path:
    """Folder of the tiny random SD3-style pipeline, built once per process and root."""
    return _cached("tiny-sd3", root, build_tiny_random_sd3)


BUILDERS = {
    "tiny-sd21": tiny_random_sd21_folder,
    "tiny-sdxl-turbo": tiny_random_sdxl_turbo_folder,
    "tiny-sd3": tiny_random_sd3_folder,
}


def build_tiny_models(models_dir: Path, ids: tuple[str, ...] = TINY_IDS) -> dict[str, Path]:
    """Write the tiny random pipelines as `models_dir/<id>` (for `resolve_source`'s
    models-folder lookup) and return {backbone id: folder}."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    return {i: BUILDERS[i](models_dir) for i in ids}


_load_lock = threading.Lock()
_loaded: dict[tuple, tuple] = {}


def tiny_backend_and_pipe(backbone_id: str, **load_options) -> tuple:
    """(backend, loaded pipeline) of a test-only backbone ("tiny-sd21", ...), loaded once
    per process on the CPU through the backend's real `load` from its saved folder.
    Tests that change the pipeline (processors, attributes) must undo what they change."""
    import core.backends.tiny  # noqa: F401 - registers the tiny backbones
    from core.backends import get

    key = (backbone_id, tuple(sorted(load_options.items())))
    with _load_lock:
        if key not in _loaded:
            backend = get(backbone_id)
            _loaded[key] = (backend, backend.load(BUILDERS[backbone_id](), device="cpu", **load_options))
        return _loaded[key]
