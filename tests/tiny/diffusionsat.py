"""Tiny, randomly initialised DiffusionSat checkpoints written to disk for offline tests.

Everything is built from configs in code (no hub). The UNet has SD 2.1's flags (linear
projections, upcast attention, v-prediction DDIM) at toy sizes; the VAE keeps the real
8x downsampling so a 64 px image has an 8x8 latent.

Writers:
- `write_published_unet(folder)`: a UNet folder exactly as DiffusionSat published them
  (config of `_class_name` "SatUNet" from diffusers 0.17 + `diffusion_pytorch_model.bin`),
  built WITHOUT the project's SatUNet class, so loading it tests the real compatibility.
- `write_components(folder)`: text_encoder/, tokenizer/, vae/, scheduler/ (+ model_index.json).
- `write_pipeline_folder(folder)`: a full DiffusionSat pipeline folder (components + unet/).
- `write_training_folder(folder)`: a training output folder: components at the top and
  the UNet only in `checkpoint-<step>/unet/`.
- `write_controlnet(folder, unet_folder)`: `controlnet/` (SatControlNet) initialised from a UNet.
"""

from __future__ import annotations

import json
from pathlib import Path

CROSS_DIM = 32
NUM_METADATA = 7
SEED = 1234

# The SatUNet config keys of DiffusionSat's code (diffusers 0.17), at toy sizes.
PUBLISHED_UNET_CONFIG = {
    "_class_name": "SatUNet",
    "_diffusers_version": "0.17.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": [2, 4],
    "block_out_channels": [16, 32],
    "center_input_sample": False,
    "class_embed_type": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": CROSS_DIM,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "num_class_embeds": None,
    "num_metadata": NUM_METADATA,
    "only_cross_attention": False,
    "out_channels": 4,
    "resnet_time_scale_shift": "default",
    "sample_size": 8,
    "time_cond_proj_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": True,
    "use_linear_projection": True,
    "use_metadata": True,
}

SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "steps_offset": 1,
}

MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "_diffusers_version": "0.17.0.dev0",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def unet_config() -> dict:
    """The tiny UNet's config as current diffusers keyword arguments (no private keys)."""
    return {k: v for k, v in PUBLISHED_UNET_CONFIG.items() if not k.startswith("_")}


def _seeded():
    import torch
    torch.manual_seed(SEED)


def published_unet_state_dict() -> dict:
    """Random weights under the published key names: a stock UNet2DConditionModel's keys
    plus `metadata_embedding.{i}.linear_{1,2}.{weight,bias}`."""
    import torch
    from diffusers import UNet2DConditionModel

    _seeded()
    backbone = {k: v for k, v in unet_config().items() if k not in ("use_metadata", "num_metadata")}
    state = dict(UNet2DConditionModel(**backbone).state_dict())
    proj_dim, embed_dim = backbone["block_out_channels"][0], backbone["block_out_channels"][0] * 4
    gen = torch.Generator().manual_seed(SEED + 1)
    for i in range(NUM_METADATA):
        state[f"metadata_embedding.{i}.linear_1.weight"] = torch.randn(embed_dim, proj_dim, generator=gen) * 0.05
        state[f"metadata_embedding.{i}.linear_1.bias"] = torch.randn(embed_dim, generator=gen) * 0.05
        state[f"metadata_embedding.{i}.linear_2.weight"] = torch.randn(embed_dim, embed_dim, generator=gen) * 0.05
        state[f"metadata_embedding.{i}.linear_2.bias"] = torch.randn(embed_dim, generator=gen) * 0.05
    return {k: v.contiguous() for k, v in state.items()}


def write_published_unet(folder: Path) -> dict:
    """`folder/config.json` + `folder/diffusion_pytorch_model.bin` in DiffusionSat's layout;
    returns the state dict written."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = published_unet_state_dict()
    (folder / "config.json").write_text(json.dumps(PUBLISHED_UNET_CONFIG, indent=2), encoding="utf-8")
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    return state


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte value."""
    kept = set(range(33, 127)) | set(range(161, 173)) | set(range(174, 256))
    out, extra = [], 0
    for b in range(256):
        if b in kept:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return out


def tiny_tokenizer():
    """An offline CLIP tokenizer: byte-level alphabet (+ word-final forms) and a few merges,
    enough to tokenize any English text."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for ch in alphabet + [c + "</w>" for c in alphabet]:
        vocab[ch] = len(vocab)
    merges = [("s", "a"), ("sa", "t"), ("g", "e</w>"), ("i", "m"), ("a", "t</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    _seeded()
    config = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            hidden_size=CROSS_DIM, intermediate_size=37,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            projection_dim=CROSS_DIM, hidden_act="gelu")
    return CLIPTextModel(config).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    _seeded()
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(8, 8, 16, 16), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()


def write_components(folder: Path, *, model_index: bool = True) -> Path:
    """text_encoder/, tokenizer/, vae/, scheduler/ (and model_index.json) under `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(folder / "tokenizer")
    tiny_text_encoder(tokenizer).save_pretrained(folder / "text_encoder")
    tiny_vae().save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG, indent=2),
                                                                encoding="utf-8")
    if model_index:
        (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2), encoding="utf-8")
    return folder


def write_pipeline_folder(folder: Path) -> Path:
    """A full pipeline folder: components + `unet/` in the published layout."""
    write_components(folder)
    write_published_unet(Path(folder) / "unet")
    return Path(folder)


def write_training_folder(folder: Path, step: int = 500) -> Path:
    """A training output folder: components at the top, the UNet in checkpoint-<step>/unet/."""
    write_components(folder)
    write_published_unet(Path(folder) / f"checkpoint-{step}" / "unet")
    return Path(folder)


def write_controlnet(folder: Path, unet_folder: Path) -> Path:
    """`folder/controlnet/`: a SatControlNet initialised from the UNet in `unet_folder`, its
    zero-initialised output convolutions replaced by small random weights so that the
    residuals are not all zero."""
    import torch
    from core.backends.diffusionsat_models import sat_controlnet_class, sat_unet_class

    unet = sat_unet_class().from_pretrained(unet_folder)
    controlnet = sat_controlnet_class().from_unet(unet, conditioning_embedding_out_channels=(8, 8, 8, 16))
    gen = torch.Generator().manual_seed(SEED + 2)
    with torch.no_grad():
        zeroed = [controlnet.controlnet_cond_embedding.conv_out, controlnet.controlnet_mid_block,
                  *controlnet.controlnet_down_blocks]
        for module in zeroed:
            for p in module.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    out = Path(folder) / "controlnet"
    controlnet.save_pretrained(out)
    return out
