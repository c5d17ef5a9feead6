"""Training pairs from xBD scenes: condition image, target image, caption and both
metadata vectors, at the training resolution.

`training_pairs` picks the scenes' usable (pre, post) pairs once, before training: a scene
without one of the tiles, or with a tile that is not a readable PNG, is skipped and counted,
never a crash mid-run. `PairDataset` turns a pair into tensors, deterministically from (seed,
epoch, item): the same crop, flips and caption variant whatever the number of loader
workers or processes, and after a resume. `export_upstream` writes the same pairs as an
image folder for diffusers' own `train_controlnet.py`.

Captions: the caption store's current text for the target tile, else a template from the
disaster type. For DiffusionSat the template is the authors', "a [fmow] satellite image
[after being affected by a {type} natural disaster]", each bracketed part dropped 10 % of
the time (docs/training.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import ImageError
from core.training.options import TrainingError, TrainOptions

TEMPLATE_PART_DROPOUT = 0.1


@dataclass(frozen=True)
class Pair:
    """One training example: the condition and target image files (plain paths, so the
    dataset pickles into loader workers), the caption's parts ((text, may be dropped)), the
    target's and the condition's metadata vectors at the training resolution and at the
    tiles' own resolution (used when the tile is cropped instead of resized)."""

    scene_id: str
    condition: Path
    target: Path
    caption: tuple[tuple[str, bool], ...]
    side: int
    metadata: tuple[float, ...]
    cond_metadata: tuple[float, ...]
    metadata_native: tuple[float, ...]
    cond_metadata_native: tuple[float, ...]
    post_label: Path | None
    part: int | None

    def caption_text(self, rng: np.random.Generator | None = None) -> str:
        """The caption; with `rng`, each droppable part is left out with p = 0.1."""
        kept = [text for text, optional in self.caption
                if not (optional and rng is not None and rng.random() < TEMPLATE_PART_DROPOUT)]
        return " ".join(kept)


def template_parts(base: str, task: str, disaster_type: str | None) -> tuple[tuple[str, bool], ...]:
    """The template caption of a target image, as (text, droppable) parts."""
    when = "after" if task == "future" else "before"
    event = f"a {disaster_type} natural disaster" if disaster_type else "a natural disaster"
    if base == "diffusionsat":
        return (("a", False), ("fmow", True), ("satellite image", False),
                (f"{when} being affected by {event}", True))
    return ((f"a satellite image {when} being affected by {event}", False),)


def training_pairs(index, scenes, options: TrainOptions, captions=None) -> tuple[list[Pair], list[str]]:
    """The usable pairs of `scenes` (in their order) and one line per scene skipped."""
    from core.data.metadata import scene_metadata

    condition_phase, target_phase = ("pre", "post") if options.task == "future" else ("post", "pre")
    pairs: list[Pair] = []
    skipped: list[str] = []
    for scene in scenes:
        condition, target = scene.image(condition_phase), scene.image(target_phase)
        if condition is None or target is None:
            skipped.append(f"{scene.scene_id}: no {condition_phase if condition is None else target_phase}-event image")
            continue
        try:
            side = _checked_side(condition, target)
        except ImageError as err:
            skipped.append(f"{scene.scene_id}: {err}")
            continue
        text = captions.scene_caption(scene, target_phase) if captions is not None else None
        parts = ((text, False),) if text else template_parts(options.base, options.task,
                                                             index.scene_info(scene).disaster_type)
        res = int(options.resolution)
        pairs.append(Pair(
            scene_id=scene.scene_id, condition=condition, target=target, caption=parts, side=side,
            metadata=scene_metadata(index, scene, res, phase=target_phase),
            cond_metadata=scene_metadata(index, scene, res, phase=condition_phase),
            metadata_native=scene_metadata(index, scene, side, phase=target_phase),
            cond_metadata_native=scene_metadata(index, scene, side, phase=condition_phase),
            post_label=scene.post_label, part=scene.part))
    return pairs, skipped


def _checked_side(*paths: Path) -> int:
    """The side of square tiles of one size, from their headers (cheap: a truncated file
    passes here and is left out by `collate` when it fails to decode); ImageError if a file
    is missing or not an image, or the tiles are not squares of one size."""
    from PIL import Image, UnidentifiedImageError

    sizes = set()
    for path in paths:
        try:
            with Image.open(path) as im:
                sizes.add(im.size)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise ImageError(f"{path.name} is not a readable image ({err.__class__.__name__})") from err
    (width, height), = sizes if len(sizes) == 1 else ((0, 1),)
    if width != height:
        raise ImageError(f"the tiles {', '.join(p.name for p in paths)} are not squares of one size")
    return int(width)


