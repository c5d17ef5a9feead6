"""LPIPS (Zhang et al. 2018), AlexNet trunk, version 0.1 — built once, reused, batched.

The lpips wheel ships its small linear-layer weights, but the AlexNet trunk is torchvision's
``alexnet-owt-7be5be79.pth``, which torchvision downloads into torch.hub's checkpoint folder
(``$TORCH_HOME/hub/checkpoints``). This module checks that the file is there *before*
asking lpips to build anything, so an offline machine gets an immediate
:class:`~core.errors.LpipsUnavailable` that says which file to put where, instead of a hang
or a URLError.

torch and lpips are imported inside the functions that need them: importing this module
is cheap.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import LpipsUnavailable, MetricError
from core.metrics.functional import to_float

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
LPIPS_NET = "alex"
LPIPS_VERSION = "0.1"
# Smallest side AlexNet's pooling stack accepts (measured with lpips 0.1.4).
LPIPS_MIN_SIDE = 31


def lpips_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights on this machine.

    That is ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``, i.e.
    ``$TORCH_HOME/hub/checkpoints/...`` (``~/.cache/torch`` when TORCH_HOME is unset).
    Imports torch (not lpips).
    """
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


UNAVAILABLE = "LPIPS is unavailable"
"""How every LpipsUnavailable message begins (a score saved without LPIPS says so)."""


def _unavailable_message(path: Path, cause: BaseException | None = None) -> str:
    why = (
        f"building it failed ({type(cause).__name__}: {cause})"
        if cause is not None
        else "the file is not there"
    )
    return (
        f"{UNAVAILABLE}: it needs torchvision's AlexNet weights {ALEXNET_FILE} in "
        f"{path.parent} and {why}. Download {ALEXNET_URL} on a machine with internet access "
        f"and copy it into {path.parent} (or point TORCH_HOME at a folder whose "
        f"hub/checkpoints holds it). MSE, PSNR and SSIM were still computed."
    )


