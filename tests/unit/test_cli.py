"""`python -m core …` end to end on the bundled demo scenes and small generated trees."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.config import DEMO_SCENES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def cli(tmp_path, monkeypatch, capsys):
    """Run the CLI in-process with a private work folder; returns (exit code, JSON or text, stderr)."""
    monkeypatch.setenv("XBDLAB_WORK_DIR", str(tmp_path / "work"))

    def run(*argv):
        code = main(list(argv))
        out, err = capsys.readouterr()
        data = json.loads(out) if "--json" in argv and code in (0, 1) else out
        return code, data, err

    return run


@pytest.fixture()
def offline_lpips(tmp_path, monkeypatch):
    """No AlexNet weights on disk: LPIPS must say so while the other metrics still come back."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv("XBDLAB_LPIPS_RANDOM_BACKBONE", raising=False)


def _first_post(data_dir: Path) -> Path:
    return sorted(data_dir.rglob("*_post_disaster.png"))[0]


def test_index_counts_the_demo_scenes(cli):
    code, data, _ = cli("index", "--data", str(DEMO_SCENES), "--json")
    assert code == 0
    assert data["scenes"] >= 6
    assert set(data["split"]) == {"train", "test"}
    assert set(data["disaster_type"]) >= {"flooding", "fire", "wind", "earthquake"}
    assert data["damage"]["destroyed"] > 0
    assert data["problems"] == []


