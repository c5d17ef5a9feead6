"""Background batches in a real browser: the Captions tab captions a disaster in processes
of its own and the Generate tab runs a batch file, each showing its progress, while the page
stays usable (tiny RANDOM SD 2.1 for the images: plumbing only, the pictures are noise)."""

import json
import re
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]


def test_the_captions_tab_captions_a_disaster_in_the_background(app, page):
    page.goto(app)
    page.get_by_role("tab", name="Captions").click()
    page.get_by_role("button", name="Caption these tiles by machine").click()  # the accordion
    page.locator("#cap-bg-run").click()
    note = page.locator("#cap-bg-note")
    note.get_by_text("finished", exact=False).wait_for(timeout=120_000)
    made, before = map(int, re.search(r"(\d+) captioned, (\d+) already done", note.inner_text()).groups())
    assert made + before == 6  # the post tiles of the six demo scenes (earlier tests may have done some)
    editor = page.locator("#cap-editor textarea")
    page.wait_for_function("e => e.value.length > 0", arg=editor.element_handle())  # the tile on show got its caption
    note.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "batches-1-captions-background.png"))
    page.locator("#cap-bg-run").click()  # a second batch resumes: everything is already done
    note.get_by_text("0 captioned, 6 already done", exact=False).wait_for(timeout=120_000)
    page.get_by_role("tab", name="Browse").click()  # the page was never blocked
    page.get_by_role("tab", name="Captions").click()


def test_the_generate_tab_runs_a_batch_file_in_the_background(app, page, tmp_path):
    batch = tmp_path / "requests.jsonl"
    batch.write_text("".join(json.dumps({"backbone": "tiny-sd21", "scene": scene, "steps": 2, "size": 64,
                                         "seed": n}) + "\n"
                             for n, scene in enumerate(("demo-flood_00000001", "demo-wildfire_00000002"))))
    page.goto(app)
    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("tab", name="A batch file in the background").click()
    page.locator("#gen-batch-file input[type=file]").set_input_files(str(batch))
    page.locator("#gen-batch-file").get_by_text("requests.jsonl").wait_for()
    page.locator("#gen-batch-run").click()
    note = page.locator("#gen-batch-note")
    note.get_by_text("finished", exact=False).wait_for(timeout=180_000)
    assert "2 of 2 images done" in note.inner_text()
    note.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "batches-2-generate-background.png"))
