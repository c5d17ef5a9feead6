"""The captioning worker in the app's own environment, with a small test captioner behind
the same protocol CogVLM2 uses (plumbing): the protocol, progress, cancel, a crash in the
middle of a batch, the GPU handover to a diffusion model, and clear messages."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from core.captions.captioners import CaptionContext
from core.captions.remote import CaptionCancelled, CaptionWorker, WorkerCaptioner
from core.errors import ModelLoadError, ModelNotAvailable
from core.models.manager import ModelManager
from tests import xbd_trees as T

TEST_CLASS = "tests.tiny.worker_captioners:TickingCaptioner"
CONTEXT = CaptionContext("socal-fire_00000003", "post", "socal-fire", "fire")


def ticking(**kw) -> WorkerCaptioner:
    return WorkerCaptioner("test-ticking", python=sys.executable, captioner_class=TEST_CLASS, spec_dtype="fp32", **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def tile(tmp_path):
    return T.write_png(tmp_path / "tile.png", 32, seed=3)


def test_the_worker_starts_answers_reports_progress_and_exits_cleanly(tile):
    worker = ticking().loader("cpu", None).model
    ready = worker.ready
    assert ready["event"] == "ready" and ready["captioner"] == "test-ticking" and ready["versions"]["python"]
    seen = []
    answer = worker.caption(tile, CONTEXT, on_progress=seen.append)
    assert answer["text"].startswith("post tile of socal-fire_00000003, mean ")
    assert seen and seen == sorted(seen)  # progress as it generates
    process = worker.process
    worker.close()
    assert process.wait(timeout=10) == 0 and not worker.alive


def test_a_cancelled_request_stops_and_the_worker_takes_the_next(tile):
    worker = ticking().loader("cpu", None).model
    try:
        progress = []
        with pytest.raises(CaptionCancelled):
            worker.caption(tile, CONTEXT, on_progress=progress.append, cancel=lambda: bool(progress))
        assert len(progress) < 8  # stopped before its last token
        assert worker.caption(tile, CONTEXT)["text"].startswith("post tile")
        assert worker.starts == 1  # the same process
    finally:
        worker.close()


def test_a_worker_that_dies_mid_batch_is_restarted_and_the_batch_finishes(tmp_path, monkeypatch):
    from core.captions.batch import caption_scenes
    from core.captions.store import CaptionStore
    from core.data.index import index_dataset

    data = T.make_official(tmp_path / "data", {"train": [("socal-fire", "00000003"), ("socal-fire", "00000004")]})
    crash = tmp_path / "crash"
    crash.write_text("socal-fire_00000004")
    monkeypatch.setenv("XBDLAB_TEST_CRASH_FILE", str(crash))
    index = index_dataset(data)
    store = CaptionStore(tmp_path / "captions.sqlite")
    captioner = ticking()
    manager = ModelManager(device="cpu", ram_budget_gb=1)
    report = caption_scenes(index, index.scenes, captioner, store=store, manager=manager)
    assert len(report.captioned) == 4 and not report.failed  # every tile, the crashed one included
    assert not crash.exists()  # it really crashed once
    assert captioner.worker.starts == 2  # started again after the crash, and went on
    assert store.get("socal-fire_00000004_pre_disaster.png").machine_caption.startswith("pre tile")
    manager.unload_all()


def test_the_worker_hands_the_gpu_over_to_the_next_model_and_comes_back(tile):
    manager = ModelManager(device="cpu", ram_budget_gb=1)
    captioner = ticking()
    with manager.use(captioner.model_key, captioner.loader, spec_dtype="fp32") as bundle:
        captioner.bind(bundle)
        first_pid = bundle.model.process.pid
        assert captioner.caption(np.zeros((8, 8, 3), np.uint8), CONTEXT).endswith("mean 0.0")
    with manager.use("diffusion", lambda device, dtype: object(), spec_dtype="fp32"):
        assert bundle.model.process is None and not alive(first_pid)  # the worker exited: its memory is free
    with manager.use(captioner.model_key, captioner.loader, spec_dtype="fp32") as again:
        captioner.bind(again)
        assert captioner.caption(np.full((8, 8, 3), 2, np.uint8), CONTEXT).endswith("mean 2.0")
        assert again.model.process.pid != first_pid  # started anew on demand
    manager.unload_all()
    assert again.model.process is None


def test_a_captioner_that_cannot_load_says_why():
    with pytest.raises(ModelLoadError, match="told to refuse to load"):
        ticking(source="refuse").loader("cpu", None)


def test_cogvlm2_runs_in_its_own_environment_and_says_how_to_make_it(tmp_path, monkeypatch):
    from core.captions.captioners import get_captioner
    from core.captions.cogvlm2 import COGVLM2_ID

    monkeypatch.setenv("XBDLAB_COGVLM2_ENV", str(tmp_path / "no-env"))
    captioner = get_captioner("cogvlm2")
    assert isinstance(captioner, WorkerCaptioner)  # the app's transformers 5 cannot run its remote code
    assert captioner.id == "cogvlm2" and captioner.model_name == f"cogvlm2:{COGVLM2_ID}"
    assert "in one paragraph" in captioner.prompt(CONTEXT)
    with pytest.raises(ModelNotAvailable, match="make cogvlm2"):
        captioner.check_ready()
    assert get_captioner("cogvlm2-int4").id == "cogvlm2-int4"


def test_the_cli_says_how_to_make_the_cogvlm2_environment(tmp_path, monkeypatch, capsys):
    from core.cli import main
    from core.config import DEMO_SCENES

    monkeypatch.setenv("XBDLAB_COGVLM2_ENV", str(tmp_path / "no-env"))
    assert main(["--work", str(tmp_path / "w"), "caption", "--data", str(DEMO_SCENES), "--captioner", "cogvlm2"]) == 2
    err = capsys.readouterr().err
    assert "make cogvlm2" in err and "Traceback" not in err


def test_cancelling_a_batch_stops_the_tile_in_progress_in_the_worker(tmp_path):
    import threading

    from core.captions.batch import caption_scenes
    from core.captions.store import CaptionStore
    from core.data.index import index_dataset

    data = T.make_official(tmp_path / "data", {"train": [("socal-fire", "00000003"), ("socal-fire", "00000004")]})
    index = index_dataset(data)
    store = CaptionStore(tmp_path / "captions.sqlite")
    captioner = ticking()
    stop = threading.Event()
    captioner.on_progress = lambda tokens: stop.set()  # cancel as soon as the first tile is under way
    report = caption_scenes(index, index.scenes, captioner, store=store, cancel=stop)
    assert report.cancelled and not report.captioned and not report.failed
    assert captioner.worker.alive  # the worker stopped the request, not itself
    captioner.worker.close()
