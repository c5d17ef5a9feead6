"""A newcomer's path through the app in a real browser (Debian chromium via Playwright).

Screenshots land in test-artifacts/ for people to look at.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (make browser)"),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """`python app.py` as a user starts it, on a free port and a private work folder."""
    port = free_port()
    work = tmp_path_factory.mktemp("e2e-work")
    env = {**os.environ, "TORCH_HOME": str(work / "torch-home")}  # no AlexNet weights: LPIPS must say so
    env.pop("XBDLAB_LPIPS_RANDOM_BACKBONE", None)
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--work", str(work)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("the app exited: " + proc.stdout.read())
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the app did not answer within 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1500, "height": 1100})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def test_browse_overlay_then_score_the_baseline(app, page):
    page.goto(app)
    thumbs = page.locator("#browse-gallery img")
    thumbs.first.wait_for()
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
