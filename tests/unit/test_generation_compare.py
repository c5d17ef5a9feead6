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


def test_every_cell_keeps_the_users_settings_unless_its_backbone_cannot_and_says_so():
    cells = plan_cells(BASE, [get("sd21").spec, get("sdxl-turbo").spec], "strength", "0.5, 1")
    assert [(c.row, c.column, c.request.backbone, c.request.strength) for c in cells] == [
        (0, 0, "sd21", 0.5), (0, 1, "sd21", 1.0), (1, 0, "sdxl-turbo", 0.5), (1, 1, "sdxl-turbo", 1.0)]
    assert cells[0].request.steps == 12 and cells[0].note == ""  # SD 2.1 takes what the user set
    turbo = cells[2]
    assert turbo.request.steps == 4 and "range is 1 to 4" in turbo.note  # distilled for 1-4 steps
    assert turbo.request.guidance == 0.0 and "no guidance setting" in turbo.note


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
