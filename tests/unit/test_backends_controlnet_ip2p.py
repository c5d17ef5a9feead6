"""ControlNet (on SD 2.1) and InstructPix2Pix backends on tiny RANDOM models: saved with
save_pretrained, reloaded through `backend.load(folder)`, run at 64 px with 2 steps on
the CPU. The images are noise; the tests check plumbing, seeding and that the condition
image and the image guidance reach the model."""

import json
import shutil

import numpy as np
import pytest

from core.errors import GenerationCancelled, ModelLoadError, ModelNotAvailable, RequestError
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TINY = ("tiny-controlnet", "tiny-instruct-pix2pix")


# -- fixtures -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{backbone id: folder} of the tiny random ControlNet (with its SD base beside it)
    and InstructPix2Pix, written once per session."""
    from core.backends.tiny_models.controlnet import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-controlnet-ip2p"))


@pytest.fixture(scope="session")
def backends():
    from core.backends.tiny_models.controlnet import register_tiny

    controlnet, ip2p = register_tiny()
    return {"tiny-controlnet": controlnet, "tiny-instruct-pix2pix": ip2p}


@pytest.fixture(scope="session")
def loaded(tiny_models, backends):
    """{backbone id: pipeline} loaded through each backend's real `load`."""
    return {i: backends[i].load(tiny_models[i], device="cpu", dtype=None) for i in TINY}


