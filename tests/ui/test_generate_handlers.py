"""The Generate tab's handlers called directly: controls rendered from the backbone specs,
the request the form describes (tiny RANDOM backbones: plumbing only)."""

import pytest

from core.backends.base import Control
from core.config import DEMO_SCENES, Settings
from core.errors import LabError
from ui import generate as tab

SCENE = "demo-hurricane_00000003"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from core.lab import Lab
    from core.backends.tiny_models.sd import build_tiny_models

    models = tmp_path_factory.mktemp("models")
    build_tiny_models(models, ids=("tiny-sd21",))
    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path_factory.mktemp("work"),
                             test_backbones=True, models_dir=models))


@pytest.fixture(scope="module")
def controls(lab):
    return tab.declared_controls(lab.backbones.specs())


def form(controls, **changes):
    values = dict(scene=SCENE, backbone="tiny-sd21", prompt="a flooded town", mode="img2img", size=64, seed=5,
                  num_images=1, no_meta=False)
    values.update({k: v for k, v in changes.items() if k in values})
    meta = [0] * len(tab.META_FIELDS)
    return [*values.values(), *meta, *[changes.get(c.name) for c in controls]]


def test_every_declared_control_gets_one_widget_of_its_kind(controls):
    names = [c.name for c in controls]
    assert len(names) == len(set(names))
    assert {"steps", "guidance", "strength", "negative_prompt", "scheduler", "drop_t5", "control_scale",
            "image_guidance"} <= set(names)
    kinds = {c.name: type(tab.control_widget(c)).__name__ for c in controls}
    assert kinds["drop_t5"] == "Checkbox" and kinds["scheduler"] == "Dropdown" and kinds["steps"] == "Slider"


def test_a_new_control_needs_no_ui_code():
    probe = Control("cloud_mask", "Mask clouds", "checkbox", option=True)
    widget = tab.control_widget(probe)
    assert type(widget).__name__ == "Checkbox" and widget.label == "Mask clouds"


def test_backbone_view_shows_only_what_the_backbone_declares(lab, controls):
    index = {c.name: i for i, c in enumerate(controls)}
    turbo = tab.backbone_view(lab, "sdxl-turbo", controls)[5:]
    assert turbo[index["steps"]]["visible"] is True and turbo[index["steps"]]["maximum"] == 4
    assert turbo[index["guidance"]]["visible"] is False and turbo[index["negative_prompt"]]["visible"] is False
    sd3 = tab.backbone_view(lab, "sd3", controls)[5:]
    assert sd3[index["drop_t5"]]["visible"] is True and sd3[index["scheduler"]]["visible"] is False
    ip2p = tab.backbone_view(lab, "instruct-pix2pix", controls)
    assert ip2p[5 + index["image_guidance"]]["value"] == 1.5
    assert ip2p[4]["visible"] is False  # no DiffusionSat metadata box
    assert tab.backbone_view(lab, "diffusionsat", controls)[4]["visible"] is True


def test_the_form_becomes_a_request_with_options_and_the_backbones_own_defaults(lab, controls):
    sd3 = tab.request_from_form(lab, controls, form(controls, backbone="sd3", steps=9, guidance=4.0,
                                                    drop_t5=True, image_guidance=2.5))
    assert sd3.options == {"drop_t5": True} and (sd3.steps, sd3.guidance) == (9, 4.0)
    assert sd3.image_guidance == 1.5  # SD3 declares no image guidance: the value on the form is ignored
    turbo = tab.request_from_form(lab, controls, form(controls, backbone="sdxl-turbo", guidance=7.5, steps=3))
    assert turbo.guidance == 0.0 and turbo.steps == 3
    assert turbo.scheduler == "euler_a"


def test_a_form_without_a_scene_says_to_pick_one(lab, controls):
    with pytest.raises(LabError, match="Pick a scene"):
        tab.request_from_form(lab, controls, form(controls, scene=None))


def test_token_text_counts_or_says_when_counts_appear(lab):
    assert "/ 75 tokens" in tab.token_text(lab, "tiny-sd21", "a town")
    # SD 2.1 is not on disk: CLIP's own vocabulary counts it anyway; T5 needs its files
    assert tab.token_text(lab, "sd21", "a town") == "CLIP: 2 / 75 tokens"
    assert "T5: appears once the T5 files are on disk" in tab.token_text(lab, "sd3", "a town")


def test_readiness_rows_cover_every_backbone(lab):
    rows = {row[0]: row for row in tab.readiness_rows(lab)}
    assert rows["Tiny random SD 2.1 (tests)"][1] == "yes"
    assert rows["SDXL base 1.0"][1] == "no" and "stable-diffusion-xl-base-1.0" in rows["SDXL base 1.0"][5]


def test_the_stop_endpoint_is_the_generate_tabs(lab):
    """An undocumented handler elsewhere named `stop` once took the name, and /stop then
    stopped nothing."""
    from ui.app import build_ui

    names = {fn.api_name: fn.fn for fn in build_ui(lab).fns.values()}
    assert names["stop"].__name__ == "_stop" and names["stop"].__module__ == "ui.generate"
    assert "stop_captioning" in names


def test_stopping_a_comparison_leaves_the_rest_undone_and_the_grid_says_so(lab, controls):
    from core.generation.progress import CancelToken

    index = lab.datasets.open()
    base = tab.request_from_form(lab, controls, form(controls, steps=2))
    cells = lab.generation.compare_cells(base, ["tiny-sd21"], "seed", "1, 2, 3", index=index)
    cancel = CancelToken()
    results = lab.generation.compare(cells, index, cancel=cancel,
                                     on_cell=lambda i, n, cell: cancel.cancel() if i == 1 else None)
    assert results[0].run is not None and [r.error for r in results[1:]] == ["stopped", "stopped"]
    picture, files, summary = tab.compare_view(lab, index, base, "seed", "1, 2, 3", results)
    assert len(files) == 1 and "Made 1 of 3 cells" in summary and "stopped before 2" in summary
    assert files[0].endswith("r1-c1_tiny-sd21_seed-1.png")
    assert picture.ndim == 3


def test_the_default_backbone_is_one_on_disk(lab):
    backbone, banner = tab.default_backbone(lab)
    assert backbone["value"] == "tiny-sd21" and banner["visible"] is False


def test_with_no_backbone_on_disk_generate_says_so_once_and_how_to_get_one(tmp_path):
    from core.lab import Lab

    bare = Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work",
                             models_dir=tmp_path / "models"))
    backbone, banner = tab.default_backbone(bare)
    assert "value" not in backbone and banner["visible"] is True
    text = banner["value"]
    assert "No backbone is on this machine" in text and str(tmp_path / "models") in text
    assert "Download this backbone's weights" in text and "python -m core tiny-models" in text
