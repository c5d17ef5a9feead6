"""`python -m core generate` on a demo scene with a tiny RANDOM SD 2.1 (plumbing only)."""

import json

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.config import DEMO_SCENES


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    from core.backends.tiny_models.sd import build_tiny_models

    root = tmp_path_factory.mktemp("models")
    build_tiny_models(root, ids=("tiny-sd21",))
    return root


@pytest.fixture()
def cli(tmp_path, monkeypatch, capsys, models_dir):
    monkeypatch.setenv("XBDLAB_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("XBDLAB_TEST_BACKBONES", "1")

    def run(*argv):
        code = main([argv[0], "--json", "--models", str(models_dir), *argv[1:]])
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 else None), err

    return run


SCENE = "demo-wildfire_00000002"
TINY = ["--backbone", "tiny-sd21", "--scene", SCENE, "--size", "64", "--steps", "2"]


def test_generate_writes_a_reproducible_run_with_its_parameters(cli, tmp_path):
    runs = tmp_path / "runs"
    code, out, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), *TINY, "--seed", "7")
    assert code == 0, err
    assert out["written"] == 1
    folder = runs / out["runs"][0]
    record = json.loads((folder / "run.json").read_text())
    params = record["params"]
    assert record["backbone"] == "tiny-sd21" and record["scene_id"] == SCENE
    assert params["seed"] == 7 and params["prompt"] == "A satellite image after being affected by fire"
    with Image.open(folder / "image.png") as im:
        assert im.size == (64, 64)
        assert json.loads(im.text["parameters"])["seed"] == 7
        first = np.asarray(im.convert("RGB"))

    code, again, _ = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(tmp_path / "other"), *TINY,
                         "--seed", "7")
    second = np.asarray(Image.open(tmp_path / "other" / again["runs"][0] / "image.png").convert("RGB"))
    np.testing.assert_array_equal(first, second)  # same backbone, request and seed: same image


def test_batch_is_resumable(cli, tmp_path):
    batch = tmp_path / "batch.jsonl"
    lines = [{"backbone": "tiny-sd21", "scene": SCENE, "size": 64, "steps": 2, "seed": s} for s in (1, 2)]
    batch.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    runs = tmp_path / "runs"
    code, first, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), "--batch", str(batch))
    assert code == 0, err
    assert (first["written"], first["skipped"]) == (2, 0)
    code, second, _ = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), "--batch", str(batch))
    assert (second["written"], second["skipped"]) == (0, 2)


def test_a_batch_killed_inside_a_request_makes_only_its_missing_images_with_the_same_seeds(cli, tmp_path):
    from core.runs.store import RunStore

    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"backbone": "tiny-sd21", "scene": SCENE, "size": 64, "steps": 2, "seed": 20,
                                 "num_images": 3}) + "\n")
    runs = tmp_path / "runs"
    code, first, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), "--batch", str(batch))
    assert code == 0, err
    assert (first["images"], first["written"], first["skipped"]) == (3, 3, 0)
    store = RunStore(runs)
    by_seed = {r.params["seed"]: r for r in store.list()}
    assert set(by_seed) == {20, 21, 22}
    originals = {seed: np.asarray(Image.open(r.image_path)) for seed, r in by_seed.items()}
    for seed in (21, 22):  # what a kill after the first image leaves behind
        store.delete(by_seed[seed].run_id)
    code, second, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), "--batch", str(batch))
    assert code == 0, err
    assert (second["written"], second["skipped"], second["resumed"]) == (2, 1, 1)
    again = {r.params["seed"]: np.asarray(Image.open(r.image_path)) for r in store.list()}
    assert sorted(again) == [20, 21, 22]
    for seed in (21, 22):
        np.testing.assert_array_equal(again[seed], originals[seed])


def test_a_batch_line_that_is_not_json_is_named_before_any_work(cli, tmp_path):
    batch = tmp_path / "b.jsonl"
    good = json.dumps({"backbone": "tiny-sd21", "scene": SCENE, "size": 64, "steps": 2})
    batch.write_text(good + "\n\n{backbone: tiny-sd21}\n")
    runs = tmp_path / "runs"
    code, _, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), "--batch", str(batch))
    assert code == 2 and "line 3 is not JSON" in err and "Traceback" not in err
    assert not runs.exists() or not any(runs.iterdir())


def test_unknown_backbone_and_bad_fields_are_clear_errors(cli, tmp_path):
    code, _, err = cli("generate", "--data", str(DEMO_SCENES), "--backbone", "sd99", "--scene", SCENE)
    assert code == 2 and "sd99" in err and "tiny-sd21" in err
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"backbone": "tiny-sd21", "scene": SCENE, "stepz": 3}) + "\n")
    code, _, err = cli("generate", "--data", str(DEMO_SCENES), "--batch", str(batch))
    assert code == 2 and "stepz" in err


def test_backbones_lists_readiness_without_downloading(cli):
    code, out, _ = cli("backbones")
    assert code == 0
    assert out["tiny-sd21"]["ready"] is True
    assert out["sd21"]["ready"] is False and "stabilityai/stable-diffusion-2-1" in out["sd21"]["missing"]


