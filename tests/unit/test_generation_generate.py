"""generate(): tile resizing, validation before any work, and a record that reproduces."""

import json

import numpy as np
import pytest

from core.errors import RequestError
from core.generation import generate
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def tiny(backbone_id):
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe(backbone_id)


def request(backbone_id="tiny-sd21", **fields):
    base = dict(backbone=backbone_id, prompt="a satellite image after being affected by flooding", steps=2,
                strength=1.0, size=64, guidance=3.0, seed=11)
    base.update(fields)
    return GenerationRequest(**base)


def test_the_pre_event_tile_is_resized_to_the_request_size():
    backend, pipe = tiny("tiny-sd21")
    tile = (np.random.default_rng(5).random((100, 80, 3)) * 255).astype(np.uint8)
    result = generate(request(size=48), backend=backend, pipe=pipe, init_image=tile)
    assert result.images[0].shape == (48, 48, 3) and result.images[0].dtype == np.uint8
    assert result.record["init_image_size"] == [80, 100]


def test_the_record_holds_everything_needed_to_reproduce():
    backend, pipe = tiny("tiny-sd21")
    tile = (np.random.default_rng(6).random((64, 64, 3)) * 255).astype(np.uint8)
    req = request(negative_prompt="blurry", num_images=2)
    result = generate(req, backend=backend, pipe=pipe, init_image=tile)
    rec = result.record
    json.dumps(rec)  # JSON-ready
    assert rec["backbone"] == "tiny-sd21" and rec["mode"] == "img2img"
    assert rec["source"]["kind"] == "folder" and rec["source"]["path_or_id"].endswith("tiny-sd21")
    assert rec["scheduler"]["class"] == "DDIMScheduler"
    assert rec["scheduler"]["config"]["prediction_type"] == "v_prediction"
    assert (rec["steps"], rec["guidance"], rec["strength"], rec["size"]) == (2, 3.0, 1.0, 64)
    assert rec["seeds"] == [11, 12] == result.seeds
    assert rec["prompt"] == req.prompt and rec["negative_prompt"] == "blurry"
    assert rec["options"] == {} and rec["token_counts"]["clip"]["prompt_tokens"] > 0
    assert rec["pipeline"] == "StableDiffusionImg2ImgPipeline" and rec["denoising_steps"] == 2
    assert "versions" not in rec  # the run record keeps them, once (core.io.library_versions)
    assert rec["device"] == "cpu" and rec["dtype"] == "float32"
    assert result.seconds > 0 and len(result.images) == 2

    again = generate(GenerationRequest(**{k: rec[k] for k in ("prompt", "negative_prompt", "mode", "steps", "guidance",
                                                             "strength", "size", "num_images")},
                                       backbone=rec["backbone"], seed=rec["seeds"][0]),
                     backend=backend, pipe=pipe, init_image=tile)
    assert all(np.array_equal(a, b) for a, b in zip(again.images, result.images))


def test_txt2img_ignores_the_tile_and_records_no_strength():
    backend, pipe = tiny("tiny-sd21")
    result = generate(request(mode="txt2img"), backend=backend, pipe=pipe, init_image=None)
    assert result.record["strength"] is None and result.record["pipeline"] == "StableDiffusionPipeline"


@pytest.mark.parametrize("fields, message", [
    (dict(mode="inpaint"), "Unknown mode"),
    (dict(size=60), "multiple of 8"),
    (dict(size=0), "multiple of 8"),
    (dict(steps=0), "at least 1"),
    (dict(strength=0.0), r"\(0, 1\]"),
    (dict(strength=1.5), r"\(0, 1\]"),
    (dict(steps=3, strength=0.2), "0 denoising steps"),
    (dict(guidance=-1.0), "Guidance"),
    (dict(scheduler="lms"), "cannot use scheduler"),
    (dict(options={"drop_t5": True}), "does not understand"),
    (dict(backbone="tiny-sd3"), "request is for .tiny-sd3."),
])
def test_requests_the_backbone_cannot_run_are_refused_before_any_work(fields, message, monkeypatch):
    backend, pipe = tiny("tiny-sd21")
    calls = []
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: calls.append(1))
    tile = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(RequestError, match=message):
        generate(request(**fields), backend=backend, pipe=pipe, init_image=tile)
    assert calls == []


def test_img2img_without_a_tile_is_refused():
    backend, pipe = tiny("tiny-sd21")
    with pytest.raises(RequestError, match="pre-event tile"):
        generate(request(), backend=backend, pipe=pipe, init_image=None)
    with pytest.raises(RequestError, match="control image"):
        generate(request(), backend=backend, pipe=pipe, init_image=np.zeros((64, 64, 3), np.uint8),
                 control_image=np.zeros((64, 64, 3), np.uint8))


