"""The Captions tab through gradio_client: machine captions, edits that are never lost,
review status, history and exports."""

import json
import logging

POST = "demo-volcano_00000005_post_disaster.png"


def _local_path(value):
    """The server-side path of a file output (the app runs on this machine)."""
    while isinstance(value, dict):
        value = value.get("value") or value.get("path")
    return value


def _filter(client, status="All", phase="post"):
    return client.predict(status, "All", "All", phase, api_name="/caption_filter")


def test_caption_edit_review_restore_and_export(client):
    listing = _filter(client)
    assert POST in [c[0] for c in listing["choices"]]
    note = client.predict("template", "", api_name="/caption_these")
    assert "captioned" in note

    tile, text, machine, summary, saved, history = client.predict(POST, api_name="/show_caption")
    assert text == machine and "volcan" in machine.lower()
    assert "auto" in saved

    first, rows = client.predict(POST, "Lava covers the east of the town; 76 houses are gone.",
                                 api_name="/save_caption")
    assert "version" in first and "edited" in first
    second, rows = client.predict(POST, "Lava covers the east of the town; 76 houses destroyed.",
                                  api_name="/save_caption")
    assert "edited" in second
    # two quick saves by one person: one version in the history, holding the last text
    assert [r[3] for r in rows["data"]] == ["edit", "machine"]
    assert rows["data"][0][5].endswith("+houses destroyed.")  # against the machine caption

    # A machine re-run never overwrites a person's edit.
    client.predict("template", "", api_name="/caption_these")
    _, text, *_ = client.predict(POST, api_name="/show_caption")
    assert text == "Lava covers the east of the town; 76 houses destroyed."

    saved, history = client.predict(POST, api_name="/mark_reviewed")
    assert "reviewed" in saved
    rows = history["data"]
    machine_entry = next(r for r in rows if r[3] == "machine")
    text, saved, _ = client.predict(POST, machine_entry[0], api_name="/restore_caption")
    assert text == machine

    note, download = client.predict(api_name="/export_captions")
    path = _local_path(download)
    lines = [json.loads(line) for line in open(path, encoding="utf-8")]
    exported = next(line for line in lines if line["image"] == POST)
    assert exported["caption"] == machine and exported.get("caption_short", machine) == machine


def test_a_save_from_a_stale_page_is_refused_not_lost(client, app_url):
    from gradio_client import Client

    other = Client(app_url, verbose=False, download_files=False)  # a second user's page
    _filter(client)
    _filter(other)
    image = "demo-flood_00000001_post_disaster.png"
    client.predict(image, api_name="/show_caption")
    other.predict(image, api_name="/show_caption")
    assert "version" in client.predict(image, "First user's words.", api_name="/save_caption")[0]
    refused, _ = other.predict(image, "Second user's words.", api_name="/save_caption")
    assert refused.startswith("**Not saved**")
    _, text, *_ = other.predict(image, api_name="/show_caption")
    assert text == "First user's words."  # reloading shows the other user's saved edit


def test_next_not_reviewed_skips_reviewed_tiles(client):
    listing = _filter(client)
    names = [c[0] for c in listing["choices"]]
    client.predict(names[0], api_name="/show_caption")
    client.predict(names[0], "Checked by hand.", api_name="/save_caption")
    client.predict(names[0], api_name="/mark_reviewed")
    assert client.predict(names[-1], api_name="/next_unreviewed") != names[0]


def test_mark_reviewed_and_restore_from_a_stale_page_are_refused_not_lost(client, app_url):
    from gradio_client import Client

    other = Client(app_url, verbose=False, download_files=False)  # a second user's page
    image = "demo-tsunami_00000006_post_disaster.png"
    client.predict(image, api_name="/show_caption")
    assert client.predict(image, "First words.", api_name="/save_caption")[0].startswith("Saved")
    _, _, _, _, _, history = other.predict(image, api_name="/show_caption")  # the other page loads that
    first_id = history["data"][0][0]
    assert client.predict(image, "The first user's correction.", api_name="/save_caption")[0].startswith("Saved")
    saved, _ = other.predict(image, api_name="/mark_reviewed")
    assert saved.startswith("**Not marked reviewed**")
    _, saved, _ = other.predict(image, first_id, api_name="/restore_caption")
    assert saved.startswith("**Not restored**")
    _, text, _, _, saved, _ = other.predict(image, api_name="/show_caption")  # reloading shows it intact
    assert text == "The first user's correction." and "**edited**" in saved
    saved, _ = other.predict(image, api_name="/mark_reviewed")  # from the reloaded version it goes through
    assert "**reviewed**" in saved


def test_a_refused_restore_is_one_log_line_and_leaves_the_editor_as_it_was(client, caplog):
    image = "demo-earthquake_00000004_post_disaster.png"
    client.predict(image, api_name="/show_caption")
    client.predict(image, "Words to keep.", api_name="/save_caption")
    with caplog.at_level(logging.WARNING, logger="xbdlab.ui"):
        text, saved, history = client.predict(image, 999_999, api_name="/restore_caption")
    lines = [r for r in caplog.records if r.name == "xbdlab.ui"]
    assert len(lines) == 1 and "does not belong" in lines[0].getMessage()
    assert text != "" and "Not restored" not in str(saved)  # outputs skipped, not cleared
    _, text, *_ = client.predict(image, api_name="/show_caption")
    assert text == "Words to keep."