def test_the_scene_caption_is_the_default_prompt(cli, tmp_path):
    from core.config import Settings
    from core.lab import Lab

    lab = Lab(Settings.load())  # the same work folder as the CLI (XBDLAB_WORK_DIR)
    lab.captions.store.save_edit(f"{SCENE}_post_disaster.png", "Burnt houses along the ridge road.", author="test")
    code, out, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(tmp_path / "runs"), *TINY)
    assert code == 0, err
    record = json.loads((tmp_path / "runs" / out["runs"][0] / "run.json").read_text())
    assert record["params"]["prompt"] == "Burnt houses along the ridge road."


def test_attention_maps_are_saved_in_the_run(cli, tmp_path):
    runs = tmp_path / "runs"
    code, out, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), *TINY,
                         "--prompt", "burnt roofs near the road", "--attention")
    assert code == 0, err
    words = json.loads((runs / out["runs"][0] / "attention" / "words.json").read_text())["words"]
    assert [w["word"] for w in words] == ["burnt", "roofs", "near", "the", "road"]
    # The CLI makes (and saves) one image per pipeline call, so every image gets its maps.
    code, out, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), *TINY,
                         "--num-images", "2", "--attention")
    assert code == 0, err
    assert len(out["runs"]) == 2
    assert all((runs / run_id / "attention" / "words.json").is_file() for run_id in out["runs"])


def test_instruct_pix2pix_maps_come_from_the_prompt_conditioned_third(tmp_path, monkeypatch, capsys):
    """InstructPix2Pix stacks [text+image, image, neither]: its maps must come from the first
    third, and recording must not change the image."""
    from core.backends.tiny_models.controlnet import build_tiny_models as build_controlnet_family

    models = tmp_path / "models"
    build_controlnet_family(models)
    monkeypatch.setenv("XBDLAB_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("XBDLAB_TEST_BACKBONES", "1")
    args = ["generate", "--json", "--models", str(models), "--data", str(DEMO_SCENES),
            "--backbone", "tiny-instruct-pix2pix", "--scene", SCENE, "--size", "64", "--steps", "2",
            "--prompt", "flood the streets", "--seed", "5"]
    images = []
    for extra in ([], ["--attention"]):
        assert main(args + ["--runs", str(tmp_path / f"runs{len(extra)}")] + extra) == 0
        out = json.loads(capsys.readouterr().out)
        folder = tmp_path / f"runs{len(extra)}" / out["runs"][0]
        images.append(np.asarray(Image.open(folder / "image.png").convert("RGB")).astype(int))
    assert np.abs(images[0] - images[1]).max() <= 1
    words = json.loads((folder / "attention" / "words.json").read_text())["words"]
    assert [w["word"] for w in words] == ["flood", "the", "streets"]


def test_sd3_joint_attention_maps_cover_clip_and_t5(tmp_path, monkeypatch, capsys):
    from core.backends.tiny_models.sd import build_tiny_models

    models = tmp_path / "models"
    build_tiny_models(models, ids=("tiny-sd3",))
    monkeypatch.setenv("XBDLAB_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("XBDLAB_TEST_BACKBONES", "1")
    runs = tmp_path / "runs"
    code = main(["generate", "--json", "--models", str(models), "--data", str(DEMO_SCENES), "--runs", str(runs),
                 "--backbone", "tiny-sd3", "--scene", SCENE, "--size", "64", "--steps", "2",
                 "--prompt", "burnt roofs near the road", "--attention"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    words = json.loads((runs / out["runs"][0] / "attention" / "words.json").read_text())["words"]
    assert [w["word"] for w in words] == ["burnt", "roofs", "near", "the", "road"]
    assert all(any(t < 77 for t in w["tokens"]) and any(t >= 77 for t in w["tokens"]) for w in words)


def test_attention_prints_each_words_saved_share_per_damage_class(cli, tmp_path):
    from core.attention.analysis import load_shares
    from core.types import MASK_REGIONS

    runs = tmp_path / "runs"
    code, out, err = cli("generate", "--data", str(DEMO_SCENES), "--runs", str(runs), *TINY,
                         "--prompt", "12 burnt roofs near the town's road", "--attention")
    assert code == 0, err
    folder = runs / out["runs"][0] / "attention"
    shares = load_shares(folder)  # saved with the run, at the label's resolution
    assert list(shares) == ["12", "burnt", "roofs", "near", "the", "town's", "road"]
    assert f"share of each word's attention per region ({folder / 'shares.json'})" in err
    table = {line.split()[0]: line.split()[1:] for line in err.splitlines() if line.startswith("  ")}
    assert table["word"] == list(MASK_REGIONS)
    pixels = {r: p for r, (_, p) in shares["roofs"].items()}
    assert table["(pixels)"] == [f"{pixels[r]:.1%}" for r in MASK_REGIONS]
    for word, by_region in shares.items():
        assert table[word] == [f"{by_region[r][0]:.1%}" if pixels[r] > 0 else "-" for r in MASK_REGIONS]
