"""DiffusionSat on current diffusers: published checkpoints load unchanged, metadata reaches
the UNet/ControlNet where and how the paper puts it, and the registered backbones load
folders and generate. Tiny random models (tests/tiny/diffusionsat.py), 64 px, 2 steps."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from core.backends import get
from core.backends.diffusionsat import check_metadata
from core.backends.diffusionsat_models import sat_controlnet_class, sat_unet_class
from core.backends.diffusionsat_pipeline import pipeline_classes, resolve_source
from core.data.metadata import NO_METADATA, decode_metadata
from core.errors import ModelLoadError, ModelNotAvailable, RequestError
from core.types import GenerationRequest
from tests.tiny import diffusionsat as tiny

# The spec's example: lon 153.32, lat -27.86, gsd 0.411 m, 2017-02-11.
EXAMPLE = (925.8798, 345.2111, 411.4541, 0.0, 308.3333, 166.6667, 354.8387)
PROMPT = "a satellite image after being affected by a flooding natural disaster"

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A pipeline folder (published UNet layout) with a ControlNet beside the base."""
    root = tmp_path_factory.mktemp("diffusionsat")
    pipe_dir = tiny.write_pipeline_folder(root / "pipeline")
    tiny.write_controlnet(pipe_dir, pipe_dir / "unet")
    return {"root": root, "pipeline": pipe_dir}


@pytest.fixture(scope="module")
def loaded(folders):
    backend = get("diffusionsat")
    return backend, backend.load(folders["pipeline"], device="cpu", dtype=None)


@pytest.fixture(scope="module")
def unet(folders):
    return sat_unet_class().from_pretrained(folders["pipeline"] / "unet").eval()


def _request(**kw) -> GenerationRequest:
    base = dict(backbone="diffusionsat", prompt=PROMPT, mode="txt2img", steps=2, size=64, guidance=7.5,
                metadata=EXAMPLE)
    base.update(kw)
    return GenerationRequest(**base)


def _gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def _capture(module, name="metadata"):
    """Record the `name` argument that every forward call of `module` received."""
    seen = []

    def hook(mod, args, kwargs, output):
        seen.append(kwargs.get(name).clone())
    return seen, module.register_forward_hook(hook, with_kwargs=True)


# -- checkpoints ---------------------------------------------------------------------------
def test_published_unet_checkpoint_loads_with_every_weight_matched(tmp_path):
    state = tiny.write_published_unet(tmp_path / "unet")
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert (config["_class_name"], config["_diffusers_version"]) == ("SatUNet", "0.17.0.dev0")
    assert any(k.startswith("metadata_embedding.6.linear_2") for k in state)

    model, info = sat_unet_class().from_pretrained(tmp_path / "unet", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == [] and info["mismatched_keys"] == []
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    # The backbone keys were not dropped by the signature trap, and the new fields are registered.
    assert model.config.cross_attention_dim == tiny.CROSS_DIM and model.config.upcast_attention is True
    assert (model.config.use_metadata, model.config.num_metadata) == (True, 7)
    # Saved again and reloaded: the same weights and the new fields kept.
    model.save_pretrained(tmp_path / "again")
    again = sat_unet_class().from_pretrained(tmp_path / "again")
    assert again.config.num_metadata == 7 and torch.equal(again.state_dict()["metadata_embedding.3.linear_1.weight"],
                                                          state["metadata_embedding.3.linear_1.weight"])


def test_a_unet_without_metadata_weights_is_refused(tmp_path):
    from diffusers import UNet2DConditionModel

    from core.backends.diffusionsat_pipeline import load_model_strict

    backbone = {k: v for k, v in tiny.unet_config().items() if k not in ("use_metadata", "num_metadata")}
    UNet2DConditionModel(**backbone).save_pretrained(tmp_path / "plain")
    with pytest.raises(ModelLoadError, match="metadata_embedding"):
        load_model_strict(sat_unet_class(), str(tmp_path / "plain"), None, torch.float32, "DiffusionSat UNet")


def test_published_controlnet_config_loads_and_conditioning_scale_sets_the_strides(folders, tmp_path):
    src = folders["pipeline"] / "controlnet"
    old = tmp_path / "controlnet"
    shutil.copytree(src, old)
    config = json.loads((old / "config.json").read_text())
    config.pop("conditioning_channels")
    config.update(_class_name="ControlNetModel", _diffusers_version="0.17.0.dev0", conditioning_in_channels=3,
                  conditioning_scale=1)
    (old / "config.json").write_text(json.dumps(config))
    model, info = sat_controlnet_class().from_pretrained(old, output_loading_info=True)
    assert not any(info.values())
    assert model.config.conditioning_channels == 3 and model.config.use_metadata is True

    half = sat_controlnet_class().from_config({**dict(model.config), "conditioning_scale": 2})
    strides = [m.stride[0] for i, m in enumerate(half.controlnet_cond_embedding.blocks) if i % 2]
    assert strides == [2, 2, 1]  # a condition image half the output size still lands on the latent grid


# -- metadata inside the models ------------------------------------------------------------
def test_spec_normalisation_example_round_trips():
    d = decode_metadata(EXAMPLE)
    assert (round(d["lon"], 2), round(d["lat"], 2), round(d["gsd"], 3), d["year"], d["month"], d["day"]) == \
        (153.32, -27.86, 0.411, 2017, 2, 11)


def test_metadata_changes_the_unet_output(unet):
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 77, tiny.CROSS_DIM, generator=gen)
    md = torch.tensor([EXAMPLE, EXAMPLE])
    with torch.no_grad():
        with_md = unet(sample, 500, text, metadata=md).sample
        zeros = unet(sample, 500, text, metadata=torch.zeros(2, 7)).sample
        default = unet(sample, 500, text).sample
        year_only = unet(sample, 500, text, metadata=md * torch.tensor([1, 1, 1, 1, 0, 1, 1])).sample
    assert not torch.allclose(with_md, zeros)
    assert not torch.allclose(with_md, year_only)
    assert torch.equal(default, zeros)  # no metadata means all seven values 0


