"""DAAM attention maps for SD3: the joint-attention recorder on the tiny random SD3 (same
images, processors put back whatever happens, the image→text block of the joint softmax,
text axis 77 + T5 length) and the CLIP + T5 word spans (also with T5 dropped)."""

import numpy as np
import pytest

from core.attention import JointAttentionRecorder, WordMap, record_joint_attention, sd3_word_maps
from core.attention.analysis import prompt_words
from core.attention.joint import CLIP_TOKENS, sd3_word_tokens, t5_word_pieces
from core.generation import generate
from core.generation.prompts import T5_MAX_SEQUENCE_LENGTH
from core.types import GenerationRequest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

PROMPT = "Flooded streets, submerged houses and greenery"
WORDS = ["flooded", "streets", "submerged", "houses", "and", "greenery"]


def tiny(**options):
    from core.backends.tiny_models.sd import tiny_backend_and_pipe

    return tiny_backend_and_pipe("tiny-sd3", **options)


def request(**fields):
    base = dict(backbone="tiny-sd3", prompt=PROMPT, mode="txt2img", steps=2, strength=1.0, size=64,
                guidance=4.0, seed=3)
    base.update(fields)
    return GenerationRequest(**base)


def processors(model):
    return {name: id(proc) for name, proc in model.attn_processors.items()}


def text_length(pipe) -> int:
    """77 CLIP positions + the T5 length the backend asks diffusers for."""
    kwargs = tiny()[0].prompt_kwargs(pipe, request(), "cpu")
    return CLIP_TOKENS + kwargs["max_sequence_length"]


def test_recording_keeps_the_image_and_puts_the_processors_back():
    backend, pipe = tiny()
    before = processors(pipe.transformer)
    req = request()
    plain = generate(req, backend=backend, pipe=pipe).images[0]
    with record_joint_attention(pipe, cfg=req.guidance > 1) as rec:
        assert isinstance(rec, JointAttentionRecorder) and rec.active
        recorded = generate(req, backend=backend, pipe=pipe).images[0]
        installed = pipe.transformer.attn_processors
        assert sum(type(p).__name__ == "RecordingJointAttnProcessor" for p in installed.values()) == rec.n_layers
    assert rec.n_layers == len(pipe.transformer.transformer_blocks) > 0
    assert not rec.active and processors(pipe.transformer) == before
    assert np.abs(plain.astype(int) - recorded.astype(int)).max() <= 1
    assert rec.steps == 2 and rec.calls == rec.steps * rec.n_layers
    assert rec.text_tokens == text_length(pipe) == CLIP_TOKENS + T5_MAX_SEQUENCE_LENGTH
    assert rec.t5_dropped is False
    raw = rec.raw()
    assert raw.shape == (rec.text_tokens, 64, 64) and raw.dtype == np.float32 and raw.min() >= 0
    assert rec.nbytes() > 0 and rec.maps.shape == raw.shape

    maps = sd3_word_maps(rec, PROMPT, pipe.tokenizer, pipe.tokenizer_3)
    assert list(maps) == WORDS
    for wm in maps.values():
        assert isinstance(wm, WordMap) and wm.map.shape == (64, 64) and wm.map.dtype == np.float32
        assert wm.map.min() >= 0 and wm.map.max() == pytest.approx(1.0) and wm.raw_total > 0
        assert any(t < CLIP_TOKENS for t in wm.tokens) and any(t >= CLIP_TOKENS for t in wm.tokens)
        assert wm.raw_total == pytest.approx(float(raw[list(wm.tokens)].sum()), rel=1e-4)


def test_processors_are_restored_after_an_exception():
    _, pipe = tiny()
    before = processors(pipe.transformer)
    with pytest.raises(RuntimeError, match="boom"):
        with record_joint_attention(pipe.transformer):
            assert processors(pipe.transformer) != before
            raise RuntimeError("boom")
    assert processors(pipe.transformer) == before


def test_a_pipeline_without_a_transformer_is_refused():
    with pytest.raises(TypeError):
        record_joint_attention(object())


