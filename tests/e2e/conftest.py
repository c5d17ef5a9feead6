"""Shared by the real-browser tests: one app started as a user starts it (for the whole
session) and one Chromium page per module. Screenshots land in test-artifacts/."""

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

@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """`python app.py` as a user starts it, on a free port and a private work folder."""
    from core.backends.tiny_models.sd import build_tiny_models

    port = free_port()
    work = tmp_path_factory.mktemp("e2e-work")
    models = tmp_path_factory.mktemp("e2e-models")
    build_tiny_models(models, ids=("tiny-sd21", "tiny-sdxl-turbo"))
    env = {**os.environ, "TORCH_HOME": str(work / "torch-home"),  # no AlexNet weights: LPIPS must say so
           "XBDLAB_TEST_BACKBONES": "1", "XBDLAB_MODELS_DIR": str(models)}  # tiny RANDOM backbones
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