def test_metadata_is_projected_in_float32_then_cast(unet):
    model = sat_unet_class().from_config(unet.config)
    model.load_state_dict(unet.state_dict())
    model = model.half()
    dtypes = []
    handle = model.time_proj.register_forward_hook(lambda m, args, out: dtypes.append(out.dtype))
    md = torch.tensor([EXAMPLE])
    try:
        terms = model.metadata_terms(md, 1, "cpu")
    finally:
        handle.remove()
    assert dtypes == [torch.float32] * 7 and all(t.dtype == torch.float16 for t in terms)
    # Exactly the MLP of the float32 projection cast to float16 ...
    expected = [mlp(model.time_proj(md[:, i].float()).half()) for i, mlp in enumerate(model.metadata_embedding)]
    assert all(torch.equal(t, e) for t, e in zip(terms, expected))
    # ... which differs from projecting values already rounded to float16 (925.8798 -> 926.0).
    rounded = [mlp(model.time_proj(md[:, i].half()).half()) for i, mlp in enumerate(model.metadata_embedding)]
    assert not all(torch.equal(t, r) for t, r in zip(terms, rounded))


def test_controlnet_adds_the_condition_metadata_and_gives_unet_residuals(folders):
    controlnet = sat_controlnet_class().from_pretrained(folders["pipeline"] / "controlnet").eval()
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 77, tiny.CROSS_DIM, generator=gen)
    cond = torch.rand(2, 3, 64, 64, generator=gen)
    md = torch.tensor([EXAMPLE] * 2)
    with torch.no_grad():
        out = controlnet(sample, 500, text, cond, metadata=md, cond_metadata=md * 0.9)
        no_cond = controlnet(sample, 500, text, cond, metadata=md)
    shapes = [tuple(r.shape) for r in out.down_block_res_samples]
    assert shapes == [(2, 16, 8, 8), (2, 16, 8, 8), (2, 16, 4, 4), (2, 32, 4, 4)]
    assert tuple(out.mid_block_res_sample.shape) == (2, 32, 4, 4)
    assert not torch.allclose(out.mid_block_res_sample, no_cond.mid_block_res_sample)


# -- pipelines -----------------------------------------------------------------------------
def test_guidance_gives_the_unconditional_half_zero_metadata_repeated_per_image(loaded):
    backend, pipe = loaded
    p = pipe.for_mode("txt2img")
    seen, handle = _capture(p.unet)
    try:
        images = backend.run(pipe, _request(num_images=2), init_image=None, control_image=None,
                             generators=_gens(0, 1), callback=None)
    finally:
        handle.remove()
    assert len(images) == 2 and images[0].size == (64, 64)
    assert len(seen) == 2  # one UNet call per step
    expected = torch.tensor([NO_METADATA, NO_METADATA, EXAMPLE, EXAMPLE], dtype=torch.float32)
    assert all(torch.equal(m, expected) for m in seen)


def test_metadata_changes_the_image_and_the_same_seed_gives_the_same_image(loaded):
    backend, pipe = loaded

    def make(**kw):
        return _pixels(backend.run(pipe, _request(**kw), init_image=None, control_image=None,
                                   generators=_gens(7), callback=None))

    first, again = make(), make()
    other = make(metadata=NO_METADATA)
    assert np.array_equal(first, again)
    assert np.abs(first - other).max() > 0


def test_img2img_through_the_backend(loaded):
    backend, pipe = loaded
    init = _init_image()
    req = _request(mode="img2img", strength=0.8, guidance=1.0)
    p = pipe.for_mode("img2img")
    seen, handle = _capture(p.unet)
    try:
        a = backend.run(pipe, req, init_image=init, control_image=None, generators=_gens(3), callback=None)
    finally:
        handle.remove()
    b = backend.run(pipe, req, init_image=init, control_image=None, generators=_gens(3), callback=None)
    assert a[0].size == (64, 64) and np.array_equal(_pixels(a), _pixels(b))
    assert torch.equal(seen[0], torch.tensor([EXAMPLE]))  # no guidance: no unconditional half


