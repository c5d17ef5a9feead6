"""The Train tab's events through gradio_client: start a real background run (tiny RANDOM
SD 2.1: plumbing only), watch its loss live, stop it, resume it to the end, and find it
among Generate's backbones."""

import time

import pytest

from tests.ui.test_generate_client import said, skipped

NAME = "client-run"
MAX_STEPS = 12
# /start_training's inputs: filters, base, task, name, then ui.train.HYPER.
HYPER = dict(resolution=64, learning_rate=1e-4, batch_size=2, grad_accum=1, max_steps=MAX_STEPS,
             lr_scheduler="constant", lr_warmup_steps=0, mixed_precision="no", gradient_checkpointing=False,
             use_8bit_adam=False, metadata_dropout=0.1, prompt_dropout=0.1, augment=False, seed=0,
             validate_every=100, checkpoint_every=100, keep_checkpoints=2, val_count=1, val_split="",
             validation_steps=2, num_workers=0)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny SD 2.1 folder to train on; the background runs inherit os.environ."""
    from core.backends.tiny_models.sd import build_tiny_models

    folder = tmp_path_factory.mktemp("train-base")
    build_tiny_models(folder, ids=("tiny-sd21",))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XBDLAB_LPIPS_RANDOM_BACKBONE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield str(folder / "tiny-sd21")


def start(client, base, name=NAME, **changes):
    from ui.train import ALL, HYPER as ORDER

    hyper = {**HYPER, "base_model": base, **changes}
    assert tuple(hyper) == ORDER
    return client.predict(ALL, ALL, ALL, "sd21", "future", name, *hyper.values(), api_name="/start_training")


def status(client, name=NAME):
    """(status line, the step it says, the loss curve's picture) from /training_status."""
    line, curve = client.predict(name, api_name="/training_status")[:2]
    return line, int(line.split("step ", 1)[1].split(" /", 1)[0]), curve


def wait_for(client, until, timeout=180.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line, step, curve = status(client)
        if until(line, step, curve):
            return line, step, curve
        time.sleep(0.2)
    pytest.fail(f"not there after {timeout} s: {line}")


def test_start_watch_stop_resume_and_use_it(client, base, caplog):
    runs = client.predict(None, api_name="/training_runs")
    assert NAME not in [c[1] for c in runs["choices"]]
    out = start(client, base)
    assert out[0]["value"] == NAME and NAME in [c[1] for c in out[0]["choices"]]
    assert "running" in out[1]

    line, step, curve = wait_for(client, lambda line, step, curve: step >= 1)  # the live loss
    assert "running" in line and "loss " in line and step < MAX_STEPS
    assert curve and curve["path"].endswith(".png")  # and its curve
    stopping = client.predict(NAME, api_name="/stop_training")
    assert "stopping" in stopping[0] or "stopped" in stopping[0]
    line, stopped_at, _ = wait_for(client, lambda line, step, curve: ": stopped" in line)
    assert 1 <= stopped_at < MAX_STEPS and "Resume" in line

    resumed = client.predict(NAME, api_name="/resume_training")
    assert "running" in resumed[0]
    line, step, _ = wait_for(client, lambda line, step, curve: ": finished" in line or ": failed" in line)
    assert ": finished" in line and step == MAX_STEPS and f"trained-{NAME}" in line
    scores = client.predict(NAME, api_name="/training_status")[3]
    assert scores["headers"][:3] == ["step", "probe loss", "PSNR ↑"]
    assert scores["data"][-1][0] == MAX_STEPS  # validated at the end

    choices = client.predict("tiny-sd21", [], api_name="/backbone_choices")[0]
    assert f"trained-{NAME}" in [c[1] for c in choices["choices"]] and "value" not in choices  # the pick stays

    again = start(client, base)  # the name is taken: a toast, nothing changes
    assert skipped(again) and said(caplog, "already holds a run")