class LpipsScorer:
    """Reusable LPIPS scorer: ``lpips.LPIPS(net="alex", version="0.1")``, eval mode, no grad.

    The network is built lazily on first use and then kept; score as many images as you
    like with one instance. Inputs are RGB images in [0, 1] (anything
    :func:`core.metrics.functional.to_float` accepts); they are scaled to [-1, 1] as LPIPS
    expects. Lower is better; 0 means identical.

    ``random_backbone=True`` builds the AlexNet trunk with random weights
    (``pnet_rand=True``) so the plumbing can be tested offline. Its numbers are
    meaningless as a perceptual distance; never report them.
    """

    higher_is_better = False

    def __init__(self, *, device: str = "cpu", random_backbone: bool = False):
        self.device = device
        self.random_backbone = bool(random_backbone)
        self._model = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ building
    @property
    def model(self):
        """The underlying ``lpips.LPIPS`` module (built on first access)."""
        return self._ensure_model()

    @property
    def built(self) -> bool:
        """Whether the network has been built already."""
        return self._model is not None

    def check(self) -> None:
        """Build the network now; raise :class:`LpipsUnavailable` if it cannot be built."""
        self._ensure_model()

    def _ensure_model(self):
        if self._model is not None:
            return self._model
        with self._lock:
            if self._model is None:
                self._model = _build_lpips(self.device, self.random_backbone)
        return self._model

    # ------------------------------------------------------------------- scoring
    def score(
        self,
        preds01: Sequence[np.ndarray] | np.ndarray,
        targets01: Sequence[np.ndarray] | np.ndarray,
        *,
        spatial: bool = False,
        batch_size: int = 8,
    ) -> list[float] | list[np.ndarray]:
        """LPIPS of each (pred, target) pair, computed in batches of ``batch_size``.

        ``preds01``/``targets01``: lists of ``H x W x 3`` images or ``N x H x W x 3``
        arrays, in [0, 1] (or uint8). Pairs of different sizes may be mixed; each batch
        holds images of one size. Returns one float per pair, or with ``spatial=True`` one
        ``H x W`` float64 map per pair (lpips' spatial output, upsampled bilinearly to the
        input size), whose mean is close to the scalar value.
        """
        pairs = self._run(preds01, targets01, want_map=spatial, batch_size=batch_size)
        if spatial:
            return [m for _, m in pairs]
        return [v for v, _ in pairs]

    def score_with_maps(
        self,
        preds01: Sequence[np.ndarray] | np.ndarray,
        targets01: Sequence[np.ndarray] | np.ndarray,
        *,
        batch_size: int = 8,
    ) -> list[tuple[float, np.ndarray]]:
        """Both the scalar LPIPS and its ``H x W`` spatial map per pair, in one forward pass.

        The scalar equals :meth:`score` (``spatial=False``) and the map equals
        :meth:`score` with ``spatial=True``; sharing the AlexNet features halves the cost
        when both are needed (e.g. whole-image and masked scores).
        """
        return self._run(preds01, targets01, want_map=True, batch_size=batch_size)

    # ----------------------------------------------------------------- internals
    def _run(self, preds01, targets01, *, want_map: bool, batch_size: int):
        if int(batch_size) < 1:
            raise MetricError(f"batch_size must be at least 1; got {batch_size}.")
        preds, targets = _as_list(preds01, "preds01"), _as_list(targets01, "targets01")
        if len(preds) != len(targets):
            raise MetricError(
                f"Got {len(preds)} predictions but {len(targets)} targets; LPIPS scores pairs."
            )
        pairs = [_check_pair(i, p, t) for i, (p, t) in enumerate(zip(preds, targets))]
        if not pairs:
            return []
        model = self._ensure_model()

        # Group by size so each batch stacks into one tensor; keep the input order.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, (p, _) in enumerate(pairs):
            by_shape.setdefault(p.shape, []).append(i)
        out: list = [None] * len(pairs)
        for shape, idx in by_shape.items():
            for start in range(0, len(idx), int(batch_size)):
                chunk = idx[start : start + int(batch_size)]
                for i, got in zip(chunk, self._fitting([pairs[i] for i in chunk], model, want_map)):
                    out[i] = got
        return out

    def _fitting(self, pairs: list, model, want_map: bool) -> list[tuple]:
        """(value, map or None) of each pair, one batch; a batch that runs out of GPU memory
        is split in halves (so a busy GPU still scores, in smaller batches)."""
        from core.models.manager import free_cuda_cache, is_out_of_memory

        try:
            values, maps = _forward(model, [p for p, _ in pairs], [t for _, t in pairs], self.device, want_map)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_cuda_cache()
            if len(pairs) == 1:
                h, w = pairs[0][0].shape[:2]
                raise MetricError(
                    f"LPIPS ran out of GPU memory on one {w}×{h} px pair: score at a smaller evaluation "
                    "size, or free the GPU (unload the model in the Generate tab)."
                ) from exc
            half = len(pairs) // 2
            return self._fitting(pairs[:half], model, want_map) + self._fitting(pairs[half:], model, want_map)
        return [(values[j], None if maps is None else maps[j]) for j in range(len(pairs))]


def _as_list(images, name: str) -> list:
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 3:
            raise MetricError(
                f"{name} is a single {images.shape} array; pass a list of images or an "
                "N x H x W x 3 array."
            )
        raise MetricError(f"{name} must be N x H x W x 3; got shape {images.shape}.")
    return list(images)


