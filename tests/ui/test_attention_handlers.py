"""Attention tab handlers, called directly with a real Lab on the demo scenes (no browser):
runs with hand-made word maps for the numbers (shares at the label's resolution, read from
the run's shares.json when it has one), and one probe on the tiny random SD 2.1."""

import json

import numpy as np
import pytest

from core.attention.analysis import (SHARES_FILE, WordMap, label_size, load_maps, load_shares, save_maps,
                                     save_scene_shares, save_step_maps, scene_shares)
from core.config import DEMO_SCENES, Settings
from core.data.labels import load_label
from core.data.masks import class_masks
from core.types import MASK_REGIONS
from ui.attention import PROBES, open_run, run_probe, runs_with_maps, show

DATA = str(DEMO_SCENES)
SIZE = 64


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from core.lab import Lab

    return Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path_factory.mktemp("work"),
                             test_backbones=True, models_dir=tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def scene(lab):
    """A demo scene with destroyed buildings."""
    return lab.datasets.open(DEMO_SCENES).filter(damage="destroyed")[0]


@pytest.fixture(scope="module")
def masks(scene):
    """The scene's region masks at the label's own resolution (where the shares are counted)."""
    label = load_label(scene.post_label)
    return class_masks(label, label_size(label, scene.part), part=scene.part)


def mapped_run(lab, scene_id, maps, steps=None):
    """A generation run of `scene_id` holding `maps` (and per-step maps), as recording writes them."""
    run = lab.runs.create(np.full((SIZE, SIZE, 3), 90, np.uint8), kind="generation", backbone="tiny-sd21",
                          scene_id=scene_id, params={}, data_root=str(lab.datasets.open(DATA).root))
    save_maps(run.path, maps)
    if steps:
        save_step_maps(run.path, steps)
    return run.run_id


@pytest.fixture(scope="module")
def run_id(lab, scene, masks):
    """"destroyed" looks only at the destroyed buildings (a map at the label's resolution),
    "flood" everywhere alike (a 64 px map); two steps kept."""
    on_ruins = masks["destroyed"].astype(np.float32)
    even = np.ones((SIZE, SIZE), np.float32)
    maps = {"destroyed": WordMap("destroyed", on_ruins, 5.0), "flood": WordMap("flood", even, 2.0)}
    even_full = np.ones_like(on_ruins)  # a word's step maps share one size
    steps = [{"destroyed": WordMap("destroyed", even_full, 1.0), "flood": WordMap("flood", even_full, 1.0)},
             {"destroyed": WordMap("destroyed", on_ruins, 4.0), "flood": WordMap("flood", on_ruins, 1.0)}]
    return mapped_run(lab, scene.scene_id, maps, steps)


def test_only_runs_with_maps_are_listed(lab, scene, run_id):
    plain = lab.evaluation.write_baseline(lab.datasets.open(DATA), scene)
    dropdown = runs_with_maps(lab, DATA)
    ids = [c[1] for c in dropdown.choices]
    assert run_id in ids and plain.run_id not in ids
    assert dropdown.choices[ids.index(run_id)][0].startswith(f"tiny-sd21 · {scene.scene_id} · ")
    assert runs_with_maps(lab, DATA, run_id).value == run_id
    assert runs_with_maps(lab, DATA, plain.run_id).value == ids[0]  # no maps: the first run instead


def test_opening_a_run_ticks_its_words_and_offers_its_steps(lab, run_id):
    words, download, step = open_run(lab, run_id)
    assert [c[1] for c in words.choices] == ["destroyed", "flood"] and words.value == ["destroyed", "flood"]
    assert download.visible and download.value["orig_name"] == "maps.npz"
    assert step.visible and step.maximum == 2
    words, download, step = open_run(lab, None)
    assert words.choices == [] and not download.visible and not step.visible


def test_each_word_gets_its_share_of_attention_per_damage_class(lab, run_id, masks):
    pictures, rows = show(lab, DATA, run_id, ["destroyed", "flood"], 0.5)
    assert [w for _, w in pictures] == ["destroyed", "flood"]
    assert all(p.shape == (SIZE, SIZE, 3) for p, _ in pictures)
    pixels = {r: masks[r].mean() for r in MASK_REGIONS}
    assert 0 < pixels["destroyed"] < pixels["building"] < 1
    cell = {row[0]: dict(zip(MASK_REGIONS, row[2:])) for row in rows}
    assert [row[1] for row in rows] == ["5.000", "2.000"]  # raw totals
    assert cell["destroyed"]["destroyed"] == f"100.0% / {pixels['destroyed']:.1%}"
    assert cell["destroyed"]["building"] == f"100.0% / {pixels['building']:.1%}"
    for region in MASK_REGIONS:  # attention spread evenly: its share is the pixel share
        expected = f"{pixels[region]:.1%} / {pixels[region]:.1%}" if pixels[region] > 0 else "no pixels"
        assert cell["flood"][region] == expected


