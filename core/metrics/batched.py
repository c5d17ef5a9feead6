"""MSE, PSNR and SSIM for a batch of same-size pairs in torch, on the CPU or a CUDA GPU.

The definitions are those of :mod:`core.metrics.functional` and ``docs/metrics.md``, and the
values equal them to 1e-6 (measured differences are about 1e-15):

* images are batches of ``N`` pairs of one size: ``N x H x W x 3`` (RGB) or ``N x H x W``
  (one channel), channels last like the numpy functions; uint8 becomes ``x / 255``, bool
  0/1, floats must lie in [0, 1] and be finite (same checks and messages as
  :func:`~core.metrics.functional.to_float`);
* SSIM is skimage's: Gaussian weights (sigma 1.5, 11 taps, normalised as scipy does),
  scipy's ``reflect`` boundary (numpy's ``symmetric`` padding, built here by index
  gathering since ``torch.nn.functional.pad`` has no such mode), population covariance,
  C1 = 0.01², C2 = 0.03²; the whole-image value is the mean over the valid region (a 5 px
  border left out), per channel then over channels; the map keeps the border;
* masked values: MSE/PSNR over the region's pixels (MSE with all three channels), SSIM as
  the mean of the full map (channel mean for RGB, border included) over the region; a mask
  without pixels gives ``None``.

Precision: **float64 on every device** (CPU and CUDA). In float32 the local variances
``E[x²] - E[x]²`` are differences of nearly equal numbers: against skimage the float32 SSIM
map was off by 2e-5 to 3e-5 on the bench's 64 and 256 px images and by 3e-4 on a flat
bright one (whole-image values by up to 1.5e-7), so float32 misses 1e-6 for the masked
means. The Gaussian filter is separable: one 11-tap pass along each axis
(:func:`gaussian_filter`).

torch is imported inside the functions only: importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from core.errors import MetricError
from core.metrics import functional as F

if TYPE_CHECKING:  # pragma: no cover
    import torch

# skimage's defaults for K1, K2 with data_range 1.0 (docs/metrics.md).
SSIM_C1: float = (0.01 * F.SSIM_KWARGS["data_range"]) ** 2
SSIM_C2: float = (0.03 * F.SSIM_KWARGS["data_range"]) ** 2
# The filter's radius: skimage crops this border for the whole-image mean.
SSIM_RADIUS: int = (F.SSIM_MIN_SIDE - 1) // 2


# --------------------------------------------------------------------------- devices
def default_device() -> str:
    """``"cuda"`` when torch is installed and ``torch.cuda.is_available()``, else ``"cpu"``.

    Imports torch (when it is installed).
    """
    if importlib.util.find_spec("torch") is None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device) -> "torch.device":
    """``device`` as a :class:`torch.device`; :class:`MetricError` for a name torch does not
    know or a CUDA device on a machine without one."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MetricError(f"Not a torch device: {device!r} ({exc}); use 'cpu' or 'cuda'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetricError(
            f"Device {device!r} was asked for but torch.cuda.is_available() is False on this "
            "machine; use device 'cpu' (the numpy path) instead."
        )
    return dev


