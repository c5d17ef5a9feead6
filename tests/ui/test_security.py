"""What the app shows and serves to whoever reaches it: before a login nothing about the
app (endpoints, defaults, folder paths); without a login, only images and exports through
gradio's file route, never the caption database. Apps listen on 127.0.0.1 only."""

import shutil
import urllib.error
import urllib.parse
import urllib.request

import pytest

from core.config import DEMO_SCENES, REPO_ROOT, Settings
from tests.net import free_port

ENDPOINTS = ("open_folder", "show_scene", "check_files", "filter_scenes", "score_runs", "leaderboard")


def start(settings):
    from core.lab import Lab
    from ui.app import build_ui, launch

    lab = Lab(settings)
    demo = build_ui(lab)
    _, url, _ = launch(demo, lab, prevent_thread_lock=True, quiet=True)
    return lab, demo, url.rstrip("/") + "/"


def get(url, method="GET"):
    """(status, body text) of one request without any cookie."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=20) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def file_url(url, path):
    return f"{url}gradio_api/file={urllib.parse.quote(str(path))}"


# -- with --auth: nothing before the login ------------------------------------------------------

@pytest.fixture(scope="module")
def login_app(tmp_path_factory):
    work = tmp_path_factory.mktemp("login-work")
    lab, demo, url = start(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=work, port=free_port(),
                                         auth="me:secret"))
    yield url, work
    demo.close()


def assert_nothing_about_the_app(body, work):
    for name in ENDPOINTS:
        assert name not in body
    for folder in (DEMO_SCENES, work, REPO_ROOT):
        assert str(folder) not in body


@pytest.mark.parametrize("route", ["", "gradio_api/runs", "?page=", "gradio_api/runs/"])
def test_pages_before_login_hold_no_endpoint_and_no_folder(login_app, route):
    url, work = login_app
    status, body = get(url + route)
    if status == 200:  # the login page
        assert "auth_required" in body and "window.gradio_api_info = null;" in body
    assert_nothing_about_the_app(body, work)


def test_a_head_request_gets_the_login_page_s_headers_only(login_app):
    url, _ = login_app
    assert get(url, method="HEAD") == (200, "")


@pytest.mark.parametrize("route", ["config", "config/", "gradio_api/info", "gradio_api/info?all_endpoints=true",
                                   "gradio_api/openapi.json", "openapi.json", "docs",
                                   "gradio_api/login_check"])
def test_config_and_api_routes_need_a_login(login_app, route):
    url, work = login_app
    status, body = get(url + route)
    assert status in (401, 403, 404)
    assert_nothing_about_the_app(body, work)


def test_files_need_a_login(login_app):
    url, _ = login_app
    tile = sorted(DEMO_SCENES.rglob("*_post_disaster.png"))[0]
    assert get(file_url(url, tile))[0] in (401, 403)


def test_after_login_the_app_works(login_app):
    from gradio_client import Client

    url, _ = login_app
    client = Client(url, auth=("me", "secret"), verbose=False, download_files=False)
    assert "/open_folder" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    status, *_ = client.predict(str(DEMO_SCENES), api_name="/open_folder")
    assert "**6 scenes**" in status
    with pytest.raises(Exception):
        Client(url, auth=("me", "wrong"), verbose=False, download_files=False)


# -- without --auth: the file route serves images and exports only ------------------------------

@pytest.fixture(scope="module")
def open_app(tmp_path_factory):
    """An app without login whose work folder lies inside its data folder, the worst case:
    the caption database there must still not be served."""
    data = tmp_path_factory.mktemp("data")
    shutil.copytree(DEMO_SCENES, data, dirs_exist_ok=True)
    work = data / "lab-work"
    lab, demo, url = start(Settings.load(env={}, data_dir=data, work_dir=work, port=free_port()))
    lab.captions.store.get("nothing")  # the caption database exists
    index = lab.datasets.open(data)
    index.counts()
    index.flush_cache()  # and so does the label-summary cache
    yield url, lab, index
    demo.close()


def test_the_caption_database_and_caches_are_refused(open_app):
    from core.data.index import SUMMARY_CACHE_FILE

    url, lab, _ = open_app
    store, summaries = lab.captions.store_path, lab.settings.cache_dir / SUMMARY_CACHE_FILE
    assert store.is_file() and summaries.is_file()
    for path in (store, store.with_name(store.name + "-wal"), summaries):
        status, body = get(file_url(url, path))
        assert status in (403, 404) and "SQLite" not in body and '"entries"' not in body


def test_tiles_thumbnails_runs_and_exports_still_load(open_app):
    from core.data.images import thumbnail

    url, lab, index = open_app
    scene = index.scenes[0]
    run = lab.evaluation.write_baseline(index, scene)
    export = lab.captions.export_path("captions")
    lab.captions.export_course(export)
    for path in (scene.post_image, thumbnail(scene.post_image, lab.settings.cache_dir), run.image_path, export):
        status, _ = get(file_url(url, path))
        assert status == 200, path


def test_files_outside_the_served_folders_are_refused(open_app):
    url, lab, _ = open_app
    for path in ("/etc/passwd", REPO_ROOT / "README.md", lab.settings.work_dir.parent.parent / "x"):
        assert get(file_url(url, path))[0] in (403, 404)
