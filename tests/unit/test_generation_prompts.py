"""Long prompts: counted, located, and encoded whole by 75-token windows (no silent cut)."""

import numpy as np
import pytest

from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from core.generation.prompts import (clip_windows, count_tokens, encode_long_prompt_sd,  # noqa: E402
                                     encode_long_prompt_sdxl, token_report, truncation_point)


def tiny(backbone_id, **load_options):
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe(backbone_id, **load_options)


def words(n_tokens: int, tokenizer, *, last_word: str = "zebra") -> str:
    """A prompt of exactly `n_tokens` tokens whose final word is `last_word`."""
    vocab = ["flood", "roof", "water", "field", "road", "mud", "house", "street", "bridge", "canal"]
    out, i = [], 0
    while True:
        candidate = " ".join(out + [last_word])
        n = count_tokens(tokenizer, candidate)
        if n == n_tokens:
            return candidate
        if n > n_tokens:
            out = out[:-1]
            vocab = ["a", "b", "c"]  # one-token words to land exactly
            continue
        out.append(vocab[i % len(vocab)])
        i += 1


@pytest.fixture(scope="module")
def sd():
    return tiny("tiny-sd21")


@pytest.fixture(scope="module")
def tile():
    return (np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8)


# -- counting -----------------------------------------------------------------------------
def test_count_tokens_leaves_out_begin_and_end(sd):
    _, pipe = sd
    tok = pipe.tokenizer
    assert count_tokens(tok, "") == 0
    text = "a flooded town"
    assert count_tokens(tok, text) == len(tok(text).input_ids) - 2


def test_truncation_point_is_where_a_77_token_encoder_cuts(sd):
    _, pipe = sd
    tok = pipe.tokenizer
    short = words(75, tok)
    assert truncation_point(tok, short) is None
    long = words(90, tok, last_word="submerged")
    cut = truncation_point(tok, long)
    assert cut is not None and 0 < cut < len(long)
    assert count_tokens(tok, long[:cut]) == 75
    kept = tok(long, truncation=True, max_length=77).input_ids[1:-1]
    assert kept == tok(long[:cut], add_special_tokens=False).input_ids
    assert "submerged" in long[cut:]


def test_truncation_point_without_offsets_agrees(sd):
    _, pipe = sd
    tok = pipe.tokenizer

    class NoOffsets:
        def __call__(self, text, return_offsets_mapping=False, **kw):
            if return_offsets_mapping:
                raise NotImplementedError
            return tok(text, **kw)

    long = words(90, tok)
    assert truncation_point(NoOffsets(), long) == truncation_point(tok, long)


# -- SD: windows --------------------------------------------------------------------------
def test_a_short_prompt_gives_exactly_diffusers_embeddings(sd):
    _, pipe = sd
    p = pipe.for_mode("txt2img")
    ours, our_neg = encode_long_prompt_sd(p, "a flooded town", "blurry", "cpu")
    theirs, their_neg = p.encode_prompt("a flooded town", "cpu", 1, True, negative_prompt="blurry")
    assert ours.shape == theirs.shape == (1, 77, 32)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(our_neg, their_neg)


def test_a_200_token_prompt_reaches_the_text_encoder_whole(sd, monkeypatch):
    _, pipe = sd
    p = pipe.for_mode("txt2img")
    tok = p.tokenizer
    prompt = words(200, tok)
    ids = tok(prompt, add_special_tokens=False).input_ids
    seen = []
    forward = p.text_encoder.forward

    def recording(input_ids, *args, **kwargs):
        seen.append(input_ids.clone())
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(p.text_encoder, "forward", recording)
    embeds, negative = encode_long_prompt_sd(p, prompt, "", "cpu")
    assert embeds.shape == (1, 3 * 77, 32) and negative.shape == embeds.shape
    windows = seen[0]
    assert windows.shape == (3, 77)
    assert (windows[:, 0] == tok.bos_token_id).all()
    body = [t for row in windows.tolist() for t in row[1:] if t not in (tok.eos_token_id, tok.pad_token_id)]
    assert body == [t for t in ids if t != tok.pad_token_id], "every prompt token, in order"


def test_a_word_past_token_150_changes_the_embeddings(sd):
    _, pipe = sd
    p = pipe.for_mode("txt2img")
    a = words(200, p.tokenizer, last_word="zebra")
    b = a[: a.rindex("zebra")] + "quake"
    assert count_tokens(p.tokenizer, a[: a.rindex("zebra")]) > 150
    ea, _ = encode_long_prompt_sd(p, a, "", "cpu")
    eb, _ = encode_long_prompt_sd(p, b, "", "cpu")
    assert not torch.allclose(ea, eb)
    torch.testing.assert_close(ea[:, :154], eb[:, :154])  # the first two windows are the same


