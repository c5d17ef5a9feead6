"""Tiny models and fakes for captioner tests (no downloads, CPU, seconds).

- `tiny_t5_folder()`: a randomly initialised T5ForConditionalGeneration (one layer each side,
  width 16) with the offline Unigram T5 tokenizer of core.backends.tiny_models.sd, saved with
  `save_pretrained`, so `T5Summariser` loads it through its real `from_pretrained` path.
- `tiny_qwen2_vl_folder()`: a randomly initialised Qwen2-VL (vision tower and language
  model of a few dozen parameters per layer) with a byte-level BPE tokenizer built offline
  and the real Qwen2-VL image processor, saved as one folder for `NativeVLMCaptioner`.
- `FakeCogVLM2RemoteCode` / `FakeLlama3Tokenizer`: a clearly fake stand-in for CogVLM2's
  remote code implementing the documented interface (`build_conversation_input_ids`,
  `generate`), recording what it was given. It generates a fixed answer; no real model.
- `FakeCaptionStore`: in memory, with the `put_machine` / `get` methods of the real store.

Outputs of the random models are garbage: they test plumbing, never quality.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.backends.tiny_models.sd import _process_root, tiny_t5_tokenizer

_lock = threading.Lock()
_built: dict[str, Path] = {}


def _folder(kind: str, build) -> Path:
    with _lock:
        folder = _built.get(kind)
        if folder is None or not (folder / "config.json").exists():
            folder = _process_root() / kind
            if not (folder / "config.json").exists():
                build(folder)
            _built[kind] = folder
        return folder


# -- T5 ----------------------------------------------------------------------------------
def build_tiny_t5(folder: Path) -> Path:
    """Save a tiny random T5 summariser (model + tokenizer) into `folder`."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_t5_tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1,
                      num_decoder_layers=1, num_heads=2, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_t5_folder() -> Path:
    """A folder with a tiny random T5 model and tokenizer, built once per process."""
    return _folder("tiny-t5-summariser", build_tiny_t5)


# -- Qwen2-VL ----------------------------------------------------------------------------
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def tiny_qwen_tokenizer():
    """A byte-level BPE Qwen2 tokenizer (byte alphabet, no merges) with Qwen2-VL's special
    tokens, built offline."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import Qwen2TokenizerFast

    vocab: dict[str, int] = {}
    for symbol in sorted(ByteLevel.alphabet()):
        vocab.setdefault(symbol, len(vocab))
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=[], unk_token=None,
                                   bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS)})
    return tokenizer


def build_tiny_qwen2_vl(folder: Path) -> Path:
    """Save a tiny random Qwen2-VL (model + processor) into `folder`."""
    import torch
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tokenizer = tiny_qwen_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=56 * 56)
    processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen2VLVideoProcessor())
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 4096,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 4]},
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [2, 2, 4]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 32, "num_heads": 2,
                       "mlp_ratio": 2, "in_channels": 3, "patch_size": 14,
                       "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_qwen2_vl_folder() -> Path:
    """A folder with a tiny random Qwen2-VL and its processor, built once per process."""
    return _folder("tiny-qwen2-vl", build_tiny_qwen2_vl)


# -- CogVLM2 fake ------------------------------------------------------------------------
FAKE_ANSWER = "  Flood waters cover the streets.  "


class FakeLlama3Tokenizer:
    """Encodes text as one id per character (ids 1000+); 128001 is <|end_of_text|>,
    128009 is <|eot_id|>. Only what the CogVLM2 adapter and the fake model use."""

    END_OF_TEXT, EOT = 128001, 128009

    def encode(self, text: str) -> list[int]:
        return [1000 + ord(ch) for ch in text]

    def decode(self, ids: Any) -> str:
        out = []
        for i in (int(x) for x in ids):
            out.append("<|end_of_text|>" if i == self.END_OF_TEXT else
                       "<|eot_id|>" if i == self.EOT else chr(i - 1000))
        return "".join(out)


class FakeCogVLM2RemoteCode:
    """NOT CogVLM2: a stand-in with the remote code's documented interface.

    `build_conversation_input_ids(tokenizer, query=, history=, images=, template_version=)`
    returns 1-D input_ids / token_type_ids / attention_mask tensors and `images` (a list
    with one 3×8×8 tensor per image), like the real one. `generate(**inputs, **kwargs)`
    returns the prompt ids followed by the ids of FAKE_ANSWER, <|eot_id|>, <|end_of_text|>
    and some trailing garbage. Every call is recorded in `built` and `generated`.
    """

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.built: list[dict] = []
        self.generated: list[dict] = []

    def to(self, device: Any) -> "FakeCogVLM2RemoteCode":
        return self

    def build_conversation_input_ids(self, tokenizer, *, query: str, history: list | None = None,
                                     images: list | None = None, template_version: str | None = None):
        import numpy as np
        import torch

        self.built.append({"query": query, "history": history, "images": images,
                           "template_version": template_version})
        ids = torch.tensor(tokenizer.encode(f"Question: {query} Answer:"), dtype=torch.long)
        pixels = [torch.from_numpy(np.asarray(im.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1)
                  for im in images or []]
        return {"input_ids": ids, "token_type_ids": torch.zeros_like(ids),
                "attention_mask": torch.ones_like(ids), "images": pixels}

    def generate(self, **kwargs):
        import torch

        self.generated.append(kwargs)
        answer = FakeLlama3Tokenizer().encode(FAKE_ANSWER) + [FakeLlama3Tokenizer.EOT,
                                                               FakeLlama3Tokenizer.END_OF_TEXT]
        answer += FakeLlama3Tokenizer().encode(" garbage after the end")
        prompt = kwargs["input_ids"]
        return torch.cat([prompt, torch.tensor([answer], dtype=prompt.dtype)], dim=1)


# -- store fake --------------------------------------------------------------------------
@dataclass
class FakeRecord:
    image: str
    machine_caption: str | None = None
    machine_model: str | None = None
    fields: dict | None = None


class FakeCaptionStore:
    """In-memory caption store with the real store's `put_machine` and `get`."""

    def __init__(self) -> None:
        self.records: dict[str, FakeRecord] = {}
        self.puts: list[dict] = []

    def put_machine(self, image: str, **fields: Any) -> FakeRecord:
        self.puts.append({"image": image, **fields})
        record = FakeRecord(image=image, machine_caption=fields.get("caption"),
                            machine_model=fields.get("model"), fields=fields)
        self.records[image] = record
        return record

    def get(self, image: str) -> FakeRecord | None:
        return self.records.get(image)
