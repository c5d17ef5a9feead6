"""The Generate tab's events through gradio_client, on tiny RANDOM backbones (plumbing)."""

SCENE = "demo-hurricane_00000003"
# The inputs of /generate and /compare, in order: the form (ui.generate.FORM), the seven
# DiffusionSat metadata values, then one per declared control (ui.generate.declared_controls
# over the registered backbones: steps, guidance, strength, negative_prompt, scheduler,
# drop_t5, control_scale, image_guidance).
FORM = dict(scene=SCENE, backbone="tiny-sd21", prompt="a satellite image after a hurricane", mode="img2img",
            size=64, seed=3, num_images=2, no_meta=False, lon=0, lat=0, gsd=0, cloud_cover=0, year=0, month=0,
            day=0, steps=2, guidance=7.5, strength=1.0, negative_prompt="", scheduler=None, drop_t5=False,
            control_scale=1.0, image_guidance=1.5)


def said(caplog, text: str) -> bool:
    """Whether the app told the user `text` (one toast, logged as one line by ui.common)."""
    return any(text in r.getMessage() for r in caplog.records if r.name == "xbdlab.ui")


def skipped(outputs) -> bool:
    """Whether an event left every output as it was (gr.skip())."""
    return all(o == {"__type__": "update"} for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs]))


def params(**changes) -> list:
    """The /generate inputs after the two attention checkboxes, with `changes` applied."""
    return list({**FORM, **changes}.values())


PARAMS = params()


def test_generate_saves_runs_with_their_seeds(client):
    result = client.predict(False, False, *PARAMS, api_name="/generate")
    # outputs: preview, gallery, info, to_evaluate (states and buttons are not returned)
    gallery, info = result[1], result[2]
    assert len(gallery) == 2
    assert "Saved 2 run(s)" in info
    runs_listed = client.predict(SCENE, api_name="/list_runs")
    labels = [c[0] for c in runs_listed["choices"]]
    assert sum(label.startswith("tiny-sd21") for label in labels) >= 2


def test_compare_grid_is_a_labelled_matrix_with_its_cells_as_files(client):
    grid, files, summary = client.predict(["tiny-sd21", "tiny-sdxl-turbo"], "seed", "1, 2", *PARAMS,
                                          api_name="/compare")
    from PIL import Image

    path = grid["path"] if isinstance(grid, dict) else grid
    width, height = Image.open(path).size
    # a label column, then 2 columns of >= 256 px; the scene row, a header line and 2 backbone rows
    assert width > 2 * 256 and height > 3 * 256
    assert len(files) == 4 and summary.startswith("Made 4 of 4 cells")


def test_compare_refuses_a_cell_that_cannot_run_before_any_runs(client, caplog):
    before = len(client.predict(SCENE, api_name="/list_runs")["choices"])
    out = client.predict(["tiny-sd21", "tiny-sdxl-turbo"], "strength", "0.1, 0.9", *params(steps=2),
                         api_name="/compare")
    assert skipped(out) and said(caplog, "Nothing was generated")
    assert len(client.predict(SCENE, api_name="/list_runs")["choices"]) == before


def test_unknown_scene_is_a_clear_message_and_changes_nothing(client, caplog):
    out = client.predict(False, False, *params(scene="nowhere_00000001"), api_name="/generate")
    assert skipped(out) and said(caplog, "nowhere_00000001")


def test_token_counter_says_where_an_encoder_would_cut(client):
    long_prompt = "flooded streets and damaged roofs " * 30
    whole = client.predict("tiny-sd21", long_prompt, "", api_name="/count_tokens")
    assert "sent whole in" in whole  # CLIP backbones chunk long prompts: nothing is cut
    short = client.predict("tiny-sd21", "a town", "", api_name="/count_tokens")
    assert "/ 75 tokens" in short
    offline = client.predict("sd21", "a town", "", api_name="/count_tokens")
    assert offline == "CLIP: 2 / 75 tokens"  # no SD 2.1 on disk: CLIP's own vocabulary counts


def test_readiness_table_lists_every_backbone_without_downloading(client):
    table = client.predict(api_name="/readiness")
    rows = {row[0]: row for row in table["data"]}
    assert rows["Tiny random SD 2.1 (tests)"][1] == "yes"
    sd21 = rows["Stable Diffusion 2.1"]
    assert sd21[1] == "no" and "stabilityai/stable-diffusion-2-1" in sd21[5]
    assert {"SDXL Turbo", "Stable Diffusion 3 medium", "InstructPix2Pix"} <= set(rows)


def test_stop_ends_a_running_generation_and_saves_nothing(client):
    import time

    scene = "demo-tsunami_00000006"
    before = len(client.predict(scene, api_name="/list_runs")["choices"])
    long_job = params(scene=scene, prompt="a flooded coast", mode="txt2img", steps=100, seed=11, num_images=1)
    job = client.submit(False, False, *long_job, api_name="/generate")
    deadline = time.time() + 60
    while time.time() < deadline and not (job.status().progress_data or job.done()):
        time.sleep(0.05)  # wait until denoising has started
    client.predict(api_name="/stop")
    job.result(timeout=120)
    after = len(client.predict(scene, api_name="/list_runs")["choices"])
    assert after == before


def test_a_backbone_that_is_not_downloaded_says_how_to_get_it(client, caplog):
    out = client.predict(False, False, *params(backbone="sd21"), api_name="/generate")
    assert skipped(out) and said(caplog, "stabilityai/stable-diffusion-2-1")
    # The app keeps working: the tiny backbone still generates.
    assert "Saved 1 run(s)" in client.predict(False, False, *params(num_images=1), api_name="/generate")[2]


def test_recorded_attention_maps_show_per_word_with_damage_shares(client):
    client.predict(True, True, *params(prompt="flooded streets near damaged houses", num_images=1),
                   api_name="/generate")
    runs = client.predict(api_name="/attention_runs")
    newest = runs["value"]
    assert newest and "tiny-sd21" in dict((v, k) for k, v in runs["choices"])[newest]
    words, _npz, step = client.predict(newest, api_name="/attention_words")
    assert {"flooded", "streets", "near", "damaged", "houses"} == set(words["value"])
    assert step["visible"] and step["maximum"] == 2  # per-step maps were kept: 2 steps
    grid, stats = client.predict(newest, ["flooded", "houses"], 0.5, 0, api_name="/attention_maps")
    first_step, _ = client.predict(newest, ["flooded", "houses"], 0.5, 1, api_name="/attention_maps")
    assert [item["caption"] for item in first_step] == ["flooded", "houses"]
    assert first_step[0]["image"]["url"] != grid[0]["image"]["url"]
    assert [item["caption"] for item in grid] == ["flooded", "houses"]
    rows = {row[0]: row for row in stats["data"]}
    assert set(rows) == {"flooded", "houses"}
    assert "/" in rows["houses"][2]  # building: attention share / pixel share
