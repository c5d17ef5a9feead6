"""Image-quality metrics as pure functions on numpy arrays.

Every function follows the definitions in ``docs/metrics.md``:

* inputs are RGB (``H x W x 3``) or single-channel (``H x W``) arrays, converted by
  :func:`to_float` to float64 in [0, 1] before anything is subtracted (so uint8 inputs can
  never wrap around);
* ``pred`` and ``target`` must have the same shape; resizing is the scoring layer's job
  (:mod:`core.metrics.scoring`), never done silently here;
* an optional boolean ``mask`` (``H x W``) restricts a metric to the pixels where it is
  True. A mask with no True pixel makes the metric return ``None`` ("no pixels"), never 0
  or NaN.

Each metric function carries a ``higher_is_better`` attribute; :data:`METRICS` gives the
display order and :data:`HIGHER_IS_BETTER` the same information as a dict.

Nothing heavy is imported at module import time (scikit-image is imported inside
:func:`ssim_map` and friends).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from core.errors import MetricError

METRICS: tuple[str, ...] = ("mse", "psnr", "ssim", "lpips")
HIGHER_IS_BETTER: dict[str, bool] = {"mse": False, "psnr": True, "ssim": True, "lpips": False}

# ITU-R BT.601 luma weights, as used by the course (and by PIL's "L" conversion).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

# The SSIM settings of Wang et al. (2004), exactly as docs/metrics.md gives them.
SSIM_KWARGS: dict = {
    "data_range": 1.0,
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
}
# skimage's window for gaussian_weights=True: 2 * int(3.5 * sigma + 0.5) + 1 = 11 px.
SSIM_MIN_SIDE: int = 2 * int(3.5 * SSIM_KWARGS["sigma"] + 0.5) + 1


def _higher_is_better(flag: bool) -> Callable:
    def mark(fn: Callable) -> Callable:
        fn.higher_is_better = flag  # type: ignore[attr-defined]
        return fn

    return mark


# --------------------------------------------------------------------------- conversion
def to_float(img) -> np.ndarray:
    """Return ``img`` as a float64 array with values in [0, 1].

    Accepted: uint8 (divided by 255), uint16 (divided by 65535), bool (False/True -> 0/1)
    and floating-point arrays already in [0, 1]. The shape must be ``H x W x 3`` (RGB) or
    ``H x W`` (one channel). Raises :class:`MetricError` for other dtypes or shapes, for
    NaN/inf values and for floats outside [0, 1] (the message says how to fix each).
    """
    arr = np.asarray(img)
    _check_shape(arr)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float64) / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        # float64 input is used as is (no copy): nothing in this module writes to it.
        out = arr if arr.dtype == np.float64 else arr.astype(np.float64)
        lo, hi = float(out.min()), float(out.max())  # NaN anywhere makes both NaN
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise MetricError(
                "The image contains NaN or infinite values; metrics need finite pixels "
                "in [0, 1]."
            )
        if lo < 0.0 or hi > 1.0:
            hint = ""
            if -1.0 <= lo < 0.0 and hi <= 1.0:
                hint = " It looks like a [-1, 1] tensor: use (x + 1) / 2."
            elif lo >= 0.0 and hi <= 255.0:
                hint = " It looks like 0..255 stored as floats: divide by 255 or pass uint8."
            raise MetricError(
                f"Float images must lie in [0, 1]; got values from {lo:g} to {hi:g}.{hint}"
            )
        return out
    raise MetricError(
        f"Unsupported image dtype {arr.dtype}: pass uint8, uint16, bool, or floats in "
        "[0, 1] (convert other integer arrays with .astype(np.uint8) if they hold 0..255)."
    )


def _check_shape(arr: np.ndarray) -> None:
    if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3):
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise MetricError(f"The image is empty (shape {arr.shape}).")
        return
    hint = ""
    if arr.ndim == 3 and arr.shape[2] == 4:
        hint = " Drop the alpha channel first (img[..., :3])."
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3):
        hint = " It looks channels-first: use img.transpose(1, 2, 0)."
    elif arr.ndim == 3 and arr.shape[2] == 1:
        hint = " Squeeze the channel axis (img[..., 0])."
    raise MetricError(
        f"Images must be H x W x 3 (RGB) or H x W (one channel); got shape {arr.shape}.{hint}"
    )


def luma(img01) -> np.ndarray:
    """Y = 0.299 R + 0.587 G + 0.114 B of an RGB image (float64, same range as the input).

    A single-channel ``H x W`` image is returned unchanged (as float64).
    """
    arr = to_float(img01)
    if arr.ndim == 2:
        return arr
    r, g, b = LUMA_WEIGHTS
    return r * arr[..., 0] + g * arr[..., 1] + b * arr[..., 2]


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_float(pred), to_float(target)
    if a.shape != b.shape:
        raise MetricError(
            f"pred has shape {a.shape} but target has shape {b.shape}; the metric functions "
            "need equal shapes (the scoring layer, core.metrics.scoring.prepare_pair, resizes "
            "the target to the prediction's size)."
        )
    return a, b


def _mask(mask, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate a mask against an image shape; return it as bool ``H x W`` (or None)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape[:2]):
        raise MetricError(
            f"The mask has shape {m.shape} but the images are {shape[0]} x {shape[1]}; "
            "masks must be H x W at the evaluation size (the scoring layer resizes them)."
        )
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise MetricError(
                "A mask must be boolean (or hold only 0 and 1); got other values. "
                "Use mask > 0 to make one."
            )
        m = m.astype(bool)
    return m


# ----------------------------------------------------------------------------- metrics
@_higher_is_better(False)
def mse(pred, target, mask=None) -> float | None:
    """Mean squared error over pixels and channels, on floats in [0, 1] (0 = identical).

    With ``mask`` (bool ``H x W``) only the True pixels count (all their channels).
    Returns ``None`` when the mask has no True pixel.
    """
    a, b = _pair(pred, target)
    m = _mask(mask, a.shape)
    diff = a - b
    if m is not None:
        if not m.any():
            return None
        diff = diff[m]
    return float(np.mean(diff * diff))


def _psnr_from_mse(value: float | None) -> float | None:
    if value is None:
        return None
    if value == 0.0:
        return math.inf
    return 10.0 * math.log10(1.0 / value)


@_higher_is_better(True)
def psnr(pred, target, mask=None, *, luma: bool = False) -> float | None:
    """Peak signal-to-noise ratio in dB, 10 * log10(1 / MSE) with data range 1.

    Identical images give ``math.inf``. With ``luma=True`` the MSE is taken on the Y
    channel (0.299 R + 0.587 G + 0.114 B) instead of RGB. Returns ``None`` for an empty
    mask.
    """
    a, b = _pair(pred, target)
    if luma:
        a, b = _luma_of(a), _luma_of(b)
    return _psnr_from_mse(mse(a, b, mask))


def _luma_of(arr01: np.ndarray) -> np.ndarray:
    if arr01.ndim == 2:
        return arr01
    r, g, b = LUMA_WEIGHTS
    return r * arr01[..., 0] + g * arr01[..., 1] + b * arr01[..., 2]


def _ssim_full(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """skimage's SSIM with the page's settings: (mean SSIM, map of the same shape)."""
    h, w = a.shape[:2]
    if min(h, w) < SSIM_MIN_SIDE:
        raise MetricError(
            f"SSIM needs images at least {SSIM_MIN_SIDE} x {SSIM_MIN_SIDE} px (its Gaussian "
            f"window, sigma 1.5, is {SSIM_MIN_SIDE} px wide); got {h} x {w}."
        )
    from skimage.metrics import structural_similarity

    channel_axis = -1 if a.ndim == 3 else None
    value, smap = structural_similarity(
        a, b, channel_axis=channel_axis, full=True, **SSIM_KWARGS
    )
    return float(value), smap


@_higher_is_better(True)
def ssim(pred, target, *, luma: bool = False, mask=None) -> float | None:
    """Structural similarity (Wang et al. 2004 settings), in [-1, 1], 1 = identical.

    Whole image: ``skimage.metrics.structural_similarity(pred, target, channel_axis=-1,
    data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` on RGB,
    or on the Y channel with ``luma=True``. skimage leaves a 5 px border out of that mean.

    With ``mask``: the mean of the full SSIM map (averaged over channels for RGB) over the
    True pixels, border included. Returns ``None`` when the mask has no True pixel.
    Images must be at least 11 x 11 px (the Gaussian window).
    """
    a, b = _pair(pred, target)
    m = _mask(mask, a.shape)
    if m is not None and not m.any():
        return None
    if luma:
        a, b = _luma_of(a), _luma_of(b)
    value, smap = _ssim_full(a, b)
    if m is None:
        return value
    if smap.ndim == 3:
        smap = smap.mean(axis=-1)
    return float(smap[m].mean())


def ssim_and_map(pred, target, *, luma: bool = False) -> tuple[float, np.ndarray]:
    """Whole-image SSIM (as :func:`ssim` without a mask) and the ``H x W`` SSIM map.

    Computes the map once, for callers that need the whole-image value and several masked
    means (``float(smap[mask].mean())`` equals ``ssim(..., mask=mask)``).
    """
    a, b = _pair(pred, target)
    if luma:
        a, b = _luma_of(a), _luma_of(b)
    value, smap = _ssim_full(a, b)
    return value, (smap.mean(axis=-1) if smap.ndim == 3 else smap)


def ssim_map(pred, target, *, luma: bool = False) -> np.ndarray:
    """The local SSIM map (``H x W`` float64, values in [-1, 1]) for display.

    For RGB the per-channel maps are averaged; with ``luma=True`` it is the Y channel's map.
    """
    return ssim_and_map(pred, target, luma=luma)[1]


def error_map(pred, target) -> np.ndarray:
    """Absolute error per pixel, averaged over channels (``H x W`` float64 in [0, 1])."""
    a, b = _pair(pred, target)
    err = np.abs(a - b)
    return err.mean(axis=-1) if err.ndim == 3 else err


__all__ = [
    "METRICS",
    "HIGHER_IS_BETTER",
    "LUMA_WEIGHTS",
    "SSIM_KWARGS",
    "SSIM_MIN_SIDE",
    "to_float",
    "luma",
    "mse",
    "psnr",
    "ssim",
    "ssim_map",
    "ssim_and_map",
    "error_map",
]