# ------------------------------------------------------------------------- conversion
def as_batch(images, *, device=None) -> "torch.Tensor":
    """A batch of images as an ``N x C x H x W`` float64 tensor on ``device``, in [0, 1].

    ``images``: a torch tensor or numpy array ``N x H x W x 3`` (C = 3) or ``N x H x W``
    (C = 1) of uint8, bool or floats in [0, 1]; or a sequence of ``H x W x 3`` / ``H x W``
    arrays of one shape (anything :func:`~core.metrics.functional.to_float` accepts; uint8
    ones are sent as bytes and divided by 255 on the device). ``device``: where the tensor
    goes; by default a tensor's own device, else the CPU. Raises :class:`MetricError` for
    other shapes, dtypes, non-finite values or floats outside [0, 1].
    """
    import torch

    dev = check_device(device if device is not None else _device_of(images))
    if isinstance(images, np.ndarray):
        _check_batch_shape(images.shape)
        images = list(images)  # each image converted as the numpy functions do
    if isinstance(images, torch.Tensor):
        _check_batch_shape(tuple(images.shape))
        x = _to_unit_float(images.detach().to(dev))
        return (x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]).contiguous()

    arrays = list(images)
    if not arrays:
        raise MetricError("The batch is empty: pass at least one image.")
    shape = None
    out = None
    for i, img in enumerate(arrays):
        arr = np.asarray(img)
        if shape is None:
            F._check_shape(arr)
            shape = arr.shape
            out = torch.empty((len(arrays), *shape), dtype=torch.float64, device=dev)
        elif arr.shape != shape:
            raise MetricError(
                f"Image {i} has shape {arr.shape} but image 0 has {shape}; a batch holds "
                "images of one size (group pairs by size first)."
            )
        if arr.dtype == np.uint8:
            out[i] = _host_tensor(arr).to(dev).to(torch.float64) / 255.0
        else:
            out[i] = _host_tensor(F.to_float(arr)).to(dev)
    return (out.permute(0, 3, 1, 2) if out.ndim == 4 else out[:, None]).contiguous()


def _check_batch_shape(shape: tuple[int, ...]) -> None:
    rgb = len(shape) == 4 and shape[-1] == 3
    single = len(shape) == 3 and shape[-1] != 3
    if not (rgb or single):
        raise MetricError(
            f"A batch must be N x H x W x 3 (RGB) or N x H x W (one channel); got shape "
            f"{shape}. (For one image, pass a list: [img].)"
        )
    if 0 in shape:
        raise MetricError(f"The batch is empty (shape {shape}).")


def _host_tensor(arr: np.ndarray) -> "torch.Tensor":
    """A CPU tensor sharing ``arr``'s memory when it can (torch wants it contiguous and
    writable; PIL-backed arrays are read-only, so those are copied)."""
    import torch

    if not (arr.flags.c_contiguous and arr.flags.writeable):
        arr = np.array(arr, order="C", copy=True)
    return torch.from_numpy(arr)


def _device_of(images):
    dev = getattr(images, "device", None)
    return "cpu" if dev is None or isinstance(images, np.ndarray) else dev


def _to_unit_float(x: "torch.Tensor") -> "torch.Tensor":
    import torch

    if x.dtype == torch.uint8:
        return x.to(torch.float64) / 255.0
    if x.dtype == torch.bool:
        return x.to(torch.float64)
    if not x.dtype.is_floating_point:
        raise MetricError(
            f"Unsupported image dtype {x.dtype}: pass uint8, bool, or floats in [0, 1]."
        )
    x = x.to(torch.float64)
    lo, hi = torch.stack([x.amin(), x.amax()]).tolist()
    # The numpy conversion's own checks, so both paths refuse the same inputs alike.
    F.to_float(np.array([[lo, hi]], dtype=np.float64))
    return x


def _mask_batch(masks, n: int, hw: tuple[int, int], device) -> "torch.Tensor":
    """One mask per pair as an ``N x H x W`` bool tensor (validated like the numpy masks)."""
    import torch

    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    if isinstance(masks, np.ndarray):
        if masks.ndim != 3:
            raise MetricError(f"Masks must be N x H x W; got shape {masks.shape}.")
        masks = list(masks)
    masks = list(masks)
    if len(masks) != n:
        raise MetricError(f"Got {len(masks)} masks for {n} pairs; pass one mask per pair.")
    return _host_tensor(np.stack([F._mask(m, hw) for m in masks])).to(device)


def _pair_batches(pred, target, device):
    x = as_batch(pred, device=device)
    y = as_batch(target, device=x.device)
    if x.shape != y.shape:
        raise MetricError(
            f"pred has shape {tuple(x.shape)} but target has shape {tuple(y.shape)} "
            "(N x C x H x W); the metric functions need equal shapes (the scoring layer, "
            "core.metrics.scoring.prepare_pair, resizes the target to the prediction's size)."
        )
    return x, y


# --------------------------------------------------------------------- tensor kernels
def luma(batch: "torch.Tensor") -> "torch.Tensor":
    """Y = 0.299 R + 0.587 G + 0.114 B of an ``N x 3 x H x W`` batch, as ``N x 1 x H x W``
    (same range as the input). A one-channel batch is returned unchanged."""
    return _luma_of(batch)


