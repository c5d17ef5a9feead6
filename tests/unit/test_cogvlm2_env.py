"""CogVLM2 captions for real, end to end, on a CPU: the CogVLM2 environment (`make cogvlm2`,
core.captions.envs) with its own transformers 4.41.2, the captioning worker in it, and a tiny
CogVLM2-shaped remote-code model (tests/tiny/cogvlm2_remote.py, random weights; NOT
CogVLM2) loaded by `CogVLM2Captioner` through `trust_remote_code` from a local models folder,
driven by the app's CLI on transformers 5.

The environment is built once, at .venv-cogvlm2 in the repository (or $XBDLAB_COGVLM2_ENV),
and reused by later runs: about 90 s and 225 MB from the package index, then nothing. It is
built again when its xbdlab-env.txt is missing or older than requirements-cogvlm2.txt.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from core.captions import envs
from core.captions.captioners import CaptionContext
from core.config import DEMO_SCENES
from tests.tiny.cogvlm2_remote import ANSWER_WORDS, SPECIAL_TOKENS, build_tiny_cogvlm2, weight_shapes

REPO = Path(__file__).resolve().parents[2]
ENV_PINS = {"transformers": "4.41.2", "tokenizers": "0.19.1"}  # requirements-cogvlm2.txt


def _demo_tiles() -> list[Path]:
    return sorted(DEMO_SCENES.glob("*/images/*.png"))


def cogvlm2_env() -> Path:
    """The CogVLM2 environment's python, built first when it is missing or stale."""
    from filelock import FileLock

    folder = envs.env_dir()
    stamp = folder / "xbdlab-env.txt"
    with FileLock(str(Path(tempfile.gettempdir()) / "xbdlab-cogvlm2-env.lock"), timeout=900):
        stale = not stamp.is_file() or stamp.stat().st_mtime < envs.REQUIREMENTS.stat().st_mtime
        if stale or not envs.env_python(folder).is_file():
            start = time.monotonic()
            envs.create(folder)
            print(f"built {folder} in {time.monotonic() - start:.0f} s")
    return envs.env_python(folder)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A models folder with the tiny remote-code model as `cogvlm2/` (where the caption
    service looks for a local CogVLM2)."""
    models = tmp_path_factory.mktemp("models")
    build_tiny_cogvlm2(models / "cogvlm2")
    return models


def test_the_tiny_remote_code_model_folder_is_complete(tiny_models):
    """Fast, in the app's environment: what the folder holds, the tokenizer read by the
    app's tokenizers (the CogVLM2 environment's 0.19 reads the same file in the slow test)."""
    from safetensors import safe_open
    from tokenizers import Tokenizer

    folder = tiny_models / "cogvlm2"
    config = json.loads((folder / "config.json").read_text())
    for target in config["auto_map"].values():
        assert (folder / (target.split(".")[0] + ".py")).is_file()
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    assert shapes == weight_shapes(config)
    assert 3_000 < sum(_numel(s) for s in shapes.values()) < 20_000  # a few thousand parameters
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(config["vocab_size"] - 10,
                                                                          config["vocab_size"]))
    assert config["eos_token_id"][0] == tokenizer.token_to_id("<|end_of_text|>")
    text = "Question: are the roads flooded? Answer:"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == text and len(ids) < len(text)  # the answer words are single tokens
    assert tokenizer.encode(text).ids[0] == config["bos_token_id"]
    assert len(config["answer_token_ids"]) == len(ANSWER_WORDS)


def test_the_xformers_stand_in_is_attention_in_xformers_layout():
    """The environment's memory_efficient_attention (on SDPA) against attention written out,
    in xformers' (batch, tokens, heads, dim) layout, with CogVLM2's explicit scale."""
    import torch

    namespace: dict = {}
    exec(envs.XFORMERS_OPS_SHIM, namespace)
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 4, generator=generator) for _ in range(3))
    scale = 0.3
    weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q, k) * scale, dim=-1)
    expected = torch.einsum("bhqk,bkhd->bqhd", weights, v)
    torch.testing.assert_close(namespace["memory_efficient_attention"](q, k, v, scale=scale), expected)


def test_the_worker_leaves_a_quantised_model_where_from_pretrained_put_it():
    """CogVLM2 int4 (bitsandbytes) is placed on the GPU while loading, and its `.to()` raises
    ValueError, as transformers' PreTrainedModel.to does for bitsandbytes models."""
    from core.captions.captioners import Captioner, ModelBundle
    from core.captions.worker import load

    class Model:
        def __init__(self, quantised: bool) -> None:
            self.is_quantized, self.moved = quantised, None

        def to(self, device):
            if self.is_quantized:
                raise ValueError("`.to` is not supported for `4-bit` or `8-bit` bitsandbytes models.")
            self.moved = device
            return self

    class Fake(Captioner):
        needs_model = True

        def __init__(self, quantised: bool) -> None:
            super().__init__()
            self.quantised = quantised

        def loader(self, device, dtype):
            return ModelBundle(model=Model(self.quantised))

    assert load(Fake(True), "cpu", "bf16").bundle.model.moved is None
    assert load(Fake(False), "cpu", "bf16").bundle.model.moved == "cpu"


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.slow
def test_cogvlm2_captions_the_demo_tiles_through_its_own_environment(tiny_models, tmp_path):
    python = cogvlm2_env()
    work = tmp_path / "work"
    env = {**os.environ, envs.ENV_VARIABLE: str(envs.env_dir()), "HF_HUB_OFFLINE": "1",
           "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "OMP_NUM_THREADS": "1"}

    def caption() -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "core", "--work", str(work), "caption", "--data", str(DEMO_SCENES),
             "--captioner", "cogvlm2", "--models", str(tiny_models), "--json"],
            cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        return json.loads(done.stdout)

    start = time.monotonic()
    first = caption()
    first_s = time.monotonic() - start
    tiles = _demo_tiles()
    assert first["captioned"] == len(tiles) == 12 and not first["failed"], first

    from core.captions.store import CaptionStore

    with CaptionStore(work / "captions.sqlite") as store:
        records = store.list()
    assert sorted(r.image for r in records) == sorted(t.name for t in tiles)
    captions = [r.machine_caption for r in records]
    assert all(c and c.split() and set(c.split()) <= set(ANSWER_WORDS) for c in captions), captions
    assert len(set(captions)) > len(captions) // 2, captions  # the prompt and the image change them
    assert {r.machine_model for r in records} == {f"cogvlm2:{tiny_models / 'cogvlm2'}"}
    assert all(r.machine_prompt.startswith("Describe this ") for r in records)

    again = caption()  # resumes: everything is done, and no worker is started
    assert again["captioned"] == 0 and again["skipped"] == len(tiles) and not again["failed"]

    _the_worker_runs_transformers_4_41_and_sees_the_image(python, tiny_models / "cogvlm2", env, tiles)
    print(f"CLI, 12 tiles (worker start included): {first_s:.1f} s")


