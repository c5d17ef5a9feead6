"""The Browse tab in a real browser at a classroom projector's 1400×900: a mistyped folder,
filters that narrow each other, readable thumbnails, tables without hidden scrolling.

Screenshots land in test-artifacts/ (browse-*.png) for people to look at.
"""

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]

# Elements that hide content behind a scroll bar: wider (or taller) than their box, overflow auto or scroll.
SCROLLING = """sel => [...document.querySelectorAll(sel + ', ' + sel + ' *')].filter(e => {
    const style = getComputedStyle(e), scrolls = v => ['auto', 'scroll'].includes(v);
    return (e.scrollWidth > e.clientWidth + 1 && scrolls(style.overflowX))
        || (e.scrollHeight > e.clientHeight + 1 && scrolls(style.overflowY));
}).length"""


@pytest.fixture(scope="module")
def browse(app, page):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.set_default_timeout(20_000)
    page.goto(app)
    page.locator("#browse-gallery img").first.wait_for()
    return page


def options(page, name):
    """Open the dropdown `name`, read its options, close it again."""
    page.get_by_role("combobox", name=name, exact=True).click()
    listed = page.get_by_role("option")
    listed.first.wait_for()
    names = [t.strip().splitlines()[-1].strip() for t in listed.all_inner_texts()]  # no "✓" of the chosen one
    page.keyboard.press("Escape")
    page.get_by_role("combobox", name=name, exact=True).blur()  # a focused dropdown would not reopen on a click
    page.get_by_role("option").first.wait_for(state="detached")
    return names


def test_a_mistyped_folder_gives_one_message_and_the_filters_stay_usable(browse):
    page = browse
    before = options(page, "Disaster")
    folder = page.get_by_label("Data folder")
    folder.fill("/no/such/xbd-folder")
    folder.press("Enter")
    page.get_by_test_id("toast-body").first.wait_for()
    page.locator("#browse-status").get_by_text("Could not open").wait_for()
    assert page.get_by_test_id("toast-body").count() == 1  # one message, not one per output
    status = page.locator("#browse-status").inner_text()
    assert "/no/such/xbd-folder" in status and "is still open" in status  # box and status agree
    page.screenshot(path=str(ARTIFACTS / "browse-1-mistyped-folder.png"))
    assert page.locator(".error:visible").count() == 0  # no red badge over any control
    for name in ("Split", "Disaster", "Disaster type"):
        combo = page.get_by_role("combobox", name=name, exact=True)
        assert combo.input_value() == "All"  # kept
    assert options(page, "Disaster") == before  # still open their lists, with the same choices
    assert page.locator("#browse-gallery img").count() >= 6  # the open folder's scenes are still shown


def test_a_split_narrows_the_disaster_list(browse):
    page = browse
    every = options(page, "Disaster")
    page.get_by_role("combobox", name="Split", exact=True).click()
    page.get_by_role("option", name="test", exact=True).click()
    page.wait_for_function(
        "n => document.querySelectorAll('#browse-gallery img').length < n", arg=len(every) - 1)
    page.wait_for_timeout(300)
    narrowed = options(page, "Disaster")
    assert narrowed[0] == "All" and 1 < len(narrowed) < len(every) and set(narrowed) < set(every)
    page.get_by_role("combobox", name="Disaster", exact=True).click()
    page.wait_for_timeout(200)
    page.screenshot(path=str(ARTIFACTS / "browse-2-split-narrows-disasters.png"))
    page.keyboard.press("Escape")
    page.get_by_role("combobox", name="Disaster", exact=True).blur()


def test_thumbnails_name_their_scene_and_the_pager_is_one_line(browse):
    page = browse
    thumb = page.locator("#browse-gallery .thumbnail-item").first
    thumb.hover()
    caption = thumb.locator(".caption-label").inner_text().strip()
    assert "_" in caption  # the whole scene id, e.g. hurricane-florence_00000021
    assert thumb.locator("img").get_attribute("title") == caption  # and on hover
    assert thumb.locator(".caption-label").evaluate("e => e.scrollWidth <= e.clientWidth")  # not cut off
    page.screenshot(path=str(ARTIFACTS / "browse-3-thumbnail-hover.png"))
    boxes = [page.locator(sel).bounding_box() for sel in (
        "#browse-pager button >> nth=0", "#browse-page-info", "#browse-pager button >> nth=1")]
    middles = [b["y"] + b["height"] / 2 for b in boxes]
    assert max(middles) - min(middles) < 12 and boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]


def test_the_metadata_tables_show_everything_without_scrolling(browse):
    page = browse
    page.locator("#browse-gallery .thumbnail-item").first.click()
    page.locator("#browse-title").get_by_role("heading").wait_for()
    meta = page.locator("#browse-meta")
    meta.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('#browse-meta').innerText.includes('DiffusionSat')")
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "browse-4-metadata.png"), full_page=True)
    for table in ("#browse-meta", "#browse-counts"):
        assert page.evaluate(SCROLLING, table) == 0, f"{table} hides rows or columns behind a scroll bar at 1400 px"