def _pattern(kind: str) -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64] / 63
    if kind == "gradient":
        img = np.stack([x, y, (x * y) ** 0.5], -1)
    elif kind == "stripes":
        img = np.stack([(np.sin(x * 20) > 0)] * 3, -1).astype(float)
    else:  # "dark"
        img = np.full((64, 64, 3), 0.1)
    return (img * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tile():
    return _pattern("gradient")


def make_request(backbone_id, **fields):
    base = dict(backbone=backbone_id, prompt="a satellite image after a flood", steps=2, guidance=7.5,
                strength=1.0, size=64, seed=0)
    base.update(fields)
    return GenerationRequest(**base)


def gen(loaded, backends, backbone_id, init, **fields):
    from core.generation import generate

    control = fields.pop("control_image", None)
    return generate(make_request(backbone_id, **fields), backend=backends[backbone_id],
                    pipe=loaded[backbone_id], init_image=init, control_image=control)


# -- registry and specs -------------------------------------------------------------------
def test_specs_describe_what_each_backbone_needs():
    from core.backends import get

    cn, ip = get("controlnet").spec, get("instruct-pix2pix").spec
    assert cn.hub_id is None and cn.needs_control_image and cn.modes == ("img2img",)
    assert (cn.defaults["size"], cn.defaults["steps"], cn.defaults["guidance"], cn.defaults["control_scale"]) \
        == (512, 20, 7.5, 1.0)
    assert "control_scale" in cn.control_names and "train_controlnet.py" in cn.notes
    assert ip.hub_id == "timbrooks/instruct-pix2pix" and ip.modes == ("img2img",)
    assert ip.defaults["image_guidance"] == 1.5 and "image_guidance" in ip.control_names
    assert "instruction" in ip.notes
    assert not cn.test_only and not ip.test_only


def test_tiny_variants_are_hidden_unless_asked_for(backends):
    from core.backends import available, get

    assert not {s.id for s in available()} & set(TINY)
    assert set(TINY) <= {s.id for s in available(include_test_only=True)}
    for i in TINY:
        assert get(i) is backends[i] and get(i).spec.test_only and get(i).spec.hub_id is None
    from core.backends.tiny_models.controlnet import register_tiny

    assert register_tiny() == (backends["tiny-controlnet"], backends["tiny-instruct-pix2pix"])  # idempotent


# -- ControlNet ---------------------------------------------------------------------------
def test_controlnet_loads_base_from_hint_and_generates_at_request_size(loaded, backends, tiny_models, tile):
    pipe = loaded["tiny-controlnet"]
    assert pipe.load_options["base"] == str((tiny_models["tiny-controlnet"].parent / "tiny-sd21").resolve())
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    result = gen(loaded, backends, "tiny-controlnet", tile)
    assert result.images[0].shape == (64, 64, 3) and result.images[0].dtype == np.uint8
    assert result.record["pipeline"] == "StableDiffusionControlNetPipeline"
    assert result.record["denoising_steps"] == 2


def test_controlnet_same_seed_same_image_other_seed_other_image(loaded, backends, tile):
    a = gen(loaded, backends, "tiny-controlnet", tile, seed=3).images[0]
    b = gen(loaded, backends, "tiny-controlnet", tile, seed=3).images[0]
    c = gen(loaded, backends, "tiny-controlnet", tile, seed=4).images[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_the_condition_image_changes_the_output(loaded, backends, tile):
    a = gen(loaded, backends, "tiny-controlnet", tile).images[0].astype(int)
    b = gen(loaded, backends, "tiny-controlnet", _pattern("stripes")).images[0].astype(int)
    # an explicit control image wins over the pre-event tile as condition
    c = gen(loaded, backends, "tiny-controlnet", tile, control_image=_pattern("stripes")).images[0].astype(int)
    assert np.abs(a - b).mean() > 1.0
    assert np.array_equal(b, c)
    off = gen(loaded, backends, "tiny-controlnet", tile, control_scale=0.0).images[0].astype(int)
    assert np.abs(a - off).mean() > 1.0


def test_controlnet_strength_below_one_starts_from_the_tile(loaded, backends, tile):
    full = gen(loaded, backends, "tiny-controlnet", tile, steps=4).images[0]
    sdedit = gen(loaded, backends, "tiny-controlnet", tile, steps=4, strength=0.5)
    assert sdedit.record["denoising_steps"] == 2
    assert not np.array_equal(full, sdedit.images[0])


def test_controlnet_long_prompt_is_encoded_in_windows(loaded, backends, tile):
    result = gen(loaded, backends, "tiny-controlnet", tile, prompt="flooded streets and houses " * 20)
    assert result.record["prompt_handling"]["clip_windows"] is True
    assert result.images[0].shape == (64, 64, 3)


def test_controlnet_base_option_overrides_the_hint(backends, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    backend = backends["tiny-controlnet"]
    folder = tmp_path / "cn"
    shutil.copytree(tiny_models["tiny-controlnet"] / "controlnet", folder)  # ControlNet at the top level
    assert backend.load_kwargs(make_request("tiny-controlnet", options={"base": "x/y"})) == {"base": "x/y"}
    with pytest.raises(ModelNotAvailable, match="base model"):  # no hint: the SD 2.1 default, not cached
        backend.load(folder, device="cpu", dtype=None)
    base = tiny_models["tiny-controlnet"].parent / "tiny-sd21"
    pipe = backend.load(folder, device="cpu", dtype=None, base=str(base))
    assert pipe.load_options["base"] == str(base)


def test_controlnet_loads_from_the_hub_cache(backends, tiny_models, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    repo, commit = cache / "models--someone--xbd-controlnet", "0123456789abcdef" * 2 + "01234567"
    shutil.copytree(tiny_models["tiny-controlnet"] / "controlnet", repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    base = tiny_models["tiny-controlnet"].parent / "tiny-sd21"
    pipe = backends["tiny-controlnet"].load("someone/xbd-controlnet", device="cpu", dtype=None, base=str(base))
    assert pipe.source.kind == "hub" and pipe.controlnet is not None
    with pytest.raises(ModelNotAvailable, match="not in the Hugging Face cache"):
        backends["tiny-controlnet"].load("someone/other-controlnet", device="cpu", dtype=None, base=str(base))


def test_controlnet_folder_layouts_and_clear_errors(tiny_models, backends, tmp_path):
    from core.backends.controlnet import find_controlnet

    backend = backends["tiny-controlnet"]
    with pytest.raises(ModelNotAvailable, match="does not exist.*train_controlnet.py"):
        backend.load(tmp_path / "nowhere", device="cpu", dtype=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailable, match="holds no ControlNet.*train_controlnet.py"):
        backend.load(empty, device="cpu", dtype=None)
    # a training run stopped early: the newest checkpoint wins
    run = tmp_path / "run"
    for step in (500, 1500, 1000):
        shutil.copytree(tiny_models["tiny-controlnet"] / "controlnet", run / f"checkpoint-{step}" / "controlnet")
    assert find_controlnet(run) == run / "checkpoint-1500" / "controlnet"
    # a DiffusionSat ControlNet is sent to its own backbone
    sat = tmp_path / "sat" / "controlnet"
    shutil.copytree(tiny_models["tiny-controlnet"] / "controlnet", sat)
    config = json.loads((sat / "config.json").read_text())
    (sat / "config.json").write_text(json.dumps({**config, "use_metadata": True}))
    with pytest.raises(ModelNotAvailable, match="diffusionsat-controlnet"):
        find_controlnet(sat.parent)


def test_controlnet_refuses_what_it_cannot_do(loaded, backends, tile):
    from PIL import Image

    backend, pipe = backends["tiny-controlnet"], loaded["tiny-controlnet"]
    gens, pre = [torch.Generator().manual_seed(0)], Image.fromarray(tile)
    for fields, match in [({"control_scale": -1.0}, "scale"), ({"options": {"drop_t5": True}}, "drop_t5"),
                          ({"mode": "txt2img"}, "cannot do txt2img"), ({"size": 60}, "multiple of 8"),
                          ({"scheduler": "flow_euler"}, "scheduler")]:
        with pytest.raises(RequestError, match=match):
            backend.run(pipe, make_request("tiny-controlnet", **fields), init_image=pre, control_image=None,
                        generators=gens, callback=None)
    with pytest.raises(RequestError, match="pre-event tile"):
        backend.run(pipe, make_request("tiny-controlnet"), init_image=None, control_image=None,
                    generators=gens, callback=None)


# -- InstructPix2Pix ----------------------------------------------------------------------
def test_ip2p_seeds_and_image_guidance(loaded, backends, tile):
    a = gen(loaded, backends, "tiny-instruct-pix2pix", tile, prompt="flood the streets")
    b = gen(loaded, backends, "tiny-instruct-pix2pix", tile, prompt="flood the streets")
    c = gen(loaded, backends, "tiny-instruct-pix2pix", tile, prompt="flood the streets", seed=1)
    d = gen(loaded, backends, "tiny-instruct-pix2pix", tile, prompt="flood the streets", image_guidance=3.0)
    assert a.images[0].shape == (64, 64, 3)
    assert a.record["pipeline"] == "StableDiffusionInstructPix2PixPipeline"
    assert np.array_equal(a.images[0], b.images[0])
    assert not np.array_equal(a.images[0], c.images[0])
    assert not np.array_equal(a.images[0], d.images[0])
    other_tile = gen(loaded, backends, "tiny-instruct-pix2pix", _pattern("stripes"), prompt="flood the streets")
    assert not np.array_equal(a.images[0], other_tile.images[0])


def test_ip2p_long_instruction_and_validation(loaded, backends, tile):
    long = gen(loaded, backends, "tiny-instruct-pix2pix", tile, prompt="flood every street " * 25)
    assert long.record["prompt_handling"]["clip_windows"] is True
    for fields, match in [({"strength": 0.8}, "strength"), ({"image_guidance": 0.5}, "image_guidance"),
                          ({"options": {"base": "x"}}, "option")]:
        with pytest.raises(RequestError, match=match):
            gen(loaded, backends, "tiny-instruct-pix2pix", tile, **fields)
    with pytest.raises(RequestError, match="no control image"):
        gen(loaded, backends, "tiny-instruct-pix2pix", tile, control_image=tile)


def test_ip2p_stops_when_cancelled(loaded, backends, tile):
    from core.generation import CancelToken, generate

    token, steps = CancelToken(), []

    def on_step(step, total, **_):
        steps.append(step)
        token.cancel()

    with pytest.raises(GenerationCancelled):
        generate(make_request("tiny-instruct-pix2pix", steps=4), backend=backends["tiny-instruct-pix2pix"],
                 pipe=loaded["tiny-instruct-pix2pix"], init_image=tile, on_step=on_step, cancel=token)
    assert steps == [1]
    # the pipeline still works afterwards
    assert gen(loaded, backends, "tiny-instruct-pix2pix", tile).images[0].shape == (64, 64, 3)


def test_ip2p_refuses_a_plain_sd_folder_and_missing_sources(backends, tiny_models, tmp_path):
    backend = backends["tiny-instruct-pix2pix"]
    with pytest.raises(ModelLoadError, match="8"):
        backend.load(tiny_models["tiny-controlnet"].parent / "tiny-sd21", device="cpu", dtype=None)
    with pytest.raises(ModelNotAvailable, match="does not exist"):
        backend.load(tmp_path / "nowhere", device="cpu", dtype=None)


def test_the_run_record_names_the_pipeline_that_ran(loaded, backends):
    from core.generation.generate import build_record

    backend, pipe = backends["tiny-controlnet"], loaded["tiny-controlnet"]
    for strength, name in ((1.0, "StableDiffusionControlNetPipeline"),
                           (0.5, "StableDiffusionControlNetImg2ImgPipeline")):
        request = make_request("tiny-controlnet", strength=strength)
        record = build_record(request, backend=backend, pipe=pipe, seeds=[0], callback=None, seconds=0.0)
        assert record["pipeline"] == name
