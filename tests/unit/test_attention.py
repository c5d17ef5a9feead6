"""DAAM attention maps: recording processors on the tiny SD 2.1 UNet (installed and put
back whatever happens, same images, steps counted, long prompts, constant memory) and the
word analysis (token merge, normalisation, overlays, region shares, files)."""

import numpy as np
import pytest

from core.attention import WordMap, load_maps, overlay, record_attention, save_maps, share_inside, word_maps
from core.attention.analysis import prompt_words, token_position, word_tokens
from core.errors import GenerationCancelled
from core.generation import generate
from core.generation.progress import CancelToken
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

PROMPT = "flooded streets, submerged houses and greenery"


def tiny():
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe("tiny-sd21")


def request(**fields):
    base = dict(backbone="tiny-sd21", prompt=PROMPT, mode="txt2img", steps=3, strength=1.0, size=64,
                guidance=4.0, seed=3)
    base.update(fields)
    return GenerationRequest(**base)


def tile():
    return (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)


def processors(unet):
    return {name: id(proc) for name, proc in unet.attn_processors.items()}


def test_recording_keeps_the_image_and_puts_the_processors_back():
    backend, pipe = tiny()
    before = processors(pipe.unet)
    for mode in ("txt2img", "img2img"):
        req = request(mode=mode, strength=0.7 if mode == "img2img" else 1.0)
        plain = generate(req, backend=backend, pipe=pipe, init_image=tile()).images[0]
        with record_attention(pipe.unet, cfg=req.guidance > 1) as rec:
            assert rec.active
            recorded = generate(req, backend=backend, pipe=pipe, init_image=tile()).images[0]
            installed = pipe.unet.attn_processors
            assert sum(type(p).__name__ == "RecordingAttnProcessor" for p in installed.values()) == rec.n_layers
            assert all(type(p).__name__ != "RecordingAttnProcessor"
                       for name, p in installed.items() if ".attn1." in name)
        assert not rec.active and processors(pipe.unet) == before
        assert np.abs(plain.astype(int) - recorded.astype(int)).max() <= 1
        assert rec.steps == (3 if mode == "txt2img" else 2) and rec.calls == rec.steps * rec.n_layers
        maps = word_maps(rec, PROMPT, pipe.tokenizer)
        assert list(maps) == ["flooded", "streets", "submerged", "houses", "and", "greenery"]
        for wm in maps.values():
            assert wm.map.shape == (64, 64) and wm.map.dtype == np.float32
            assert wm.map.min() >= 0 and wm.map.max() == pytest.approx(1.0) and wm.raw_total > 0


def test_processors_are_restored_after_an_exception():
    backend, pipe = tiny()
    before = processors(pipe.unet)
    with pytest.raises(RuntimeError, match="boom"):
        with record_attention(pipe.unet):
            assert processors(pipe.unet) != before
            raise RuntimeError("boom")
    assert processors(pipe.unet) == before


def test_processors_are_restored_after_a_cancel_and_only_run_steps_are_recorded():
    backend, pipe = tiny()
    before = processors(pipe.unet)
    token = CancelToken()

    def on_step(step, total, **_):
        if step == 1:
            token.cancel()

    with pytest.raises(GenerationCancelled):
        with record_attention(pipe.unet, cfg=True) as rec:
            generate(request(steps=4), backend=backend, pipe=pipe, on_step=on_step, cancel=token)
    assert processors(pipe.unet) == before
    assert rec.steps == 1 and rec.raw().sum() > 0


def test_img2img_records_only_the_steps_that_run():
    backend, pipe = tiny()
    with record_attention(pipe.unet, cfg=True, keep_per_step=True) as rec:
        generate(request(mode="img2img", steps=4, strength=0.5), backend=backend, pipe=pipe, init_image=tile())
    assert rec.steps == 2 and len(rec.step_maps()) == 2
    total = sum(rec.step_maps())
    np.testing.assert_allclose(total, rec.raw(), rtol=1e-5, atol=1e-4)