def test_a_step_shows_that_step_maps(lab, run_id, masks):
    total, _ = show(lab, DATA, run_id, ["flood"], 1.0, 0)
    first, rows_first = show(lab, DATA, run_id, ["flood"], 1.0, 1)
    second, rows_second = show(lab, DATA, run_id, ["flood"], 1.0, 2)
    assert np.array_equal(total[0][0], first[0][0])  # step 1 was even, like the total
    assert not np.array_equal(first[0][0], second[0][0])
    assert rows_second[0][2 + MASK_REGIONS.index("destroyed")].startswith("100.0% / ")
    assert rows_first[0][2 + MASK_REGIONS.index("destroyed")] == f"{masks['destroyed'].mean():.1%} / " \
                                                                 f"{masks['destroyed'].mean():.1%}"


def test_a_run_without_a_scene_has_no_labels_to_compare_with(lab):
    lonely = mapped_run(lab, None, {"flood": WordMap("flood", np.ones((SIZE, SIZE), np.float32), 1.0)})
    pictures, rows = show(lab, DATA, lonely, ["flood"], 0.5)
    assert len(pictures) == 1 and rows == [["flood", "1.000"] + ["no labels"] * len(MASK_REGIONS)]
    assert show(lab, DATA, None, ["flood"], 0.5) == ([], [])


def test_a_probe_generates_a_run_with_maps_of_its_words(lab, scene):
    pytest.importorskip("diffusers")
    from core.backends.tiny_models.sd import build_tiny_models

    build_tiny_models(lab.settings.models_dir, ids=("tiny-sd21",))
    dropdown = run_probe(lab, DATA, scene.scene_id, "tiny-sd21", PROBES["damage: destroyed"])
    new = lab.runs.open(dropdown.value)
    assert new.record["scene_id"] == scene.scene_id and new.record["backbone"] == "tiny-sd21"
    words, _, _ = open_run(lab, dropdown.value)
    assert {"buildings", "destroyed", "flooding"} <= set(words.value)
    _, rows = show(lab, DATA, dropdown.value, ["destroyed"], 0.5)
    assert rows[0][0] == "destroyed" and "/" in rows[0][2]
    # The generation saved the shares once, at the label's resolution; the tab shows that file.
    saved = load_shares(new.path)
    assert saved is not None and list(saved) == words.value
    assert saved == scene_shares(load_maps(new.path).values(), scene)
    _, rows = show(lab, DATA, dropdown.value, words.value, 0.5)
    assert [row[0] for row in rows] == words.value
    assert all(row[2:] == cells(saved[row[0]]) for row in rows)


def cells(by_region):
    """The table's cells for one word's {region: (attention, pixels)}."""
    return [f"{a:.1%} / {p:.1%}" if p > 0 else "no pixels" for a, p in (by_region[r] for r in MASK_REGIONS)]


def test_the_tab_shows_the_shares_saved_with_the_run(lab, scene, masks):
    maps = {"flood": WordMap("flood", np.ones((SIZE, SIZE), np.float32), 1.0)}
    saved_run = mapped_run(lab, scene.scene_id, maps)
    folder = lab.runs.open(saved_run).path
    shares = save_scene_shares(folder, maps, scene)
    _, rows = show(lab, DATA, saved_run, ["flood"], 0.5)
    assert rows == [["flood", "1.000"] + cells(shares["flood"])]
    # The table is read from the file: change the file and the table follows.
    file = folder / "attention" / SHARES_FILE
    doc = json.loads(file.read_text())
    doc["words"][0]["shares"]["building"]["attention"] = 0.25
    file.write_text(json.dumps(doc))
    _, rows = show(lab, DATA, saved_run, ["flood"], 0.5)
    assert rows[0][2] == f"25.0% / {masks['building'].mean():.1%}"


SKIP = {"__type__": "update"}  # gr.skip(): every output keeps its value


def test_a_missing_run_is_a_message_and_every_output_stays(lab):
    from inspect import signature

    from ui.common import bind

    for handler, args in ((open_run, ("gone",)), (show, (DATA, "gone", ["flood"], 0.5))):
        with pytest.warns(UserWarning, match="No run 'gone'"):
            assert handler(lab, *args) == SKIP
        bound = bind(handler, lab)  # as the tab wires it: same name, the Lab taken off, same errors
        assert bound.__name__ == handler.__name__
        assert list(signature(bound).parameters) == list(signature(handler).parameters)[1:]
        with pytest.warns(UserWarning, match="No run 'gone'"):
            assert bound(*args) == SKIP


def test_runs_are_told_apart_by_seed_and_steps(lab, scene):
    run = lab.runs.create(np.zeros((SIZE, SIZE, 3), np.uint8), kind="generation", backbone="tiny-sd21",
                          scene_id=scene.scene_id, params={"seed": 7, "steps": 12},
                          data_root=str(lab.datasets.open(DATA).root))
    save_maps(run.path, {"flood": WordMap("flood", np.ones((SIZE, SIZE), np.float32), 1.0)})
    labels = dict((v, k) for k, v in runs_with_maps(lab, DATA).choices)
    assert labels[run.run_id].startswith(f"tiny-sd21 · {scene.scene_id} · seed 7 · 12 steps · 20")


def test_the_probe_backbone_starts_on_one_that_is_on_disk(lab):
    from ui.common import first_on_disk

    specs = [s for s in lab.backbones.specs() if s.attention in ("unet", "joint")]
    ready = first_on_disk(lab, specs)
    assert ready is not None and lab.backbones.readiness(ready).ready
    assert first_on_disk(lab, [s for s in specs if not s.test_only]) is None  # no real weights here
