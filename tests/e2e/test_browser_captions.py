"""The Captions tab in a real browser (Debian chromium via Playwright): the tile picture
loads after every reload, and typing a sentence leaves one or two versions in the history,
not one per keystroke. Screenshots land in test-artifacts/."""

from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]

RELOADS = 6
TILE_LOADED = """() => {
  const img = document.querySelector('#cap-tile img');
  return img !== null && img.complete && img.naturalWidth > 0;
}"""


EDIT_ROWS = """() => [...document.querySelectorAll('#cap-history *')]
  .filter(e => e.offsetParent !== null && e.children.length === 0 && (e.textContent || '').trim() === 'edit').length"""


def _open_captions(page, app):
    page.get_by_role("tab", name="Captions").click()
    page.wait_for_function("() => (document.querySelector('#cap-image input') || {}).value")


def test_the_tile_picture_loads_after_every_reload(app, page):
    failed = []  # tile requests the browser could not complete (a cut-short body, a 4xx/5xx)
    page.on("requestfailed", lambda r: failed.append((r.url, r.failure)) if "/file=" in r.url else None)
    page.on("response", lambda r: failed.append((r.url, r.status)) if "/file=" in r.url and r.status >= 400
            else None)
    page.goto(app)
    for n in range(RELOADS):
        if n:
            page.reload()
        _open_captions(page, app)
        page.wait_for_function(TILE_LOADED, timeout=30_000)
        width = page.evaluate("() => document.querySelector('#cap-tile img').naturalWidth")
        assert width > 0, f"reload {n}: the tile did not load"
        if n == 0:
            page.screenshot(path=str(ARTIFACTS / "08-captions-tile.png"), full_page=True)
    page.screenshot(path=str(ARTIFACTS / "09-captions-tile-after-reloads.png"), full_page=True)
    assert failed == []


def test_typing_a_sentence_keeps_one_or_two_versions(app, page):
    page.goto(app)
    _open_captions(page, app)
    # the next tile, so the history is this test's alone
    page.locator("#cap-next").click()
    page.wait_for_timeout(500)
    editor = page.locator("#cap-editor textarea")
    editor.click()
    editor.press("Control+a")
    editor.press("Delete")
    sentence = "Lava has covered the eastern half of the town and the school."
    editor.type(sentence, delay=40)  # a key at a time, as a person types
    page.wait_for_function(
        "() => document.querySelector('#cap-saved').innerText.includes('edited')")
    page.get_by_text("History", exact=True).click()
    page.wait_for_timeout(2000)  # the last autosave has come back
    row_text = page.locator("#cap-history").get_by_text("Lava has covered", exact=False).filter(visible=True).first
    row_text.wait_for()
    page.screenshot(path=str(ARTIFACTS / "10-captions-history.png"), full_page=True)
    edits = page.evaluate(EDIT_ROWS)  # visible cells saying "edit": one per version kept
    assert 1 <= edits <= 2, edits
    assert editor.input_value() == sentence

    # picking a row offers its version to restore, with what it would bring back
    row_text.click()
    page.locator("#cap-picked").get_by_text("Picked the version").wait_for()
    assert page.locator("#cap-restore").is_enabled()
    page.screenshot(path=str(ARTIFACTS / "11-captions-history-picked.png"), full_page=True)

    page.reload()  # what was typed last is what is stored
    _open_captions(page, app)
    page.locator("#cap-next").click()
    page.wait_for_function("s => document.querySelector('#cap-editor textarea').value === s", arg=sentence)
