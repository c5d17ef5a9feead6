"""T5 summaries of long captions, with a guarantee that they fit a CLIP text encoder.

The course summarised VLM captions with `google-t5/t5-large`: input `"summarize: " + caption`
truncated at 512 T5 tokens, beam search with 4 beams, 30 to 70 new tokens, length penalty
2.0. Nobody checked the result against CLIP's 77 positions, and many summaries overflowed.

`T5Summariser.summarise(text)` reproduces those settings. `fit_clip(text, clip_tokenizer)`
then makes the guarantee, with the tokenizer of the backbone the prompt is for:

1. Count the tokens the way the encoder sees them, begin and end tokens included
   (so at most `limit - 2` = 75 content tokens remain for a 77-position encoder).
2. If the text fits, return it unchanged ("fits").
3. Otherwise drop whole sentences from the end, one at a time, while more than one
   sentence is left ("dropped 2 sentences").
4. If the first sentence alone still does not fit, keep the longest run of whole words
   that fits, cutting at a word boundary, never inside a word ("cut at word 53": 53 words
   kept). Trailing commas, semicolons and colons of the last kept word are removed.
5. If not even the first word fits (a single giant "word"), the result is "" ("no word fits").

`summarise_to_fit(text, clip_tokenizer)` does both and returns a `FittedSummary`.
Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.captions.captioners import ModelBundle

DEFAULT_T5 = "google-t5/t5-large"
T5_PREFIX = "summarize: "
T5_MAX_INPUT_TOKENS = 512
T5_SETTINGS: dict[str, Any] = {
    "num_beams": 4,
    "min_new_tokens": 30,
    "max_new_tokens": 70,
    "length_penalty": 2.0,
    "early_stopping": True,
    "do_sample": False,
}
"""The course's generation settings for the summary."""

CLIP_LIMIT = 77

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\S+")


# --------------------------------------------------------------------------- fit_clip
def clip_length(tokenizer: Any, text: str) -> int:
    """Tokens `text` takes in `tokenizer`, begin/end tokens included, untruncated."""
    return len(tokenizer(text, add_special_tokens=True, truncation=False).input_ids)


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _words_prefix(text: str, n: int) -> str:
    """The first `n` whitespace-separated words of `text`, as they appear in it."""
    spans = [m.span() for m in _WORD.finditer(text)]
    if n <= 0:
        return ""
    end = spans[min(n, len(spans)) - 1][1]
    prefix = text[: end].strip()
    stripped = prefix.rstrip(",;:")
    return stripped if stripped else prefix


def fit_clip(text: str, clip_tokenizer: Any, limit: int = CLIP_LIMIT) -> tuple[str, str]:
    """`text` shortened until it takes at most `limit` tokens (begin/end included) in
    `clip_tokenizer`, and a note on what was done.

    Returns (text, how) with how one of "fits", "dropped N sentence(s)",
    "cut at word N" or "dropped N sentence(s), cut at word N" (N words kept), or
    "no word fits". Whole trailing sentences go first; then the text is cut after the last
    whole word that fits, never inside a word. Whitespace inside kept text is unchanged.
    """
    text = (text or "").strip()
    if clip_length(clip_tokenizer, text) <= limit:
        return text, "fits"
    sentences = _sentences(text)
    dropped = 0
    while len(sentences) > 1:
        sentences.pop()
        dropped += 1
        candidate = " ".join(sentences)
        if clip_length(clip_tokenizer, candidate) <= limit:
            return candidate, f"dropped {_count(dropped, 'sentence')}"
    first = sentences[0] if sentences else ""
    n_words = len(_WORD.findall(first))
    # Largest n whose first n words fit: bisect (token counts grow with words), then make
    # sure by stepping down, since tokenizers may merge across a boundary differently.
    lo, hi = 0, n_words  # lo words fit (0 trivially), hi words do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if clip_length(clip_tokenizer, _words_prefix(first, mid)) <= limit:
            lo = mid
        else:
            hi = mid
    while lo > 0 and clip_length(clip_tokenizer, _words_prefix(first, lo)) > limit:
        lo -= 1
    prefix = f"dropped {_count(dropped, 'sentence')}, " if dropped else ""
    if lo == 0:
        return "", prefix + "no word fits"
    return _words_prefix(first, lo), prefix + f"cut at word {lo}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------- summariser
