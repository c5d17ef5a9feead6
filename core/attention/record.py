"""Recording cross-attention of a UNet pipeline while it denoises (the DAAM recipe).

    with record_attention(pipe.unet, cfg=guidance > 1) as rec:
        images = pipe(...)
    raw = rec.raw()            # float32 numpy [text tokens, map_size, map_size]

How it works
- On entry the recorder puts a `RecordingAttnProcessor` on every cross-attention layer
  of the UNet (the `attn2` layers, found as Attention modules with `is_cross_attention`)
  through diffusers' own `unet.set_attn_processor(dict)`, naming every layer: the others
  keep the processor they had. On exit, whatever happened inside the block (a normal
  return, an exception, a cancelled generation), the ORIGINAL processors are put back.
- The recording processor computes the attention explicitly (softmax(q kᵀ / √d) v, the
  same maths as `AttnProcessor2_0`'s scaled-dot-product call, so images match within
  rounding), and keeps the softmax probabilities of the conditional images only, summed
  over heads and over those images, reshaped to the layer's latent grid and added into
  one running float32 sum per grid resolution; `maps`/`raw()` upsample each sum once,
  bicubically (DAAM's kernel; linear, so this equals upsampling every map), to
  `map_size`×`map_size`, add them and clamp at 0. Memory therefore stays the same however
  many steps run (`keep_per_step=True` additionally keeps one tensor per step, on request).
- Classifier-free guidance: diffusers' UNet pipelines stack the batch as
  [unconditional..., conditional...]. `cfg=True` keeps the second half of the batch,
  `cfg=False` the whole batch. `cfg=None` (default) decides per call: the batch is taken
  as doubled when it is even and its two halves of text embeddings differ. Callers that
  know the guidance should say so (`cfg=guidance > 1`, or set `rec.cfg` before the run).
  `cfg=FIRST_OF_THREE` keeps the first third (InstructPix2Pix's layout).
- The text-token count is read from the encoder hidden states (77 per CLIP window, so a
  chunked long prompt of k windows gives 77·k tokens); `n_text_tokens` keeps only the
  first n of them.
- Steps are counted with a forward pre-hook on the UNet (one UNet call per denoising
  step in these pipelines), which also gives the latent size used to find each layer's
  grid. For img2img only the steps that actually run are counted.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import math


# InstructPix2Pix stacks its guidance batch as [text and image, image only, neither]: the
# first third is the one conditioned on the prompt.
FIRST_OF_THREE = "first-of-three"


def _cross_attention_names(unet) -> list[str]:
    """Processor keys ("<module path>.processor") of the UNet's cross-attention layers."""
    names = []
    for name, module in unet.named_modules():
        if hasattr(module, "set_processor") and getattr(module, "is_cross_attention", False):
            names.append(f"{name}.processor")
    return names


