"""Prompts longer than a CLIP encoder's 77 tokens, without silent truncation.

CLIP text encoders have 77 positions: a begin token, 75 prompt tokens and an end token.
Diffusers cuts everything after token 75 (with a log line nobody reads). Here:

- `count_tokens` and `truncation_point` tell the UI how long a prompt is for a given
  tokenizer and where a 77-token encoder would cut it;
- `encode_long_prompt_sd` / `encode_long_prompt_sdxl` encode a prompt of any length by
  75-token windows, each wrapped in begin/end tokens and padded to 77 like the tokenizer
  does, encoded separately and concatenated along the sequence axis (the UNet's
  cross-attention accepts any sequence length). The negative prompt is padded with empty
  windows to the same number of windows, as classifier-free guidance concatenates both.
  A prompt of at most 75 tokens gives exactly the embeddings diffusers computes itself.
- SD3 is not chunked: its CLIP encoders see 77 tokens and its T5 encoder 256
  (`max_sequence_length=256`); `token_report` says per encoder what was cut.
- `standard_clip_tokenizer` counts before any backbone is on disk: SD 2.1, SDXL, SD3's CLIP
  encoders (and the backbones built on them, SD 1.5's InstructPix2Pix too) all tokenise
  with the original CLIP BPE vocabulary (49,408 tokens), which the installed
  `open_clip_torch` ships; it is built from that file once per process, offline.

Imports of torch and transformers happen inside the functions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

CLIP_WINDOW = 75  # prompt tokens per 77-position CLIP window
T5_MAX_SEQUENCE_LENGTH = 256  # SD3's T5 input length, end token included

# Which pipeline attribute holds each tokenizer named in BackendSpec.tokenizers.
TOKENIZER_ATTRIBUTES: dict[str, str] = {"clip": "tokenizer", "clip2": "tokenizer_2", "t5": "tokenizer_3"}


CLIP_VOCAB_SIZE = 49_408  # 256 bytes, 256 bytes + "</w>", 48,894 merges, begin and end
CLIP_BPE_DISTRIBUTION = "open_clip_torch"
CLIP_BPE_FILE = "open_clip/bpe_simple_vocab_16e6.txt.gz"  # inside that distribution
_CLIP_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2
_standard_clip: list = []  # [tokenizer or None] once built
_standard_clip_lock = threading.Lock()


def clip_bpe_path() -> Path | None:
    """The original CLIP BPE merges file as the installed open_clip_torch ships it (found
    from the package's metadata, without importing open_clip or torch); None when that
    package is not installed."""
    from importlib import metadata

    try:
        path = Path(metadata.distribution(CLIP_BPE_DISTRIBUTION).locate_file(CLIP_BPE_FILE))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def _bytes_to_unicode() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 byte values, in vocabulary order:
    the printable bytes as themselves, then the others as chr(256), chr(257), ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(256 - len(printable))]


def clip_tokenizer_from_bpe(path: Path | str):
    """A transformers CLIPTokenizer (77 positions) built offline from a CLIP BPE merges file
    (`bpe_simple_vocab_16e6.txt.gz`): the vocabulary and merges of openai/clip-vit-*, and so
    of the tokenizers of SD 2.1, SDXL and SD3's CLIP encoders."""
    import gzip

    from transformers import CLIPTokenizer

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1:1 + _CLIP_MERGES]]
    alphabet = _bytes_to_unicode()
    tokens = [*alphabet, *(t + "</w>" for t in alphabet), *("".join(m) for m in merges),
              "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=77)


def standard_clip_tokenizer():
    """The original CLIP tokenizer, built once per process from open_clip_torch's BPE file
    (no model, no network), or None when that package is not installed. It counts as the
    CLIP tokenizers of SD 2.1, SDXL and SD3 do, so counts and 77-token fitting work before
    a backbone is downloaded."""
    with _standard_clip_lock:
        if not _standard_clip:
            path = clip_bpe_path()
            _standard_clip.append(clip_tokenizer_from_bpe(path) if path is not None else None)
        return _standard_clip[0]


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, truncation=False).input_ids)


