"""One app launched on a free local port for all UI tests, with a private work folder."""

import pytest

from core.config import DEMO_SCENES, Settings
from tests.net import free_port


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """URL of a running app on the demo scenes (LPIPS on a random backbone: plumbing only)."""
    from core.lab import Lab
    from ui.app import build_ui, launch

    work = tmp_path_factory.mktemp("work")
    settings = Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=work, port=free_port(),
                             lpips_random_backbone=True)
    lab = Lab(settings)
    demo = build_ui(lab)
    _, url, _ = launch(demo, lab, prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/") + "/"
    demo.close()


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=False)