def _grid(n_tokens: int, latent_hw: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) of a layer whose image has `n_tokens` positions, given the latent size."""
    if latent_hw is not None:
        h, w = latent_hw
        for k in range(8):
            hh, ww = math.ceil(h / 2 ** k), math.ceil(w / 2 ** k)
            if hh * ww == n_tokens:
                return hh, ww
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f"Cannot tell the grid of a layer with {n_tokens} image positions "
                         f"(latent size {latent_hw}).")
    return side, side


def split_heads(attn, batch_size: int, query, key, value):
    """(query, key, value, head_dim) reshaped to (batch, heads, tokens, head_dim), with the
    layer's q/k norms applied, as diffusers' attention processors do."""
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (t.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return query, key, value, head_dim


class RecordingAttnProcessor:
    """A cross-attention processor that returns what `AttnProcessor2_0` returns and hands
    the attention probabilities to its recorder."""

    def __init__(self, recorder: "AttentionRecorder") -> None:
        self.recorder = recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        import torch

        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        query, key, value, head_dim = split_heads(attn, batch_size, query, key, value)

        # The scale scaled_dot_product_attention uses by default (AttnProcessor2_0 passes none).
        scores = torch.matmul(query, key.transpose(-1, -2)) * (1.0 / math.sqrt(head_dim))
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask
        probs = scores.softmax(dim=-1)  # (batch, heads, image positions, text tokens)
        self.recorder._add(probs, encoder_hidden_states)

        hidden_states = torch.matmul(probs.to(value.dtype), value)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionRecorder:
    """Context manager that records summed cross-attention maps of one UNet (see module doc).

    Attributes: `cfg` (see module doc), `steps` (UNet calls seen), `calls` (cross-attention
    processor calls), `n_layers` (cross-attention layers), `text_tokens` (recorded text
    positions), `maps` (the running total at map_size², or None before the first call),
    `per_step` (list of tensors when keep_per_step), `latent_size`, `t5_dropped` (always None
    here: a UNet has no T5; the joint recorder sets it)."""

    t5_dropped: bool | None = None

    def __init__(self, unet, *, n_text_tokens: int | None = None, keep_per_step: bool = False,
                 map_size: int = 64, cfg: bool | None = None) -> None:
        self.unet = getattr(unet, "unet", None) or unet  # a pipeline is accepted too
        if not hasattr(self.unet, "set_attn_processor"):
            raise TypeError("record_attention needs a UNet (or a pipeline with one); "
                            f"got {type(unet).__name__}.")
        self.n_text_tokens = n_text_tokens
        self.keep_per_step = keep_per_step
        self.map_size = int(map_size)
        self.cfg = cfg
        self.steps = 0
        self.calls = 0
        self.n_layers = 0
        self.text_tokens: int | None = None
        self._sums: dict = {}  # (h, w) of a layer grid -> running sum [tokens, h, w]
        self.per_step: list = []
        self.latent_size: tuple[int, int] | None = None
        self._original: dict | None = None
        self._hook = None

    layer_kind = "cross-attention"

    def _recorded_layers(self) -> list[str]:
        """Names of the attention layers whose processor records."""
        return _cross_attention_names(self.unet)

    def _recording_processor(self):
        return RecordingAttnProcessor(self)

    # -- install / restore ----------------------------------------------------------------
    def __enter__(self) -> "AttentionRecorder":
        if self._original is not None:
            raise RuntimeError("This recorder is already recording.")
        original = dict(self.unet.attn_processors)
        recorded = set(self._recorded_layers())
        if not recorded:
            raise ValueError(f"This model has no {self.layer_kind} layers to record.")
        processor = self._recording_processor()
        wanted = {name: (processor if name in recorded else proc) for name, proc in original.items()}
        self.n_layers = len(recorded)
        self._original = original
        try:
            self.unet.set_attn_processor(dict(wanted))  # set_attn_processor pops from its dict
            self._hook = self.unet.register_forward_pre_hook(self._on_unet_call, with_kwargs=True)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._restore()
        return False

    def _restore(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._original is not None:
            original, self._original = self._original, None
            self.unet.set_attn_processor(dict(original))

    @property
    def active(self) -> bool:
        """Whether the recording processors are installed now."""
        return self._original is not None

    # -- recording ------------------------------------------------------------------------
    def _on_unet_call(self, module, args, kwargs):
        sample = args[0] if args else kwargs.get("sample")
        if sample is not None and getattr(sample, "ndim", 0) == 4:
            self.latent_size = (int(sample.shape[-2]), int(sample.shape[-1]))
        self.steps += 1
        if self.keep_per_step:
            self.per_step.append(None)
        return None

    def _conditional(self, probs, encoder_hidden_states):
        """The rows of `probs` that belong to conditional images."""
        import torch

        batch = probs.shape[0]
        cfg = self.cfg
        if cfg is None:
            cfg = batch % 2 == 0 and not torch.equal(encoder_hidden_states[: batch // 2],
                                                     encoder_hidden_states[batch // 2:])
        if cfg == FIRST_OF_THREE:
            if batch % 3:
                raise ValueError(f"cfg={FIRST_OF_THREE!r} but the attention batch ({batch}) is not a multiple of 3.")
            return probs[: batch // 3]
        if cfg:
            if batch % 2:
                raise ValueError(f"cfg=True but the attention batch is odd ({batch}).")
            return probs[batch // 2:]
        return probs

    def _add(self, probs, encoder_hidden_states) -> None:
        """Add one layer call's softmax probabilities (batch, heads, image positions, text
        tokens): conditional images only, summed over images and heads."""
        cond = self._conditional(probs, encoder_hidden_states)
        self._add_summed(cond.float().sum(dim=(0, 1)))  # (image positions, tokens)

    def _add_summed(self, summed) -> None:
        """Add one layer call's [image positions, text tokens] block (already conditional and
        summed over images and heads) to the running per-resolution sums."""
        import torch
        import torch.nn.functional as F

        self.calls += 1
        tokens = summed.shape[-1]
        if self.n_text_tokens is not None:
            tokens = min(tokens, int(self.n_text_tokens))
        if self.text_tokens is None:
            self.text_tokens = tokens
        elif tokens != self.text_tokens:
            raise ValueError(f"Text-token count changed during recording ({self.text_tokens} → {tokens}).")
        # One running sum per layer resolution: bicubic upsampling (DAAM's kernel) is linear,
        # so upsampling each resolution's sum once at the end equals upsampling every head of
        # every layer at every step and summing (and costs far less).
        h, w = _grid(summed.shape[0], self.latent_size)
        grid = summed[:, :tokens].transpose(0, 1).reshape(tokens, h, w)
        if (h, w) in self._sums:
            self._sums[(h, w)] += grid
        else:
            self._sums[(h, w)] = grid.clone()
        if self.keep_per_step:
            up = F.interpolate(grid[None], size=(self.map_size, self.map_size), mode="bicubic",
                               align_corners=False)[0]
            if not self.per_step:
                self.per_step.append(None)
            if self.per_step[-1] is None:
                self.per_step[-1] = torch.zeros_like(up)
            self.per_step[-1] += up

    @property
    def maps(self):
        """The running total upsampled to map_size² (torch [tokens, S, S]), or None before
        the first call."""
        import torch.nn.functional as F

        if not self._sums:
            return None
        size = (self.map_size, self.map_size)
        return sum(F.interpolate(s[None], size=size, mode="bicubic", align_corners=False)[0]
                   for s in self._sums.values())

    # -- results --------------------------------------------------------------------------
    def raw(self):
        """The summed maps as a float32 numpy array [text tokens, map_size, map_size]."""
        import numpy as np

        maps = self.maps
        if maps is None:
            raise RuntimeError("Nothing was recorded: no cross-attention layer ran inside the block.")
        # Bicubic upsampling overshoots below zero near sharp peaks; attention is never
        # negative, so the total is clamped at 0 (as the DAAM reference does).
        return np.array(maps.clamp(min=0).detach().cpu().numpy(), dtype=np.float32)

    def step_maps(self) -> list:
        """Per-step maps (numpy), when recorded with keep_per_step=True."""
        return [None if m is None else m.clamp(min=0).detach().cpu().numpy().astype("float32")
                for m in self.per_step]

    def nbytes(self) -> int:
        """Bytes the recorder holds in recorded tensors."""
        total = sum(s.numel() * s.element_size() for s in self._sums.values())
        for m in self.per_step:
            if m is not None:
                total += m.numel() * m.element_size()
        return total


def record_attention(unet, *, n_text_tokens: int | None = None, keep_per_step: bool = False,
                     map_size: int = 64, cfg: bool | None = None) -> AttentionRecorder:
    """An `AttentionRecorder` for `unet` (or a pipeline's UNet); use it in a `with` block."""
    return AttentionRecorder(unet, n_text_tokens=n_text_tokens, keep_per_step=keep_per_step,
                             map_size=map_size, cfg=cfg)


__all__ = ["AttentionRecorder", "RecordingAttnProcessor", "record_attention"]
