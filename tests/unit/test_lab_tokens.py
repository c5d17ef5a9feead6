"""Token counts per encoder from a backbone's tokenizers alone (tiny RANDOM SD3 layout), and
before any backbone is on disk from the standard CLIP vocabulary."""

import shutil

import pytest

from core.config import Settings
from core.generation.prompts import count_tokens, standard_clip_tokenizer
from core.lab import Lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from core.backends.tiny_models.sd import build_tiny_models

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


@pytest.mark.parametrize("backbone_id", ["sd21", "sdxl-turbo", "sdxl-base", "sd3", "diffusionsat",
                                         "diffusionsat-controlnet", "controlnet", "instruct-pix2pix"])
def test_clip_counts_need_no_model_on_disk(lab, backbone_id):
    prompt = "Flood waters cover the streets of the town, 76 houses destroyed. " * 6
    expected = count_tokens(standard_clip_tokenizer(), prompt)
    assert expected > 75
    report = lab.backbones.token_report(backbone_id, prompt)
    spec = lab.backbones.get(backbone_id).spec
    assert set(report) == set(spec.tokenizers)
    for name in spec.tokenizers:
        if name == "t5":  # T5 has a vocabulary of its own: it waits for its files, and says so
            assert report[name] == {"used": True, "needs_files": True}
        else:
            assert report[name]["prompt_tokens"] == expected and report[name]["limit"] == 75
    assert lab.backbones.tokenizers(backbone_id)["clip"] is standard_clip_tokenizer()


def test_the_backbones_own_tokenizer_wins_once_its_files_are_on_disk(tmp_path_factory, lab):
    from core.backends.tiny_models.sd import build_tiny_models

    models = tmp_path_factory.mktemp("models-sd21")
    shutil.move(build_tiny_models(models, ids=("tiny-sd21",))["tiny-sd21"], models / "sd21")  # as if downloaded
    own = Lab(Settings.load(env={}, models_dir=models, work_dir=tmp_path_factory.mktemp("work")))
    assert own.backbones.readiness("sd21").ready
    tokenizer = own.backbones.tokenizers("sd21")["clip"]
    assert tokenizer is not standard_clip_tokenizer() and len(tokenizer) != len(standard_clip_tokenizer())
    prompt = "a flooded town"
    assert own.backbones.token_report("sd21", prompt)["clip"]["prompt_tokens"] == count_tokens(tokenizer, prompt)


def test_a_test_backbone_without_files_has_no_counts_yet(tmp_path):
    bare = Lab(Settings.load(env={}, test_backbones=True, models_dir=tmp_path, work_dir=tmp_path / "work"))
    assert bare.backbones.token_report("tiny-sd21", "a flooded town") is None  # its tiny vocabulary is not CLIP's
