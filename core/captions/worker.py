"""A captioning worker: one process that loads a captioner once and answers requests over
JSON lines on stdin/stdout, so a captioner whose pins clash with the app's (CogVLM2's
remote code needs transformers 4.40-4.43; the app runs transformers 5) runs in its own
environment, driven by the app (`core.captions.remote`).

    python -m core.captions.worker --captioner cogvlm2 [--source DIR_OR_HUB_ID] [--int4]
                                   [--device cuda] [--dtype bf16] [--max-new-tokens N]
    python -m core.captions.worker --captioner-class package.module:Class ...

The design is not CogVLM2's: any captioner of `core.captions.captioners` (by id) or any
`Captioner` subclass (`--captioner-class`) can be hosted the same way, in whatever
environment its pins need. Only the standard library and this package's captioner modules
are imported before the captioner's own.

Protocol (one JSON object per line, UTF-8; stdout carries nothing else, the captioner's own
prints go to stderr):
- worker → {"event": "ready", "pid", "captioner", "model", "device", "load_seconds",
  "versions"} once loaded, or {"event": "failed", "message"} (then exit code 3);
- client → {"op": "caption", "id", "image": PNG path, "context": {scene_id, phase,
  disaster, disaster_type, counts}}; worker → {"event": "started", "id"}, zero or more
  {"event": "progress", "id", "tokens"}, then {"event": "caption", "id", "text", "prompt",
  "seconds"} or {"event": "cancelled", "id"} or {"event": "error", "id", "message",
  "kind", "out_of_memory"};
- client → {"op": "cancel", "id"}: stops that request at its next generated token (or
  before it starts);
- client → {"op": "shutdown"} or end of stdin: {"event": "bye"}, exit code 0.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import queue
import sys
import threading
import time


class Channel:
    """The protocol's stdout, kept apart from sys.stdout (which is sent to stderr)."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, **message) -> None:
        with self._lock:
            self._out.write(json.dumps(message, default=str) + "\n")
            self._out.flush()


def build_captioner(args):
    """The hosted captioner, from its registry id or its `module:Class`."""
    options = {}
    if args.source:
        options["source"] = args.source
    if args.max_new_tokens:
        options["max_new_tokens"] = args.max_new_tokens
    if args.captioner_class:
        module_name, _, class_name = args.captioner_class.partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls(**options)
    from core.captions.captioners import get_captioner

    if args.int4:
        options["int4"] = True
    return get_captioner(args.captioner, **options)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "tokenizers", "xformers", "bitsandbytes"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def load(captioner, device: str, dtype_name: str):
    """Bind the captioner's model on `device` (CUDA dtype `dtype_name`; fp32 on the CPU)."""
    if not captioner.needs_model:
        return captioner
    import torch

    from core.models.dtypes import torch_dtype

    dtype = torch_dtype(dtype_name, device) if device.startswith("cuda") else torch.float32
    bundle = captioner.loader(device, dtype)
    # bitsandbytes models (CogVLM2 int4) are placed on the GPU by from_pretrained, and their
    # `.to()` raises ValueError; every other model is moved as usual.
    if not getattr(bundle.model, "is_quantized", False):
        bundle = bundle.to(device)
    return captioner.bind(bundle)


def serve(captioner, channel: Channel) -> int:
    """Answer requests until shutdown or end of input. Requests run one at a time, in
    order, on this thread; a reader thread takes cancels while one runs."""
    from core.captions.captioners import CaptionContext

    requests: queue.Queue = queue.Queue()
    cancelled: set = set()

    def read() -> None:
        for line in sys.stdin:
            try:
                message = json.loads(line)
            except ValueError:
                channel.send(event="error", id=None, message=f"not JSON: {line[:80]!r}", kind="ProtocolError")
                continue
            if message.get("op") == "cancel":
                cancelled.add(message.get("id"))
            else:
                requests.put(message)
            if message.get("op") == "shutdown":
                return
        requests.put({"op": "shutdown"})

    threading.Thread(target=read, daemon=True).start()
    while True:
        message = requests.get()
        op = message.get("op")
        if op == "shutdown":
            channel.send(event="bye")
            return 0
        if op != "caption":
            channel.send(event="error", id=message.get("id"), message=f"unknown op {op!r}", kind="ProtocolError")
            continue
        rid = message.get("id")
        if rid in cancelled:
            channel.send(event="cancelled", id=rid)
            continue
        channel.send(event="started", id=rid)
        start = time.monotonic()

        def on_token(n: int, rid=rid) -> bool:
            """Called by captioners that generate token by token: report, and say whether
            to stop."""
            if n % 16 == 0:
                channel.send(event="progress", id=rid, tokens=n)
            return rid in cancelled

        captioner.on_token = on_token
        try:
            from core.data.images import load_rgb

            context = CaptionContext(**message.get("context", {}))
            text = captioner.caption(load_rgb(message["image"]), context)
        except Exception as exc:  # reported, and the worker goes on with the next request
            from core.models.manager import free_cuda_cache, is_out_of_memory

            channel.send(event="error", id=rid, message=str(exc) or type(exc).__name__, kind=type(exc).__name__,
                         out_of_memory=bool(is_out_of_memory(exc)))
            if is_out_of_memory(exc):
                free_cuda_cache()
            continue
        finally:
            captioner.on_token = None
        if rid in cancelled:
            channel.send(event="cancelled", id=rid)
            continue
        channel.send(event="caption", id=rid, text=text, prompt=captioner.prompt(context),
                     seconds=round(time.monotonic() - start, 3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.captions.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--captioner", default="cogvlm2", help="a captioner id (core.captions.captioners)")
    parser.add_argument("--captioner-class", help="or module:Class of a Captioner to host")
    parser.add_argument("--source", help="the model's folder or hub id")
    parser.add_argument("--int4", action="store_true", help="CogVLM2's int4 variant")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bf16", help="on CUDA: bf16 (fp16 below compute capability 8) or fp16")
    parser.add_argument("--max-new-tokens", type=int)
    args = parser.parse_args(argv)
    channel = Channel()
    start = time.monotonic()
    try:
        captioner = load(build_captioner(args), args.device, args.dtype)
    except Exception as exc:  # the client shows this message; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        channel.send(event="failed", message=f"{type(exc).__name__}: {exc}")
        return 3
    channel.send(event="ready", pid=os.getpid(), captioner=captioner.id, model=captioner.model_name,
                 device=args.device, load_seconds=round(time.monotonic() - start, 3), versions=versions())
    return serve(captioner, channel)


if __name__ == "__main__":
    raise SystemExit(main())