def count_tokens(tokenizer, text: str) -> int:
    """Number of tokens `text` takes in `tokenizer`, without begin/end tokens."""
    return len(_ids(tokenizer, text or ""))


def truncation_point(tokenizer, text: str, limit: int = CLIP_WINDOW) -> int | None:
    """Character index in `text` where an encoder that keeps `limit` prompt tokens would
    cut (everything from this index on is lost), or None when the whole text fits.

    For a 77-position CLIP encoder `limit` is 75; for SD3's T5 it is 255."""
    text = text or ""
    try:
        enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        offsets = list(enc["offset_mapping"])
    except (NotImplementedError, TypeError, ValueError, KeyError):
        offsets = None
    if offsets is not None:
        if len(offsets) <= limit:
            return None
        return int(offsets[limit][0])
    # Tokenizers without offsets: the shortest prefix that no longer fits, by bisection.
    if count_tokens(tokenizer, text) <= limit:
        return None
    lo, hi = 0, len(text)  # prefix lo fits, prefix hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_tokens(tokenizer, text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def encoder_limit(name: str, tokenizer=None) -> int:
    """Prompt tokens an encoder keeps: 75 for CLIP (77 minus begin/end), 255 for SD3's T5
    (256 minus the end token)."""
    if name == "t5":
        return T5_MAX_SEQUENCE_LENGTH - 1
    max_len = getattr(tokenizer, "model_max_length", 77) if tokenizer is not None else 77
    return min(int(max_len), 77) - 2