def _luma_of(batch):
    # (inside the metric functions their `luma` flag hides the public name)
    if batch.shape[1] == 1:
        return batch
    r, g, b = F.LUMA_WEIGHTS
    return (r * batch[:, 0] + g * batch[:, 1] + b * batch[:, 2])[:, None]


def _reflect_index(n: int, r: int, device) -> "torch.Tensor":
    """Indices padding a length-``n`` axis by ``r`` as scipy's ``reflect`` mode does
    (d c b a | a b c d | d c b a, numpy's ``symmetric``); needs r <= n."""
    import torch

    left = torch.arange(r - 1, -1, -1)
    right = torch.arange(n - 1, n - 1 - r, -1)
    return torch.cat([left, torch.arange(n), right]).to(device)


def gaussian_taps() -> list[float]:
    """scipy.ndimage's 1-D Gaussian for sigma 1.5, truncate 3.5: 11 float64 taps summing to 1
    (computed as scipy computes them)."""
    sigma = F.SSIM_KWARGS["sigma"]
    x = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return [float(v) for v in phi / phi.sum()]


def gaussian_filter(x: "torch.Tensor") -> "torch.Tensor":
    """``scipy.ndimage.gaussian_filter(plane, 1.5, mode="reflect", truncate=3.5)`` of every
    ``H x W`` plane of ``x`` (``... x H x W``, H and W at least 5); same shape and dtype.

    Separable: along H, then along W, each pass the reflect-padded plane's 11 shifted views
    multiplied by their taps and summed. (Measured on the CPU this is 4x faster than
    ``conv2d`` in float64, and it does not depend on cuDNN's float64 convolutions.)"""
    h, w = x.shape[-2:]
    r = SSIM_RADIUS
    if min(h, w) < r:
        raise MetricError(f"The Gaussian filter needs planes of at least {r} x {r} px; got {h} x {w}.")
    taps = gaussian_taps()
    planes = x.reshape(-1, h, w)
    padded = planes.index_select(1, _reflect_index(h, r, x.device))
    out = padded[:, 0:h] * taps[0]
    for k in range(1, 2 * r + 1):
        out.add_(padded[:, k : k + h], alpha=taps[k])
    padded = out.index_select(2, _reflect_index(w, r, x.device))
    out = padded[:, :, 0:w] * taps[0]
    for k in range(1, 2 * r + 1):
        out.add_(padded[:, :, k : k + w], alpha=taps[k])
    return out.reshape(x.shape)


def ssim_maps(x: "torch.Tensor", y: "torch.Tensor") -> "torch.Tensor":
    """skimage's SSIM map of each plane of two ``N x C x H x W`` float64 batches in [0, 1]:
    ``N x C x H x W``, values in [-1, 1] (border included, no crop)."""
    h, w = x.shape[-2:]
    if min(h, w) < F.SSIM_MIN_SIDE:
        raise MetricError(
            f"SSIM needs images at least {F.SSIM_MIN_SIDE} x {F.SSIM_MIN_SIDE} px (its Gaussian "
            f"window, sigma 1.5, is {F.SSIM_MIN_SIDE} px wide); got {h} x {w}."
        )
    ux, uy = gaussian_filter(x), gaussian_filter(y)
    uxx, uyy, uxy = gaussian_filter(x * x), gaussian_filter(y * y), gaussian_filter(x * y)
    # skimage's order of operations (cov_norm = 1.0: population covariance).
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    a1 = 2 * ux * uy + SSIM_C1
    a2 = 2 * vxy + SSIM_C2
    b1 = ux**2 + uy**2 + SSIM_C1
    b2 = vx + vy + SSIM_C2
    return (a1 * a2) / (b1 * b2)


def _valid_mean(maps: "torch.Tensor") -> "torch.Tensor":
    """skimage's whole-image SSIM: per plane the mean without the 5 px border, then the
    mean over channels; ``N``."""
    r = SSIM_RADIUS
    h, w = maps.shape[-2:]
    return maps[..., r : h - r, r : w - r].mean(dim=(-2, -1)).mean(dim=1)


