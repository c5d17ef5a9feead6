"""Score a generated image against the real post-event tile, as docs/metrics.md defines.

This layer owns what the pure functions refuse to do silently:

* bringing both images to one size (:func:`prepare_pair`, PIL LANCZOS, recorded in notes);
* scoring damage-aware regions from boolean masks (resized nearest-neighbour if needed);
* LPIPS being unavailable: the score then has ``lpips=None`` and ``lpips_error`` says why,
  while MSE, PSNR and SSIM are still there;
* turning scores into JSON-safe dicts (PSNR's inf <-> ``"inf"``) and summarising many;
* batching: :meth:`Scorer.score_many` scores MSE, PSNR and SSIM of many same-size pairs at
  once with torch on a GPU (:mod:`core.metrics.batched`), and pair by pair with
  numpy/scipy on the CPU, with equal results.

Importing this module does not import torch; a :class:`Scorer` does on first use to look for
a GPU (unless given a ``device`` or ``use_torch=False``), and an
:class:`~core.metrics.lpips_model.LpipsScorer` does, lazily.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
from PIL import Image

from core.errors import MetricError
from core.io import jsonable
from core.metrics import functional as F
from core.metrics.lpips_model import LpipsScorer
from core.types import MASK_REGIONS, MetricSettings, Scores

NO_LPIPS_SCORER = "LPIPS was not computed: no LPIPS scorer was given."
RANDOM_BACKBONE_NOTE = (
    "LPIPS used a RANDOM AlexNet backbone (plumbing test only): its values are meaningless."
)


# ------------------------------------------------------------------------- preparation
def _as_rgb_array(img, name: str, notes: list[str]) -> np.ndarray:
    """An ``H x W x 3`` array in its original dtype (PIL images become uint8 RGB)."""
    if isinstance(img, Image.Image):
        if img.mode != "RGB":
            notes.append(f"{name} converted from PIL mode {img.mode} to RGB")
            img = img.convert("RGB")
        return np.asarray(img)
    arr = np.asarray(img)
    if arr.ndim == 2:
        notes.append(f"{name} had one channel; repeated to RGB")
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        notes.append(f"{name} had one channel; repeated to RGB")
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        notes.append(f"{name} alpha channel dropped")
        return arr[..., :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MetricError(f"{name} must be an H x W x 3 RGB image; got shape {arr.shape}.")
    return arr


def _wh(arr: np.ndarray) -> tuple[int, int]:
    return int(arr.shape[1]), int(arr.shape[0])


def _fmt(wh: tuple[int, int]) -> str:
    return f"{wh[0]}×{wh[1]}"


def _resize_rgb(arr: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    """Resize with PIL LANCZOS; returns float64 in [0, 1].

    uint8 goes through PIL's RGB path (what ``Image.resize`` does on a loaded PNG); other
    inputs are resized channel by channel in PIL's 32-bit float mode, then clipped to
    [0, 1] (LANCZOS overshoots a little at sharp edges).
    """
    if arr.dtype == np.uint8:
        out = Image.fromarray(arr, mode="RGB").resize(wh, Image.Resampling.LANCZOS)
        return np.asarray(out).astype(np.float64) / 255.0
    arr01 = F.to_float(arr).astype(np.float32)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(arr01[..., c]), mode="F").resize(
                wh, Image.Resampling.LANCZOS
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(channels, axis=-1).astype(np.float64), 0.0, 1.0)


def prepare_pair(pred, target, *, size: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Bring ``pred`` and ``target`` to one size, as float64 ``H x W x 3`` in [0, 1].

    ``pred``/``target``: uint8/uint16/float arrays (``H x W x 3``, ``H x W`` or with alpha)
    or PIL images. With ``size`` both become ``size x size`` (PIL LANCZOS); otherwise the
    target is resized to the prediction's size when they differ. Returns
    ``(pred01, target01, notes)``, where notes say what was changed, e.g.
    ``"target resized from 1024×1024 to 512×512 (LANCZOS)"`` (width×height).
    """
    return _prepare_pair(pred, target, size=size, keep_uint8=False)