def test_a_long_prompt_records_every_window_and_every_word_gets_a_map():
    backend, pipe = tiny()
    words = ["flooded", "streets", "submerged", "houses", "greenery", "waterlogged", "landscape", "devastating"]
    prompt = " ".join(words * 3)
    from core.generation.prompts import count_tokens

    assert count_tokens(pipe.tokenizer, prompt) > 120
    with record_attention(pipe.unet, cfg=True) as rec:
        generate(request(prompt=prompt, steps=2), backend=backend, pipe=pipe)
    assert rec.text_tokens > 77 and rec.text_tokens % 77 == 0
    maps = word_maps(rec, prompt, pipe.tokenizer)
    assert sorted(maps) == sorted(words)
    assert all(wm.raw_total > 0 and wm.map.max() == pytest.approx(1.0) for wm in maps.values())
    assert max(max(wm.tokens) for wm in maps.values()) >= 77  # words from the second window


def test_memory_does_not_grow_with_steps():
    _, pipe = tiny()
    unet = pipe.unet
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=gen)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)

    def record(n):
        with record_attention(unet, cfg=True) as rec, torch.inference_mode():
            for t in range(n):
                unet(latents, 999 - t, encoder_hidden_states=text)
        return rec

    short, long = record(5), record(50)
    assert (short.steps, long.steps) == (5, 50)
    # One running sum per layer resolution, whatever the number of steps.
    assert long.nbytes() == short.nbytes() <= 77 * 64 * 64 * 4
    assert long.per_step == [] and long.raw().sum() > short.raw().sum()