def _region_sums(values: "torch.Tensor", masks: "torch.Tensor") -> "torch.Tensor":
    """Per pair and region the sums of ``K`` per-pixel quantities: ``values`` ``N x K x H x W``,
    ``masks`` ``N x R x H x W`` bool -> ``N x R x K`` (float64). One pair at a time, so at
    most one pair's masks are held as floats."""
    import torch

    n, k = values.shape[:2]
    out = []
    for i in range(n):
        m = masks[i].reshape(masks.shape[1], -1).to(values.dtype)
        out.append(m @ values[i].reshape(k, -1).T)
    return torch.stack(out)


def _scalars(t: "torch.Tensor") -> list[float]:
    return [float(v) for v in t.detach().cpu().tolist()]


# ---------------------------------------------------------------------- the metrics
def mse(pred, target, mask=None, *, device=None) -> list[float | None]:
    """Mean squared error per pair over pixels and channels, floats in [0, 1] (0 = identical).

    ``pred``/``target``: batches as :func:`as_batch` takes them. ``mask``: None, or one
    bool ``H x W`` mask per pair (``N x H x W``); only True pixels count (all channels), and
    an empty mask gives ``None``. Returns one float (or None) per pair.
    """
    x, y = _pair_batches(pred, target, device)
    return _mse_values(x, y, mask)


def _mse_values(x, y, mask) -> list[float | None]:
    d2 = (x - y) ** 2
    if mask is None:
        return _scalars(d2.mean(dim=(1, 2, 3)))
    m = _mask_batch(mask, x.shape[0], tuple(x.shape[-2:]), x.device)
    sums = _region_sums(_with_ones(d2.sum(dim=1, keepdim=True)), m[:, None])[:, 0]
    return _masked_ratio(sums, x.shape[1])


def _with_ones(values: "torch.Tensor") -> "torch.Tensor":
    """``values`` (``N x K x H x W``) with a leading plane of ones (its sum counts pixels)."""
    import torch

    return torch.cat([torch.ones_like(values[:, :1]), values], dim=1)


def _masked_ratio(sums: "torch.Tensor", channels: int) -> list[float | None]:
    """``N x 2`` (pixels, sum) -> sum / (channels * pixels), None without pixels."""
    out = []
    for pixels, total in sums.detach().cpu().tolist():
        out.append(None if pixels == 0 else total / (channels * pixels))
    return out


def psnr(pred, target, mask=None, *, luma: bool = False, device=None) -> list[float | None]:
    """PSNR per pair in dB, 10 * log10(1 / MSE) with data range 1; ``math.inf`` for
    identical images, ``None`` for an empty mask. With ``luma=True`` the MSE is taken on Y
    (0.299 R + 0.587 G + 0.114 B). Arguments as for :func:`mse`.
    """
    x, y = _pair_batches(pred, target, device)
    if luma:
        x, y = _luma_of(x), _luma_of(y)
    return [F._psnr_from_mse(v) for v in _mse_values(x, y, mask)]


def ssim(pred, target, mask=None, *, luma: bool = False, device=None) -> list[float | None]:
    """SSIM per pair (Wang et al. 2004 settings, skimage's definition), in [-1, 1].

    Without ``mask``: the mean of the map over the valid region (5 px border left out),
    averaged over channels for RGB. With ``mask`` (one bool ``H x W`` per pair): the mean of
    the full map (channel mean for RGB, border included) over the True pixels, ``None`` when
    there is none. ``luma=True``: on Y instead of RGB. Images need 11 x 11 px at least.
    """
    x, y = _pair_batches(pred, target, device)
    if luma:
        x, y = _luma_of(x), _luma_of(y)
    maps = ssim_maps(x, y)
    if mask is None:
        return _scalars(_valid_mean(maps))
    m = _mask_batch(mask, x.shape[0], tuple(x.shape[-2:]), x.device)
    sums = _region_sums(_with_ones(maps.mean(dim=1, keepdim=True)), m[:, None])[:, 0]
    return _masked_ratio(sums, 1)


