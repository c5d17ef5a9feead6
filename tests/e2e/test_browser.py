"""A newcomer's path through the app in a real browser (Debian chromium via Playwright).

Screenshots land in test-artifacts/ for people to look at.
"""

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]


def test_browse_overlay_then_score_the_baseline(app, page):
    page.goto(app)
    thumbs = page.locator("#browse-gallery img")
    thumbs.first.wait_for()
    # thumbnails arrive progressively: wait for the whole first page
    page.wait_for_function("() => document.querySelectorAll('#browse-gallery img').length >= 6")
    all_scenes = thumbs.count()
    assert all_scenes >= 6
    page.screenshot(path=str(ARTIFACTS / "01-browse.png"))

    # Pick a scene with destroyed buildings through the damage filter, then open it.
    page.get_by_role("combobox", name="Damage").click()
    page.get_by_role("option", name="has destroyed buildings").click()
    page.wait_for_function("n => document.querySelectorAll('#browse-gallery img').length < n", arg=all_scenes)
    thumbs.first.click()
    title = page.locator("#browse-title")
    title.get_by_role("heading").wait_for()
    scene_id = title.get_by_role("heading").inner_text().strip()
    assert "_" in scene_id

    page.locator("#browse-overlay input[type=checkbox]").check()
    page.locator("#browse-legend").get_by_text("destroyed").wait_for()  # the legend appears
    page.wait_for_function("() => !document.querySelector('#browse-post .progress-text')")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "02-browse-overlay.png"), full_page=True)

    page.get_by_role("button", name="Score this scene in Evaluate →").click()
    page.get_by_role("button", name="Add persistence baseline (post := pre)").click()
    page.locator("#eval-runs input[type=checkbox]").first.wait_for()
    page.locator("#eval-score").click()
    table = page.locator("#eval-table")
    table.get_by_text("destroyed", exact=True).first.wait_for()
    assert table.get_by_text("whole image", exact=True).count() == 1
    page.get_by_text("alexnet-owt-7be5be79.pth").first.wait_for()  # LPIPS says what is missing
    page.locator("#eval-board-btn").click()
    page.locator("#eval-board").get_by_text("baseline").first.wait_for()
    page.locator("#eval-compare img").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "03-evaluate.png"), full_page=True)


def test_generate_one_image_and_a_comparison_grid(app, page):
    """Tiny random backbones: the pictures are noise, the plumbing is what is checked."""
    page.goto(app)
    page.get_by_role("tab", name="Generate").click()
    page.get_by_role("combobox", name="Backbone").click()
    page.get_by_role("option", name="Tiny random SD 2.1 (tests)").click()
    page.get_by_text("is ready").first.wait_for()
    page.locator("#gen-run").click()
    page.locator("#gen-results img").first.wait_for()
    page.get_by_text("Saved 1 run(s)").wait_for()
    page.screenshot(path=str(ARTIFACTS / "04-generate.png"), full_page=True)

    page.get_by_role("button", name="See its attention maps →").click()
    page.locator("#att-grid img").first.wait_for()
    page.locator("#att-stats").get_by_text("satellite").first.wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "07-attention.png"), full_page=True)
    page.get_by_role("tab", name="Generate").click()

    page.get_by_role("tab", name="Compare backbones or sweep a parameter").click()
    boxes = page.locator("#gen-compare-backbones")
    boxes.get_by_text("Tiny random SD 2.1 (tests)").click()
    boxes.get_by_text("Tiny random SDXL Turbo (tests)").click()
    page.locator("#gen-compare").click()
    page.locator("#gen-grid img").wait_for()
    page.get_by_text("Made 2 of 2 cells").wait_for()
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "05-compare.png"), full_page=True)


def test_a_caption_edit_survives_a_page_reload(app, page):
    page.goto(app)
    page.get_by_role("tab", name="Captions").click()
    page.get_by_role("button", name="Caption these tiles by machine").click()
    page.locator("#cap-run").click()
    page.locator("#cap-batch").get_by_text("captioned").wait_for()
    editor = page.locator("#cap-editor textarea")
    editor.wait_for()
    page.wait_for_function("() => document.querySelector('#cap-editor textarea').value.length > 0")
    tile = page.locator("#cap-image input").input_value()
    editor.fill("Corrected by hand: the flood reached the school.")
    editor.press("End")
    editor.type(" Roads closed.")
    page.locator("#cap-saved").get_by_text("edited").wait_for()
    page.screenshot(path=str(ARTIFACTS / "06-captions.png"), full_page=True)

    page.reload()
    page.get_by_role("tab", name="Captions").click()
    page.locator("#cap-image input").wait_for()
    page.wait_for_function("t => document.querySelector('#cap-image input').value === t", arg=tile)
    page.wait_for_function(
        "() => document.querySelector('#cap-editor textarea').value.endsWith('Roads closed.')")
    assert editor.input_value() == "Corrected by hand: the flood reached the school. Roads closed."
