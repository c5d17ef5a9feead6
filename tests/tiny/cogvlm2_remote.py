"""A tiny CogVLM2-shaped *remote-code* model in a local folder, for the CogVLM2 path's
end-to-end test (tests/unit/test_cogvlm2_env.py): plumbing only, on a CPU, in seconds.

NOT CogVLM2: our own few-thousand-parameter model (tests/tiny/tinycogvlm_code/) with the
interface CogVLM2's remote code publishes (`build_conversation_input_ids`, `generate`
with token_type_ids and images), loaded the way CogVLM2 is:

    AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, torch_dtype=...)

The folder holds:
- config.json with `auto_map` (AutoConfig -> configuration_tinycogvlm.TinyCogVLMConfig,
  AutoModelForCausalLM -> modeling_tinycogvlm.TinyCogVLMForCausalLM) and the two .py files;
- model.safetensors: random weights (seeded), written with plain torch + safetensors, so
  building needs no transformers at all (the app's transformers 5 never imports the code);
- generation_config.json like CogVLM2's (eos = <|end_of_text|>, <|eot_id|>; sampling
  defaults that the app's greedy settings override);
- tokenizer.json: a byte-level BPE (GPT-2 byte alphabet, merges spelling the answer words)
  with Llama 3's first special tokens, written as JSON by hand in the format tokenizers 0.19
  (the CogVLM2 environment) and 0.23 (the app) both read; tokenizer_config.json and
  special_tokens_map.json for PreTrainedTokenizerFast.

The remote code imports `xformers.ops` and `einops` (like CogVLM2's vision tower), so it loads
only where those are importable: in the CogVLM2 environment, the app's xformers stand-in.

    python -m tests.tiny.cogvlm2_remote FOLDER     # build one by hand
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

CODE_DIR = Path(__file__).resolve().parent / "tinycogvlm_code"
CODE_FILES = ("configuration_tinycogvlm.py", "modeling_tinycogvlm.py")

# Llama 3's first special tokens, in Llama 3's order (there they are ids 128000-128009; here
# they follow the small BPE vocabulary).
SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                  "<|reserved_special_token_1|>", "<|reserved_special_token_2|>",
                  "<|reserved_special_token_3|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|reserved_special_token_4|>", "<|eot_id|>")
PAD_TOKEN = "<|reserved_special_token_0|>"  # the vision tokens' placeholder, as CogVLM2's pad

ANSWER_WORDS = ("flooded", "roads", "buildings", "intact", "damaged", "destroyed", "roofs", "debris",
                "water", "smoke", "burned", "trees", "fields", "collapsed", "streets", "mud", "ash",
                "lava", "shoreline", "houses", "bridges", "cars", "standing", "visible")
"""What the tiny model may answer with (each word once): captions are these words, in an
order the prompt and the image decide."""

HIDDEN, INNER, HEADS = 8, 16, 2
VISION = {"image_size": 16, "patch_size": 8, "hidden_size": 8}
ANSWER_LENGTH, MIN_ANSWER = 6, 6  # six distinct words, then <|end_of_text|>
SEED = 0


# -- tokenizer ---------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what byte-level BPE vocabularies use)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def tokenizer_files() -> tuple[dict, dict, dict]:
    """(tokenizer.json, tokenizer_config.json, special_tokens_map.json) contents."""
    table = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for b in range(256):
        vocab[table[b]] = len(vocab)
    merges: list[str] = []
    for word in ANSWER_WORDS:
        symbols = table[ord(" ")] + word  # "Ġword": the word after a space
        for end in range(2, len(symbols) + 1):
            piece = symbols[:end]
            if piece not in vocab:
                merges.append(f"{symbols[:end - 1]} {symbols[end - 1]}")  # "a b": every version reads it
                vocab[piece] = len(vocab)
    specials = {token: len(vocab) + i for i, token in enumerate(SPECIAL_TOKENS)}
    bos = "<|begin_of_text|>"
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t, i in specials.items()]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [specials[bos]], "tokens": [bos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": merges},
    }
    config = {
        "added_tokens_decoder": {str(i): {k: v for k, v in a.items() if k != "id"}
                                 for a in added for i in [a["id"]]},
        "bos_token": bos,
        "eos_token": "<|end_of_text|>",
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 8192,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    special_map = {"bos_token": bos, "eos_token": "<|end_of_text|>"}
    return tokenizer, config, special_map


# -- model -------------------------------------------------------------------------------
def model_config(tokenizer: dict) -> dict:
    vocab = tokenizer["model"]["vocab"]
    specials = {a["content"]: a["id"] for a in tokenizer["added_tokens"]}
    space = _bytes_to_unicode()[ord(" ")]
    return {
        "architectures": ["TinyCogVLMForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_tinycogvlm.TinyCogVLMConfig",
                     "AutoModelForCausalLM": "modeling_tinycogvlm.TinyCogVLMForCausalLM"},
        "model_type": "tiny_cogvlm",
        "vocab_size": len(vocab) + len(specials),
        "hidden_size": HIDDEN,
        "intermediate_size": INNER,
        "num_attention_heads": HEADS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "initializer_range": 0.02,
        "vision_config": dict(VISION),
        "answer_token_ids": [vocab[space + w] for w in ANSWER_WORDS],
        "min_answer_tokens": MIN_ANSWER,
        "answer_length": ANSWER_LENGTH,
        "image_logit_scale": 4.0,
        "template_version": "chat",
        "bos_token_id": specials["<|begin_of_text|>"],
        "eos_token_id": [specials["<|end_of_text|>"], specials["<|eot_id|>"]],
        "pad_token_id": specials[PAD_TOKEN],
        "tie_word_embeddings": False,
        "use_cache": False,
        "torch_dtype": "float32",
        "transformers_version": "4.41.2",
    }


def weight_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every parameter of TinyCogVLMForCausalLM(config) and its shape (the names its
    modules give them; tests check that loading finds exactly these)."""
    d, inner, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    v = config["vision_config"]
    p, width = v["patch_size"], v["hidden_size"]
    tokens = (v["image_size"] // p) ** 2
    return {
        "embed_tokens.weight": (vocab, d),
        "vision.patch_embed.weight": (width, 3 * p * p), "vision.patch_embed.bias": (width,),
        "vision.position": (tokens, width),
        "vision.qkv.weight": (3 * width, width), "vision.qkv.bias": (3 * width,),
        "vision.proj.weight": (d, width), "vision.proj.bias": (d,),
        "layer.input_norm.weight": (d,),
        "layer.q_proj.weight": (d, d), "layer.k_proj.weight": (d, d),
        "layer.v_proj.weight": (d, d), "layer.o_proj.weight": (d, d),
        "layer.post_norm.weight": (d,),
        "layer.gate_proj.weight": (inner, d), "layer.up_proj.weight": (inner, d),
        "layer.down_proj.weight": (d, inner),
        "norm.weight": (d,),
        "image_head.weight": (vocab, 3 + d),
    }


def random_weights(config: dict, seed: int = SEED) -> dict:
    """Seeded random weights: unit-scale embeddings and image head (so both the prompt and
    the image move the logits), fan-in-scaled linear layers, norms of one."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, shape in weight_shapes(config).items():
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape)
        elif name.endswith(".bias"):
            tensor = torch.zeros(shape)
        elif name in ("embed_tokens.weight", "image_head.weight", "vision.position"):
            tensor = torch.randn(shape, generator=generator)
        else:
            tensor = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        weights[name] = tensor.contiguous()
    return weights


def build_tiny_cogvlm2(folder: str | Path, *, seed: int = SEED) -> Path:
    """Write the tiny remote-code model (code, config, weights, tokenizer) into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copyfile(CODE_DIR / name, folder / name)
    tokenizer, tokenizer_config, special_map = tokenizer_files()
    config = model_config(tokenizer)
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                  "pad_token_id": config["pad_token_id"], "do_sample": True, "temperature": 0.6,
                  "top_p": 0.9, "max_length": 2048, "transformers_version": "4.41.2"}
    files = {"config.json": config, "generation_config.json": generation, "tokenizer.json": tokenizer,
             "tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special_map}
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    save_file(random_weights(config, seed), str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.tiny.cogvlm2_remote FOLDER", file=sys.stderr)
        return 2
    print(build_tiny_cogvlm2(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
