"""Shared test set-up: one thread per library (2-core CI), offline model hub."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Pin torch to one thread if a test imported it (busy 2-core boxes slow down 40x)."""
    yield
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