def token_report(pipe, tokenizers: tuple[str, ...], prompt: str, negative: str = "",
                 *, chunked: bool = False) -> dict:
    """Token counts of `prompt` and `negative` per encoder named in `tokenizers`
    ("clip", "clip2", "t5"), with each encoder's limit and whether text past it was cut.

    `chunked`: the CLIP encoders see the whole prompt through 75-token windows, so nothing
    is cut for them. Encoders absent from the pipeline (e.g. T5 dropped) are reported as
    not used."""
    out: dict[str, dict] = {}
    for name in tokenizers:
        tok = getattr(pipe, TOKENIZER_ATTRIBUTES.get(name, name), None)
        if tok is None:
            out[name] = {"used": False}
            continue
        if name == "t5" and getattr(pipe, "text_encoder_3", "absent") is None:
            out[name] = {"used": False, "prompt_tokens": count_tokens(tok, prompt)}
            continue
        limit = encoder_limit(name, tok)
        n, n_neg = count_tokens(tok, prompt), count_tokens(tok, negative)
        whole = chunked and name != "t5"
        out[name] = {
            "used": True,
            "prompt_tokens": n,
            "negative_tokens": n_neg,
            "limit": limit,
            "windows": max(1, -(-max(n, n_neg) // limit)) if whole else 1,
            "truncated": (not whole) and (n > limit or n_neg > limit),
            "truncated_at_char": None if whole else truncation_point(tok, prompt, limit),
        }
    return out


def needs_chunking(pipe, prompt: str, negative: str = "") -> bool:
    """Whether `prompt` or `negative` is longer than one 75-token CLIP window for any of the
    pipeline's CLIP tokenizers."""
    for attr in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, attr, None)
        if tok is not None and max(count_tokens(tok, prompt), count_tokens(tok, negative)) > encoder_limit("clip", tok):
            return True
    return False


# -- windows ------------------------------------------------------------------------------
def clip_windows(tokenizer, text: str, n_windows: int | None = None) -> list[list[int]]:
    """Token ids of `text` split into 75-token windows, each `[begin] + ids + [end] + pad`
    of length 77 (the layout the tokenizer itself produces for a short prompt). Padded with
    empty windows up to `n_windows`."""
    body = encoder_limit("clip", tokenizer)
    ids = _ids(tokenizer, text or "")
    chunks = [ids[i:i + body] for i in range(0, len(ids), body)] or [[]]
    if n_windows is not None:
        if n_windows < len(chunks):
            raise ValueError(f"text needs {len(chunks)} windows, more than {n_windows}")
        chunks += [[] for _ in range(n_windows - len(chunks))]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return [[bos] + c + [eos] + [pad] * (body - len(c)) for c in chunks]


def _used_lengths(windows: list[list[int]], tokenizer) -> list[int]:
    """Positions up to and including each window's first end token (its attention mask)."""
    eos = tokenizer.eos_token_id
    return [w.index(eos, 1) + 1 for w in windows]


def n_windows(tokenizer, *texts: str) -> int:
    """Windows needed for the longest of `texts` (at least one)."""
    body = encoder_limit("clip", tokenizer)
    return max(1, *(-(-count_tokens(tokenizer, t) // body) for t in texts))


def _encode_windows(text_encoder, tokenizer, windows: list[list[int]], device, *, penultimate: bool):
    """(hidden states of all windows concatenated, (1, 77*k, D); the encoder's outputs)."""
    import torch

    ids = torch.tensor(windows, dtype=torch.long, device=device)
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):  # as diffusers does
        mask = torch.zeros_like(ids)
        for row, used in enumerate(_used_lengths(windows, tokenizer)):
            mask[row, :used] = 1
    with torch.no_grad():
        out = text_encoder(ids, attention_mask=mask, output_hidden_states=penultimate)
    hidden = out.hidden_states[-2] if penultimate else out[0]
    k, length, dim = hidden.shape
    return hidden.reshape(1, k * length, dim), out


def encode_long_prompt_sd(pipe, prompt: str, negative: str, device) -> tuple[Any, Any]:
    """(prompt_embeds, negative_embeds) for an SD 1.x/2.x pipeline, each (1, 77*k, D) on
    `device` in the UNet's dtype, k = windows of the longer of the two texts.

    Uses the text encoder's last hidden state, as `StableDiffusionPipeline.encode_prompt`
    does without clip_skip."""
    tok, enc = pipe.tokenizer, pipe.text_encoder
    k = n_windows(tok, prompt, negative)
    embeds, _ = _encode_windows(enc, tok, clip_windows(tok, prompt, k), device, penultimate=False)
    neg, _ = _encode_windows(enc, tok, clip_windows(tok, negative, k), device, penultimate=False)
    dtype = enc.dtype if enc is not None else pipe.unet.dtype
    return embeds.to(device=device, dtype=dtype), neg.to(device=device, dtype=dtype)


def encode_long_prompt_sdxl(pipe, prompt: str, negative: str | None, device) -> tuple[Any, Any, Any, Any]:
    """(prompt_embeds, negative_embeds, pooled, negative_pooled) for an SDXL pipeline.

    Both CLIP encoders encode the same 75-token windows; their penultimate hidden states are
    concatenated along the feature axis (as SDXL does) and the windows along the sequence
    axis: (1, 77*k, D1+D2). The pooled embeddings (1, P) come from the second encoder's
    projection of the FIRST window. An empty negative prompt gives zeros when the pipeline
    is configured with `force_zeros_for_empty_prompt` (diffusers' own behaviour)."""
    import torch

    pairs = [(t, e) for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
             if t is not None and e is not None]
    negative = negative or ""
    k = max(n_windows(t, prompt, negative) for t, _ in pairs)

    def encode(text: str):
        parts, pooled = [], None
        for tok, enc in pairs:
            hidden, out = _encode_windows(enc, tok, clip_windows(tok, text, k), device, penultimate=True)
            parts.append(hidden)
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds per window
                pooled = out[0][:1]
        return torch.cat(parts, dim=-1), pooled

    embeds, pooled = encode(prompt)
    if not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
        neg, neg_pooled = torch.zeros_like(embeds), torch.zeros_like(pooled)
    else:
        neg, neg_pooled = encode(negative)
    dtype = pipe.text_encoder_2.dtype if pipe.text_encoder_2 is not None else pipe.unet.dtype
    return tuple(t.to(device=device, dtype=dtype) for t in (embeds, neg, pooled, neg_pooled))
