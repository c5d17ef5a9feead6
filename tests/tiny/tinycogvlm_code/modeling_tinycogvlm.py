"""TinyCogVLM: remote code of the tiny test model built by tests/tiny/cogvlm2_remote.py.

NOT CogVLM2 and none of its code: an independent few-thousand-parameter model with the
interface CogVLM2's remote code publishes, so the app's CogVLM2 path (its own environment,
the captioning worker, `core.captions.cogvlm2.CogVLM2Captioner`) runs end to end on a CPU:

    inputs = model.build_conversation_input_ids(tokenizer, query=..., history=[],
                                                images=[pil_image], template_version="chat")
    out = model.generate(input_ids=..., token_type_ids=..., attention_mask=...,
                         images=[[pixels]], do_sample=False, max_new_tokens=..., ...)

What it shares with the real one, on purpose: `trust_remote_code` loading from a folder
(`auto_map`), a vision tower calling `xformers.ops.memory_efficient_attention` (in the
CogVLM2 environment, the app's stand-in on PyTorch SDPA) and `einops`, token type ids
(vision tokens replace the pad tokens after <|begin_of_text|>), and the generation hook
`_update_model_kwargs_for_generation` calling the private
`_extract_past_from_model_output(outputs, standardize_cache_format=...)`, which is why it
needs transformers < 4.44, like CogVLM2.

Its answers are word salad from random weights, decided by fixed rules: only the words of
`config.answer_token_ids`, none twice, `config.answer_length` of them and then
<|end_of_text|>. The image's mean colour and pooled patch features shift the next-token
logits (and its patches are tokens the language model attends to), so different tiles get different captions. No KV
cache: every step runs the whole (short) sequence again.
"""

from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
import xformers.ops as xops
from einops import rearrange
from torch import nn
from transformers import PreTrainedModel
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tinycogvlm import TinyCogVLMConfig

LANGUAGE_TOKEN_TYPE = 0
VISION_TOKEN_TYPE = 1
TEMPLATES = {"base": "{}", "chat": "Question: {} Answer:", "vqa": "Question: {} Short answer:"}
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's, as CogVLM2's transform uses
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + self.eps)).to(x.dtype) * self.weight


def _rotary(x, positions, theta: float):
    """Rotary position embedding of x (batch, heads, tokens, dim) at `positions` (batch, tokens)."""
    half = x.shape[-1] // 2
    freqs = 1.0 / (theta ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))
    angles = positions[:, None, :, None].float() * freqs  # batch, 1, tokens, half
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