def test_cfg_keeps_the_conditional_half_only():
    _, pipe = tiny()
    unet = pipe.unet
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(1, 4, 8, 8, generator=gen).repeat(2, 1, 1, 1)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=gen)

    def raw(lat, txt, cfg):
        with record_attention(unet, cfg=cfg, map_size=16) as rec, torch.inference_mode():
            unet(lat, 500, encoder_hidden_states=txt)
        return rec.raw()

    both, auto, alone = raw(latents, text, True), raw(latents, text, None), raw(latents[1:], text[1:], False)
    np.testing.assert_allclose(both, alone, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(auto, alone, rtol=1e-4, atol=1e-5)


def test_multi_token_words_are_merged_and_windows_skip_bos_eos():
    from core.backends.tiny_models.sd import tiny_clip_tokenizer

    tok = tiny_clip_tokenizer()
    # "the" is one merged token; "flood" is five letter pieces; "," is punctuation, not a word.
    words = prompt_words("the flood, the", tok)
    assert [w for w, _ in words] == ["the", "flood", "the"]
    assert words[0][1] == [0] and words[1][1] == [1, 2, 3, 4, 5] and words[2][1] == [7]
    assert word_tokens("the flood, the", tok) == {"the": [1, 8], "flood": [2, 3, 4, 5, 6]}
    assert word_tokens("the flood", tok, words=["flood", "the flood", "absent"]) == {
        "flood": [2, 3, 4, 5, 6], "the flood": [1, 2, 3, 4, 5, 6]}
    assert [token_position(j) for j in (0, 74, 75, 150)] == [1, 75, 78, 155]
    # A one-window recording keeps only the positions it has.
    long_word = "x" * 80  # 80 letter pieces: the last 5 fall in a second window
    assert word_tokens(long_word, tok, n_positions=77) == {long_word: list(range(1, 76))}
    assert word_tokens(long_word, tok)[long_word][-5:] == [78, 79, 80, 81, 82]
    raw = np.zeros((77, 4, 4), np.float32)
    raw[2:7, 0, 0] = 1.0  # every piece of "flood" looks at the top-left pixel
    raw[2, 3, 3] = 1.0
    raw[1] = 0.5
    maps = word_maps(raw, "the flood", tok)
    assert maps["flood"].raw_total == pytest.approx(6.0) and maps["flood"].map[0, 0] == 1.0
    assert maps["flood"].map[3, 3] == pytest.approx(0.2) and maps["the"].map.min() == 1.0


NUMBERS = "12 houses in the town's 2018 flood"
NUMBER_WORDS = ["12", "houses", "in", "the", "town's", "2018", "flood"]


class WithoutOffsets:
    """A tokenizer that cannot give character offsets (as pure-Python tokenizers cannot)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text, **kwargs):
        if kwargs.get("return_offsets_mapping"):
            raise NotImplementedError("no offsets")
        return self.tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_numbers_and_possessives_stay_one_word():
    from core.backends.tiny_models.sd import tiny_clip_tokenizer

    tok = tiny_clip_tokenizer()
    # CLIP's pre-tokenizer cuts every digit apart and "town's" into "town" + "'s".
    assert tok.tokenize("12 town's") == ["1</w>", "2</w>", "t", "o", "w", "n</w>", "'", "s</w>"]
    for tokenizer in (tok, WithoutOffsets(tok)):
        words = prompt_words(NUMBERS, tokenizer)
        assert [w for w, _ in words] == NUMBER_WORDS
        assert dict(words)["12"] == [0, 1] and dict(words)["town's"] == [11, 12, 13, 14, 15, 16]
        assert dict(words)["2018"] == [17, 18, 19, 20]
    positions = word_tokens(NUMBERS, tok)
    assert list(positions) == NUMBER_WORDS and positions["2018"] == [18, 19, 20, 21]
    # A curly apostrophe, capitals and punctuation around: the same words.
    assert [w for w, _ in prompt_words("12 Houses in the Town\u2019s (2018) flood.", tok)] == NUMBER_WORDS
    assert [w for w, _ in prompt_words("1,000 roofs, 3.5 m of water", tok)] == ["1,000", "roofs", "3.5", "m", "of",
                                                                             "water"]
    assert word_tokens(NUMBERS, tok, words=["town's 2018", "2018"]) == {"town's 2018": list(range(12, 22)),
                                                                       "2018": [18, 19, 20, 21]}
    raw = np.zeros((77, 2, 2), np.float32)
    raw[18:22, 1, 1] = 1.0  # the four digits of 2018 look at one pixel
    maps = word_maps(raw, NUMBERS, tok)
    assert list(maps) == NUMBER_WORDS
    assert maps["2018"].raw_total == pytest.approx(4.0) and maps["2018"].map[1, 1] == 1.0
    assert maps["2018"].tokens == (18, 19, 20, 21)


def test_share_inside_and_overlay():
    m = np.zeros((8, 8), np.float32)
    m[:4, :4] = 3.0
    m[4:, 4:] = 1.0
    top = np.zeros((16, 16), bool)
    top[:8] = True
    shares = share_inside(m, {"top": top, "bottom": ~top, "top_left": np.pad(np.ones((8, 8), bool), ((0, 8), (0, 8)))})
    assert shares["top"][0] + shares["bottom"][0] == pytest.approx(1.0)
    assert shares["top"][1] == shares["bottom"][1] == 0.5 and shares["top_left"][1] == 0.25
    assert shares["top"][0] == pytest.approx(0.75, abs=0.05) and shares["top_left"][0] > 0.6
    image = np.full((16, 16, 3), 100, np.uint8)
    out = overlay(image, m / 3.0, alpha=0.5)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(overlay(image, m / 3.0, alpha=0.0), image)
    assert not np.array_equal(out[0, 0], out[15, 0])


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    maps = {w: WordMap(word=w, map=rng.random((8, 8)).astype(np.float32), raw_total=float(i + 1), tokens=(i + 1,))
            for i, w in enumerate(["flood", "satellite image", "a/b"])}
    folder = save_maps(tmp_path, maps)
    assert folder == tmp_path / "attention"
    assert {p.name for p in folder.iterdir()} == {"flood.png", "satellite_image.png", "a_b.png", "maps.npz",
                                                  "words.json"}
    back = load_maps(tmp_path)
    assert list(back) == list(maps)
    for w in maps:
        np.testing.assert_array_equal(back[w].map, maps[w].map)
        assert back[w].raw_total == maps[w].raw_total and back[w].tokens == maps[w].tokens


def test_first_of_three_keeps_the_prompt_conditioned_third():
    from core.attention.record import FIRST_OF_THREE, AttentionRecorder

    class _UNet:  # only what the constructor looks at
        def set_attn_processor(self, processors):
            pass

    probs = torch.arange(6.0).reshape(6, 1, 1, 1)  # 3 × 2 images
    rec = AttentionRecorder(_UNet(), cfg=FIRST_OF_THREE)
    assert rec._conditional(probs, None).flatten().tolist() == [0.0, 1.0]
    rec.cfg = True
    assert rec._conditional(probs, None).flatten().tolist() == [3.0, 4.0, 5.0]
