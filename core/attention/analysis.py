"""From recorded token maps to word maps, overlays, region shares and files.

Token → word mapping (CLIP BPE)
- The prompt is tokenized without special tokens. CLIP's BPE marks the LAST piece of
  every word with `</w>`, so consecutive pieces up to and including one ending in `</w>`
  form one word; its text is the tokenizer's own decoding of those pieces (lower case,
  as CLIP lower-cases). Pieces that are only punctuation are not words.
- Positions in the text-token axis: the text encoder sees the prompt in 77-position
  windows, each laid out as [BOS] + up to 75 prompt tokens + [EOS] + padding (one window
  for a short prompt; k windows concatenated, 77·k positions, for a chunked long prompt,
  see core.generation.prompts.clip_windows). Prompt token j therefore sits at position
  77·(j // 75) + 1 + (j % 75). BOS, EOS and padding positions are never part of a word.
  Tokens past the recorded positions (a long prompt cut to one window) are dropped; a
  word left with no token gets no map.
- A word that occurs more than once is one entry, merging all its occurrences.

Merging and normalising
- A word's raw map is the SUM of its tokens' maps (attention probabilities add up: the
  mass that went to the word). `raw_total` is that map's sum. DAAM's reference averages
  the tokens instead; after normalisation both give the same picture.
- The normalised map is the raw map divided by its maximum (0 stays "no attention",
  1 is the word's peak); a map with no mass is all zeros.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.types import Label
from core.viz import colorize

WINDOW = 77  # positions per CLIP window
BODY = 75  # prompt tokens per window (77 minus BOS and EOS)
END = "</w>"


@dataclass
class WordMap:
    """One word's attention map: `map` HxW float32 in [0, 1] (divided by its maximum) and
    `raw_total`, the attention mass summed over the word's tokens, pixels, layers, heads
    and steps before normalising."""

    word: str
    map: np.ndarray
    raw_total: float
    tokens: tuple[int, ...] = ()  # positions in the recorded text-token axis


# -- tokens → words -----------------------------------------------------------------------
def _piece_word(tokenizer, pieces: list[str]) -> str:
    bare = [p[: -len(END)] if p.endswith(END) else p for p in pieces]
    try:  # maps byte-level symbols back to text
        text = tokenizer.convert_tokens_to_string(bare)
    except Exception:
        text = "".join(bare)
    return text.replace(END, "").strip().lower()


def _is_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def prompt_words(prompt: str, tokenizer) -> list[tuple[str, list[int]]]:
    """(word, indices of its tokens among the prompt's tokens) in prompt order, without
    BOS/EOS; punctuation-only pieces are skipped."""
    ids = list(tokenizer(prompt or "", add_special_tokens=False, truncation=False).input_ids)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    words: list[tuple[str, list[int]]] = []
    current: list[int] = []
    for j, piece in enumerate(pieces):
        current.append(j)
        if piece.endswith(END) or j == len(pieces) - 1:
            text = _piece_word(tokenizer, [pieces[i] for i in current])
            if _is_word(text):
                words.append((text, current))
            current = []
    return words


def token_position(j: int) -> int:
    """Position of prompt token j (0-based, no specials) in the windowed text-token axis."""
    return WINDOW * (j // BODY) + 1 + (j % BODY)


def word_tokens(prompt: str, tokenizer, n_positions: int | None = None,
                words: list[str] | None = None) -> dict[str, list[int]]:
    """{word: text-token positions} for the prompt's words (or for `words`, each a word or
    a phrase of consecutive words of the prompt, matched case-insensitively). Positions at
    or past `n_positions` are left out; words with no position left are dropped."""
    found = prompt_words(prompt, tokenizer)
    out: dict[str, list[int]] = {}

    def add(key: str, token_indices: list[int]) -> None:
        pos = [token_position(j) for j in token_indices]
        if n_positions is not None:
            pos = [p for p in pos if p < n_positions]
        if pos:
            out.setdefault(key, [])
            out[key].extend(p for p in pos if p not in out[key])

    for key, idx in match_words(found, words, lambda text: [t for t, _ in prompt_words(text, tokenizer)]):
        add(key, idx)
    return out


def match_words(found: list[tuple[str, list[int]]], words: list[str] | None, split) -> list[tuple[str, list[int]]]:
    """(key, token indices) pairs: every word of `found` when `words` is None, else each
    wanted word or phrase wherever it occurs as consecutive words of `found` (`split(text)`
    gives a wanted phrase's words, tokenized the same way)."""
    if words is None:
        return list(found)
    texts = [t for t, _ in found]
    out = []
    for wanted in words:
        target = split(wanted)
        if not target:
            continue
        for start in range(len(found) - len(target) + 1):
            if texts[start:start + len(target)] == target:
                out.append((wanted, [j for _, idx in found[start:start + len(target)] for j in idx]))
    return out


def _as_numpy(raw) -> np.ndarray:
    if hasattr(raw, "raw") and callable(raw.raw):  # an AttentionRecorder
        raw = raw.raw()
    if hasattr(raw, "detach"):
        raw = raw.detach().cpu().numpy()
    arr = np.asarray(raw, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"Expected token maps shaped [tokens, H, W], got {arr.shape}.")
    return arr


def normalise(m: np.ndarray) -> np.ndarray:
    """`m` divided by its maximum, clipped to [0, 1] (zeros when it has no positive value)."""
    m = np.asarray(m, dtype=np.float32)
    peak = float(m.max()) if m.size else 0.0
    if peak <= 0 or not np.isfinite(peak):
        return np.zeros_like(m, dtype=np.float32)
    return np.clip(m / peak, 0.0, 1.0).astype(np.float32)


def word_maps(raw, prompt: str, tokenizer, words: list[str] | None = None) -> dict[str, WordMap]:
    """{word: WordMap} from recorded token maps `raw` ([tokens, H, W], numpy/torch, or the
    recorder itself) of `prompt` (see the module doc for the mapping and merging)."""
    arr = _as_numpy(raw)
    out = {}
    for word, positions in word_tokens(prompt, tokenizer, arr.shape[0], words).items():
        merged = arr[positions].sum(axis=0)
        out[word] = WordMap(word=word, map=normalise(merged), raw_total=float(merged.sum()),
                            tokens=tuple(positions))
    return out


# -- pictures and shares ------------------------------------------------------------------
def _resize(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float map resized to (H, W) bilinearly."""
    m = np.asarray(m, dtype=np.float32)
    if m.shape == tuple(shape):
        return m
    from PIL import Image

    return np.asarray(Image.fromarray(m, mode="F").resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float32)


def heat_image(map01: np.ndarray) -> np.ndarray:
    """A [0, 1] map as a uint8 RGB heat picture (core.viz.colorize)."""
    return colorize(np.asarray(map01, dtype=np.float32), vmin=0.0, vmax=1.0)


def overlay(image: np.ndarray, map01: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`image` (HxWx3 uint8, or HxW grey) blended with the heat picture of `map01` resized
    to it: (1 - alpha)·image + alpha·heat, as uint8."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.float32)
    heat = heat_image(_resize(map01, img.shape[:2])).astype(np.float32)
    a = float(np.clip(alpha, 0.0, 1.0))
    return np.clip((1.0 - a) * img + a * heat + 0.5, 0, 255).astype(np.uint8)


def share_inside(attention: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """{region: (share of the map's attention inside the mask, share of pixels inside it)}.
    The map is resized to each mask's size. A map with no mass gives attention share 0."""
    out = {}
    for region, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        m = np.clip(_resize(attention, mask.shape), 0.0, None)
        total = float(m.sum())
        out[region] = (float(m[mask].sum()) / total if total > 0 else 0.0, float(mask.mean()) if mask.size else 0.0)
    return out


def damage_shares(maps: Iterable[WordMap], label: Label, *,
                  part: int | None = None) -> dict[str, dict[str, tuple[float, float]]]:
    """{word: {region: (share of the word's attention inside it, share of pixels it covers)}}
    for every region of core.types.MASK_REGIONS (building footprints, then each damage
    class), from a post-event `label` rasterised at each map's own size (`part`: the 512 px
    course tile, as core.data.masks.class_masks takes it). A region without pixels has
    pixel share 0; compare the two shares to see whether "destroyed" looks at destroyed
    buildings."""
    from core.data.masks import class_masks

    masks_at: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    out = {}
    for wm in maps:
        h, w = np.asarray(wm.map).shape
        if (h, w) not in masks_at:
            masks_at[(h, w)] = class_masks(label, (w, h), part=part)
        out[wm.word] = share_inside(wm.map, masks_at[(h, w)])
    return out


# -- files --------------------------------------------------------------------------------
def _slug(word: str) -> str:
    s = re.sub(r"[^0-9A-Za-z_-]+", "_", word.strip()).strip("_")
    return s or "word"


def _attention_dir(folder) -> Path:
    folder = Path(folder)
    return folder if folder.name == "attention" else folder / "attention"


def save_maps(folder, maps: dict[str, WordMap]) -> Path:
    """Write `folder/attention/`: `<word>.png` (the heat picture), `maps.npz` (the [0, 1]
    float maps) and `words.json` (word, raw total, file names, token positions). Returns
    the attention folder."""
    from PIL import Image

    out = _attention_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    entries, arrays, used = [], {}, set()
    for i, (word, wm) in enumerate(maps.items()):
        name = _slug(word)
        if name.lower() in used:
            name = f"{name}_{i}"
        used.add(name.lower())
        Image.fromarray(heat_image(wm.map)).save(out / f"{name}.png")
        key = f"map_{i}"
        arrays[key] = np.asarray(wm.map, dtype=np.float32)
        entries.append({"word": word, "key": key, "png": f"{name}.png", "raw_total": float(wm.raw_total),
                        "tokens": [int(t) for t in wm.tokens]})
    np.savez_compressed(out / "maps.npz", **arrays)
    (out / "words.json").write_text(json.dumps({"words": entries}, indent=2), encoding="utf-8")
    return out


def load_maps(folder) -> dict[str, WordMap]:
    """The maps `save_maps` wrote under `folder` (or the attention folder itself)."""
    out_dir = _attention_dir(folder)
    entries = json.loads((out_dir / "words.json").read_text(encoding="utf-8"))["words"]
    with np.load(out_dir / "maps.npz") as data:
        return {e["word"]: WordMap(word=e["word"], map=np.asarray(data[e["key"]], dtype=np.float32),
                                   raw_total=float(e["raw_total"]), tokens=tuple(e.get("tokens", ())))
                for e in entries}


def has_maps(folder) -> bool:
    """Whether `folder` (a run folder or its attention folder) holds word maps `save_maps` wrote."""
    return (_attention_dir(folder) / "words.json").exists()


def save_step_maps(folder, per_step: list[dict[str, WordMap]]) -> Path:
    """Write `folder/attention/steps.npz`: for each word (same keys as maps.npz), its map at
    every recorded step, [steps, H, W] in [0, 1] (each step normalised on its own)."""
    out = _attention_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    entries = json.loads((out / "words.json").read_text(encoding="utf-8"))["words"]
    arrays = {e["key"]: np.stack([np.asarray(step[e["word"]].map, dtype=np.float32) for step in per_step])
              for e in entries if all(e["word"] in step for step in per_step)}
    np.savez_compressed(out / "steps.npz", **arrays)
    return out / "steps.npz"


def load_step_maps(folder) -> dict[str, np.ndarray] | None:
    """{word: [steps, H, W]} saved by `save_step_maps`, or None when no steps were kept."""
    out_dir = _attention_dir(folder)
    if not (out_dir / "steps.npz").exists():
        return None
    entries = json.loads((out_dir / "words.json").read_text(encoding="utf-8"))["words"]
    with np.load(out_dir / "steps.npz") as data:
        return {e["word"]: np.asarray(data[e["key"]]) for e in entries if e["key"] in data.files}


def step_count(folder) -> int:
    """How many denoising steps `save_step_maps` kept under `folder` (0 when none were kept)."""
    steps = load_step_maps(folder)
    return len(next(iter(steps.values()))) if steps else 0


def maps_at_step(folder, step: int = 0) -> dict[str, WordMap]:
    """The word maps under `folder` at denoising step `step` (1 = the first recorded step):
    each word's map is that step's map (words without step maps are left out; `raw_total`
    stays the total over all steps). Step 0, or a run that kept no step maps, gives the
    maps summed over every step, as `load_maps` does."""
    maps = load_maps(folder)
    steps = load_step_maps(folder) if step else None
    if not steps:
        return maps
    return {w: replace(m, map=steps[w][int(step) - 1]) for w, m in maps.items() if w in steps}


__all__ = ["WordMap", "damage_shares", "has_maps", "heat_image", "load_maps", "load_step_maps", "maps_at_step",
           "normalise", "overlay", "prompt_words", "save_maps", "save_step_maps", "share_inside", "step_count",
           "token_position", "word_maps", "word_tokens"]
