"""The Captions tab's background batch: `python -m core caption` started as a job of its own
(one process per visible GPU; one on this CPU), watched by a timer, stopped, resumed."""

from __future__ import annotations

import time

import gradio as gr
import pytest

import ui.captions as tab
from core.config import DEMO_SCENES, Settings
from ui.browse import ALL


@pytest.fixture
def lab(tmp_path):
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work"))


def wait_for(lab, job, state: str, timeout: float = 120) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = lab.jobs.status(job)
        if status.state == state:
            return status
        time.sleep(0.2)
    raise AssertionError(f"the job did not reach {state}: {lab.jobs.status(job)}")


def test_a_background_batch_captions_the_filtered_disaster_while_the_page_goes_on(lab):
    index = lab.datasets.open(DEMO_SCENES)
    disaster = index.scenes[0].disaster
    job, note, timer = tab.start_background(lab, str(DEMO_SCENES), "template", "", disaster, ALL, "both")
    assert timer.active and "in the background" in note
    status = wait_for(lab, job, "finished")
    wanted = [s for s in index.scenes if s.disaster == disaster]
    assert status.done == status.total == 2 * len(wanted)
    text, timer = tab.background_view(lab, job)
    assert "finished" in text and not timer.active
    for scene in wanted:
        for phase in ("pre", "post"):
            assert lab.captions.store.get(scene.image(phase).name).machine_caption  # written by the job

    # the tile on show gets its new caption, unless the user has typed something of their own
    name = wanted[0].image("pre").name
    shown = tab.refresh_untouched(lab, str(DEMO_SCENES), name, "", 0)
    assert shown[1] == shown[2] == lab.captions.store.get(name).machine_caption and shown[6] >= 1
    untouched = tab.refresh_untouched(lab, str(DEMO_SCENES), name, "My own words, not saved yet", 0)
    assert all(isinstance(v, type(gr.skip())) for v in untouched)

    again, _, _ = tab.start_background(lab, str(DEMO_SCENES), "template", "", disaster, ALL, "both")
    assert wait_for(lab, again, "finished").summary["skipped"] == 2 * len(wanted)  # it resumes: nothing twice


def test_a_stopped_background_batch_says_so_and_a_refusal_is_a_toast(lab):
    job, _, _ = tab.start_background(lab, str(DEMO_SCENES), "template", "", ALL, ALL, "both")
    text, timer = tab.stop_background(lab, job)
    assert lab.jobs.status(job).state == "stopped" and "stopped" in text and not timer.active
    with pytest.warns(UserWarning, match="No scene matches"):
        tab.start_background(lab, str(DEMO_SCENES), "template", "", "no-such-disaster", ALL, "both")
    with pytest.warns(UserWarning, match="not on disk|make cogvlm2|not on this machine"):
        tab.start_background(lab, str(DEMO_SCENES), "qwen2-vl", "", ALL, ALL, "both")


def test_the_generate_tab_runs_a_batch_file_in_the_background(tmp_path):
    import json

    from core.backends.tiny_models.sd import build_tiny_models
    from core.lab import Lab
    from ui import generate as gen

    models = tmp_path / "models"
    build_tiny_models(models, ids=("tiny-sd21",))
    lab = Lab(Settings.load(env={"XBDLAB_TEST_BACKBONES": "1"}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work",
                            models_dir=models))
    scene = lab.datasets.open(DEMO_SCENES).scenes[0].scene_id
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"backbone": "tiny-sd21", "scene": scene, "num_images": 2, "steps": 2, "size": 64})
                     + "\n")
    job, note, timer = gen.start_batch(lab, str(DEMO_SCENES), str(batch))
    assert timer.active
    status = wait_for(lab, job, "finished", timeout=180)
    assert status.summary["written"] == 2 and len(lab.runs.list()) == 2
    assert "2 of 2 images" in gen.batch_view(lab, job)[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"backbone": "sd21", "scene": scene}) + "\n")
    with pytest.raises(Exception, match="not on this machine"):
        gen.start_batch(lab, str(DEMO_SCENES), str(bad))
