"""The app's events, called through gradio_client as a script or another tool would."""

import re
import urllib.error
import urllib.request

import pytest

from core.config import DEMO_SCENES


@pytest.fixture(scope="module")
def scene_id(client):
    """A demo scene that has destroyed buildings."""
    from core.data.index import index_dataset

    index = index_dataset(DEMO_SCENES)
    return index.filter(damage="destroyed")[0].scene_id


def test_open_folder_reports_scenes_and_fills_the_filters(client):
    status, split, disaster, dtype = client.predict(str(DEMO_SCENES), api_name="/open_folder")
    assert "scenes" in status and "problem" not in status
    assert split["value"] == "All" and {"train", "test"} <= {c[0] for c in split["choices"]}
    assert len(disaster["choices"]) >= 7 and "flooding" in {c[0] for c in dtype["choices"]}


def test_open_folder_that_is_not_xbd_shows_a_clear_error(client, tmp_path, caplog):
    import logging

    client.predict(str(DEMO_SCENES), api_name="/open_folder")
    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"):
        status, *filters = client.predict(str(tmp_path), api_name="/open_folder")  # no exception: a toast
    lines = [r.getMessage() for r in caplog.records if r.name == "xbdlab.ui"]
    assert len(lines) == 1 and lines[0].startswith("open_folder: ") and "xBD" in lines[0]
    # The status says which folder failed and which is still open; the filters keep their values.
    assert status.startswith(f"⚠ Could not open `{tmp_path}`") and "is still open" in status
    assert filters == [{"__type__": "update"}] * 3  # skipped: the page keeps their values and choices
    # The app still works afterwards.
    status, *_ = client.predict(str(DEMO_SCENES), api_name="/open_folder")
    assert "scenes" in status


def test_show_scene_with_and_without_footprints(client, scene_id):
    plain = client.predict(scene_id, False, "Side by side", api_name="/show_scene")
    drawn = client.predict(scene_id, True, "Side by side", api_name="/show_scene")
    title, pre, post = plain[0], plain[1], plain[2]
    assert scene_id in title
    assert pre["url"].endswith(".png") and post["url"].endswith(".png")
    assert drawn[2]["url"] != post["url"]  # the overlay changes the picture
    counts = {row[0]: row[1] for row in drawn[4]["data"]}
    assert int(counts["destroyed"]) >= 1


def test_baseline_score_and_leaderboard(client, scene_id):
    client.predict(scene_id, api_name="/list_runs")
    runs = client.predict(scene_id, [], api_name="/add_baseline")
    chosen = runs["value"] if isinstance(runs, dict) else runs
    assert len(chosen) == 1
    table, notes, _csv, _inspect, settings = client.predict(scene_id, chosen, False, "256",
                                                            api_name="/score_runs")
    regions = [row[2] for row in table["data"]]
    assert regions[0] == "whole image" and "destroyed" in regions
    assert "random backbone" in settings
    board, _ = client.predict(False, "256", api_name="/leaderboard")
    assert board["data"][0][0] == "baseline"


def test_files_outside_the_given_folders_are_not_served(app_url):
    for path in ("/etc/passwd", str(DEMO_SCENES.parent.parent / "README.md")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{app_url}gradio_api/file={path}", timeout=10)
        assert err.value.code in (403, 404)


def test_check_files_reads_the_open_folder(client):
    client.predict(str(DEMO_SCENES), api_name="/open_folder")
    status = client.predict(api_name="/check_files")
    assert status.startswith("Checked 30 files: every one is readable.") and "scenes" in status


def logged(caplog, handler):
    """The one line the app logged for a user error in `handler`."""
    lines = [r.getMessage() for r in caplog.records if r.name == "xbdlab.ui" and r.getMessage().startswith(handler)]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_run_that_cannot_be_saved_says_why_and_what_to_do(client, scene_id, monkeypatch, caplog):
    import errno
    import logging
    import os

    from core.runs import store as store_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    before = client.predict(scene_id, api_name="/list_runs")
    monkeypatch.setattr(store_module, "atomic_write_text", no_space)  # the app runs in this process
    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"):
        kept = client.predict(scene_id, before["value"], "every backbone", api_name="/add_baseline")  # no exception
    assert kept == {"__type__": "update"}
    monkeypatch.undo()
    assert re.match(r"add_baseline: Could not save the run in .*: No space left on device\. "
                    r"Free some space or choose another --runs folder\.", logged(caplog, "add_baseline"))
    assert client.predict(scene_id, api_name="/list_runs") == before  # nothing half-saved appeared


def test_an_upload_past_the_pixel_limit_is_named_in_evaluate(client, scene_id, monkeypatch, tmp_path, caplog):
    import logging

    from gradio_client import handle_file
    from PIL import Image

    big = tmp_path / "my_prediction.png"
    Image.new("RGB", (64, 64)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"):
        client.predict(scene_id, [handle_file(str(big))], [], "every backbone", api_name="/add_uploads")
    assert re.search(r"my_prediction\.png is 64×64 px, larger than the 1000 px this app opens; crop or downscale it",
                     logged(caplog, "add_uploads"))


def test_an_upload_named_after_another_scene_is_refused(client, scene_id, tmp_path, caplog):
    import logging

    from gradio_client import handle_file
    from PIL import Image

    other = "demo-flood_00000001" if scene_id != "demo-flood_00000001" else "demo-volcano_00000005"
    wrong = tmp_path / f"{other}_post_prediction.png"
    Image.new("RGB", (64, 64)).save(wrong)
    before = client.predict(scene_id, api_name="/list_runs")
    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"):
        kept = client.predict(scene_id, [handle_file(str(wrong))], [], "every backbone", api_name="/add_uploads")
    assert kept == {"__type__": "update"}
    assert f"names {other}, not the scene picked ({scene_id})" in logged(caplog, "add_uploads")
    assert client.predict(scene_id, api_name="/list_runs") == before


def test_scoring_nothing_is_one_message_and_the_table_stays(client, scene_id, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"):
        out = client.predict(scene_id, [], False, "256", api_name="/score_runs")
    assert "Tick at least one run" in logged(caplog, "score")
    assert out == ({"__type__": "update"},) * 5  # gr.skip(): the table, notes, ... keep their values
