"""The standard CLIP tokenizer built offline from open_clip_torch's BPE file counts exactly
as CLIP's own tokenizer does, so token counts and 77-token fitting need no model on disk."""

from __future__ import annotations

import pytest

from core.generation.prompts import (CLIP_VOCAB_SIZE, clip_bpe_path, count_tokens, standard_clip_tokenizer,
                                     truncation_point)
from tests.unit.test_caption_store import modules_after

PROMPTS = [
    "",
    "A satellite image after being affected by flooding.",
    "guatemala-volcano_00000004_post_disaster_part3.png",
    "Numbers: 12345, 3.14, 1,000,000 and 2024-05-06; 76% of 42 buildings (5 destroyed).",
    "Punctuation!!! ??? ... ;;; :-) (a) [b] {c} <d> @#$%^&*_+=|\\/~` -- 'quoted' \"double\"",
    "don't it's we're they've I'm you'll he'd DON'T Mixed CASE",
    "  lots   of   spaces\tand\nnew lines  ",
    "Ünïcödé café naïve résumé — an em dash … an ellipsis, 東京 and 🌊🔥 emoji, Ⅻ, 10°C, ½, µm, x²",
    "Flood waters cover the streets of the town. " * 12,  # long: several 75-token windows
    "pneumonoultramicroscopicsilicovolcanoconiosis " * 20,
    "The lava flow from the Fuego volcano has covered the eastern part of the village, destroying 76 "
    "houses, damaging the road to Escuintla and leaving a thick layer of ash on the roofs that remain; "
    "rescue teams are searching the area, and the authorities have ordered an evacuation.",
]


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    tokenizer = pytest.importorskip("open_clip.tokenizer")  # imports torch: only here
    return tokenizer


def test_the_vocabulary_is_clips_and_built_once_per_process():
    assert clip_bpe_path() is not None and clip_bpe_path().name == "bpe_simple_vocab_16e6.txt.gz"
    tok = standard_clip_tokenizer()
    assert len(tok) == CLIP_VOCAB_SIZE == 49_408
    assert (tok.bos_token, tok.eos_token, tok.model_max_length) == ("<|startoftext|>", "<|endoftext|>", 77)
    assert tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    assert standard_clip_tokenizer() is tok


def test_counts_equal_open_clips_own_tokenizer(open_clip_tokenizer):
    ours = standard_clip_tokenizer()
    theirs = open_clip_tokenizer.SimpleTokenizer()
    for prompt in PROMPTS:
        expected = theirs.encode(prompt)
        assert count_tokens(ours, prompt) == len(expected), prompt
        assert ours(prompt, add_special_tokens=False).input_ids == expected, prompt  # the very same ids
    # with begin/end tokens, as the encoder sees a prompt (open_clip's tokenize pads to 77)
    short = PROMPTS[1]
    padded = open_clip_tokenizer.tokenize([short])[0].tolist()
    with_ends = ours(short).input_ids
    assert padded[:len(with_ends)] == with_ends and set(padded[len(with_ends):]) == {0}


def test_text_open_clip_cleans_first_is_the_only_difference(open_clip_tokenizer):
    # open_clip runs ftfy and html.unescape before its BPE; the CLIPTokenizer diffusers uses
    # (and so the backbones' own) does not. On the cleaned text the two agree.
    ours = standard_clip_tokenizer()
    theirs = open_clip_tokenizer.SimpleTokenizer()
    for raw in ("“curly quotes” and ‘single’ ones", "a ﬁne ligature", "Ｆｕｌｌｗｉｄｔｈ", "A &amp; B &lt;3"):
        cleaned = open_clip_tokenizer.whitespace_clean(open_clip_tokenizer.basic_clean(raw))
        assert ours(cleaned, add_special_tokens=False).input_ids == theirs.encode(raw), raw


def test_where_a_77_token_encoder_cuts():
    tok = standard_clip_tokenizer()
    text = "flood " * 80
    cut = truncation_point(tok, text)
    assert count_tokens(tok, text[:cut]) == 75 and text[cut:].strip() == " ".join(["flood"] * 5)


def test_finding_the_vocabulary_imports_neither_torch_nor_open_clip():
    code = "from core.generation.prompts import clip_bpe_path; assert clip_bpe_path()"
    assert modules_after(code, ("torch", "open_clip", "transformers")) == []