def ssim_and_map(pred, target, *, luma: bool = False, device=None) -> tuple[list[float], "torch.Tensor"]:
    """Whole-image SSIM per pair (as :func:`ssim` without a mask) and the ``N x H x W``
    float64 SSIM maps (channel mean for RGB, values in [-1, 1]) on the batch's device."""
    x, y = _pair_batches(pred, target, device)
    if luma:
        x, y = _luma_of(x), _luma_of(y)
    maps = ssim_maps(x, y)
    return _scalars(_valid_mean(maps)), maps.mean(dim=1)


def score_batch(
    preds,
    targets,
    masks: Sequence[Mapping[str, np.ndarray] | None] | None = None,
    *,
    luma: bool = False,
    device=None,
) -> list[dict]:
    """MSE, PSNR and SSIM of every pair, whole image and per region, with one transfer back.

    ``preds``/``targets``: batches as :func:`as_batch` takes them. ``masks``: None or one
    entry per pair, each None or ``{region: bool H x W}``. ``luma``: PSNR and SSIM on Y (MSE
    stays RGB). Returns per pair ``{"mse", "psnr", "ssim", "masked"}`` where ``masked`` is
    None (no masks given for the pair) or ``{region: None | {"pixels", "mse", "psnr",
    "ssim"}}`` (None for a region without pixels), regions in the given order. Units and
    ranges as in :func:`mse`, :func:`psnr` (dB, inf when identical) and :func:`ssim`.
    """
    import torch

    x, y = _pair_batches(preds, targets, device)
    n, c, h, w = x.shape
    masks = [None] * n if masks is None else list(masks)
    if len(masks) != n:
        raise MetricError(f"Got {len(masks)} mask entries for {n} pairs; pass one per pair (or None).")
    xl, yl = (_luma_of(x), _luma_of(y)) if luma else (x, y)
    d2 = (x - y) ** 2
    dl2 = (xl - yl) ** 2 if luma else d2
    maps = ssim_maps(xl, yl)
    whole = torch.stack([d2.mean(dim=(1, 2, 3)), dl2.mean(dim=(1, 2, 3)), _valid_mean(maps)], dim=1)

    regions = [list(m) if m else [] for m in masks]
    region_sums: list = [None] * n
    if any(regions):
        # per pixel: count, RGB squared error summed over channels, Y (or RGB) one, SSIM
        values = torch.cat(
            [torch.ones_like(d2[:, :1]), d2.sum(dim=1, keepdim=True),
             dl2.sum(dim=1, keepdim=True), maps.mean(dim=1, keepdim=True)],
            dim=1,
        )
        for i, names in enumerate(regions):
            if not names:
                continue
            m = _host_tensor(np.stack([F._mask(masks[i][name], (h, w)) for name in names])).to(x.device)
            region_sums[i] = _region_sums(values[i : i + 1], m[None])[0]

    whole_host = whole.detach().cpu().tolist()
    sums_host = [None if s is None else s.detach().cpu().tolist() for s in region_sums]
    out = []
    for i in range(n):
        mse_v, mse_l, ssim_v = whole_host[i]
        entry = {"mse": mse_v, "psnr": F._psnr_from_mse(mse_l), "ssim": ssim_v, "masked": None}
        if masks[i]:
            entry["masked"] = {}
            for name, (pixels, sq, sq_l, s_sum) in zip(regions[i], sums_host[i]):
                if pixels == 0:
                    entry["masked"][name] = None
                    continue
                entry["masked"][name] = {
                    "pixels": int(pixels),
                    "mse": sq / (c * pixels),
                    "psnr": F._psnr_from_mse(sq_l / (xl.shape[1] * pixels)),
                    "ssim": s_sum / pixels,
                }
        out.append(entry)
    return out


__all__ = [
    "SSIM_C1",
    "SSIM_C2",
    "SSIM_RADIUS",
    "as_batch",
    "check_device",
    "default_device",
    "gaussian_filter",
    "gaussian_taps",
    "luma",
    "mse",
    "psnr",
    "score_batch",
    "ssim",
    "ssim_and_map",
    "ssim_maps",
]
