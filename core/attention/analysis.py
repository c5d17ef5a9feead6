"""From recorded token maps to word maps, overlays, region shares and files.

Token → word mapping (CLIP BPE, and T5's SentencePiece through core.attention.joint)
- The prompt is tokenized without special tokens, with each token's character span in
  the prompt (the tokenizer's offset mapping). The words are found in the prompt text
  itself: runs of letters and digits, kept together across an apostrophe inside them
  ("town's", "don't") and across a "." or "," between digits ("1,000", "3.5"); spaces
  and other punctuation separate words, and punctuation alone is no word. Each token
  belongs to the (first) word its span overlaps, so the pieces a tokenizer splits a word
  into come back together: CLIP splits every number into single digits ("2018" is four
  tokens) and cuts "town's" into "town" + "'s", T5 cuts them into pieces too. A word's
  text is the prompt's, lower-cased ("’" read as "'"), so CLIP and T5 name it alike.
- A tokenizer without offsets (a pure-Python one) gets its spans by finding each token's
  text in the lower-cased prompt, in order.
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

Region shares
- `damage_shares` gives each word's share of attention inside building footprints and
  each damage class, next to the share of pixels they cover. The footprints are
  rasterised at the LABEL's resolution (1024 px for a full xBD tile, 512 for a course
  part) and every map is upsampled bilinearly to it, so a building smaller than one pixel
  of a 64 px map still counts. A generation with maps on a scene with a post-event label
  saves them once (`save_scene_shares`, attention/shares.json); `load_shares` reads them.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import bisect
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
# A word of the prompt (see the module doc): letters/digits, joined across inner apostrophes
# and across "." or "," between digits.
_WORD = re.compile(r"[^\W_]+(?:(?:['\u2019]|(?<=\d)[.,](?=\d))[^\W_]+)*")


def _token_spans(tokenizer, text: str) -> list[tuple[int, int]]:
    """(start, end) in `text` of each of its tokens (no special tokens)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, truncation=False, return_offsets_mapping=True)
        return [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, KeyError):  # a tokenizer without offsets
        pass
    ids = list(tokenizer(text, add_special_tokens=False, truncation=False).input_ids)
    lowered, cursor, spans = text.lower(), 0, []
    for token_id in ids:
        part = tokenizer.decode([token_id], clean_up_tokenization_spaces=False).strip().lower()
        start = lowered.find(part, cursor) if part else -1
        if start < 0:  # text it cannot find (an unknown piece) belongs to no word
            spans.append((cursor, cursor))
        else:
            cursor = start + len(part)
            spans.append((start, cursor))
    return spans


def prompt_words(prompt: str, tokenizer) -> list[tuple[str, list[int]]]:
    """(word, indices of its tokens among the prompt's tokens) in prompt order, without
    special tokens; punctuation-only pieces are skipped (see the module doc). Works for
    CLIP's and T5's tokenizers alike."""
    text = prompt or ""
    found = list(_WORD.finditer(text))
    ends = [m.end() for m in found]
    owned: list[list[int]] = [[] for _ in found]
    for j, (start, end) in enumerate(_token_spans(tokenizer, text)):
        k = bisect.bisect_right(ends, start)  # the first word ending after the token starts
        if start < end and k < len(found) and found[k].start() < end:
            owned[k].append(j)
    return [(m.group().lower().replace("\u2019", "'"), idx) for m, idx in zip(found, owned) if idx]


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


def _prepared(masks: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, float]]:
    """{region: (mask flattened as float64, its share of pixels)}, for `_region_shares`."""
    out = {}
    for region, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        out[region] = (mask.ravel().astype(np.float64), float(mask.mean()) if mask.size else 0.0)
    return out


def _region_shares(attention: np.ndarray, shape: tuple[int, int],
                   regions: dict[str, tuple[np.ndarray, float]]) -> dict[str, tuple[float, float]]:
    """`share_inside` for masks of one `shape`, already `_prepared`."""
    m = np.clip(_resize(attention, shape), 0.0, None).ravel().astype(np.float64)
    total = float(m.sum())
    return {r: (float(m @ flat) / total if total > 0 else 0.0, pixels) for r, (flat, pixels) in regions.items()}


