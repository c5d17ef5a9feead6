"""One app launched on a free local port for all UI tests, with a private work folder."""

import pytest

from core.config import DEMO_SCENES, Settings
from tests.net import free_port


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """URL of a running app on the demo scenes with the tiny RANDOM test backbones enabled
    and LPIPS on a random backbone: it tests plumbing, not picture quality."""
    from core.lab import Lab
    from core.backends.tiny_models.sd import build_tiny_models
    from ui.app import build_ui, launch

    work = tmp_path_factory.mktemp("work")
    models = tmp_path_factory.mktemp("models")
    build_tiny_models(models, ids=("tiny-sd21", "tiny-sdxl-turbo"))
    settings = Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=work, port=free_port(),
                             lpips_random_backbone=True, test_backbones=True, models_dir=models)
    lab = Lab(settings)
    demo = build_ui(lab)
    _, url, _ = launch(demo, lab, prevent_thread_lock=True, quiet=True)
    yield url.rstrip("/") + "/"
    demo.close()


@pytest.fixture(scope="session")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False, download_files=False)
