"""Image-quality metrics: pure functions, an LPIPS wrapper and the scoring layer.

* :mod:`core.metrics.functional` — MSE, PSNR, SSIM and display maps on numpy arrays;
* :mod:`core.metrics.batched` — the same MSE, PSNR and SSIM in torch for a batch of
  same-size pairs (float64, CPU or CUDA; what :class:`Scorer` uses on a GPU);
* :mod:`core.metrics.lpips_model` — :class:`LpipsScorer`, built once and batched;
* :mod:`core.metrics.scoring` — resizing, damage-region masks, :class:`Scorer`,
  JSON round trip and summaries.

Importing this package does not import torch or lpips (see ``lpips_model`` and
``batched``).
"""

from core.metrics.functional import (
    HIGHER_IS_BETTER,
    METRICS,
    error_map,
    luma,
    mse,
    psnr,
    ssim,
    ssim_and_map,
    ssim_map,
    to_float,
)
from core.metrics.lpips_model import LpipsScorer, lpips_weights_path
from core.metrics.scoring import (
    Scorer,
    prepare_masks,
    prepare_pair,
    score_pair,
    scores_from_dict,
    scores_to_dict,
    summarise,
)

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "LpipsScorer",
    "Scorer",
    "error_map",
    "lpips_weights_path",
    "luma",
    "mse",
    "prepare_masks",
    "prepare_pair",
    "psnr",
    "score_pair",
    "scores_from_dict",
    "scores_to_dict",
    "ssim",
    "ssim_and_map",
    "ssim_map",
    "summarise",
    "to_float",
]
