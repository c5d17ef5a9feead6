"""SD 2.1, SDXL Turbo and SD3 backends on tiny RANDOM pipelines: saved with save_pretrained,
reloaded through `backend.load(folder)`, run at 64 px with 2 steps on the CPU."""

import numpy as np
import pytest

from core.errors import ModelLoadError, RequestError
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TINY = ("tiny-sd21", "tiny-sdxl-turbo", "tiny-sd3")


@pytest.fixture(scope="module")
def tile():
    """A 64x64 RGB 'pre-event tile' with structure (uint8)."""
    y, x = np.mgrid[0:64, 0:64] / 63
    img = np.stack([x, y, (x * y) ** 0.5], -1)
    return (img * 255).astype(np.uint8)


def tiny(backbone_id, **load_options):
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe(backbone_id, **load_options)


def request_for(backbone_id, **fields):
    from core.backends import get

    defaults = get(backbone_id).spec.defaults
    base = dict(backbone=backbone_id, prompt="a satellite image of a flooded town", steps=2,
                guidance=defaults["guidance"], strength=1.0, size=64, seed=0)
    base.update(fields)
    return GenerationRequest(**base)


def run(backbone_id, tile, **fields):
    from core.generation import generate

    backend, pipe = tiny(backbone_id)
    req = request_for(backbone_id, **fields)
    return generate(req, backend=backend, pipe=pipe, init_image=tile if req.mode == "img2img" else None)


# -- registry -----------------------------------------------------------------------------
def test_real_backbones_are_registered_with_the_course_defaults():
    from core.backends import get

    sd21, turbo, sd3 = get("sd21").spec, get("sdxl-turbo").spec, get("sd3").spec
    assert sd21.hub_id == "stabilityai/stable-diffusion-2-1"
    assert (sd21.defaults["strength"], sd21.defaults["guidance"], sd21.defaults["size"]) == (0.8, 7.5, 512)
    assert sd21.defaults["scheduler"] == "ddim" and sd21.tokenizers == ("clip",)
    assert turbo.hub_id == "stabilityai/sdxl-turbo" and turbo.dtype == "fp16"
    assert turbo.defaults["guidance"] == 0.0 and 1 <= turbo.defaults["steps"] <= 4
    assert sd3.hub_id == "stabilityai/stable-diffusion-3-medium-diffusers"
    assert sd3.defaults["strength"] == 0.6 and sd3.tokenizers == ("clip", "clip2", "t5")
    assert sd3.attention == "joint"
    for spec in (sd21, turbo, sd3):
        assert set(spec.modes) == {"img2img", "txt2img"} and not spec.test_only


def test_tiny_backbones_register_only_on_import_and_stay_hidden():
    import core.backends as registry

    assert "core.backends.tiny" not in registry.BACKEND_MODULES
    import core.backends.tiny  # noqa: F401

    shown = {s.id for s in registry.available()}
    everything = {s.id for s in registry.available(include_test_only=True)}
    assert not shown & set(TINY)
    assert set(TINY) <= everything
    assert all(registry.get(i).spec.test_only and registry.get(i).spec.hub_id is None for i in TINY)


# -- generation per backbone --------------------------------------------------------------
@pytest.mark.parametrize("backbone_id", TINY)
@pytest.mark.parametrize("mode", ["img2img", "txt2img"])
def test_generates_64px_images_reproducibly(backbone_id, mode, tile):
    first = run(backbone_id, tile, mode=mode, seed=7)
    again = run(backbone_id, tile, mode=mode, seed=7)
    other = run(backbone_id, tile, mode=mode, seed=8)
    img = first.images[0]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(img, again.images[0]), "same seed must give the same image"
    assert not np.array_equal(img, other.images[0]), "different seeds must give different images"
    assert first.record["mode"] == mode and first.seeds == [7]


@pytest.mark.parametrize("backbone_id", TINY)
def test_image_i_of_a_batch_equals_a_single_run_with_seed_plus_i(backbone_id, tile):
    batch = run(backbone_id, tile, seed=3, num_images=2)
    single = run(backbone_id, tile, seed=4)
    assert batch.seeds == [3, 4]
    assert not np.array_equal(batch.images[0], batch.images[1])
    # Batched and single convolutions may round differently on the CPU: allow 1/255.
    assert np.abs(batch.images[1].astype(int) - single.images[0].astype(int)).max() <= 1


def test_sd21_loads_with_ddim_and_shared_components():
    backend, pipe = tiny("tiny-sd21")
    i2i, t2i = pipe.for_mode("img2img"), pipe.for_mode("txt2img")
    assert type(i2i).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(t2i).__name__ == "StableDiffusionPipeline"
    assert i2i.unet is t2i.unet and i2i.vae is t2i.vae and i2i.text_encoder is t2i.text_encoder
    assert type(pipe.default_scheduler).__name__ == "DDIMScheduler"
    assert pipe.default_scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet is t2i.unet  # attribute access falls through to the pipelines


def test_scheduler_can_be_chosen_per_request_and_is_recorded(tile):
    euler = run("tiny-sd21", tile, scheduler="euler")
    default = run("tiny-sd21", tile)
    assert euler.record["scheduler"]["class"] == "EulerDiscreteScheduler"
    assert default.record["scheduler"]["class"] == "DDIMScheduler"
    assert euler.record["scheduler"]["config"]["prediction_type"] == "v_prediction"
    with pytest.raises(RequestError, match="flow_euler"):
        run("tiny-sd3", tile, scheduler="ddim")