def test_the_negative_prompt_is_padded_to_the_same_windows(sd):
    _, pipe = sd
    tok = pipe.tokenizer
    windows = clip_windows(tok, "blurry", 3)
    assert len(windows) == 3 and all(len(w) == 77 for w in windows)
    assert windows[1][:2] == [tok.bos_token_id, tok.eos_token_id]


def test_generate_with_a_long_prompt_feeds_the_unet_every_window(sd, tile, monkeypatch):
    from core.generation import generate

    backend, pipe = sd
    prompt = words(200, pipe.tokenizer)
    lengths = []
    unet_forward = pipe.unet.forward

    def recording(sample, timestep, encoder_hidden_states, *args, **kwargs):
        lengths.append(encoder_hidden_states.shape[1])
        return unet_forward(sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", recording)
    req = GenerationRequest(backbone="tiny-sd21", prompt=prompt, steps=2, strength=1.0, size=64)
    result = generate(req, backend=backend, pipe=pipe, init_image=tile)
    assert lengths and set(lengths) == {231}
    clip = result.record["token_counts"]["clip"]
    assert clip["prompt_tokens"] == 200 and clip["windows"] == 3 and clip["truncated"] is False
    assert result.record["prompt_handling"]["clip_windows"] is True


# -- SDXL ---------------------------------------------------------------------------------
def test_sdxl_short_prompt_matches_diffusers_and_long_prompt_uses_both_encoders():
    _, pipe = tiny("tiny-sdxl-turbo")
    p = pipe.for_mode("txt2img")
    ours = encode_long_prompt_sdxl(p, "a flooded town", "blurry", "cpu")
    theirs = p.encode_prompt("a flooded town", device="cpu", negative_prompt="blurry")
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    zeros = encode_long_prompt_sdxl(p, "a flooded town", None, "cpu")
    assert not zeros[1].any() and not zeros[3].any()  # force_zeros_for_empty_prompt

    letters = "abcdefghij"
    long = " ".join(letters[i % 10] for i in range(200))  # one token per word
    assert count_tokens(p.tokenizer, long) == count_tokens(p.tokenizer_2, long) == 200
    embeds, negative, pooled, _ = encode_long_prompt_sdxl(p, long, None, "cpu")
    assert embeds.shape == (1, 231, 64) and negative.shape == embeds.shape
    first = " ".join(long.split()[:75])
    first_embeds, _, first_pooled, _ = encode_long_prompt_sdxl(p, first, None, "cpu")
    torch.testing.assert_close(pooled, first_pooled)  # pooled comes from the first window
    torch.testing.assert_close(embeds[:, :77], first_embeds)


def test_sdxl_generate_with_a_long_prompt():
    from core.generation import generate

    backend, pipe = tiny("tiny-sdxl-turbo")
    prompt = words(160, pipe.tokenizer)
    req = GenerationRequest(backbone="tiny-sdxl-turbo", prompt=prompt, mode="txt2img", steps=1, guidance=0.0,
                            size=64)
    result = generate(req, backend=backend, pipe=pipe)
    assert result.images[0].shape == (64, 64, 3)
    assert result.record["token_counts"]["clip2"]["windows"] == 3


# -- SD3 ----------------------------------------------------------------------------------
def test_sd3_counts_tokens_per_encoder_and_t5_reads_up_to_256(monkeypatch):
    from core.generation import generate

    backend, pipe = tiny("tiny-sd3")
    p = pipe.for_mode("txt2img")
    prompt = words(120, p.tokenizer)
    seen = []
    forward = p.text_encoder_3.forward

    def recording(input_ids, *args, **kwargs):
        seen.append(input_ids.shape)
        return forward(input_ids, *args, **kwargs)

    monkeypatch.setattr(p.text_encoder_3, "forward", recording)
    req = GenerationRequest(backbone="tiny-sd3", prompt=prompt, mode="txt2img", steps=1, guidance=2.0, size=64)
    result = generate(req, backend=backend, pipe=pipe)
    assert seen and seen[0][-1] == 256
    counts = result.record["token_counts"]
    assert counts["clip"]["prompt_tokens"] == 120 and counts["clip"]["truncated"] is True
    assert counts["clip"]["truncated_at_char"] == truncation_point(p.tokenizer, prompt)
    assert counts["t5"]["limit"] == 255 and counts["t5"]["truncated"] is False
    assert counts["t5"]["prompt_tokens"] == count_tokens(p.tokenizer_3, prompt)
    report = token_report(p, ("clip", "clip2", "t5"), prompt)
    assert set(report) == {"clip", "clip2", "t5"}