def test_the_recorded_block_is_the_image_to_text_part_of_the_joint_softmax(monkeypatch):
    """One joint layer called directly: the output equals JointAttnProcessor2_0's, and the
    recorded block equals softmax over ALL keys, text columns, conditional half, summed
    over heads (also when the image rows are processed in several chunks)."""
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    import core.attention.joint as joint

    _, pipe = tiny()
    attn = pipe.transformer.transformer_blocks[0].attn
    gen = torch.Generator().manual_seed(0)
    n_img, n_txt, dim = 16, 12, attn.to_q.in_features
    x = torch.randn(2, n_img, dim, generator=gen)
    ctx = torch.randn(2, n_txt, attn.add_k_proj.in_features, generator=gen)
    with torch.no_grad():
        want = JointAttnProcessor2_0()(attn, x, ctx)
        # The explicit joint softmax.
        heads = attn.heads

        def split(t):
            return t.view(2, -1, heads, t.shape[-1] // heads).transpose(1, 2)

        def norm(name, t):
            module = getattr(attn, name)
            return t if module is None else module(t)

        q = torch.cat([norm("norm_q", split(attn.to_q(x))), norm("norm_added_q", split(attn.add_q_proj(ctx)))], dim=2)
        k = torch.cat([norm("norm_k", split(attn.to_k(x))), norm("norm_added_k", split(attn.add_k_proj(ctx)))], dim=2)
        probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(dim=-1)
        expected = probs[1:, :, :n_img, n_img:].sum(dim=(0, 1))  # conditional half, heads summed
    for chunk in (joint._CHUNK_ELEMENTS, 2 * (n_img + n_txt) * heads):  # one chunk, then several
        monkeypatch.setattr(joint, "_CHUNK_ELEMENTS", chunk)
        rec = record_joint_attention(pipe.transformer, cfg=True)
        rec.latent_size = (4, 4)
        with torch.no_grad():
            got = joint.RecordingJointAttnProcessor(rec)(attn, x, ctx)
        assert torch.allclose(got[0], want[0], atol=1e-6) and torch.allclose(got[1], want[1], atol=1e-6)
        (block,) = rec._sums.values()
        assert block.shape == (n_txt, 4, 4)
        assert torch.allclose(block.reshape(n_txt, n_img).T, expected, atol=1e-5)


def test_clip_and_t5_word_spans_match_a_fresh_tokenisation():
    _, pipe = tiny()
    clip, t5 = pipe.tokenizer, pipe.tokenizer_3
    spans = sd3_word_tokens(PROMPT, clip, t5, CLIP_TOKENS + T5_MAX_SEQUENCE_LENGTH)
    assert list(spans) == WORDS
    clip_ids = clip(PROMPT, padding="max_length", max_length=77, truncation=True).input_ids
    t5_ids = t5(PROMPT, padding="max_length", max_length=T5_MAX_SEQUENCE_LENGTH, truncation=True).input_ids
    for word, (clip_pos, t5_pos) in spans.items():
        assert clip_pos and all(0 < p < CLIP_TOKENS for p in clip_pos)
        assert t5_pos and all(CLIP_TOKENS <= p < CLIP_TOKENS + T5_MAX_SEQUENCE_LENGTH for p in t5_pos)
        # The positions hold exactly the word's pieces in what the encoders see.
        clip_text = clip.convert_tokens_to_string(clip.convert_ids_to_tokens([clip_ids[p] for p in clip_pos]))
        assert clip_text.replace("</w>", "").strip() == word
        t5_pieces = t5.convert_ids_to_tokens([t5_ids[p - CLIP_TOKENS] for p in t5_pos])
        assert t5_pieces[0].startswith("\u2581")
        assert "".join(t5_pieces).replace("\u2581", "").lower() == word
        assert t5_pos == list(range(t5_pos[0], t5_pos[-1] + 1))
    # The first word starts right after CLIP's BOS, and at T5's first piece (no BOS in T5).
    assert spans["flooded"][0][0] == 1 and spans["flooded"][1][0] == CLIP_TOKENS
    # The comma after "streets" is a piece of its own in T5 and belongs to no word.
    comma = CLIP_TOKENS + t5.convert_ids_to_tokens(t5_ids).index(",")
    assert all(comma not in t5_pos for _, t5_pos in spans.values())
    # Phrases match consecutive words in both encoders; unknown words get nothing.
    picked = sd3_word_tokens(PROMPT, clip, t5, None, words=["submerged houses", "boats"])
    assert list(picked) == ["submerged houses"]
    clip_pos, t5_pos = picked["submerged houses"]
    assert clip_pos == spans["submerged"][0] + spans["houses"][0]
    assert t5_pos == spans["submerged"][1] + spans["houses"][1]
    assert [w for w, _ in t5_word_pieces(PROMPT, t5)] == [w for w, _ in prompt_words(PROMPT, clip)]


def test_word_maps_sum_the_clip_and_t5_spans():
    _, pipe = tiny()
    n = CLIP_TOKENS + T5_MAX_SEQUENCE_LENGTH
    raw = np.random.default_rng(0).random((n, 8, 8)).astype(np.float32)
    spans = sd3_word_tokens(PROMPT, pipe.tokenizer, pipe.tokenizer_3, n)
    maps = sd3_word_maps(raw, PROMPT, pipe.tokenizer, pipe.tokenizer_3)
    for word, (clip_pos, t5_pos) in spans.items():
        merged = raw[clip_pos].sum(axis=0) + raw[t5_pos].sum(axis=0)
        assert maps[word].tokens == tuple(clip_pos + t5_pos)
        assert maps[word].raw_total == pytest.approx(float(merged.sum()), rel=1e-5)
        np.testing.assert_allclose(maps[word].map, merged / merged.max(), rtol=1e-5)
    # Without a T5 tokenizer only the CLIP span counts.
    clip_only = sd3_word_maps(raw, PROMPT, pipe.tokenizer, None)
    for word, (clip_pos, _) in spans.items():
        assert clip_only[word].tokens == tuple(clip_pos)
        assert clip_only[word].raw_total == pytest.approx(float(raw[clip_pos].sum()), rel=1e-5)


@pytest.mark.parametrize("loaded_without_t5", [True, False])
def test_drop_t5_keeps_the_axis_and_maps_words_from_clip_only(loaded_without_t5):
    backend, pipe = tiny(drop_t5=True) if loaded_without_t5 else tiny()
    req = request(options={"drop_t5": True}, guidance=1.0, steps=1)
    with record_joint_attention(pipe, cfg=False) as rec:
        generate(req, backend=backend, pipe=pipe)
    assert getattr(pipe, "text_encoder_3", None) is (None if loaded_without_t5 else pipe.text_encoder_3)
    # diffusers puts zero embeddings in T5's place: the axis keeps its length.
    assert rec.text_tokens == text_length(pipe) and rec.t5_dropped is True
    raw = rec.raw()
    assert raw.sum() > 0
    t5_tokenizer = getattr(pipe, "tokenizer_3", None)
    assert (t5_tokenizer is None) == loaded_without_t5
    maps = sd3_word_maps(rec, PROMPT, pipe.tokenizer, t5_tokenizer)  # the recorder knows T5 was dropped
    assert list(maps) == WORDS
    for wm in maps.values():
        assert wm.tokens and all(t < CLIP_TOKENS for t in wm.tokens)
        assert wm.raw_total > 0 and wm.map.max() == pytest.approx(1.0)
        assert wm.raw_total == pytest.approx(float(raw[list(wm.tokens)].sum()), rel=1e-4)


def test_numbers_and_possessives_stay_one_word_in_clip_and_t5():
    from core.backends.tiny_models.sd import tiny_clip_tokenizer, tiny_t5_tokenizer

    clip, t5 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    prompt = "12 houses in the town's 2018 flood"
    words = ["12", "houses", "in", "the", "town's", "2018", "flood"]
    # T5 cuts "12", "town's" and "2018" into several pieces too (one character each here).
    assert t5.tokenize("12 town's") == ["\u25811", "2", "\u2581t", "o", "w", "n", "'", "s"]
    assert [w for w, _ in t5_word_pieces(prompt, t5)] == words
    spans = sd3_word_tokens(prompt, clip, t5, CLIP_TOKENS + T5_MAX_SEQUENCE_LENGTH)
    assert list(spans) == words
    assert spans["12"] == ([1, 2], [CLIP_TOKENS, CLIP_TOKENS + 1])
    assert spans["town's"] == ([12, 13, 14, 15, 16, 17], [CLIP_TOKENS + i for i in range(13, 19)])
    assert spans["2018"] == ([18, 19, 20, 21], [CLIP_TOKENS + i for i in range(19, 23)])
    # One map per word, summing every CLIP and T5 piece of it.
    raw = np.zeros((CLIP_TOKENS + T5_MAX_SEQUENCE_LENGTH, 2, 2), np.float32)
    raw[[18, 19, 20, 21] + [CLIP_TOKENS + i for i in range(19, 23)], 0, 1] = 1.0
    maps = sd3_word_maps(raw, prompt, clip, t5)
    assert list(maps) == words and maps["2018"].raw_total == pytest.approx(8.0) and maps["2018"].map[0, 1] == 1.0
    assert sd3_word_tokens(prompt, clip, t5, None, words=["town's 2018"])["town's 2018"] == (
        spans["town's"][0] + spans["2018"][0], spans["town's"][1] + spans["2018"][1])