# -- SDXL Turbo ---------------------------------------------------------------------------
def test_sdxl_turbo_refuses_img2img_that_would_run_no_step(tile):
    with pytest.raises(RequestError) as err:
        run("tiny-sdxl-turbo", tile, steps=2, strength=0.4)
    message = str(err.value)
    assert "2 steps at strength 0.4 runs 0 denoising steps" in message
    assert "strength ≥ 0.5" in message and "3 steps" in message


def test_sdxl_turbo_runs_at_the_edge_and_refuses_more_than_four_steps(tile):
    result = run("tiny-sdxl-turbo", tile, steps=2, strength=0.5)
    assert result.record["denoising_steps"] == 1
    with pytest.raises(RequestError, match="1–4 steps"):
        run("tiny-sdxl-turbo", tile, steps=5, strength=0.5)


def test_sdxl_pipelines_share_both_text_encoders():
    _, pipe = tiny("tiny-sdxl-turbo")
    i2i, t2i = pipe.for_mode("img2img"), pipe.for_mode("txt2img")
    assert type(i2i).__name__ == "StableDiffusionXLImg2ImgPipeline"
    assert i2i.text_encoder_2 is t2i.text_encoder_2 and i2i.unet is t2i.unet
    assert type(pipe.default_scheduler).__name__ == "EulerAncestralDiscreteScheduler"


# -- SD3 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["img2img", "txt2img"])
def test_sd3_outputs_the_requested_size(mode):
    tile96 = (np.random.default_rng(1).random((100, 120, 3)) * 255).astype(np.uint8)
    result = run("tiny-sd3", tile96, mode=mode, size=96)
    assert result.images[0].shape == (96, 96, 3)


def test_sd3_sizes_must_be_multiples_of_16(tile):
    with pytest.raises(RequestError, match="multiple of 16"):
        run("tiny-sd3", tile, size=72)


def test_sd3_drop_t5_at_run_time_and_at_load_time(tile):
    with_t5 = run("tiny-sd3", tile, seed=5)
    dropped = run("tiny-sd3", tile, seed=5, options={"drop_t5": True})
    assert not np.array_equal(with_t5.images[0], dropped.images[0]), "T5 must matter when present"
    assert dropped.record["token_counts"]["t5"]["used"] is False
    assert with_t5.record["token_counts"]["t5"]["used"] is True

    _, full = tiny("tiny-sd3")
    assert full.for_mode("img2img").text_encoder_3 is not None, "T5 is put back after a drop_t5 run"

    from core.generation import generate

    backend, light = tiny("tiny-sd3", drop_t5=True)
    assert backend.load_kwargs(request_for("tiny-sd3", options={"drop_t5": True})) == {"drop_t5": True}
    assert light.for_mode("img2img").text_encoder_3 is None and light.tokenizer_3 is None
    req = request_for("tiny-sd3", seed=5, options={"drop_t5": True})
    light_result = generate(req, backend=backend, pipe=light, init_image=tile)
    assert np.array_equal(light_result.images[0], dropped.images[0])
    with pytest.raises(RequestError, match="without T5"):
        generate(request_for("tiny-sd3"), backend=backend, pipe=light, init_image=tile)


def test_sd3_without_t5_files_needs_drop_t5(tmp_path):
    import shutil

    from core.backends import get
    from core.errors import ModelNotAvailable
    from core.backends.tiny_models.sd import tiny_random_sd3_folder

    folder = tmp_path / "sd3-no-t5"
    shutil.copytree(tiny_random_sd3_folder(), folder)
    shutil.rmtree(folder / "text_encoder_3")
    backend = get("tiny-sd3")
    with pytest.raises(ModelNotAvailable, match="text_encoder_3"):
        backend.load(folder, device="cpu")
    pipe = backend.load(folder, device="cpu", drop_t5=True)
    assert pipe.text_encoder_3 is None


def test_a_broken_folder_is_a_load_error(tmp_path):
    from core.backends import get

    (tmp_path / "model_index.json").write_text("{}")  # complete by its own account, yet unloadable
    with pytest.raises(ModelLoadError, match="Could not load"):
        get("tiny-sd21").load(tmp_path, device="cpu")


# -- requests refused before any work -------------------------------------------------------
@pytest.mark.parametrize("fields, message", [
    (dict(guidance=float("nan")), "Guidance must be a number"),
    (dict(steps=1001), "at most 1000"),
    (dict(metadata=(1.0,) * 7), "not conditioned on metadata"),
    (dict(control_scale=0.5), "no control scale"),
    (dict(image_guidance=2.0), "no image guidance"),
])
def test_what_a_backbone_cannot_use_is_refused_before_loading(fields, message, tile):
    from core.backends import get

    request = request_for("sd21", **fields)
    with pytest.raises(RequestError, match=message):
        get("sd21").validate(request, init_image=tile)


def test_the_cli_leaves_the_mode_to_the_backbone():
    from core.cli import build_parser

    assert build_parser().parse_args(["generate", "--data", "x"]).mode is None
