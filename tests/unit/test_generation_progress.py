"""Step progress, previews and cancel on a tiny random pipeline."""

import numpy as np
import pytest

from core.errors import GenerationCancelled
from core.generation import CancelToken, StepCallback, generate
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TILE = (np.random.default_rng(4).random((64, 64, 3)) * 255).astype(np.uint8)


def tiny(backbone_id):
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe(backbone_id)


def request(backbone_id="tiny-sd21", **fields):
    base = dict(backbone=backbone_id, prompt="a flooded town", steps=6, strength=1.0, size=64, guidance=2.0)
    base.update(fields)
    return GenerationRequest(**base)


def count_denoiser_calls(monkeypatch, module):
    calls = []
    forward = module.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(module, "forward", counting)
    return calls


def test_on_step_reports_every_step_of_the_planned_total():
    backend, pipe = tiny("tiny-sd21")
    seen = []
    generate(request(strength=0.5), backend=backend, pipe=pipe, init_image=TILE,
             on_step=lambda step, total: seen.append((step, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]  # img2img runs int(6 * 0.5) steps


@pytest.mark.parametrize("backbone_id", ["tiny-sd21", "tiny-sd3"])
def test_previews_come_every_n_steps_and_at_the_end(backbone_id):
    backend, pipe = tiny(backbone_id)
    previews = []

    def on_step(step, total, preview=None):
        if preview is not None:
            previews.append((step, preview))

    generate(request(backbone_id, steps=5), backend=backend, pipe=pipe, init_image=TILE, on_step=on_step,
             preview_every=2)
    assert [s for s, _ in previews] == [2, 4, 5]
    for _, img in previews:
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8


def test_vae_preview_decodes_to_the_output_size():
    _, pipe = tiny("tiny-sd21")
    from core.generation.progress import preview_latents

    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    exact = preview_latents(pipe, latents, mode="vae")
    approx = preview_latents(pipe, latents, mode="approx")
    assert exact.shape == approx.shape == (64, 64, 3)


def test_cancel_stops_the_pipeline_early(monkeypatch):
    backend, pipe = tiny("tiny-sd21")
    calls = count_denoiser_calls(monkeypatch, pipe.unet)
    token = CancelToken()
    steps = []

    def on_step(step, total):
        steps.append(step)
        if step == 2:
            token.cancel()

    with pytest.raises(GenerationCancelled, match="after 2 of 6 steps"):
        generate(request(steps=6), backend=backend, pipe=pipe, init_image=TILE, on_step=on_step, cancel=token)
    assert steps == [1, 2]
    assert len(calls) == 2, "the UNet must not run after the cancel"
    # The pipeline is usable again: diffusers resets its interrupt flag on the next call.
    calls.clear()
    generate(request(steps=3), backend=backend, pipe=pipe, init_image=TILE)
    assert len(calls) == 3


def test_cancel_stops_sd3_early(monkeypatch):
    backend, pipe = tiny("tiny-sd3")
    calls = count_denoiser_calls(monkeypatch, pipe.transformer)
    token = CancelToken()
    with pytest.raises(GenerationCancelled):
        generate(request("tiny-sd3", mode="txt2img", steps=8), backend=backend, pipe=pipe,
                 on_step=lambda s, t: token.cancel() if s == 1 else None, cancel=token)
    assert len(calls) == 1


def test_a_cancel_before_the_start_runs_nothing(monkeypatch):
    backend, pipe = tiny("tiny-sd21")
    calls = count_denoiser_calls(monkeypatch, pipe.unet)
    token = CancelToken()
    token.cancel()
    with pytest.raises(GenerationCancelled, match="before it started"):
        generate(request(), backend=backend, pipe=pipe, init_image=TILE, cancel=token)
    assert calls == []


def test_step_callback_works_as_a_plain_diffusers_callback():
    _, pipe = tiny("tiny-sd21")
    p = pipe.for_mode("txt2img")
    callback = StepCallback()
    p("a town", num_inference_steps=3, height=64, width=64, output_type="np", callback_on_step_end=callback,
      callback_on_step_end_tensor_inputs=callback.tensor_inputs, generator=torch.Generator().manual_seed(0))
    assert callback.steps_run == 3 and callback.total == 3 and not callback.interrupted
