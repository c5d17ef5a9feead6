"""Captioners: template, T5 summary + CLIP fit, CogVLM2 adapter (fake), Qwen2-VL (tiny), batch."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from core.captions.captioners import (CAPTIONERS, CaptionContext, ModelBundle, TemplateCaptioner,
                                      get_captioner)
from core.errors import LabError, ModelLoadError

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

COUNTS = {"no-damage": 30, "minor-damage": 4, "major-damage": 3, "destroyed": 5,
          "un-classified": 0, "total": 42}
IMAGE = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def clip_tok():
    from core.backends.tiny_models.sd import tiny_clip_tokenizer

    return tiny_clip_tokenizer()


def n_clip(tok, text):
    return len(tok(text, add_special_tokens=True, truncation=False).input_ids)


# -- template ----------------------------------------------------------------------------
def test_template_captions_pre_and_post(clip_tok):
    cap = get_captioner("template")
    assert isinstance(cap, TemplateCaptioner) and not cap.needs_model
    post = cap.caption(IMAGE, CaptionContext("x_1", "post", "midwest-flooding", "flooding", COUNTS))
    pre = cap.caption(IMAGE, CaptionContext("x_1", "pre", "midwest-flooding", "flooding", COUNTS))
    assert post == ("A satellite image after a flood: 42 buildings, 5 destroyed, 3 with major damage, "
                    "4 with minor damage, 30 undamaged.")
    assert pre == "A satellite image of a town before a flood, with 42 buildings."
    bare = cap.caption(IMAGE, CaptionContext("x_1", "post"))
    assert bare == "A satellite image after a disaster."
    assert cap.caption(IMAGE, CaptionContext("x_1", "post", None, "wind", COUNTS)) == \
        cap.caption(IMAGE, CaptionContext("x_1", "post", None, "wind", COUNTS))
    # Counted with CLIP's own vocabulary (no model needed): even huge counts fit 77 tokens.
    from core.captions.t5 import CLIP_LIMIT, clip_length
    from core.generation.prompts import standard_clip_tokenizer

    worst = cap.caption(IMAGE, CaptionContext("x", "post", None, "volcano", {
        "no-damage": 12345, "minor-damage": 2345, "major-damage": 3456, "destroyed": 4567,
        "total": 22713}))
    for text in (pre, post, bare, worst):
        assert clip_length(standard_clip_tokenizer(), text) <= CLIP_LIMIT, text
    assert {"template", "cogvlm2", "cogvlm2-int4", "qwen2-vl"} <= set(CAPTIONERS)
    with pytest.raises(LabError, match="template"):
        get_captioner("nope")
    with pytest.raises(ValueError):
        CaptionContext("x", "during")


# -- fit_clip ----------------------------------------------------------------------------
LONG = ("Floodwaters have submerged the streets of the riverside town. Dozens of houses stand in "
        "brown water up to their roofs. Emergency crews should prioritise the northern "
        "district where the damage is heaviest. Roads to the east remain passable.")


@pytest.mark.parametrize("text", [
    LONG,
    LONG.replace(". ", ", "),  # one giant sentence: needs a word cut
    "supercalifragilistic " * 30,
    " ".join(f"w{i}" for i in range(200)),
])
def test_fit_clip_always_fits_and_never_cuts_words(clip_tok, text):
    from core.captions.t5 import fit_clip

    fitted, how = fit_clip(text, clip_tok)
    assert n_clip(clip_tok, fitted) <= 77
    assert how != "fits"
    words = text.split()
    kept = fitted.split()
    assert kept, how
    # every kept word is a whole word of the original (a trailing comma may be dropped)
    assert words[: len(kept) - 1] == kept[:-1]
    assert words[len(kept) - 1].rstrip(",;:") == kept[-1].rstrip(",;:")
    m = re.search(r"cut at word (\d+)", how)
    if m:
        assert int(m.group(1)) == len(kept)
        # one more word would not fit: the cut is as late as possible
        assert n_clip(clip_tok, " ".join(words[: len(kept) + 1])) > 77


def test_fit_clip_drops_sentences_first_and_keeps_short_text(clip_tok):
    from core.captions.t5 import fit_clip

    short = "A flooded town."
    assert fit_clip(short, clip_tok) == (short, "fits")
    text = "A flooded town. " * 30
    fitted, how = fit_clip(text, clip_tok)
    assert how.startswith("dropped ") and "sentences" in how and "cut" not in how
    assert fitted.endswith(".") and n_clip(clip_tok, fitted) <= 77
    dropped = int(how.split()[1])
    assert len(fitted.split(". ")) == 30 - dropped
    # limit is the total with begin/end tokens
    fitted, _ = fit_clip(LONG, clip_tok, limit=20)
    assert n_clip(clip_tok, fitted) <= 20


# -- T5 ----------------------------------------------------------------------------------
def test_t5_summariser_loads_folder_through_manager_and_fits(clip_tok):
    from core.captions.t5 import T5_SETTINGS, T5Summariser
    from core.models.manager import ModelManager
    from tests.tiny.captions import tiny_t5_folder

    assert T5_SETTINGS["num_beams"] == 4 and T5_SETTINGS["min_new_tokens"] == 30
    assert T5_SETTINGS["max_new_tokens"] == 70 and T5_SETTINGS["length_penalty"] == 2.0
    manager = ModelManager(device="cpu", ram_budget_gb=1)
    summariser = T5Summariser(str(tiny_t5_folder()), manager=manager)
    summary = summariser.summarise(LONG * 20)  # longer than 512 T5 tokens: truncated, no error
    assert isinstance(summary, str) and summary
    assert manager.resident() == summariser.model_key
    result = summariser.summarise_to_fit(LONG, clip_tok, limit=20)
    assert result.clip_tokens <= 20 and result.summary
    assert result.how == "fits" or result.how.startswith(("dropped", "cut", "no word"))


def test_summaries_fit_the_clip_tokens_of_a_backbone_that_is_not_on_disk(tmp_path):
    import shutil

    from core.captions.t5 import CLIP_LIMIT, clip_length
    from core.config import DEMO_SCENES, Settings
    from core.generation.prompts import standard_clip_tokenizer
    from core.lab import Lab
    from tests.tiny.captions import tiny_t5_folder

    models = tmp_path / "models"
    shutil.copytree(tiny_t5_folder(), models / "t5")  # the T5 the service picks up; no diffusion model at all
    lab = Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work", models_dir=models))
    assert not lab.backbones.readiness("sdxl-base").ready
    index = lab.datasets.open(DEMO_SCENES)
    report = lab.captions.caption_scenes(index, index.scenes[:2], "template", phases=("post",),
                                         summarise_for="sdxl-base")
    assert len(report.summarised) == 2 and not report.failed
    for image in report.summarised:
        record = lab.captions.store.get(image)
        assert record.summary_model.startswith("t5:") and record.text == record.summary
        assert clip_length(standard_clip_tokenizer(), record.summary) <= CLIP_LIMIT
    lab.captions.store.close()


# -- CogVLM2 (fake remote code) ------------------------------------------------------------
def test_cogvlm2_adapter_against_fake_remote_code():
    from core.captions.cogvlm2 import CogVLM2Captioner
    from tests.tiny.captions import FakeCogVLM2RemoteCode, FakeLlama3Tokenizer

    fake = FakeCogVLM2RemoteCode()
    cap = CogVLM2Captioner()  # in process: what the CogVLM2 environment's worker runs
    assert cap.source == "THUDM/cogvlm2-llama3-chat-19B"
    assert cap.spec_dtype == "bf16"
    cap.bind(ModelBundle(model=fake, processor=FakeLlama3Tokenizer()))
    text = cap.caption(IMAGE, CaptionContext("s", "pre", "midwest-flooding", "flooding"))
    assert text == "Flood waters cover the streets."
    built = fake.built[0]
    assert built["query"] == (
        "Describe this pre-event satellite image in detail. The disaster type is flooding. Give a "
        "description in one paragraph. The description should be in the style of a news article "
        "and should be informative and actionable.")
    assert built["history"] == [] and built["template_version"] == "chat"
    assert len(built["images"]) == 1 and built["images"][0].size == (32, 32)
    gen = fake.generated[0]
    assert gen["do_sample"] is False and gen["top_k"] == 1
    assert gen["input_ids"].shape[0] == 1 and gen["images"][0][0].shape == (3, 8, 8)
    assert gen["images"][0][0].dtype == torch.float32
    short = CogVLM2Captioner(length="one sentence", int4=True)
    assert short.id == "cogvlm2-int4" and short.source.endswith("-int4")
    assert "in one sentence" in short.prompt(CaptionContext("s", "post", None, "wind"))


def test_cogvlm2_version_check_fails_before_loading(tmp_path):
    from core.captions.cogvlm2 import CogVLM2Captioner, check_transformers

    check_transformers("4.40.2")
    check_transformers("4.43.4")
    for bad in ("4.39.0", "4.44.0", "4.47.1", "5.23.0"):
        with pytest.raises(ModelLoadError, match="4.40.2"):
            check_transformers(bad)
    cap = CogVLM2Captioner(source=str(tmp_path / "not-there"))
    with pytest.raises(ModelLoadError, match="transformers 5"):  # installed one is 5.x
        cap.loader("cpu", torch.float32)


# -- Qwen2-VL (tiny, real loading) ----------------------------------------------------------
def test_native_vlm_tiny_qwen2_vl_generates_on_cpu():
    from core.models.manager import ModelManager
    from tests.tiny.captions import tiny_qwen2_vl_folder

    cap = get_captioner("qwen2-vl", source=str(tiny_qwen2_vl_folder()), max_new_tokens=6)
    manager = ModelManager(device="cpu", ram_budget_gb=1)
    ctx = CaptionContext("s", "post", "hurricane-michael", "wind", COUNTS)
    with manager.use(cap.model_key, cap.loader, spec_dtype=cap.spec_dtype) as bundle:
        cap.bind(bundle)
        batch = cap.preprocess(IMAGE, ctx)
        assert "pixel_values" in batch and "image_grid_thw" in batch
        text = cap.postprocess(cap.forward(batch), ctx)
    assert isinstance(text, str) and text == text.strip()
    assert "post-event" in cap.prompt(ctx) and "wind" in cap.prompt(ctx)


# -- batch -------------------------------------------------------------------------------
class _Cancel:
    def __init__(self):
        self.cancelled = False


class _CountingTemplate(TemplateCaptioner):
    def __init__(self, cancel_after=None, cancel=None):
        super().__init__()
        self.calls, self.cancel_after, self.cancel = 0, cancel_after, cancel

    def caption(self, image, context):
        self.calls += 1
        if self.cancel_after is not None and self.calls >= self.cancel_after:
            self.cancel.cancelled = True
        return super().caption(image, context)


@pytest.fixture
def index_and_store(tmp_path):
    from core.captions.store import CaptionStore
    from core.data.index import index_dataset
    from tests.xbd_trees import make_images_labels

    index = index_dataset(make_images_labels(tmp_path / "xbd"), cache_dir=tmp_path / "cache")
    store = CaptionStore(tmp_path / "captions.sqlite")
    yield index, store
    store.close()


def test_batch_resumes_and_cancels(index_and_store):
    from core.captions.batch import caption_scenes

    index, store = index_and_store
    scenes = [s.scene_id for s in index.scenes]
    assert len(scenes) == 2
    cancel = _Cancel()
    cap = _CountingTemplate(cancel_after=1, cancel=cancel)
    seen = []
    report = caption_scenes(index, scenes, cap, store=store, cancel=cancel,
                            progress=lambda d, t, m: seen.append((d, t)))
    assert report.cancelled and len(report.captioned) == 1 and cap.calls == 1
    assert seen == [(1, 4)]

    cap2 = _CountingTemplate()
    report = caption_scenes(index, scenes, cap2, store=store)
    assert not report.cancelled and len(report.captioned) == 3 and len(report.skipped) == 1
    record = store.get(report.captioned[0])
    assert record.machine_model == "template" and record.machine_caption.startswith("A satellite image")

    cap3 = _CountingTemplate()
    report = caption_scenes(index, scenes, cap3, store=store)
    assert cap3.calls == 0 and len(report.skipped) == 4 and "4 already done" in report.summary()


def test_batch_with_summariser_through_manager_fits_clip(index_and_store, clip_tok):
    from core.captions.batch import caption_scenes
    from core.captions.t5 import T5Summariser
    from core.models.manager import ModelManager
    from tests.tiny.captions import tiny_t5_folder

    index, store = index_and_store
    manager = ModelManager(device="cpu", ram_budget_gb=1)
    summariser = T5Summariser(str(tiny_t5_folder()))
    event = threading.Event()
    report = caption_scenes(index, [index.scenes[0]], TemplateCaptioner(), store=store,
                            phases=("post",), summariser=summariser, clip_tokenizer=clip_tok,
                            manager=manager, cancel=event)
    assert len(report.summarised) == 1 and not report.cancelled
    record = store.get(report.summarised[0])
    assert record.summary and record.summary_model.startswith("t5:")
    assert n_clip(clip_tok, record.summary) <= 77
    assert manager.resident() == summariser.model_key
    event.set()
    report = caption_scenes(index, [index.scenes[1]], TemplateCaptioner(), store=store, cancel=event)
    assert report.cancelled and not report.captioned


class _OutOfMemoryCaptioner(TemplateCaptioner):
    """A model captioner whose GPU runs out of memory at the second image (torch's own
    error, as CUDA raises it)."""

    needs_model = True

    def __init__(self):
        super().__init__()
        self.calls = 0

    def loader(self, device, dtype):
        import torch

        return torch.nn.Linear(2, 2)

    def bind(self, bundle):
        self.bundle = bundle
        return self

    def caption(self, image, context):
        import torch

        self.calls += 1
        if self.calls == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().caption(image, context)


def test_torch_out_of_memory_stops_the_batch_frees_the_model_and_says_what_to_change(index_and_store):
    from core.captions.batch import caption_scenes
    from core.errors import OutOfMemory
    from core.models.manager import ModelManager

    index, store = index_and_store
    manager = ModelManager(device="cpu", ram_budget_gb=1)
    cap = _OutOfMemoryCaptioner()
    with pytest.raises(OutOfMemory) as err:
        caption_scenes(index, [s.scene_id for s in index.scenes], cap, store=store, manager=manager)
    assert cap.calls == 2  # stopped at the failing image: not counted as a per-image failure
    assert manager.resident() is None  # the model was freed
    assert "memory" in str(err.value)
    assert len(store.list()) == 1  # the image captioned before it is kept


# -- models not on disk: the curated message, not transformers' "couldn't connect" --------
@pytest.mark.parametrize("make, model_id, folder", [
    (lambda: get_captioner("qwen2-vl"), "Qwen/Qwen2-VL-2B-Instruct", "qwen2-vl"),
    (lambda: __import__("core.captions.t5", fromlist=["T5Summariser"]).T5Summariser(), "google-t5/t5-large", "t5"),
])
def test_a_model_not_on_disk_says_where_to_put_it_without_the_network(make, model_id, folder, tmp_path,
                                                                        monkeypatch):
    from core.errors import ModelNotAvailable

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache, no hub here
    model = make()
    for attempt in (lambda: model.check_ready(tmp_path / "models"), lambda: model.loader("cpu", torch.float32)):
        with pytest.raises(ModelNotAvailable) as caught:
            attempt()
        message = str(caught.value)
        assert model_id in message and "huggingface.co" not in message
        assert f"models--{model_id.replace('/', '--')}" in message and str(tmp_path / "hub") in message
        assert f"hf download {model_id}" in message and "HF_ENDPOINT" in message
        assert folder in message and "couldn't connect" not in message.lower()
    assert str(tmp_path / "models" / folder) in str(pytest.raises(ModelNotAvailable, model.check_ready,
                                                                  tmp_path / "models").value)


def test_captioning_with_a_model_not_on_disk_is_refused_before_any_tile(tmp_path, monkeypatch):
    from core.config import DEMO_SCENES, Settings
    from core.errors import ModelNotAvailable
    from core.lab import Lab

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    lab = Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work", models_dir=tmp_path / "m"))
    index = lab.datasets.open(DEMO_SCENES)
    with pytest.raises(ModelNotAvailable, match="Qwen/Qwen2-VL-2B-Instruct is not on disk") as caught:
        lab.captions.caption_scenes(index, index.scenes[:1], "qwen2-vl", phases=("post",))
    assert str(tmp_path / "m" / "qwen2-vl") in str(caught.value)
    assert len(lab.captions.store) == 0
    lab.captions.store.close()


def test_a_local_model_folder_named_after_the_captioner_is_used(tmp_path):
    import shutil

    from core.config import DEMO_SCENES, Settings
    from core.lab import Lab
    from tests.tiny.captions import tiny_qwen2_vl_folder

    shutil.copytree(tiny_qwen2_vl_folder(), tmp_path / "m" / "qwen2-vl")
    lab = Lab(Settings.load(env={}, data_dir=DEMO_SCENES, work_dir=tmp_path / "work", models_dir=tmp_path / "m"))
    assert lab.captions._local_source("qwen2-vl") == {"source": str(tmp_path / "m" / "qwen2-vl")}
    assert lab.captions._local_source("template") == {}
    lab.captions.store.close()