def test_index_of_a_folder_that_is_not_xbd_says_what_to_do(cli, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = cli("index", "--data", str(tmp_path), "--json")
    assert code == 2
    assert str(tmp_path) in err and "--data" in err


def test_score_identical_images_gives_infinite_psnr_as_a_string(cli, offline_lpips):
    post = _first_post(DEMO_SCENES)
    code, data, _ = cli("score", "--pred", str(post), "--target", str(post), "--json")
    assert code == 0
    assert data["mse"] == 0.0 and data["psnr"] == "inf" and data["ssim"] == pytest.approx(1.0)
    assert data["lpips"] is None
    assert "alexnet-owt-7be5be79.pth" in data["lpips_error"]
    assert data["settings"]["luma"] is False


def test_score_with_labels_gives_per_class_scores(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XBDLAB_LPIPS_RANDOM_BACKBONE", "1")
    post = _first_post(DEMO_SCENES)
    pre = Path(str(post).replace("_post_", "_pre_"))
    label = post.parent.parent / "labels" / post.name.replace(".png", ".json")
    code, data, _ = cli("score", "--pred", str(pre), "--target", str(post), "--labels", str(label),
                        "--size", "256", "--luma", "--json")
    assert code == 0
    assert set(data["masked"]) == {"building", "no-damage", "minor-damage", "major-damage", "destroyed"}
    assert data["masked"]["building"]["pixels"] > 0
    assert isinstance(data["lpips"], float)
    assert data["settings"]["size"] == 256 and data["settings"]["luma"] is True
    counts = json.loads(label.read_text())["features"]["xy"]
    present = {f["properties"].get("subtype") for f in counts}
    for region in ("no-damage", "minor-damage", "major-damage", "destroyed"):
        assert (data["masked"][region] is None) == (region not in present)


def test_score_reports_a_corrupt_png_by_name(cli, tmp_path):
    bad = tmp_path / "broken_post_disaster.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = cli("score", "--pred", str(bad), "--target", str(_first_post(DEMO_SCENES)), "--json")
    assert code == 2 and "broken_post_disaster.png" in err


def test_baseline_then_score_runs(cli, tmp_path, offline_lpips):
    data_dir = tmp_path / "data"
    shutil.copytree(DEMO_SCENES, data_dir)
    runs = tmp_path / "runs"
    code, first, _ = cli("baseline", "--data", str(data_dir), "--runs", str(runs), "--json")
    assert code == 0 and first["written"] >= 6
    code, again, _ = cli("baseline", "--data", str(data_dir), "--runs", str(runs), "--json")
    assert again["written"] == 0  # one baseline per scene, not one per call

    code, scored, _ = cli("score", "--runs", str(runs), "--data", str(data_dir), "--size", "128", "--json")
    assert code == 0 and len(scored) == first["written"]
    for entry in scored:
        assert entry["backbone"] == "baseline"
        assert entry["mse"] > 0 and entry["psnr"] != "inf"
        assert (runs / entry["run"] / "scores.json").exists()


def test_score_runs_keeps_saved_scores_unless_told_to_rescore(cli, tmp_path, offline_lpips):
    """A second `score --runs` (a resumed one) reuses what the first saved; --rescore redoes it."""
    runs = tmp_path / "runs"
    cli("baseline", "--data", str(DEMO_SCENES), "--runs", str(runs), "--json")
    score = ("score", "--runs", str(runs), "--data", str(DEMO_SCENES), "--size", "64", "--json")
    code, first, _ = cli(*score)
    saved = {p: p.read_text() for p in runs.glob("*/scores.json")}
    assert code == 0 and len(saved) == len(first)
    code, again, err = cli(*score)
    assert code == 0 and [e["psnr"] for e in again] == [e["psnr"] for e in first]
    assert f"0 scored, {len(first)} kept their saved scores, 0 could not be scored" in err
    assert {p: p.read_text() for p in saved} == saved  # nothing scored twice
    code, redone, _ = cli(*score, "--rescore", "--batch-size", "2")
    assert code == 0 and [e["psnr"] for e in redone] == [e["psnr"] for e in first]
    assert all(p.read_text() != text for p, text in saved.items())  # scored again, new time
    code, _, err = cli(*score, "--batch-size", "0")
    assert code == 2 and "--batch-size" in err


def test_score_runs_against_the_scene_post_tile_not_the_pre(cli, tmp_path, monkeypatch):
    """A run whose image IS the real post tile must score perfectly."""
    monkeypatch.setenv("XBDLAB_LPIPS_RANDOM_BACKBONE", "1")
    from core.runs.store import RunStore

    post = _first_post(DEMO_SCENES)
    scene_id = "_".join(post.name.split("_")[:2])
    store = RunStore(tmp_path / "runs")
    store.create(np.asarray(Image.open(post).convert("RGB")), kind="upload", backbone="upload",
                 scene_id=scene_id, params={})
    code, scored, _ = cli("score", "--runs", str(tmp_path / "runs"), "--data", str(DEMO_SCENES), "--json")
    assert code == 0
    assert scored[0]["psnr"] == "inf" and scored[0]["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_module_entry_point_prints_readable_text(tmp_path):
    out = subprocess.run([sys.executable, "-m", "core", "--work", str(tmp_path), "index", "--data",
                          str(DEMO_SCENES)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("scenes:")


def test_index_check_reads_every_file_and_lists_each_bad_one(cli, tmp_path, monkeypatch):
    from tests import xbd_trees as T

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    root = T.make_official(tmp_path / "xbd", targets=False)
    broken = T.write_corrupt_png(root / "train/images/socal-fire_00000003_post_disaster.png")
    not_json = T.write_not_json(root / "test/labels/palu-tsunami_00000004_post_disaster.json")
    huge = T.write_png(root / "hold/images/mexico-earthquake_00000007_pre_disaster.png", 64)

    code, quick, _ = cli("index", "--data", str(root), "--json")  # names only, labels when counting
    assert code == 0 and "checked_files" not in quick
    assert [p["path"] for p in quick["problems"]] == [str(not_json)]

    code, data, err = cli("index", "--data", str(root), "--check", "--json")
    assert code == 1 and data["checked_files"] == 4 * 7 and "checked 28/28 files" in err  # a script can stop
    problems = {p["path"]: p["message"] for p in data["problems"]}
    assert set(problems) == {str(broken), str(not_json), str(huge)}
    assert "not a readable PNG" in problems[str(broken)] and "not valid JSON" in problems[str(not_json)]
    assert problems[str(huge)].endswith("is 64×64 px, larger than the 2000 px this app opens; "
                                        "crop or downscale it (e.g. into 1024 px tiles).")
    T.write_png(broken)  # the bad files mended: a clean check exits 0
    T.write_png(huge)
    T.write_json(not_json, T.label_dict("palu-tsunami", "00000004", "post"))
    code, clean, _ = cli("index", "--data", str(root), "--check", "--json")
    assert not clean["problems"], clean["problems"]
    assert code == 0


def test_score_of_an_image_past_the_pixel_limit_says_so(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = tmp_path / "big_post_disaster.png"
    Image.new("RGB", (64, 48)).save(big)
    code, _, err = cli("score", "--pred", str(big), "--target", str(big), "--json")
    assert code == 2 and f"{big} is 64×48 px, larger than the 1000 px this app opens" in err
    assert "Traceback" not in err


def test_a_full_disk_while_saving_runs_is_one_clear_error(cli, tmp_path, monkeypatch):
    import errno
    import os

    from core.runs import store as store_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "atomic_write_text", no_space)
    runs = tmp_path / "runs"
    code, _, err = cli("baseline", "--data", str(DEMO_SCENES), "--runs", str(runs), "--json")
    assert code == 2
    assert err.strip() == (f"error: Could not save the run in {runs}: No space left on device. "
                           "Free some space or choose another --runs folder.")
    assert [p.name for p in runs.iterdir()] == []  # no half-written run


def test_tiny_models_builds_the_test_backbones_for_a_no_gpu_dry_run(cli, tmp_path, monkeypatch):
    models = tmp_path / "models"
    code, out, err = cli("tiny-models", "--models", str(models), "--json")
    assert code == 0 and "noise" in err
    ids = {"tiny-sd21", "tiny-sdxl-turbo", "tiny-sd3", "tiny-controlnet", "tiny-instruct-pix2pix"}
    assert set(out["built"]) == ids and "XBDLAB_TEST_BACKBONES=1" in out["use"]
    monkeypatch.setenv("XBDLAB_TEST_BACKBONES", "1")
    code, ready, _ = cli("backbones", "--models", str(models), "--json")
    assert code == 0 and all(ready[i]["ready"] for i in ids), {i: ready[i] for i in ids}
