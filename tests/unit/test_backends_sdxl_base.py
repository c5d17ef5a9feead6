"""SDXL base 1.0: registered from its one file, with the course's img2img default, and
generating through the shared SDXL machinery on a tiny RANDOM SDXL-layout pipeline."""

from dataclasses import replace

import numpy as np
import pytest

from core.errors import ModelNotAvailable
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def test_sdxl_base_is_registered_with_the_course_defaults():
    from core.backends import available, get

    spec = get("sdxl-base").spec
    assert spec.hub_id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert spec.defaults["strength"] == 0.3 and spec.defaults["mode"] == "img2img"
    assert spec.tokenizers == ("clip", "clip2") and spec.dtype == "fp16"
    assert {"steps", "guidance", "strength", "negative_prompt", "scheduler"} <= set(spec.control_names)
    assert "sdxl-base" in [s.id for s in available()]


@pytest.fixture(scope="module")
def tiny_sdxl_base():
    """The real SDXL base backend under a test spec, loaded from a tiny random SDXL folder."""
    from core.backends.sdxl_base import SDXLBaseBackend
    from core.backends.tiny_models.sd import tiny_random_sdxl_turbo_folder

    real = SDXLBaseBackend.default_spec()
    spec = replace(real, id="tiny-sdxl-base", hub_id=None, test_only=True, dtype="fp32")
    backend = SDXLBaseBackend(spec)
    return backend, backend.load(tiny_random_sdxl_turbo_folder(), device="cpu")


def _request(**fields):
    base = dict(backbone="tiny-sdxl-base", prompt="a satellite image after a flood", steps=10, guidance=5.0,
                strength=0.3, size=64, seed=1)
    return GenerationRequest(**{**base, **fields})


def test_img2img_at_the_default_strength_runs_three_of_ten_steps_reproducibly(tiny_sdxl_base):
    from core.generation import generate

    backend, pipe = tiny_sdxl_base
    tile = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    first = generate(_request(), backend=backend, pipe=pipe, init_image=tile)
    again = generate(_request(), backend=backend, pipe=pipe, init_image=tile)
    assert first.images[0].shape == (64, 64, 3)
    assert np.array_equal(first.images[0], again.images[0])
    assert first.record["denoising_steps"] == 3
    assert first.record["pipeline"] == "StableDiffusionXLImg2ImgPipeline"


def test_long_prompts_go_through_both_encoders_in_windows(tiny_sdxl_base):
    from core.generation import generate

    backend, pipe = tiny_sdxl_base
    long = "flooded streets and damaged roofs near the river " * 12
    result = generate(_request(prompt=long, mode="txt2img", steps=2), backend=backend, pipe=pipe)
    handling = result.record["prompt_handling"]
    assert handling["clip_windows"] is True and handling["pooled_from_first_window"] is True


def test_not_downloaded_says_which_hub_id_to_get():
    from core.backends import get

    with pytest.raises(ModelNotAvailable, match="stabilityai/stable-diffusion-xl-base-1.0"):
        get("sdxl-base").load("stabilityai/stable-diffusion-xl-base-1.0", device="cpu")
