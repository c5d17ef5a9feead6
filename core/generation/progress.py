"""Step progress, previews and cancellation for a running diffusers pipeline.

`StepCallback` is passed as `callback_on_step_end`. After every denoising step it reports
`on_step(step, total)` (1-based step, total = denoising steps the pipeline actually runs;
for img2img that is `int(steps * strength)`), and when previews are asked for it also
passes `preview=` an RGB uint8 array (so an `on_step` used with previews must accept that
keyword).

Previews, `preview="approx"` (default): a linear map from latent channels to RGB, fitted
once per VAE by encoding a small synthetic colour chart with that VAE and solving least
squares (no hard-coded coefficients, so it works for SD 2.1, SDXL and SD3's 16-channel
latents alike, and for tiny random test models). It costs a few multiply-adds per latent
pixel, then a bilinear upscale by the VAE's factor. It previews the current noisy latents,
so early previews look like coloured noise. `preview="vae"` decodes with the pipeline's
VAE instead: exact colours, at the cost of one VAE decode per preview.

Cancelling: `CancelToken.cancel()` (from any thread) makes the callback set the pipeline's
interrupt flag (`pipe._interrupt = True`); diffusers then skips the remaining steps. The
caller (core.generation.generate) raises `GenerationCancelled` afterwards.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

import numpy as np

PREVIEW_MODES = ("approx", "vae")


class CancelToken:
    """A flag one thread sets and a running generation checks after every step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the generation to stop after the step in progress."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._event.is_set()


class StepCallback:
    """A diffusers `callback_on_step_end` that reports steps, makes previews and cancels.

    Attributes after a run: `steps_run` (steps completed), `total` (steps the pipeline
    planned), `interrupted` (the run was stopped by the cancel token)."""

    tensor_inputs = ["latents"]

    def __init__(self, on_step: Callable | None = None, *, preview_every: int = 0,
                 cancel: CancelToken | None = None, preview: str = "approx") -> None:
        if preview not in PREVIEW_MODES:
            raise ValueError(f"preview must be one of {PREVIEW_MODES}, not {preview!r}")
        self.on_step = on_step
        self.preview_every = max(0, int(preview_every or 0))
        self.cancel = cancel
        self.preview = preview
        self.steps_run = 0
        self.total: int | None = None
        self.interrupted = False

    def __call__(self, pipe, step_index: int, timestep, callback_kwargs: dict) -> dict:
        self.steps_run += 1
        total = getattr(pipe, "_num_timesteps", None)
        self.total = int(total) if total is not None else None
        step = step_index + 1
        if self.on_step is not None:
            last = self.total is not None and step >= self.total
            if self.preview_every and (step % self.preview_every == 0 or last) and "latents" in callback_kwargs:
                image = preview_latents(pipe, callback_kwargs["latents"], mode=self.preview)
                self.on_step(step, self.total or step, preview=image)
            else:
                self.on_step(step, self.total or step)
        if self.cancel is not None and self.cancel.cancelled:
            pipe._interrupt = True
            self.interrupted = True
        return callback_kwargs


# -- previews -----------------------------------------------------------------------------
_fits: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_fit_lock = threading.Lock()


def _vae_scale(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _scaled(vae, latents):
    """Latents as the pipeline holds them: (z - shift) * scale."""
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def _colour_chart(size: int = 128) -> np.ndarray:
    """A deterministic image with smooth gradients and flat patches of many colours."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    img = np.stack([x, y, 1 - 0.5 * (x + y)], axis=-1)
    rng = np.random.default_rng(0)
    step = size // 8
    for i in range(0, size, step):
        for j in range(0, size, step):
            if (i // step + j // step) % 2:
                img[i:i + step, j:j + step] = rng.random(3)
    return img.astype(np.float32)


def latent_rgb_fit(vae) -> np.ndarray:
    """(C+1, 3) least-squares map from the pipeline's latents (plus a bias) to RGB in
    [0, 1], fitted once per VAE from a synthetic colour chart."""
    import torch

    with _fit_lock:
        fit = _fits.get(vae)
        if fit is not None:
            return fit
        chart = _colour_chart()
        x = torch.from_numpy(chart).permute(2, 0, 1)[None] * 2 - 1
        param = next(vae.parameters())
        with torch.no_grad():
            z = vae.encode(x.to(param.device, param.dtype)).latent_dist.mean
            z = _scaled(vae, z).float().cpu()
        c, h, w = z.shape[1:]
        f = chart.shape[0] // h
        target = chart.reshape(h, f, w, f, 3).mean(axis=(1, 3)).reshape(-1, 3)
        a = np.concatenate([z[0].permute(1, 2, 0).reshape(-1, c).numpy(), np.ones((h * w, 1), np.float32)], 1)
        fit, *_ = np.linalg.lstsq(a, target, rcond=None)
        _fits[vae] = fit.astype(np.float32)
        return _fits[vae]


def preview_latents(pipe, latents, *, mode: str = "approx") -> np.ndarray:
    """An RGB uint8 preview (H, W, 3) of the first image of `latents` at output size."""
    import torch
    from PIL import Image

    vae = pipe.vae
    if mode == "vae":
        with torch.no_grad():
            z = latents[:1].to(vae.dtype) / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0.0)
            img = vae.decode(z, return_dict=False)[0]
        arr = ((img[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return arr
    fit = latent_rgb_fit(vae)
    z = latents[0].detach().float().cpu().permute(1, 2, 0).numpy()  # h, w, c
    h, w, c = z.shape
    rgb = np.concatenate([z.reshape(-1, c), np.ones((h * w, 1), np.float32)], 1) @ fit
    small = (np.clip(rgb.reshape(h, w, 3), 0, 1) * 255).round().astype(np.uint8)
    f = _vae_scale(vae)
    return np.asarray(Image.fromarray(small).resize((w * f, h * f), Image.BILINEAR))