def test_txt2img_defaults_to_512_px(loaded):
    _, pipe = loaded
    latents = pipe.for_mode("txt2img")(PROMPT, num_inference_steps=1, guidance_scale=1.0, output_type="latent",
                                       metadata=EXAMPLE).images
    assert tuple(latents.shape[-2:]) == (64, 64)  # 512 px / 8, not the UNet's sample size


def test_controlnet_backend_generates_with_both_metadata_vectors(folders):
    backend = get("diffusionsat-controlnet")
    pipe = backend.load(folders["pipeline"], device="cpu", dtype=None)
    assert pipe.layout["controlnet"].endswith("controlnet")
    cond_md = (925.8798, 345.2111, 411.4541, 0.0, 308.3333, 83.3333, 290.3226)
    req = _request(backbone="diffusionsat-controlnet", options={"cond_metadata": cond_md})
    p = pipe.for_mode("txt2img")
    seen, handle = _capture(p.controlnet, "cond_metadata")
    try:
        images = backend.run(pipe, req, init_image=None, control_image=_init_image(), generators=_gens(0),
                             callback=None)
    finally:
        handle.remove()
    assert images[0].size == (64, 64)
    assert torch.equal(seen[0], torch.tensor([NO_METADATA, cond_md], dtype=torch.float32))
    img2img = backend.run(pipe, _request(backbone="diffusionsat-controlnet", mode="img2img"),
                          init_image=_init_image(), control_image=_init_image(), generators=_gens(0), callback=None)
    assert img2img[0].size == (64, 64)


# -- requests and folders ------------------------------------------------------------------
def test_requests_a_diffusionsat_backbone_cannot_use_are_refused(loaded):
    backend, _ = loaded
    control = get("diffusionsat-controlnet")
    with pytest.raises(RequestError, match="metadata"):
        backend.validate(_request(metadata=None))
    with pytest.raises(RequestError, match="lon"):
        backend.validate(_request(metadata=(-73.97, 40.79, 0.92, 0.08, 2022, 5, 10)))
    with pytest.raises(RequestError, match="option"):
        backend.validate(_request(options={"cond_metadata": EXAMPLE}))
    with pytest.raises(RequestError, match="condition image"):
        control.validate(_request(backbone="diffusionsat-controlnet"))
    assert check_metadata(NO_METADATA) == NO_METADATA
    spec = backend.spec
    assert spec.needs_metadata and set(spec.modes) == {"img2img", "txt2img"} and spec.defaults["steps"] == 20
    assert control.spec.needs_control_image and control.spec.needs_metadata


def _touch_model(folder, keys=("up_block_types",)):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({k: [] for k in keys}))


def _touch_components(folder):
    for name in ("text_encoder", "tokenizer", "vae", "scheduler"):
        (folder / name).mkdir(parents=True, exist_ok=True)


def test_accepted_folder_layouts(tmp_path):
    full = tmp_path / "full"
    _touch_components(full)
    _touch_model(full / "unet")
    assert resolve_source(full).unet == str(full / "unet") and resolve_source(full).components == str(full)

    train = tmp_path / "train"
    _touch_components(train)
    for step in (500, 1500):
        _touch_model(train / f"checkpoint-{step}" / "unet")
    layout = resolve_source(train)
    assert layout.unet == str(train / "checkpoint-1500" / "unet") and layout.components == str(train)
    assert resolve_source(train / "checkpoint-500").components == str(train)
    assert resolve_source(train / "checkpoint-500" / "unet").components == str(train)

    bare = tmp_path / "zenodo" / "checkpoint-150000"
    _touch_model(bare / "unet")
    assert resolve_source(bare.parent).components == "stabilityai/stable-diffusion-2-1"
    assert resolve_source(bare.parent, components_base=str(full)).components == str(full)

    cn = full / "xbd-controlnet"
    _touch_model(cn / "controlnet", keys=("conditioning_embedding_out_channels",))
    layout = resolve_source(cn, controlnet=True)
    assert (layout.controlnet, layout.unet) == (str(cn / "controlnet"), str(full / "unet"))

    with pytest.raises(ModelNotAvailable, match="checkpoint-<step>/unet"):
        resolve_source(tmp_path / "train" / "tokenizer")
    with pytest.raises(ModelNotAvailable, match="controlnet/"):
        resolve_source(train, controlnet=True)


def _init_image():
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def test_pipeline_classes_are_the_stock_ones_underneath():
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

    classes = pipeline_classes()
    assert issubclass(classes["DiffusionSatPipeline"], StableDiffusionPipeline)
    assert issubclass(classes["DiffusionSatImg2ImgPipeline"], StableDiffusionImg2ImgPipeline)
    assert issubclass(classes["DiffusionSatControlNetPipeline"], StableDiffusionControlNetPipeline)