def split_validation(pairs: list[Pair], held_out: list[Pair] | None, count: int,
                     seed: int) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, validation pairs). With `held_out` (another split's pairs), the
    first `count` of them validate and all of `pairs` train; otherwise a fixed sample of
    `count` pairs (by seed) is held out of training, leaving at least one to train on."""
    if held_out is not None:
        return pairs, held_out[:count]
    if count == 0 or len(pairs) < 2:
        return pairs, []
    count = min(count, len(pairs) - 1)
    chosen = set(np.random.default_rng(seed).choice(len(pairs), size=count, replace=False).tolist())
    return ([p for i, p in enumerate(pairs) if i not in chosen],
            [p for i, p in enumerate(pairs) if i in chosen])


def prepared_images(pair: Pair, resolution: int, *, augment: bool, rng: np.random.Generator | None):
    """(condition, target, cropped) uint8 arrays at `resolution`: larger tiles are cropped at
    random when `augment` (else resized), smaller ones resized; with `augment`, the same
    random flips for both. `cropped` says whether the tiles kept their own ground sampling."""
    from core.data.images import load_rgb

    condition, target = load_rgb(pair.condition), load_rgb(pair.target)
    side = condition.shape[0]
    cropped = augment and side > resolution and rng is not None
    if cropped:
        y, x = (int(v) for v in rng.integers(0, side - resolution + 1, size=2))
        condition = condition[y:y + resolution, x:x + resolution]
        target = target[y:y + resolution, x:x + resolution]
    elif side != resolution:
        condition, target = _resized(condition, resolution), _resized(target, resolution)
    if augment and rng is not None:
        if rng.random() < 0.5:
            condition, target = condition[:, ::-1], target[:, ::-1]
        if rng.random() < 0.5:
            condition, target = condition[::-1], target[::-1]
    return np.array(condition), np.array(target), cropped  # writable, contiguous copies


def _resized(array: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(array).resize((size, size), Image.LANCZOS))


class PairDataset:
    """A torch map-style dataset of `pairs` (see the module notes). Items are dicts:
    `condition` (3×H×W in [0, 1]), `target` (3×H×W in [-1, 1]), `metadata` and
    `cond_metadata` (7 floats), `caption` (str), `index` (int). An item whose files turned
    unreadable since the check is None, which `collate` leaves out and counts. The epoch is
    set with `use_epoch` (see loop.EpochShuffle for why not `set_epoch`)."""

    def __init__(self, pairs: list[Pair], options: TrainOptions) -> None:
        self.pairs = list(pairs)
        self.resolution = int(options.resolution)
        self.augment = bool(options.augment)
        self.seed = int(options.seed)
        self.drop_template_parts = options.base == "diffusionsat"
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def use_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def __getitem__(self, i: int):
        import torch

        pair = self.pairs[i]
        rng = self.rng(i)
        try:
            condition, target, cropped = prepared_images(pair, self.resolution, augment=self.augment, rng=rng)
        except ImageError:
            return None
        metadata = pair.metadata_native if cropped else pair.metadata
        cond_metadata = pair.cond_metadata_native if cropped else pair.cond_metadata
        return {
            "condition": torch.from_numpy(condition).permute(2, 0, 1).float() / 255.0,
            "target": torch.from_numpy(target).permute(2, 0, 1).float() / 127.5 - 1.0,
            "metadata": torch.tensor(metadata, dtype=torch.float32),
            "cond_metadata": torch.tensor(cond_metadata, dtype=torch.float32),
            "caption": pair.caption_text(rng if self.drop_template_parts else None),
            "index": int(i),
        }


def collate(items: list) -> dict:
    """A batch of the readable items; `unreadable` counts the others."""
    import torch

    good = [it for it in items if it is not None]
    batch = {"unreadable": len(items) - len(good), "size": len(good)}
    if not good:
        return batch
    for key in ("condition", "target", "metadata", "cond_metadata"):
        batch[key] = torch.stack([it[key] for it in good])
    batch["caption"] = [it["caption"] for it in good]
    batch["index"] = [it["index"] for it in good]
    return batch


def export_upstream(pairs: list[Pair], folder: Path | str, resolution: int) -> int:
    """Write `pairs` for diffusers' `train_controlnet.py`: `images/<scene>.png` (targets) and
    `conditioning_images/<scene>.png` at `resolution`, and `metadata.jsonl` with `image`,
    `conditioning_image` and `text` (the full caption) relative to `folder`. Returns the
    number of pairs written."""
    from PIL import Image

    from core.io import atomic_write_text

    folder = Path(folder)
    lines = []
    for kind in ("images", "conditioning_images"):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        condition, target, _ = prepared_images(pair, resolution, augment=False, rng=None)
        name = f"{pair.scene_id}.png"
        Image.fromarray(target).save(folder / "images" / name)
        Image.fromarray(condition).save(folder / "conditioning_images" / name)
        lines.append(json.dumps({"image": f"images/{name}", "conditioning_image": f"conditioning_images/{name}",
                                 "text": pair.caption_text()}))
    if not lines:
        raise TrainingError("No usable pre/post pair among the scenes chosen: nothing to export.")
    atomic_write_text(folder / "metadata.jsonl", "\n".join(lines) + "\n")
    return len(lines)
