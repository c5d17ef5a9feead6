"""Watching a generation in a real browser: one progress bar, and a preview that stays
visible while denoising (tiny RANDOM backbone: the pictures are noise)."""

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]

# Progress overlays Gradio draws over an output while an event runs.
OVERLAYS = """id => [...document.querySelectorAll(`#${id} .progress-text, #${id} .eta-bar`)]
  .filter(e => e.offsetParent !== null).length"""


def test_one_progress_bar_and_a_visible_preview_while_denoising(app, page):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(app)
    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("combobox", name="Backbone").click()
    page.get_by_role("option", name="Tiny random SD 2.1 (tests)").click()
    page.get_by_text("is ready").first.wait_for()
    steps = page.locator("#gen-control-steps input[type=number]")
    steps.fill("100")
    steps.press("Enter")
    page.locator("#gen-run").click()
    page.locator("#gen-preview img").wait_for()  # a preview arrives while it denoises
    assert page.evaluate(OVERLAYS, "gen-preview") == 0  # nothing drawn over the preview
    seen = page.evaluate(OVERLAYS, "gen-results")
    page.screenshot(path=str(ARTIFACTS / "15-generate-preview.png"))
    page.get_by_text("Saved 1 run(s)").wait_for()
    assert seen <= 1 and page.evaluate(OVERLAYS, "gen-info") == 0  # one bar, on the results only
