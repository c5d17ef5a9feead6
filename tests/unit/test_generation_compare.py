"""Comparison grids planned in core: one request per cell, rows = backbones, columns =
swept values, each cell seeded on its own."""

import pytest

from core.backends import get
from core.errors import LabError
from core.generation.compare import plan_cells, sweep_values
from core.types import GenerationRequest

BASE = GenerationRequest(backbone="sd21", prompt="a flooded town", scene_id="x_00000001", steps=12, guidance=3.0,
                         strength=0.5, seed=7, num_images=4)


def test_a_seed_sweep_gives_each_cell_its_own_seed_and_one_image():
    cells = plan_cells(BASE, [get("sd21").spec], "seed", "1, 2, 3")
    assert [c.request.seed for c in cells] == [1, 2, 3]
    assert all(c.request.num_images == 1 for c in cells)
    assert [c.label for c in cells] == [f"Stable Diffusion 2.1 · seed {i}" for i in (1, 2, 3)]


def test_rows_are_backbones_and_other_backbones_use_their_own_defaults():
    cells = plan_cells(BASE, [get("sd21").spec, get("sdxl-turbo").spec], "strength", "0.5, 1")
    assert [(c.request.backbone, c.request.strength) for c in cells] == [
        ("sd21", 0.5), ("sd21", 1.0), ("sdxl-turbo", 0.5), ("sdxl-turbo", 1.0)]
    assert cells[0].request.steps == 12  # the base backbone keeps what the user set
    assert cells[2].request.steps == get("sdxl-turbo").spec.defaults["steps"]
    assert cells[2].request.guidance == 0.0


def test_no_sweep_is_one_column():
    assert len(plan_cells(BASE, [get("sd21").spec, get("sd3").spec])) == 2


@pytest.mark.parametrize("sweep, text, message", [("steps", "", "Give the steps values"),
                                                   ("steps", "4, five", "'five' is not a valid steps value"),
                                                   ("size", "1", "Unknown sweep")])
def test_bad_sweeps_say_what_is_wrong(sweep, text, message):
    with pytest.raises(LabError, match=message):
        sweep_values(sweep, text)


def test_a_diffusionsat_base_does_not_hand_its_metadata_to_other_rows():
    base = GenerationRequest(backbone="diffusionsat", prompt="p", scene_id="x_00000001", metadata=(1.0,) * 7,
                             options={}, size=256)
    cells = plan_cells(base, [get("diffusionsat").spec, get("sd21").spec])
    assert cells[0].request.metadata == (1.0,) * 7
    assert cells[1].request.metadata is None and cells[1].request.size == 256
