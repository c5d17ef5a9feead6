"""Evaluate and Attention in a real browser (Debian chromium via Playwright), at the size of
a classroom laptop: runs reach Evaluate listed and ticked, a failed action is one toast at
the bottom right that goes away by itself and leaves every control usable, and the opacity
number box redraws the maps. Screenshots land in test-artifacts/ for people to look at.
Tiny random backbones: the pictures are noise, the plumbing is what is checked."""

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]

NO_ERROR_BADGES = "() => document.querySelectorAll('.error').length === 0"


def ticked_labels(page) -> list[str]:
    return page.eval_on_selector_all(
        "#eval-runs label", "ls => ls.filter(l => l.querySelector('input').checked).map(l => l.innerText.trim())")


def test_score_the_newest_generation_lands_ticked_and_errors_leave_the_page_usable(app, page):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(app)
    # Evaluate first, on its first scene (Generate's too): it lists that scene's runs (none yet).
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-scene input").wait_for()
    page.wait_for_function("() => document.querySelector('#eval-scene input').value.includes('_')")
    scene_id = page.locator("#eval-scene input").input_value()

    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("combobox", name="Backbone").click()
    page.get_by_role("option", name="Tiny random SD 2.1 (tests)").click()
    page.get_by_text("is ready").first.wait_for()
    page.locator("#gen-run").click()
    page.get_by_text("Saved 1 run(s)").wait_for()

    # The same scene stays picked in Evaluate, so only the wiring can list the new run.
    page.get_by_role("button", name="Score the newest result in Evaluate →").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#eval-runs label')].some("
        "l => l.querySelector('input').checked && l.innerText.includes('tiny-sd21 · seed'))")
    assert page.locator("#eval-scene input").input_value() == scene_id
    ticked = ticked_labels(page)
    assert any("tiny-sd21 · seed" in t and " steps" in t for t in ticked), ticked
    page.locator("#eval-ticked img").first.wait_for()  # a thumbnail of each ticked run
    assert page.eval_on_selector("#eval-runs", "e => [...e.querySelectorAll('*')].some("
                                               "d => getComputedStyle(d).overflowY === 'auto')")

    # A failed action: nothing ticked, Score. One toast, bottom right; no error badge anywhere.
    for box in page.locator("#eval-runs input[type=checkbox]").all():
        box.uncheck()
    page.locator("#eval-score").click()
    toast = page.get_by_test_id("toast-body").filter(has_text="Tick at least one run")
    toast.wait_for()
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "11-evaluate-error-toast.png"))
    box = toast.bounding_box()
    assert box["y"] > 900 / 2 and box["x"] > 1400 / 2, box  # bottom right, clear of the dropdowns
    assert page.evaluate(NO_ERROR_BADGES)
    # ... and it goes away by itself, the controls still answering.
    toast.wait_for(state="hidden", timeout=30_000)
    page.locator("#eval-runs label").filter(has_text="tiny-sd21 · seed").first.locator("input").check()
    page.locator("#eval-score").click()
    table = page.locator("#eval-table")
    table.get_by_text("whole image", exact=True).first.wait_for()
    page.get_by_text("Settings: images as").first.wait_for()
    assert "evaluation size of the prediction" in page.locator("#eval-settings").inner_text()

    # New settings: the settings line and the table follow at once, no second click.
    page.get_by_role("combobox", name="Evaluation size (px)").click()
    page.get_by_role("option", name="256", exact=True).click()
    page.wait_for_function("() => document.querySelector('#eval-settings').innerText.includes('evaluation size 256')")
    page.wait_for_function("() => !document.querySelector('#eval-table .progress-text')")
    assert page.evaluate(NO_ERROR_BADGES)
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "12-evaluate-newest-ticked.png"), full_page=True)


def test_an_upload_for_another_scene_is_refused(app, page, tmp_path):
    from PIL import Image

    page.goto(app)
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_function("() => document.querySelector('#eval-scene input').value.includes('_')")
    scene_id = page.locator("#eval-scene input").input_value()
    other = "demo-flood_00000001" if scene_id != "demo-flood_00000001" else "demo-volcano_00000005"
    wrong = tmp_path / f"{other}_prediction.png"
    Image.new("RGB", (64, 64)).save(wrong)
    page.wait_for_timeout(2000)  # the scene's runs listed
    before = page.locator("#eval-runs label").count()
    page.locator("#eval-upload input[type=file]").set_input_files(str(wrong))
    page.get_by_test_id("toast-body").filter(has_text=f"names {other}").wait_for()
    page.wait_for_timeout(500)
    assert page.locator("#eval-runs label").count() == before
    assert page.evaluate(NO_ERROR_BADGES)
    page.screenshot(path=str(ARTIFACTS / "13-evaluate-upload-refused.png"))


def test_the_opacity_number_box_redraws_the_maps(app, page):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(app)
    page.get_by_role("tab", name="Attention").click()
    page.wait_for_function("() => document.querySelector('#att-run input').value.includes('·')")
    page.locator("#att-grid img").first.wait_for()
    before = page.locator("#att-grid img").first.evaluate("i => i.src")
    number = page.locator("#att-alpha input[type=number]")
    number.fill("0.95")
    number.press("Enter")
    page.wait_for_function("s => { const i = document.querySelector('#att-grid img'); return i && i.src !== s; }",
                           arg=before)
    assert page.locator("#att-grid img").first.evaluate("i => i.src") != before
    assert page.evaluate(NO_ERROR_BADGES)
    page.screenshot(path=str(ARTIFACTS / "14-attention-opacity.png"), full_page=True)
