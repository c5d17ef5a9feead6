"""A small captioner for the worker tests, hosted by `python -m core.captions.worker
--captioner-class tests.tiny.worker_captioners:TickingCaptioner`: plumbing only. It
"generates" `TICKS` tokens, one every `TICK_S` seconds (reporting each to the worker, which
may stop it), and answers with the tile's mean brightness. With XBDLAB_TEST_CRASH_FILE set
to an existing file, the first request for the scene id written in it kills the process
(and deletes the file), as a crash in the middle of a batch would."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from core.captions.captioners import Captioner

TICKS = 8
TICK_S = 0.05


class TickingCaptioner(Captioner):
    id = "test-ticking"
    label = "Ticking test captioner (plumbing only)"

    def __init__(self, **options) -> None:
        super().__init__()
        if options.get("source") == "refuse":
            raise RuntimeError("this test captioner was told to refuse to load")

    def preprocess(self, image, context):
        return np.asarray(image), context

    def forward(self, batch):
        image, context = batch
        crash = os.environ.get("XBDLAB_TEST_CRASH_FILE")
        if crash and Path(crash).is_file() and Path(crash).read_text().strip() == context.scene_id:
            Path(crash).unlink()
            os._exit(9)
        for n in range(1, TICKS + 1):
            time.sleep(TICK_S)
            if self.on_token is not None and self.on_token(n * 16):
                return None
        return f"{context.phase} tile of {context.scene_id}, mean {float(image.mean()):.1f}"

    def postprocess(self, output, context):
        return output or ""
