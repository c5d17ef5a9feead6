"""Model sources: hub ids, local folders, the Hugging Face cache and mirrors, without network."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.backends import BackendSpec
from core.backends.sources import (Source, as_source, cache_folder_for, choose_files, download, hub_cache_dir,
                                   readiness, require_ready, resolve_source)
from core.errors import ModelNotAvailable

ROOT = Path(__file__).resolve().parents[2]
SPEC = BackendSpec(id="sdx", label="Some SD", hub_id="org/some-model", modes=("img2img",))
INDEX = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
         "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
         "safety_checker": [None, None]}


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty private HF cache, selected through HF_HUB_CACHE."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def write_pipeline(folder: Path, *, weights: bool = True) -> int:
    """A fake diffusers pipeline folder; returns its size in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(INDEX))
    for comp in ("unet", "vae"):
        (folder / comp).mkdir(exist_ok=True)
        (folder / comp / "config.json").write_text("{}")
        if weights:
            (folder / comp / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 1000)
    (folder / "tokenizer").mkdir(exist_ok=True)
    (folder / "tokenizer" / "vocab.json").write_text("{}")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text("{}")
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def write_cached(cache: Path, repo: str, revision: str = "0123abcd" * 5, **kw) -> tuple[Path, int]:
    """The hub cache layout: models--org--name/{refs/main, snapshots/<rev>/...}."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    snapshot = repo_dir / "snapshots" / revision
    return snapshot, write_pipeline(snapshot, **kw)


# -- resolving ----------------------------------------------------------------------------
def test_strings_paths_and_revisions_become_sources(tmp_path):
    assert as_source("org/name") == Source("hub", "org/name", None)
    assert as_source("org/name@v1.0") == Source("hub", "org/name", "v1.0")
    assert as_source(tmp_path) == Source("folder", str(tmp_path))
    assert as_source(str(tmp_path)).kind == "folder"
    assert as_source("./models/x").kind == "folder"
    assert str(Source("hub", "org/name", "abc")) == "org/name@abc"


def test_resolve_prefers_override_then_models_dir_then_hub_id(tmp_path):
    assert resolve_source(SPEC, None, models_dir=None) == Source("hub", "org/some-model")
    assert resolve_source(SPEC, "other/model", models_dir=tmp_path) == Source("hub", "other/model")
    assert resolve_source(SPEC, None, models_dir=tmp_path).kind == "hub"  # nothing there yet
    (tmp_path / "org--some-model").mkdir()
    assert resolve_source(SPEC, None, models_dir=tmp_path) == Source("folder", str(tmp_path / "org--some-model"))
    (tmp_path / "sdx").mkdir()
    assert resolve_source(SPEC, None, models_dir=tmp_path) == Source("folder", str(tmp_path / "sdx"))
    no_hub = BackendSpec(id="mine", label="My ControlNet", hub_id=None, modes=("img2img",))
    with pytest.raises(ModelNotAvailable, match="local folder"):
        resolve_source(no_hub, None, models_dir=tmp_path)


# -- readiness ----------------------------------------------------------------------------
def test_a_saved_tiny_pipeline_folder_is_ready():
    pytest.importorskip("torch")
    from core.backends.tiny_models.sd import tiny_random_sd21_folder

    folder = tiny_random_sd21_folder()
    state = readiness(SPEC, Source("folder", str(folder)))
    assert state.ready and state.missing == ""
    assert state.where == str(folder) and state.size_bytes > 100_000


def test_an_incomplete_folder_says_what_is_missing(tmp_path):
    write_pipeline(tmp_path / "p", weights=False)
    state = readiness(SPEC, Source("folder", str(tmp_path / "p")))
    assert not state.ready and "unet/ weights" in state.missing and "vae/ weights" in state.missing
    assert not readiness(SPEC, Source("folder", str(tmp_path / "nowhere"))).ready
    single = tmp_path / "controlnet"
    single.mkdir()
    (single / "config.json").write_text("{}")
    assert not readiness(SPEC, as_source(single)).ready
    (single / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert readiness(SPEC, as_source(single)).ready


def test_a_cached_hub_model_is_ready_with_its_size(hf_cache):
    assert hub_cache_dir() == hf_cache
    snapshot, size = write_cached(hf_cache, "org/some-model")
    state = readiness(SPEC, Source("hub", "org/some-model"))
    assert state.ready, state.missing
    assert Path(state.where) == snapshot and state.size_bytes == size
    assert not readiness(SPEC, Source("hub", "org/some-model", "no-such-branch")).ready


def test_hf_home_is_honoured_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    write_cached(tmp_path / "home" / "hub", "org/some-model")
    assert readiness(SPEC, Source("hub", "org/some-model")).ready


def test_an_absent_hub_model_is_not_ready_and_says_how_to_fix_it(hf_cache):
    state = readiness(SPEC, Source("hub", "org/some-model"))
    assert not state.ready and state.size_bytes is None
    assert state.where == str(cache_folder_for("org/some-model"))
    with pytest.raises(ModelNotAvailable) as err:
        require_ready(SPEC, Source("hub", "org/some-model"))
    message = str(err.value)
    assert "org/some-model" in message and str(hf_cache) in message
    assert "download" in message and "local folder" in message and "HF_ENDPOINT" in message


def test_a_partial_cache_download_is_not_ready(hf_cache):
    write_cached(hf_cache, "org/some-model", weights=False)
    state = readiness(SPEC, Source("hub", "org/some-model"))
    assert not state.ready and "incomplete" in state.missing and "unet/ weights" in state.missing


def test_loading_an_uncached_hub_id_raises_model_not_available(hf_cache, monkeypatch):
    from core.backends.sd21 import SD21Backend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable, match="stabilityai/stable-diffusion-2-1"):
        SD21Backend().load("stabilityai/stable-diffusion-2-1", device="cpu")


# -- downloading --------------------------------------------------------------------------
def test_download_refuses_offline_and_folders_download_nothing(hf_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailable, match="HF_HUB_OFFLINE"):
        download(SPEC, Source("hub", "org/some-model"))
    write_pipeline(tmp_path / "p")
    assert download(SPEC, as_source(tmp_path / "p")).ready


def test_choose_files_takes_one_weight_set_per_component():
    files = ["model_index.json", "README.md", "sd_xl_turbo_1.0_fp16.safetensors",
             "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
             "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
             "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "vae/diffusion_flax_model.msgpack",
             "tokenizer/vocab.json", "scheduler/scheduler_config.json", "text_encoder_3/model.fp16-00001-of-00002.safetensors",
             "safety_checker/model.safetensors"]
    index = dict(INDEX, text_encoder_3=["transformers", "T5EncoderModel"])
    fp16 = choose_files(files, index, variant="fp16", skip=("text_encoder_3",))
    assert fp16 == sorted(["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors",
                           "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json",
                           "scheduler/scheduler_config.json"])
    plain = choose_files(files, index)
    assert "unet/diffusion_pytorch_model.safetensors" in plain
    assert not any(".fp16" in f or f.endswith(".bin") for f in plain if f.startswith("unet/"))
    assert "text_encoder_3/model.fp16-00001-of-00002.safetensors" in plain  # only variant files exist


def test_download_goes_through_snapshot_download(hf_cache, monkeypatch):
    import huggingface_hub as hub
    from huggingface_hub.file_download import DryRunFileInfo

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    repo_files = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "unet/diffusion_pytorch_model.fp16.safetensors", "vae/config.json",
                  "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json",
                  "scheduler/scheduler_config.json"]
    calls = []

    def fake_hf_hub_download(repo_id, filename, revision=None, cache_dir=None, **kw):
        path = Path(cache_dir) / "index" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(INDEX))
        return str(path)

    def fake_snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, dry_run=False, **kw):
        calls.append({"repo": repo_id, "cache_dir": cache_dir, "allow": allow_patterns, "dry_run": dry_run, **kw})
        if dry_run:
            return [DryRunFileInfo(commit_hash="c" * 40, file_size=10, filename=f, local_path="", is_cached=False,
                                   will_download=True) for f in repo_files]
        snapshot, _ = write_cached(Path(cache_dir), repo_id)
        return str(snapshot)

    monkeypatch.setattr(hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    seen = []
    state = download(SPEC, Source("hub", "org/some-model"), progress=lambda done, total: seen.append((done, total)),
                     variant="fp16")
    assert state.ready
    real = [c for c in calls if not c["dry_run"]][0]
    assert real["cache_dir"] == str(hf_cache) and real["repo"] == "org/some-model"
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in real["allow"]
    assert "unet/diffusion_pytorch_model.safetensors" not in real["allow"]
    assert seen[0] == (0, 70) and seen[-1] == (70, 70)  # 7 files of 10 bytes


def test_hf_endpoint_is_the_address_huggingface_hub_downloads_from():
    """HF_ENDPOINT (read when huggingface_hub is imported) becomes the URL of every file
    request, which is what snapshot_download uses; checked in a fresh process, no network."""
    code = """
from huggingface_hub import constants, hf_hub_url
from core.backends.sources import hub_endpoint
print(constants.ENDPOINT)
print(hub_endpoint())
print(hf_hub_url("org/some-model", "model_index.json"))
"""
    env = dict(os.environ, HF_ENDPOINT="https://hf-mirror.example.org/", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    endpoint, ours, url = out.stdout.split()
    assert endpoint == ours == "https://hf-mirror.example.org"
    assert url == "https://hf-mirror.example.org/org/some-model/resolve/main/model_index.json"