def share_inside(attention: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """{region: (share of the map's attention inside the mask, share of pixels inside it)}.
    The map is resized (bilinearly) to each mask's size, never the masks to the map's. A
    map with no mass gives attention share 0."""
    out = {}
    for shape in dict.fromkeys(np.shape(m) for m in masks.values()):
        out.update(_region_shares(attention, shape, _prepared({r: m for r, m in masks.items()
                                                               if np.shape(m) == shape})))
    return {r: out[r] for r in masks}


def label_size(label: Label, part: int | None = None) -> tuple[int, int]:
    """(width, height) of `label`'s own raster: its metadata size (1024 px when absent), or
    the quarter tile of a course `part` (core.data.masks's convention)."""
    from core.data.masks import DEFAULT_LABEL_SIZE, label_is_part

    w = int(label.metadata.width or DEFAULT_LABEL_SIZE)
    h = int(label.metadata.height or DEFAULT_LABEL_SIZE)
    if part is not None and not label_is_part(label):
        w, h = w // 2, h // 2
    return w, h


def damage_shares(maps: Iterable[WordMap], label: Label, *,
                  part: int | None = None) -> dict[str, dict[str, tuple[float, float]]]:
    """{word: {region: (share of the word's attention inside it, share of pixels it covers)}}
    for every region of core.types.MASK_REGIONS (building footprints, then each damage
    class), from a post-event `label` rasterised ONCE at its own resolution (`label_size`;
    `part`: the 512 px course tile, as core.data.masks.class_masks takes it), each word's
    map upsampled to it. (Shrinking the footprints to a 64 px map instead would lose every
    building smaller than a map pixel.) A region without pixels has pixel share 0; compare
    the two shares to see whether "destroyed" looks at destroyed buildings."""
    from core.data.masks import class_masks

    w, h = label_size(label, part)
    regions = _prepared(class_masks(label, (w, h), part=part))  # once, for every word
    return {wm.word: _region_shares(wm.map, (h, w), regions) for wm in maps}


SHARES_FILE = "shares.json"


def _post_label(scene) -> Label | None:
    if scene is None or getattr(scene, "post_label", None) is None:
        return None
    from core.data.labels import load_label

    return load_label(scene.post_label)


def scene_shares(maps: Iterable[WordMap], scene) -> dict[str, dict[str, tuple[float, float]]] | None:
    """`damage_shares` of `maps` against `scene`'s post-event label (and course part), or
    None when the scene (or its post-event label) is missing."""
    label = _post_label(scene)
    return None if label is None else damage_shares(maps, label, part=scene.part)


def save_scene_shares(folder, maps: dict[str, WordMap], scene) -> dict | None:
    """Compute `scene_shares` once and write them to `folder/attention/shares.json`
    ({"label", "part", "size": [w, h] of the masks, "regions", "words": [{"word",
    "shares": {region: {"attention", "pixels"}}}]}); returns the shares. Without a
    post-event label, or with one that cannot be read (a DataError, which the Attention
    tab reports when it computes the shares itself), nothing is written and None returned."""
    from core.errors import DataError
    from core.types import MASK_REGIONS

    try:
        label = _post_label(scene)
    except DataError:
        return None
    if label is None:
        return None
    shares = damage_shares(maps.values(), label, part=scene.part)
    out = _attention_dir(folder)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"label": label.path.name, "part": scene.part, "size": list(label_size(label, scene.part)),
           "regions": list(MASK_REGIONS),
           "words": [{"word": word, "shares": {r: {"attention": a, "pixels": px} for r, (a, px) in by.items()}}
                     for word, by in shares.items()]}
    (out / SHARES_FILE).write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return shares


def load_shares(folder) -> dict[str, dict[str, tuple[float, float]]] | None:
    """The shares `save_scene_shares` wrote under `folder` (same shape as `damage_shares`),
    or None when the run has none (older runs, scenes without labels)."""
    path = _attention_dir(folder) / SHARES_FILE
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {e["word"]: {r: (float(v["attention"]), float(v["pixels"])) for r, v in e["shares"].items()}
            for e in doc["words"]}


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


__all__ = ["SHARES_FILE", "WordMap", "damage_shares", "has_maps", "heat_image", "label_size", "load_maps",
           "load_shares", "load_step_maps", "maps_at_step", "normalise", "overlay", "prompt_words", "save_maps",
           "save_scene_shares", "save_step_maps", "scene_shares", "share_inside", "step_count", "token_position",
           "word_maps", "word_tokens"]