def _check_pair(i: int, pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = to_float(pred), to_float(target)
    if p.ndim != 3:
        raise MetricError(f"LPIPS needs RGB (H x W x 3) images; pair {i} is {p.shape}.")
    if p.shape != t.shape:
        raise MetricError(
            f"Pair {i}: pred has shape {p.shape} but target has shape {t.shape}; resize the "
            "target first (core.metrics.scoring.prepare_pair does it)."
        )
    return p, t


def _build_lpips(device: str, random_backbone: bool):
    """Build and return ``lpips.LPIPS(net="alex", version="0.1")`` in eval mode, no grad."""
    weights = None
    if not random_backbone:
        weights = lpips_weights_path()
        if not weights.is_file():
            raise LpipsUnavailable(_unavailable_message(weights))
    try:
        import lpips
    except ImportError as exc:  # pragma: no cover - lpips is a pinned dependency
        raise LpipsUnavailable(
            f"{UNAVAILABLE}: the lpips package is not installed "
            "(pip install lpips==0.1.4). MSE, PSNR and SSIM were still computed."
        ) from exc
    try:
        with warnings.catch_warnings():
            # torchvision warns that lpips uses its deprecated `pretrained=` argument.
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            model = lpips.LPIPS(
                net=LPIPS_NET,
                version=LPIPS_VERSION,
                pnet_rand=random_backbone,
                verbose=False,
            )
    except Exception as exc:
        if random_backbone:
            raise
        # The file was there but could not be used (truncated download, or a download
        # attempt that failed): say so with the same instructions.
        raise LpipsUnavailable(_unavailable_message(weights, exc)) from exc
    model.eval()
    model.requires_grad_(False)
    return model.to(device)


def _forward(model, preds: list[np.ndarray], targets: list[np.ndarray], device, want_map):
    """One batch through LPIPS: (list of floats, list of H x W maps or None)."""
    import torch

    def to_tensor(images: list[np.ndarray]):
        x = torch.from_numpy(np.stack(images).astype(np.float32)).permute(0, 3, 1, 2)
        return (x * 2.0 - 1.0).contiguous().to(device)  # [0, 1] -> [-1, 1]

    h, w = preds[0].shape[:2]
    if min(h, w) < LPIPS_MIN_SIDE:
        raise MetricError(
            f"LPIPS (AlexNet) needs images at least {LPIPS_MIN_SIDE} px on each side; "
            f"got {h} x {w}."
        )
    from core.models.manager import is_out_of_memory

    in0, in1 = to_tensor(preds), to_tensor(targets)
    try:
        with torch.no_grad(), _full_float32(device):
            if not want_map:
                values = model(in0, in1).reshape(-1).double().cpu().numpy()
                return [float(v) for v in values], None
            value_t, map_t = _forward_both(model, in0, in1)
    except RuntimeError as exc:
        if is_out_of_memory(exc):
            raise  # the caller retries in smaller batches
        raise MetricError(f"LPIPS failed on {h} x {w} images: {exc}") from exc
    values = value_t.reshape(-1).double().cpu().numpy()
    maps = map_t[:, 0].double().cpu().numpy()
    return [float(v) for v in values], list(maps)


def _full_float32(device):
    """On CUDA, convolutions in full float32 (no TF32), as on the CPU, so LPIPS scores do
    not depend on where they were computed; elsewhere nothing changes."""
    import contextlib

    import torch

    if not str(device).startswith("cuda"):
        return contextlib.nullcontext()
    return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)


def _forward_both(model, in0, in1):
    """lpips.LPIPS.forward (v0.1, lpips=True) computing the scalar and the spatial map at once.

    Mirrors lpips 0.1.4's forward step by step: scaling layer, trunk features,
    unit-normalised squared differences, 1x1 linear layers; then per layer the spatial
    average (the scalar) and the bilinear upsampling to the input size (the map), summed
    over layers in the same order as lpips does.
    """
    import lpips

    x0, x1 = model.scaling_layer(in0), model.scaling_layer(in1)
    feats0, feats1 = model.net.forward(x0), model.net.forward(x1)
    value = 0
    smap = 0
    for kk in range(model.L):
        diff = (lpips.normalize_tensor(feats0[kk]) - lpips.normalize_tensor(feats1[kk])) ** 2
        layer = model.lins[kk](diff)
        value = value + lpips.spatial_average(layer, keepdim=True)
        smap = smap + lpips.upsample(layer, out_HW=in0.shape[2:])
    return value, smap


__all__ = ["ALEXNET_FILE", "ALEXNET_URL", "LpipsScorer", "lpips_weights_path"]
