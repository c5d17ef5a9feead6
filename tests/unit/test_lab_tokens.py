"""Token counts per encoder from a backbone's tokenizers alone (tiny RANDOM SD3 layout)."""

import pytest

from core.config import Settings
from core.lab import Lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from tests.tiny.sd import build_tiny_models

    models = tmp_path_factory.mktemp("models")
    build_tiny_models(models, ids=("tiny-sd3",))
    return Lab(Settings.load(env={}, test_backbones=True, models_dir=models,
                             work_dir=tmp_path_factory.mktemp("work")))


def test_sd3_reports_where_clip_would_cut_and_what_t5_keeps(lab):
    prompt = "the water in the other street " * 20
    report = lab.backbones.token_report("tiny-sd3", prompt)
    assert set(report) == {"clip", "clip2", "t5"}
    clip = report["clip"]
    assert clip["truncated"] and clip["limit"] == 75
    cut = clip["truncated_at_char"]
    assert 0 < cut < len(prompt)
    assert report["t5"]["limit"] == 255


def test_a_backbone_without_files_has_no_counts_yet(lab):
    assert lab.backbones.token_report("sd21", "a flooded town") is None