@dataclass(frozen=True)
class FittedSummary:
    """A T5 summary and its CLIP-fitted version.

    summary: T5's output. text: the version that fits (`fit_clip`). how: what fit_clip did.
    clip_tokens: tokens of `text` in the CLIP tokenizer, begin/end included (<= limit).
    """

    summary: str
    text: str
    how: str
    clip_tokens: int


class T5Summariser:
    """Summarises captions with a T5 model, the course's way.

    source: a hub id (default `google-t5/t5-large`, also through an `HF_ENDPOINT` mirror)
    or a local folder with the model and tokenizer saved by `save_pretrained`.
    manager: an optional ModelManager; the model is then loaded and run inside
    `manager.use(self.model_key, self.loader)`, so other models leave the GPU first.
    """

    id = "t5"
    spec_dtype = "fp32"  # T5 is known to overflow in fp16; it is small enough for fp32

    def __init__(self, source: str = DEFAULT_T5, *, manager: Any = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.source = str(source)
        self.manager = manager
        self.settings = {**T5_SETTINGS, **(settings or {})}
        self.bundle: ModelBundle | None = None

    @property
    def model_key(self) -> str:
        return f"summariser:t5:{self.source}"

    @property
    def model_name(self) -> str:
        return f"t5:{self.source}"

    def check_ready(self, models_dir: Any = None) -> None:
        """Raise ModelNotAvailable (what to do included) when the T5 model is not on disk
        (looks at disk only; `models_dir`: the app's models folder, named in the message)."""
        from core.captions.captioners import local_folder_clause, require_on_disk

        require_on_disk(self.source, "T5 summariser", local=local_folder_clause("t5", models_dir))

    def loader(self, device: Any, dtype: Any) -> ModelBundle:
        """Tokenizer and model from `self.source` (hub id or folder), on `device`."""
        self.check_ready()  # not on disk: say how to get it, not transformers' "couldn't connect"
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.source)
        model = AutoModelForSeq2SeqLM.from_pretrained(self.source, dtype=dtype)
        model.eval()
        return ModelBundle(model=model.to(device), processor=tokenizer)

    def load(self, device: str | None = None) -> "T5Summariser":
        """Load without a manager (CUDA when available, else CPU) in float32."""
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.bundle = self.loader(device, torch.float32)
        return self

    def _run(self, text: str, bundle: ModelBundle) -> str:
        import torch

        tokenizer, model = bundle.processor, bundle.model
        inputs = tokenizer(T5_PREFIX + (text or "").strip(), return_tensors="pt",
                           truncation=True, max_length=T5_MAX_INPUT_TOKENS)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.inference_mode():
            out = model.generate(**inputs, **self.settings)
        return " ".join(tokenizer.decode(out[0], skip_special_tokens=True).split())

    def summarise(self, text: str) -> str:
        """T5's summary of `text` (course settings), whitespace-normalised."""
        if self.bundle is not None:
            return self._run(text, self.bundle)
        if self.manager is not None:
            with self.manager.use(self.model_key, self.loader, spec_dtype=self.spec_dtype) as bundle:
                return self._run(text, bundle)
        self.load()
        return self._run(text, self.bundle)

    def summarise_to_fit(self, text: str, clip_tokenizer: Any,
                         limit: int = CLIP_LIMIT) -> FittedSummary:
        """The summary of `text` and its version that fits `limit` CLIP tokens."""
        summary = self.summarise(text)
        fitted, how = fit_clip(summary, clip_tokenizer, limit)
        return FittedSummary(summary=summary, text=fitted, how=how,
                             clip_tokens=clip_length(clip_tokenizer, fitted))