class TinyDecoderLayer(nn.Module):
    """Llama-style: pre-norm causal self-attention with rotary positions, then SwiGLU."""

    def __init__(self, config: TinyCogVLMConfig) -> None:
        super().__init__()
        d, inner = config.hidden_size, config.intermediate_size
        self.heads = config.num_attention_heads
        self.theta = config.rope_theta
        self.input_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.post_norm = RMSNorm(d, config.rms_norm_eps)
        self.gate_proj = nn.Linear(d, inner, bias=False)
        self.up_proj = nn.Linear(d, inner, bias=False)
        self.down_proj = nn.Linear(inner, d, bias=False)

    def forward(self, h, positions, mask):
        x = self.input_norm(h)
        q, k, v = (rearrange(proj(x), "b t (n d) -> b n t d", n=self.heads)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = _rotary(q, positions, self.theta), _rotary(k, positions, self.theta)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h + self.o_proj(rearrange(attended, "b n t d -> b t (n d)"))
        x = self.post_norm(h)
        return h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TinyVisionTower(nn.Module):
    """Patches -> one self-attention block (xformers' memory_efficient_attention, as
    CogVLM2's EVA tower calls it) -> projected to the language model's width."""

    def __init__(self, config: TinyCogVLMConfig) -> None:
        super().__init__()
        vision = config.vision_config
        self.patch_size = int(vision["patch_size"])
        width = int(vision["hidden_size"])
        tokens = (int(vision["image_size"]) // self.patch_size) ** 2
        self.patch_embed = nn.Linear(3 * self.patch_size ** 2, width)
        self.position = nn.Parameter(torch.zeros(tokens, width))
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, config.hidden_size)
        self.scale = width ** -0.5

    def forward(self, pixels):  # (images, 3, S, S) -> (images, tokens, hidden)
        x = rearrange(pixels, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=self.patch_size, p2=self.patch_size)
        x = self.patch_embed(x) + self.position
        q, k, v = rearrange(self.qkv(x), "b n (three heads d) -> three b n heads d", three=3, heads=1)
        x = x + xops.memory_efficient_attention(q, k, v, scale=self.scale).flatten(2)
        return self.proj(x)


class TinyCogVLMPreTrainedModel(PreTrainedModel):
    config_class = TinyCogVLMConfig
    base_model_prefix = "tiny_cogvlm"
    supports_gradient_checkpointing = False
    _no_split_modules = ["TinyDecoderLayer", "TinyVisionTower"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)


class TinyCogVLMForCausalLM(TinyCogVLMPreTrainedModel, GenerationMixin):
    def __init__(self, config: TinyCogVLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.vision = TinyVisionTower(config)
        self.layer = TinyDecoderLayer(config)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # the image's mean colour and pooled patch features -> a shift of the next-token logits
        self.image_head = nn.Linear(3 + config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def get_output_embeddings(self):
        return None  # the logits read the input embeddings directly (no tying machinery)

    # -- the published interface ---------------------------------------------------------
    @property
    def vision_token_count(self) -> int:
        vision = self.config.vision_config
        return (int(vision["image_size"]) // int(vision["patch_size"])) ** 2

    def _pixels(self, image):
        size = int(self.config.vision_config["image_size"])
        array = np.asarray(image.convert("RGB").resize((size, size), resample=3), dtype=np.float32) / 255.0
        array = (array - np.array(IMAGE_MEAN, np.float32)) / np.array(IMAGE_STD, np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    def build_conversation_input_ids(self, tokenizer, *, query: str, history: Optional[List] = None,
                                     images: Optional[List] = None, template_version: Optional[str] = None):
        """input_ids, token_type_ids, attention_mask (1-D) and images (a list with one
        3×S×S tensor) for `query` after `history` ([(question, answer), ...]), with the
        template "Question: {query} Answer:" ("chat", the default)."""
        template = TEMPLATES[template_version or self.config.template_version]
        if images is not None and len(images) > 1:
            raise ValueError("TinyCogVLM takes at most one image per conversation, like CogVLM2.")
        text = ""
        for old_query, old_answer in history or []:
            text += template.format(old_query) + " " + old_answer + "\n"
        text += template.format(query)
        text_ids = tokenizer.encode(text, add_special_tokens=False)
        input_ids = [tokenizer.bos_token_id]
        token_type_ids = [LANGUAGE_TOKEN_TYPE]
        pixels = []
        if images:
            pixels = [self._pixels(images[0])]
            input_ids += [self.config.pad_token_id] * self.vision_token_count
            token_type_ids += [VISION_TOKEN_TYPE] * self.vision_token_count
        input_ids += text_ids
        token_type_ids += [LANGUAGE_TOKEN_TYPE] * len(text_ids)
        return {"input_ids": torch.tensor(input_ids, dtype=torch.long),
                "token_type_ids": torch.tensor(token_type_ids, dtype=torch.long),
                "attention_mask": torch.ones(len(input_ids), dtype=torch.long),
                "images": pixels}

    def forward(self, input_ids=None, images=None, token_type_ids=None, attention_mask=None,
                past_key_values=None, inputs_embeds=None, use_cache=None, labels=None, return_dict=None,
                output_attentions=None, output_hidden_states=None, **kwargs):
        if input_ids is None:
            raise ValueError("TinyCogVLM needs input_ids.")
        batch, length = input_ids.shape
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        h = self.embed_tokens(input_ids).clone()
        shift = torch.zeros(batch, self.config.vocab_size, device=input_ids.device)
        for b, per_sample in enumerate(images or []):
            if per_sample is None or len(per_sample) == 0:
                continue
            pixels = torch.stack(list(per_sample)).to(device=h.device, dtype=h.dtype)
            features = self.vision(pixels).reshape(-1, h.shape[-1])
            where = (token_type_ids[b] == VISION_TOKEN_TYPE).nonzero().squeeze(-1)
            if where.numel() != features.shape[0]:
                raise ValueError(f"{where.numel()} vision tokens for {features.shape[0]} image features.")
            h[b, where] = features
            summary = torch.cat([pixels.mean(dim=(0, 2, 3)), features.mean(dim=0)])  # mean colour, pooled
            shift[b] = self.image_head(summary.to(self.image_head.weight.dtype)).float()
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()
        mask = causal[None, None] & attention_mask.bool()[:, None, None, :]
        h = self.norm(self.layer(h, positions, mask))
        logits = (h @ self.embed_tokens.weight.T).float() + self.config.image_logit_scale * shift[:, None, :]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        logits[:, -1] = self._answer_rules(input_ids, logits[:, -1])
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=None)

    def _answer_rules(self, input_ids, last):
        """The next token's logits restricted to unused answer words, then end of text."""
        eos = self.config.eos_token_id
        end_of_text = eos[0] if isinstance(eos, (list, tuple)) else eos
        words = set(self.config.answer_token_ids)
        out = torch.full_like(last, float("-inf"))
        for b in range(input_ids.shape[0]):
            answered = []
            for token in reversed(input_ids[b].tolist()):
                if token not in words:
                    break
                answered.append(token)
            allowed = [t for t in self.config.answer_token_ids if t not in answered]
            if len(answered) >= self.config.answer_length or not allowed:
                allowed = []
            if allowed:
                out[b, allowed] = last[b, allowed]
            if len(answered) >= self.config.min_answer_tokens:
                out[b, end_of_text] = last[b, end_of_text] if allowed else 0.0
        return out

    # -- generation hooks ----------------------------------------------------------------
    def prepare_inputs_for_generation(self, input_ids, token_type_ids=None, images=None, past_key_values=None,
                                      attention_mask=None, inputs_embeds=None, **kwargs):
        # No KV cache: the whole sequence (and the image) every step.
        return {"input_ids": input_ids, "token_type_ids": token_type_ids, "images": images,
                "attention_mask": attention_mask, "use_cache": False}

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, is_encoder_decoder=False,
                                            standardize_cache_format=False, **kwargs):
        """Extend token_type_ids (a generated token is a language token) and the attention
        mask by one. Through the private `_extract_past_from_model_output(...,
        standardize_cache_format=)` like CogVLM2's, so it needs transformers < 4.44 too."""
        model_kwargs["past_key_values"] = self._extract_past_from_model_output(
            outputs, standardize_cache_format=standardize_cache_format)
        types = model_kwargs.get("token_type_ids")
        if types is not None:
            new = torch.full((types.shape[0], 1), LANGUAGE_TOKEN_TYPE, dtype=types.dtype, device=types.device)
            model_kwargs["token_type_ids"] = torch.cat([types, new], dim=-1)
        mask = model_kwargs.get("attention_mask")
        if mask is not None:
            model_kwargs["attention_mask"] = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        if model_kwargs.get("cache_position") is not None:
            model_kwargs["cache_position"] = model_kwargs["cache_position"][-1:] + 1
        return model_kwargs
