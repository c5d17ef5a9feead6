"""DiffusionSat through the Lab on tiny RANDOM models (plumbing): a run records the metadata
it was conditioned on and can be made again from its record; a folder holding only the
published UNet borrows SD 2.1's components from the local models folder; metadata follows
the generated size."""

from __future__ import annotations

import numpy as np
import pytest

from core.config import DEMO_SCENES, Settings
from core.data.metadata import NO_METADATA, scene_metadata
from core.types import GenerationRequest
from tests.tiny import diffusionsat as tiny

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

SCENE = "demo-hurricane_00000003"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Local models only: sd21/ holds SD 2.1's components, diffusionsat/ the published UNet
    as the Zenodo zip unpacks it (its top folder kept)."""
    from core.lab import Lab

    models = tmp_path_factory.mktemp("models")
    tiny.write_components(models / "sd21")
    tiny.write_published_unet(models / "diffusionsat" / "finetune_sd21_md7norm" / "checkpoint-150000" / "unet")
    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path_factory.mktemp("work"),
                             models_dir=models))


def test_a_unet_only_folder_borrows_sd21_from_the_models_folder(lab):
    state = lab.backbones.readiness("diffusionsat")
    assert state.ready, state.missing
    layout = lab.backbones.get("diffusionsat").layout(lab.backbones.source("diffusionsat"))
    assert layout.unet.endswith("checkpoint-150000/unet")
    assert layout.components == str(lab.settings.models_dir / "sd21")


def _request(**fields):
    base = dict(backbone="diffusionsat", prompt="a satellite image after a hurricane", mode="img2img",
                scene_id=SCENE, steps=2, size=64, seed=4, strength=1.0)
    return GenerationRequest(**{**base, **fields})


def test_a_run_records_its_metadata_and_makes_the_same_image_again(lab):
    index = lab.datasets.open()
    run = lab.generation.generate(_request(), index)[0]
    info = run.record["params"]["metadata_info"]
    labels = scene_metadata(index, index.get(SCENE), resolution=64)
    assert info["source"] == "labels" and info["normalised"] == pytest.approx(list(labels))
    assert set(info["decoded"]) == {"lon", "lat", "gsd", "cloud_cover", "year", "month", "day"}
    from PIL import Image

    with Image.open(run.image_path) as png:  # the PNG carries the same record
        assert '"metadata_info"' in png.text["parameters"]
    again = lab.generation.generate(lab.generation.request_of_run(run), index)[0]
    np.testing.assert_array_equal(again.image(), run.image())


def test_zeros_and_edits_are_told_apart_from_the_labels(lab):
    index = lab.datasets.open()
    zeros = lab.generation.generate(_request(metadata=NO_METADATA), index)[0]
    assert zeros.record["params"]["metadata_info"]["source"] == "zeros"
    edited = list(scene_metadata(index, index.get(SCENE), resolution=64))
    edited[4] += 10.0  # another year
    run = lab.generation.generate(_request(metadata=tuple(edited)), index)[0]
    assert run.record["params"]["metadata_info"]["source"] == "edited"


def test_the_metadata_shown_follows_the_chosen_size(lab):
    from ui.generate import META_FIELDS, metadata_view

    at = {size: dict(zip(META_FIELDS, metadata_view(lab, None, SCENE, size))) for size in (256, 512, 1024)}
    assert at[256]["gsd"] == pytest.approx(2 * at[512]["gsd"]) == pytest.approx(4 * at[1024]["gsd"])
    assert at[256]["lon"] == pytest.approx(at[1024]["lon"]) and at[256]["year"] == at[1024]["year"]