def _the_worker_runs_transformers_4_41_and_sees_the_image(python: Path, folder: Path, env: dict, tiles) -> None:
    """The worker command the app builds, run directly: it reports the environment's
    versions, different tiles with the same prompt get different captions, and timings."""
    from core.captions.captioners import get_captioner
    from core.captions.remote import REPO_ROOT, CaptionWorker

    captioner = get_captioner("cogvlm2", source=str(folder))  # the worker-driven one, here
    command = captioner.command("cpu", "float32")
    assert command[0] == str(python)
    worker = CaptionWorker(command, env={**env, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"})
    start = time.monotonic()
    ready = worker.start()
    startup = time.monotonic() - start
    try:
        assert {k: ready["versions"].get(k) for k in ENV_PINS} == ENV_PINS, ready
        assert ready["captioner"] == "cogvlm2" and ready["model"] == f"cogvlm2:{folder}"
        context = CaptionContext("demo-flood_00000001", "post", "demo-flood", "flooding")
        answers, overheads = [], []
        for i, tile in enumerate(tiles[:4]):
            start = time.monotonic()
            event = worker.caption(tile, context)
            if i:  # the first request also imports torch._dynamo (transformers 4.41's generate)
                overheads.append(time.monotonic() - start - event["seconds"])
            answers.append(event["text"])
        assert len(set(answers)) > 1, answers  # same prompt, other tile: another caption
    finally:
        worker.close()
    print(f"worker start -> ready {startup:.2f} s (its load {ready['load_seconds']} s); "
          f"per-request overhead median {statistics.median(overheads) * 1000:.1f} ms")
