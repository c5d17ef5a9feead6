"""Recording the image→text attention of an SD3 (MMDiT) transformer while it denoises, and
mapping SD3's text tokens to words.

    with record_joint_attention(pipe, cfg=guidance > 1) as rec:
        images = pipe(...)
    maps = sd3_word_maps(rec, prompt, pipe.tokenizer, pipe.tokenizer_3)

Recording (`JointAttentionRecorder`, a subclass of `core.attention.record.AttentionRecorder`)
- SD3 has no cross-attention: every block runs ONE softmax over the concatenation of the
  image tokens and the text tokens (`JointAttnProcessor2_0`). On entry the recorder puts a
  `RecordingJointAttnProcessor` on every joint attention layer of the transformer (Attention
  modules with a context branch, `add_k_proj`), through `set_attn_processor` with a dict
  naming every layer; layers without a context branch (SD3.5's image-only `attn2`) keep
  their processor and are not recorded. On exit (normal return, exception, cancel) the
  original processors are put back, as in the UNet recorder.
- The recording processor computes the layer's output exactly as `JointAttnProcessor2_0`
  does (the same projections and the same `scaled_dot_product_attention` call), so the
  image is unchanged. Separately, for the conditional images only, it recomputes the
  softmax rows of the IMAGE queries over ALL keys (image + text) and keeps the text
  columns: P[img, txt] = exp(q·kᵀ/√d − logsumexp over all keys). Summed over heads and
  images, that block [image positions, text tokens] is reshaped to the patch grid
  (latent H/patch × W/patch) and added into the running per-resolution sum of the base
  class; `maps`/`raw()`/`nbytes()`/`step_maps()` are the base class's. The rows are
  processed in chunks so the memory held is bounded (no image×image matrix is kept).
- Steps are counted with a forward pre-hook on the transformer (one call per step), which
  also records the latent size and the transformer's text input, used for `cfg=None`
  (the batch is doubled when it is even and its halves differ, like the UNet recorder) and
  to tell whether T5 was dropped (`t5_dropped`: the T5 part of the text input is all zero).

SD3's text-token axis (`text_tokens` = 77 + max_sequence_length, 333 with the usual 256)
- Positions 0..76: CLIP. The two CLIP encoders each read the prompt in ONE 77-position
  window ([BOS] + up to 75 tokens + [EOS] + padding, longer prompts are cut); their
  outputs are concatenated on the feature axis (and zero-padded to T5's width), so one
  position holds both encoders' token. Prompt token j (no specials) sits at 1 + j, j < 75.
- Positions 77..77+L-1: T5 (L = max_sequence_length). T5 adds no start token: prompt piece
  i sits at 77 + i, the end token `</s>` follows the last piece, then padding; at most
  L − 1 pieces are kept. When T5 is dropped (`text_encoder_3` None), diffusers still puts
  L zero embeddings there, so the axis keeps its length; those positions still receive
  attention (their keys come from the projection biases and the timestep modulation) but
  carry no word: `sd3_word_maps` ignores the T5 span then.

Words (`sd3_word_maps`)
- CLIP span of a word: `core.attention.analysis.word_tokens` on the CLIP tokenizer, kept
  below position 77.
- T5 span of a word: the same token → word merge as CLIP's
  (`core.attention.analysis.prompt_words`: tokens joined by their character spans in the
  prompt, so "12", "2018" and "town's" stay one word although T5 cuts them into several
  pieces, and punctuation pieces such as the comma of "streets," belong to no word). The
  word texts are the prompt's own, lower-cased, so a word's CLIP and T5 spans meet under
  one key; a phrase in `words` matches consecutive words.
- A word's map is the SUM of all its positions' maps, CLIP and T5 together, normalised by
  its maximum like `analysis.word_maps`; `WordMap.tokens` lists the CLIP positions, then
  the T5 positions. Words only T5 reads (past CLIP's 75 tokens) get T5 positions only.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import math

from core.attention.analysis import WINDOW, WordMap, _as_numpy, match_words, normalise, prompt_words, word_tokens
from core.attention.record import AttentionRecorder, split_heads

CLIP_TOKENS = WINDOW  # the CLIP part of SD3's text axis (one 77-position window)

# Elements of one chunk of image-query rows × all keys (float32): 2**25 ≈ 128 MiB.
_CHUNK_ELEMENTS = 1 << 25


def _joint_attention_names(transformer) -> list[str]:
    """Processor keys of the transformer's joint attention layers (those with a context
    branch); image-only attention layers are left out."""
    names = []
    for name, module in transformer.named_modules():
        if hasattr(module, "set_processor") and getattr(module, "add_k_proj", None) is not None:
            names.append(f"{name}.processor")
    return names


class RecordingJointAttnProcessor:
    """A joint attention processor that returns what `JointAttnProcessor2_0` returns and
    hands the image→text block of the joint softmax to its recorder."""

    def __init__(self, recorder: "JointAttentionRecorder") -> None:
        self.recorder = recorder

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        import torch.nn.functional as F

        residual = hidden_states
        batch_size = hidden_states.shape[0]

        query, key, value, head_dim = split_heads(
            attn, batch_size, attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states))

        if encoder_hidden_states is not None:
            import torch

            ctx_q = attn.add_q_proj(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ctx_k = attn.add_k_proj(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            ctx_v = attn.add_v_proj(encoder_hidden_states).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
            if attn.norm_added_q is not None:
                ctx_q = attn.norm_added_q(ctx_q)
            if attn.norm_added_k is not None:
                ctx_k = attn.norm_added_k(ctx_k)
            n_image = query.shape[2]
            query = torch.cat([query, ctx_q], dim=2)
            key = torch.cat([key, ctx_k], dim=2)
            value = torch.cat([value, ctx_v], dim=2)
            self.recorder._record(query[:, :, :n_image], key, n_image, encoder_hidden_states)

        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        if encoder_hidden_states is not None:
            hidden_states, encoder_hidden_states = (hidden_states[:, : residual.shape[1]],
                                                    hidden_states[:, residual.shape[1]:])
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if encoder_hidden_states is not None:
            return hidden_states, encoder_hidden_states
        return hidden_states


class JointAttentionRecorder(AttentionRecorder):
    """Context manager that records summed image→text joint attention maps of one SD3
    transformer (see the module doc). Same attributes and results as `AttentionRecorder`
    (`cfg`, `steps`, `calls`, `n_layers`, `text_tokens`, `maps`, `raw()`, `nbytes()`,
    `step_maps()`, `active`), plus `transformer`, `patch_size`, `clip_tokens` (77) and
    `t5_dropped` (None before the first step)."""

    def __init__(self, transformer_or_pipe, *, n_text_tokens: int | None = None, keep_per_step: bool = False,
                 map_size: int = 64, cfg: bool | None = None) -> None:
        transformer = getattr(transformer_or_pipe, "transformer", None) or transformer_or_pipe
        if not hasattr(transformer, "set_attn_processor") or not _joint_attention_names(transformer):
            raise TypeError("record_joint_attention needs an SD3 transformer (or a pipeline with one) with "
                            f"joint attention layers; got {type(transformer_or_pipe).__name__}.")
        super().__init__(transformer, n_text_tokens=n_text_tokens, keep_per_step=keep_per_step,
                         map_size=map_size, cfg=cfg)
        self.transformer = transformer
        self.patch_size = int(getattr(getattr(transformer, "config", None), "patch_size", 2) or 2)
        self.clip_tokens = CLIP_TOKENS
        self.t5_dropped: bool | None = None
        self._context = None  # the transformer's text input of the current step

    layer_kind = "joint-attention"

    def _recorded_layers(self) -> list[str]:
        return _joint_attention_names(self.unet)

    def _recording_processor(self):
        return RecordingJointAttnProcessor(self)

    def _restore(self) -> None:
        super()._restore()
        self._context = None

    # -- recording ------------------------------------------------------------------------
    def _on_unet_call(self, module, args, kwargs):
        import torch

        sample = args[0] if args else kwargs.get("hidden_states")
        if sample is not None and getattr(sample, "ndim", 0) == 4:
            p = self.patch_size
            self.latent_size = (int(sample.shape[-2]) // p, int(sample.shape[-1]) // p)
        context = args[1] if len(args) > 1 else kwargs.get("encoder_hidden_states")
        self._context = context
        if context is not None and getattr(context, "ndim", 0) == 3 and context.shape[1] > CLIP_TOKENS:
            self.t5_dropped = not bool(torch.any(context[:, CLIP_TOKENS:] != 0))
        self.steps += 1
        if self.keep_per_step:
            self.per_step.append(None)
        return None

    def _record(self, image_query, key, n_image: int, layer_context) -> None:
        """Add the image→text block of softmax(q kᵀ/√d) over all keys (conditional images,
        summed over heads) to the running sums."""
        import torch

        context = self._context if self._context is not None and \
            self._context.shape[0] == image_query.shape[0] else layer_context
        with torch.no_grad():
            query = self._conditional(image_query, context).float()
            key = self._conditional(key, context).float()
            scale = 1.0 / math.sqrt(query.shape[-1])  # scaled_dot_product_attention's default
            text_key = key[:, :, n_image:]
            rows = max(1, _CHUNK_ELEMENTS // max(1, query.shape[0] * query.shape[1] * key.shape[2]))
            parts = []
            for start in range(0, n_image, rows):
                q = query[:, :, start:start + rows]
                log_norm = torch.logsumexp(torch.matmul(q, key.transpose(-1, -2)) * scale, dim=-1, keepdim=True)
                probs = torch.exp(torch.matmul(q, text_key.transpose(-1, -2)) * scale - log_norm)
                parts.append(probs.sum(dim=(0, 1)))  # (rows, text tokens)
            self._add_summed(torch.cat(parts, dim=0))


def record_joint_attention(transformer_or_pipe, *, cfg: bool | None = None, map_size: int = 64,
                           n_text_tokens: int | None = None, keep_per_step: bool = False) -> JointAttentionRecorder:
    """A `JointAttentionRecorder` for an SD3 transformer (or a pipeline with one); use it in
    a `with` block."""
    return JointAttentionRecorder(transformer_or_pipe, n_text_tokens=n_text_tokens, keep_per_step=keep_per_step,
                                  map_size=map_size, cfg=cfg)


# -- words ----------------------------------------------------------------------------------
def t5_word_pieces(prompt: str, t5_tokenizer) -> list[tuple[str, list[int]]]:
    """(lower-cased word, indices of its pieces among the prompt's T5 pieces, no specials)
    in prompt order: `analysis.prompt_words` on the T5 tokenizer (punctuation is no word)."""
    return prompt_words(prompt, t5_tokenizer)


def t5_word_tokens(prompt: str, t5_tokenizer, n_t5: int | None = None,
                   words: list[str] | None = None) -> dict[str, list[int]]:
    """{word: positions in SD3's text axis (77 + T5 piece index)} for the prompt's T5 words
    (or for `words`, each a word or a phrase of consecutive words, matched case-insensitively).
    Pieces past the L − 1 that T5 keeps (`n_t5` = L) are dropped."""
    found = t5_word_pieces(prompt, t5_tokenizer)
    limit = None if n_t5 is None else max(0, int(n_t5) - 1)  # the end token takes one slot
    out: dict[str, list[int]] = {}

    def add(key: str, idx: list[int]) -> None:
        pos = [CLIP_TOKENS + i for i in idx if limit is None or i < limit]
        if pos:
            out.setdefault(key, [])
            out[key].extend(p for p in pos if p not in out[key])

    for key, idx in match_words(found, words, lambda text: [t for t, _ in t5_word_pieces(text, t5_tokenizer)]):
        add(key, idx)
    return out


def sd3_word_tokens(prompt: str, clip_tokenizer, t5_tokenizer=None, n_positions: int | None = None,
                    words: list[str] | None = None) -> dict[str, tuple[list[int], list[int]]]:
    """{word: (CLIP positions, T5 positions)} in SD3's text axis (see the module doc);
    without `t5_tokenizer` (T5 dropped) the T5 positions are empty."""
    n_t5 = None if n_positions is None else max(0, int(n_positions) - CLIP_TOKENS)
    clip = word_tokens(prompt, clip_tokenizer, CLIP_TOKENS if n_positions is None
                       else min(CLIP_TOKENS, int(n_positions)), words)
    t5 = {} if t5_tokenizer is None or n_t5 == 0 else t5_word_tokens(prompt, t5_tokenizer, n_t5, words)
    if words is not None:
        keys = [w for w in words if w in clip or w in t5]
    else:
        # Both name a word by the prompt's own lower-cased text, so the keys meet.
        keys = list(clip) + [w for w in t5 if w not in clip]
    out = {}
    for key in keys:
        if key in out:
            continue
        out[key] = (list(clip.get(key, [])), list(t5.get(key, [])))
    return out


def sd3_word_maps(raw, prompt: str, clip_tokenizer, t5_tokenizer=None,
                  words: list[str] | None = None) -> dict[str, WordMap]:
    """{word: WordMap} from SD3 token maps `raw` ([77 + L, H, W], numpy/torch, or the
    `JointAttentionRecorder` itself) of `prompt`: each word's CLIP and T5 positions summed
    into one map, normalised by its maximum. Pass `t5_tokenizer=None` when T5 was dropped
    (a recorder that saw an all-zero T5 input ignores the T5 span by itself)."""
    if getattr(raw, "t5_dropped", None):
        t5_tokenizer = None
    arr = _as_numpy(raw)
    out = {}
    for word, (clip_pos, t5_pos) in sd3_word_tokens(prompt, clip_tokenizer, t5_tokenizer, arr.shape[0],
                                                    words).items():
        positions = clip_pos + t5_pos
        merged = arr[positions].sum(axis=0)
        out[word] = WordMap(word=word, map=normalise(merged), raw_total=float(merged.sum()),
                            tokens=tuple(positions))
    return out


__all__ = ["CLIP_TOKENS", "JointAttentionRecorder", "RecordingJointAttnProcessor",
           "record_joint_attention", "sd3_word_maps", "sd3_word_tokens", "t5_word_pieces", "t5_word_tokens"]
