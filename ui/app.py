"""Composes the tabs into one Blocks app and launches it."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from core.errors import LaunchError
from ui.attention import build_attention
from ui.browse import build_browse
from ui.captions import SHORTCUTS_JS, build_captions
from ui.common import INTERNAL, user_errors
from ui.evaluate import build_evaluate
from ui.generate import build_generate
from ui.train import build_train

TITLE = "xBD Diffusion Lab"
CSS = """
#browse-gallery .thumbnail-item { aspect-ratio: 1 / 1; }
footer { display: none !important; }
/* Validation captions name whole scene ids: wrapped, never cut off. */
#train-gallery .caption-label { white-space: normal; overflow-wrap: anywhere; max-width: 100%; }
/* Many runs: the run checkboxes scroll inside a box instead of pushing the page down. */
#eval-runs > div:last-child, #eval-runs .wrap { max-height: 12.5em; overflow-y: auto; }
/* Toasts at the bottom right, where they never cover a dropdown's open list (top right). */
div.toast-wrap { top: auto !important; bottom: var(--size-4, 16px) !important; }
"""


def build_ui(lab) -> gr.Blocks:
    """The whole app for one `Lab`; nothing is loaded until a user asks for it."""
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nBrowse pre/post-disaster xBD tiles, generate the post-event image, "
                    "look inside the model, and score it against what really happened.")
        with gr.Tabs() as tabs:
            browse = build_browse(lab, demo)
            build_captions(lab, demo, browse.opened)
            gen_scene, gen_to_evaluate, gen_to_attention, gen_newest = build_generate(lab, demo, browse.opened)
            build_train(lab, demo, browse.opened)
            att_run, att_runs_with = build_attention(lab, demo, browse.opened, gen_scene)
            evaluate = build_evaluate(lab, demo, browse.opened)
        eval_scene = evaluate.scene
        browse.to_evaluate.click(
            lambda scene_id: (gr.Tabs(selected="evaluate"), gr.Dropdown(value=scene_id)),
            browse.selected, [tabs, eval_scene], api_name="send_to_evaluate")
        browse.to_generate.click(
            lambda scene_id: (gr.Tabs(selected="generate"), gr.Dropdown(value=scene_id)),
            browse.selected, [tabs, gen_scene], api_name="send_to_generate")
        gen_to_attention.click(
            lambda path, run_id: (gr.Tabs(selected="attention"), att_runs_with(path, run_id)),
            [browse.opened, gen_newest], [tabs, att_run], api_name="generation_to_attention")
        gen_to_evaluate.click(  # the newest run listed and ticked, whatever the Evaluate tab showed
            user_errors(lambda scene_id, run_id: (gr.Tabs(selected="evaluate"), gr.Dropdown(value=scene_id),
                                                  evaluate.show_run(scene_id, run_id))),
            [gen_scene, gen_newest], [tabs, eval_scene, evaluate.runs], api_name="generation_to_evaluate")
        # A generation adds runs: both run pickers list them at once (the ticked/chosen ones stay).
        gen_newest.change(evaluate.refresh, [eval_scene, evaluate.runs, evaluate.backbone], evaluate.runs,
                          **INTERNAL)
        gen_newest.change(att_runs_with, [browse.opened, att_run], att_run, **INTERNAL)
    return demo


def launch_options(lab) -> dict:
    """Keyword arguments for `Blocks.launch`: bind address, login (and, with one, nothing
    about the app before it), and the files that may be served (`served_paths`)."""
    s = lab.settings
    allowed, blocked = served_paths(lab)
    options = {
        "server_name": s.host,
        "server_port": s.port,
        "auth": s.auth_pair(),
        "allowed_paths": allowed,
        "blocked_paths": blocked,
        "theme": gr.themes.Soft(),
        "css": CSS,
        "footer_links": ["api"],
        "head": SHORTCUTS_JS,
    }
    if options["auth"]:
        from starlette.middleware import Middleware

        options["app_kwargs"] = {"middleware": [Middleware(NoApiInfoInPages)], "openapi_url": None}
    return options


def served_paths(lab) -> tuple[list[str], list[str]]:
    """(allowed, blocked) for gradio's file route: the data folders (tiles), the runs, the
    thumbnails and the exports the UI writes are served; the rest of the work folder is not,
    and the caption database and the label-summary cache never are (even inside a data folder)."""
    from core.data.index import SUMMARY_CACHE_FILE

    s = lab.settings
    work, cache = Path(s.work_dir).resolve(), Path(s.cache_dir).resolve()
    folders = [p for p in lab.datasets.allowed_roots() if p != work] + [Path(s.runs).resolve()]
    allowed = folders + [cache / "thumbnails", work / "exports", Path(lab.captions.exports_dir).resolve()]
    store = Path(lab.captions.store_path).resolve()
    blocked = [store.with_name(store.name + end) for end in ("", "-wal", "-shm", "-journal")]
    return sorted({str(p) for p in allowed}), [str(p) for p in blocked + [cache / SUMMARY_CACHE_FILE]]


_API_INFO = re.compile(rb"(window\.gradio_api_info = )[^<]*(;</script>)")


class NoApiInfoInPages:
    """ASGI middleware for an app with a login. Gradio's pages embed the whole API
    description (every endpoint, its defaults: the data folder's path, ...) even in the
    login page; this sets it to null in every page, so the browser asks /gradio_api/info
    for it, which answers only a logged-in session. A page it cannot clean is refused."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        held: dict = {"start": None, "body": []}

        async def clean(message):
            if message["type"] == "http.response.start":
                if dict(message.get("headers", [])).get(b"content-type", b"").startswith(b"text/html"):
                    held["start"] = message  # kept until the whole page is here
                    return
            elif held["start"] is not None and message["type"] == "http.response.body":
                held["body"].append(message.get("body", b""))
                if message.get("more_body"):
                    return
                await self._send_clean(held["start"], b"".join(held["body"]), scope["method"], send)
                return
            await send(message)

        await self.app(scope, receive, clean)

    @staticmethod
    async def _send_clean(start, body: bytes, method: str, send) -> None:
        clean, n = _API_INFO.subn(rb"\1null\2", body)
        if n == 0 and b"gradio_api_info" in body:  # a gradio that embeds it another way
            start, clean = {**start, "status": 500}, b"This page cannot be served without the API description."
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if method == "GET":
            headers.append((b"content-length", str(len(clean)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": clean if method == "GET" else b""})


def launch(demo: gr.Blocks, lab, **overrides):
    """Queue GPU work in one slot and start serving; returns what `Blocks.launch` returns.
    LaunchError when the port is taken meanwhile (app.py checks it before building)."""
    demo.queue(default_concurrency_limit=4)
    options = {**launch_options(lab), **overrides}
    try:
        return demo.launch(**options)
    except OSError as err:
        if "empty port" not in str(err):  # gradio's words for a port it could not bind
            raise
        raise LaunchError.cannot_listen(options["server_name"], options["server_port"], err) from err