def _prepare_pair(pred, target, *, size: int | None, keep_uint8: bool):
    """:func:`prepare_pair`; with ``keep_uint8`` a uint8 image already at the wanted size is
    returned as it is (the batched path divides it by 255 on its device: the same values)."""
    if size is not None and (not isinstance(size, (int, np.integer)) or size < 1):
        raise MetricError(f"The evaluation size must be a positive number of px; got {size!r}.")
    notes: list[str] = []
    p = _as_rgb_array(pred, "prediction", notes)
    t = _as_rgb_array(target, "target", notes)
    want = (int(size), int(size)) if size is not None else _wh(p)

    def bring(arr: np.ndarray, name: str) -> np.ndarray:
        if _wh(arr) == want:
            return arr if keep_uint8 and arr.dtype == np.uint8 else F.to_float(arr)
        notes.append(f"{name} resized from {_fmt(_wh(arr))} to {_fmt(want)} (LANCZOS)")
        return _resize_rgb(arr, want)

    return bring(p, "prediction"), bring(t, "target"), notes


def prepare_masks(
    masks: Mapping[str, np.ndarray] | None, shape: tuple[int, int]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Boolean ``H x W`` masks at ``shape`` (nearest-neighbour resize when needed).

    Keys are kept, ordered as :data:`core.types.MASK_REGIONS` first, then any others.
    Returns ``(masks, notes)``.
    """
    if not masks:
        return {}, []
    h, w = int(shape[0]), int(shape[1])
    order = [k for k in MASK_REGIONS if k in masks] + [k for k in masks if k not in MASK_REGIONS]
    out: dict[str, np.ndarray] = {}
    resized: set[tuple[int, int]] = set()
    for key in order:
        m = np.asarray(masks[key])
        if m.ndim != 2:
            raise MetricError(f"Mask {key!r} must be H x W; got shape {m.shape}.")
        if m.dtype != np.bool_:
            m = m > 0
        if m.shape != (h, w):
            resized.add(_wh(m))
            img = Image.fromarray(m.astype(np.uint8) * 255, mode="L")
            m = np.asarray(img.resize((w, h), Image.Resampling.NEAREST)) > 127
        out[key] = m
    notes = [
        f"masks resized from {_fmt(wh)} to {_fmt((w, h))} (nearest)" for wh in sorted(resized)
    ]
    return out, notes


# ------------------------------------------------------------------------------ scoring
class Scorer:
    """Scores many pairs with one set of :class:`MetricSettings` and one LPIPS network.

    ``lpips`` is reused for every pair (it is never rebuilt). Pass None to skip LPIPS
    (the scores then say so in ``lpips_error``). ``batch_size``: pairs scored together
    (LPIPS batches, and the batched MSE/PSNR/SSIM on a GPU).

    MSE, PSNR and SSIM run on one of two paths with equal results (to 1e-6; settings and
    notes identical):

    * numpy/scipy/skimage (:mod:`core.metrics.functional`), pair by pair, on the CPU;
    * torch (:mod:`core.metrics.batched`), float64, the pairs of one size at once.

    ``device``: where the torch path runs; None picks ``"cuda"`` when
    ``torch.cuda.is_available()`` at first use, else ``"cpu"``. ``use_torch``: None (the
    default) takes the torch path on a CUDA device only (on the CPU scipy's filters are
    faster than torch's convolutions); True/False force a path (tests and benchmarks run
    the torch path on the CPU with ``device="cpu", use_torch=True``).
    """

    def __init__(
        self,
        settings: MetricSettings,
        *,
        lpips: LpipsScorer | None,
        batch_size: int = 8,
        device: str | None = None,
        use_torch: bool | None = None,
    ):
        if int(batch_size) < 1:
            raise MetricError(f"batch_size must be at least 1; got {batch_size}.")
        self.settings = settings
        self.lpips = lpips
        self.batch_size = int(batch_size)
        self._device = None if device is None else str(device)
        self._use_torch = None if use_torch is None else bool(use_torch)

    @property
    def device(self) -> str:
        """The torch path's device: as given, else chosen on first use ("cuda" or "cpu")."""
        if self._device is None:
            from core.metrics.batched import default_device

            self._device = default_device()
        return self._device

    @property
    def uses_torch(self) -> bool:
        """Whether MSE, PSNR and SSIM take the batched torch path (see the class notes)."""
        if self._use_torch is not None:
            return self._use_torch
        return self.device.startswith("cuda")

    def settings_dict(self) -> dict:
        """The settings stored with each score (marks a random LPIPS backbone)."""
        d = self.settings.to_dict()
        if self.lpips is not None and getattr(self.lpips, "random_backbone", False):
            d["lpips"] = {**d["lpips"], "pnet_rand": True}
        return d

    def score(self, pred, target, masks: Mapping[str, np.ndarray] | None = None) -> Scores:
        """Score one pair (see :func:`score_pair`)."""
        return self.score_many([(pred, target, masks)])[0]

    def score_many(self, items: Iterable) -> list[Scores]:
        """Score ``(pred, target, masks_or_None)`` items (or ``(pred, target)``), one
        :class:`Scores` per item in their order, each equal to :meth:`score` of that item.

        Items are consumed ``batch_size`` at a time, so a long generator never holds more
        than one batch of full-size images in memory. LPIPS runs in batches across items;
        on the torch path so do MSE, PSNR and SSIM (one batch per image size, so give
        same-size items together for the full benefit).
        """
        out: list[Scores] = []
        chunk: list = []
        for item in items:
            chunk.append(item)
            if len(chunk) == self.batch_size:
                out.extend(self._score_chunk(chunk))
                chunk = []
        if chunk:
            out.extend(self._score_chunk(chunk))
        return out

    # ----------------------------------------------------------------- internals
    def _score_chunk(self, chunk: list) -> list[Scores]:
        use_torch = self.uses_torch
        prepared = []
        for item in chunk:
            if len(item) == 2:
                pred, target, masks = item[0], item[1], None
            else:
                pred, target, masks = item
            p, t, notes = _prepare_pair(pred, target, size=self.settings.size, keep_uint8=use_torch)
            m, mask_notes = prepare_masks(masks, p.shape[:2])
            prepared.append((p, t, m, notes + mask_notes))

        if use_torch:
            values = self._torch_values(prepared)
        else:
            values = [self._numpy_values(p, t, m) for p, t, m, _ in prepared]
        settings = self.settings_dict()
        results = [
            self._base_scores(v, notes, settings) for v, (_, _, _, notes) in zip(values, prepared)
        ]
        self._add_lpips(prepared, results)
        return results

    def _numpy_values(self, p, t, masks) -> dict:
        """Whole-image and per-region MSE, PSNR and SSIM of one pair, numpy path."""
        luma = self.settings.luma
        pp, tt = (F.luma(p), F.luma(t)) if luma else (p, t)
        ssim_value, smap = F.ssim_and_map(p, t, luma=luma)
        masked = None
        if masks:
            masked = {}
            for region, m in masks.items():
                pixels = int(m.sum())
                if pixels == 0:
                    masked[region] = None
                    continue
                masked[region] = {
                    "pixels": pixels,
                    "mse": F.mse(p, t, m),
                    "psnr": F.psnr(pp, tt, m),
                    "ssim": float(smap[m].mean()),
                }
        return {"mse": F.mse(p, t), "psnr": F.psnr(pp, tt), "ssim": ssim_value, "masked": masked}

    def _torch_values(self, prepared: list) -> list[dict]:
        """The same values as :meth:`_numpy_values` for every prepared pair, torch path:
        one :func:`core.metrics.batched.score_batch` call per image size. A batch that does
        not fit in the GPU's free memory (e.g. next to a loaded diffusion model) is scored
        on the numpy path instead: slower, the same values."""
        import torch

        from core.metrics.batched import score_batch

        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (p, _, _, _) in enumerate(prepared):
            by_shape.setdefault(p.shape, []).append(i)
        out: list = [None] * len(prepared)
        for idx in by_shape.values():
            try:
                got = score_batch(
                    [prepared[i][0] for i in idx],
                    [prepared[i][1] for i in idx],
                    [prepared[i][2] or None for i in idx],
                    luma=self.settings.luma,
                    device=self.device,
                )
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                got = [self._numpy_values(*prepared[i][:3]) for i in idx]
            for i, values in zip(idx, got):
                out[i] = values
        return out

    def _base_scores(self, values: dict, notes, settings) -> Scores:
        masked = None
        if values["masked"] is not None:
            masked = {
                region: None if v is None else {**v, "lpips": None}
                for region, v in values["masked"].items()
            }
        notes = list(notes)
        if self.lpips is not None and getattr(self.lpips, "random_backbone", False):
            notes.append(RANDOM_BACKBONE_NOTE)
        return Scores(
            mse=values["mse"],
            psnr=values["psnr"],
            ssim=values["ssim"],
            lpips=None,
            settings=settings,
            lpips_error=None,
            masked=masked,
            notes=notes,
        )

    def _add_lpips(self, prepared: list, results: list[Scores]) -> None:
        if self.lpips is None:
            for s in results:
                s.lpips_error = NO_LPIPS_SCORER
            return
        with_maps = [i for i, (_, _, m, _) in enumerate(prepared) if m]
        plain = [i for i, (_, _, m, _) in enumerate(prepared) if not m]
        try:
            values = {}
            maps = {}
            if plain:
                got = self.lpips.score(
                    [prepared[i][0] for i in plain],
                    [prepared[i][1] for i in plain],
                    batch_size=self.batch_size,
                )
                values.update(zip(plain, got))
            if with_maps:
                got = self.lpips.score_with_maps(
                    [prepared[i][0] for i in with_maps],
                    [prepared[i][1] for i in with_maps],
                    batch_size=self.batch_size,
                )
                for i, (v, lmap) in zip(with_maps, got):
                    values[i] = v
                    maps[i] = lmap
        except MetricError as exc:  # LpipsUnavailable included
            for s in results:
                s.lpips_error = str(exc)
            return
        for i, s in enumerate(results):
            s.lpips = values[i]
            if i in maps and s.masked:
                for region, m in prepared[i][2].items():
                    if s.masked.get(region) is not None:
                        s.masked[region]["lpips"] = float(maps[i][m].mean())


def score_pair(
    pred,
    target,
    *,
    settings: MetricSettings,
    masks: Mapping[str, np.ndarray] | None = None,
    lpips: LpipsScorer | None = None,
) -> Scores:
    """Score one generated image against its target.

    Returns :class:`core.types.Scores` with whole-image MSE, PSNR (dB, inf when identical),
    SSIM and LPIPS (None, with ``lpips_error``, when LPIPS is unavailable or not given),
    plus ``masked[region]`` = ``{"pixels", "mse", "psnr", "ssim", "lpips"}`` or None for a
    region without pixels, for each key of ``masks`` (boolean ``H x W``; other sizes are
    resized nearest-neighbour to the evaluation size). With ``settings.luma`` PSNR and SSIM
    use the Y channel; MSE stays on RGB.
    """
    return Scorer(settings, lpips=lpips).score(pred, target, masks)


# ---------------------------------------------------------------------- serialisation
_METRIC_KEYS = ("mse", "psnr", "ssim", "lpips")


def _num_out(x):
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return None
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def _num_in(x):
    if x is None:
        return None
    if isinstance(x, str):
        if x in ("inf", "+inf", "Infinity"):
            return math.inf
        if x in ("-inf", "-Infinity"):
            return -math.inf
        raise MetricError(f"Not a metric value: {x!r} (expected a number, 'inf' or null).")
    return float(x)


def scores_to_dict(scores: Scores) -> dict:
    """A JSON-safe dict of ``scores``: infinite PSNR becomes the string ``"inf"``, NaN never
    appears (it would be written as null)."""
    masked = None
    if scores.masked is not None:
        masked = {}
        for region, vals in scores.masked.items():
            if vals is None:
                masked[region] = None
                continue
            entry = {"pixels": int(vals.get("pixels", 0))}
            entry.update({k: _num_out(vals.get(k)) for k in _METRIC_KEYS})
            masked[region] = entry
    return {
        "mse": _num_out(scores.mse),
        "psnr": _num_out(scores.psnr),
        "ssim": _num_out(scores.ssim),
        "lpips": _num_out(scores.lpips),
        "lpips_error": scores.lpips_error,
        "settings": jsonable(scores.settings),
        "masked": masked,
        "notes": [str(n) for n in scores.notes],
    }


def scores_from_dict(d: Mapping) -> Scores:
    """The inverse of :func:`scores_to_dict` (``"inf"`` back to ``math.inf``).

    Extra keys (such as a stored ``scored`` time) are ignored.
    """
    missing = [k for k in ("mse", "psnr", "ssim", "settings") if k not in d]
    if missing:
        raise MetricError(f"Not a scores record: missing {', '.join(missing)}.")
    masked = None
    if d.get("masked") is not None:
        masked = {}
        for region, vals in d["masked"].items():
            if vals is None:
                masked[region] = None
                continue
            entry = {"pixels": int(vals.get("pixels", 0))}
            entry.update({k: _num_in(vals.get(k)) for k in _METRIC_KEYS})
            masked[region] = entry
    return Scores(
        mse=_num_in(d["mse"]),
        psnr=_num_in(d["psnr"]),
        ssim=_num_in(d["ssim"]),
        lpips=_num_in(d.get("lpips")),
        settings=dict(d["settings"]),
        lpips_error=d.get("lpips_error"),
        masked=masked,
        notes=list(d.get("notes") or []),
    )


# -------------------------------------------------------------------------- summaries
def _summary(values: list, with_inf: bool) -> dict:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n_inf = sum(1 for v in values if v is not None and math.isinf(float(v)))
    n_missing = sum(1 for v in values if v is None)
    out = {
        "mean": float(np.mean(finite)) if finite else None,
        "std": float(np.std(finite)) if finite else None,
        "count": len(finite),
        "n_missing": n_missing,
    }
    if with_inf:
        out["n_infinite"] = n_inf
    return out


def summarise(scores_list: Iterable[Scores | Mapping]) -> dict:
    """Summary of many scores: per metric the mean and std over finite values.

    Returns ``{"n": N, "mse": {...}, "psnr": {...}, "ssim": {...}, "lpips": {...}}`` where
    each metric has ``mean`` (None when no value), ``std``, ``count`` (values averaged) and
    ``n_missing`` (None values, e.g. LPIPS unavailable); PSNR also has ``n_infinite``
    (identical pairs, never averaged). When any score has masked regions, ``"masked"`` maps
    each region to the same per-metric summaries plus ``n_no_pixels``. Accepts
    :class:`Scores` or their dicts.
    """
    items = [s if isinstance(s, Scores) else scores_from_dict(s) for s in scores_list]
    out: dict = {"n": len(items)}
    for key in _METRIC_KEYS:
        out[key] = _summary([getattr(s, key) for s in items], with_inf=key == "psnr")
    regions: list[str] = []
    for s in items:
        for region in s.masked or {}:
            if region not in regions:
                regions.append(region)
    if regions:
        regions = [r for r in MASK_REGIONS if r in regions] + [
            r for r in regions if r not in MASK_REGIONS
        ]
        masked = {}
        for region in regions:
            entries = [s.masked[region] for s in items if s.masked and region in s.masked]
            present = [e for e in entries if e is not None]
            block = {"n_no_pixels": len(entries) - len(present)}
            for key in _METRIC_KEYS:
                block[key] = _summary([e.get(key) for e in present], with_inf=key == "psnr")
            masked[region] = block
        out["masked"] = masked
    return out


__all__ = [
    "NO_LPIPS_SCORER",
    "Scorer",
    "prepare_masks",
    "prepare_pair",
    "score_pair",
    "scores_from_dict",
    "scores_to_dict",
    "summarise",
]
