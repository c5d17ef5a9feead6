"""CogVLM2 captions, the course's way (`THUDM/cogvlm2-llama3-chat-19B`, remote code).

The model ships its own modelling code (`trust_remote_code=True`). Its documented use:

    inputs = model.build_conversation_input_ids(tokenizer, query=..., history=[],
                                                images=[pil_image], template_version="chat")
    out = model.generate(input_ids=..., token_type_ids=..., attention_mask=...,
                         images=[[pixels]], **gen_kwargs)
    text = tokenizer.decode(out[0, len(input_ids):]).split("<|end_of_text|>")[0]

Settings: bf16 on GPUs of compute capability >= 8, else fp16 (the ModelManager's
`dtype_for("bf16")` does exactly this); greedy decoding (`do_sample=False`, `top_k=1`); the
course's prompt with the phase and disaster type filled in. The int4 variant
(`THUDM/cogvlm2-llama3-chat-19B-int4`, ~16 GB) needs bitsandbytes and a CUDA GPU; bf16 needs
~42 GB of GPU memory.

Which transformers can run it. The remote code was written against transformers 4.40
(the CogVLM2 repository's requirements say `transformers>=4.40.2`). Its generation code
overrides `_update_model_kwargs_for_generation` and calls the private
`GenerationMixin._extract_past_from_model_output(outputs, standardize_cache_format=...)`.
transformers 4.44.0 removed that keyword (CogVLM2 issues #181 and #204 report the
resulting `TypeError ... unexpected keyword argument 'standardize_cache_format'` with 4.44
and 4.47; 4.42/4.43 still accept it), and transformers 5 reworked generation and caches
further. So `check_transformers()` accepts 4.40.2 <= version < 4.44 and raises
`ModelLoadError` otherwise, before any of the 19B weights are read. Users whose local copy
of the remote code was patched for newer transformers can pass `check_versions=False`
(or set `XBD_COGVLM2_SKIP_VERSION_CHECK=1`).
"""

from __future__ import annotations

import os
from typing import Any

from core.captions.captioners import CaptionContext, Captioner, ModelBundle, clean_text, to_pil
from core.errors import ModelLoadError

COGVLM2_ID = "THUDM/cogvlm2-llama3-chat-19B"
COGVLM2_INT4_ID = "THUDM/cogvlm2-llama3-chat-19B-int4"

COURSE_PROMPT = (
    "Describe this {phase}-event satellite image in detail. The disaster type is "
    "{disaster_type}. Give a description in {length}. The description should be in the style "
    "of a news article and should be informative and actionable."
)
"""The course's per-image prompt; {length} is "one paragraph" (1024 px tiles) or
"one sentence" (their 512 px tile run)."""

MIN_TRANSFORMERS = (4, 40, 2)
MAX_TRANSFORMERS_EXCLUSIVE = (4, 44)
SKIP_CHECK_ENV = "XBD_COGVLM2_SKIP_VERSION_CHECK"

# Llama 3 special tokens that may appear in the decoded answer.
SPECIAL_TOKENS = ("<|end_of_text|>", "<|eot_id|>", "<|begin_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|reserved_special_token_0|>")
LLAMA3_PAD_ID = 128002  # what the official demos pass as pad_token_id

GREEDY: dict[str, Any] = {"do_sample": False, "top_k": 1, "num_beams": 1}


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():  # "0rc1", "dev0": stop after the number
            break
    return tuple(parts)


def check_transformers(version: str | None = None) -> None:
    """Raise ModelLoadError unless transformers `version` (default: the installed one,
    read from package metadata without importing it) is one CogVLM2's remote code runs on:
    4.40.2 <= version < 4.44. The message says which version is installed and what to do."""
    if version is None:
        from importlib.metadata import PackageNotFoundError, version as dist_version

        try:
            version = dist_version("transformers")
        except PackageNotFoundError:
            raise ModelLoadError("CogVLM2 needs transformers (4.40.2 to 4.43.x), which is not "
                                 "installed.") from None
    found = _version_tuple(version)
    if MIN_TRANSFORMERS <= found < MAX_TRANSFORMERS_EXCLUSIVE:
        return
    raise ModelLoadError(
        f"CogVLM2's remote code cannot run on the installed transformers {version}: it needs "
        "transformers >= 4.40.2 and < 4.44 (from 4.44 on, generation fails with "
        "\"_extract_past_from_model_output() got an unexpected keyword argument "
        "'standardize_cache_format'\"). Run CogVLM2 captioning from a separate environment "
        "with `pip install 'transformers>=4.40.2,<4.44'`, or use the Qwen2-VL captioner, "
        f"which this transformers supports natively. If your copy of the remote code is patched, "
        f"set {SKIP_CHECK_ENV}=1 to skip this check.")


class CogVLM2Captioner(Captioner):
    """CogVLM2 (Llama 3, 19B) through its remote code, with the course's prompt.

    source: hub id or local folder (default: the bf16 model, or the int4 one with int4=True).
    length: "one paragraph" (default) or "one sentence" (the course's 512 px run).
    max_new_tokens: cap on the answer length.
    check_versions: run `check_transformers()` before loading (default True).
    """

    id = "cogvlm2"
    label = "CogVLM2 (19B, remote code)"
    needs_model = True
    spec_dtype = "bf16"  # the manager turns it into fp16 below compute capability 8

    def __init__(self, source: str | None = None, *, int4: bool = False,
                 prompt_template: str = COURSE_PROMPT, length: str = "one paragraph",
                 max_new_tokens: int = 512, check_versions: bool = True) -> None:
        super().__init__()
        self.int4 = bool(int4)
        if self.int4:
            self.id = "cogvlm2-int4"
            self.label = "CogVLM2 int4 (19B, remote code)"
        self.source = str(source) if source is not None else (COGVLM2_INT4_ID if int4 else COGVLM2_ID)
        self.prompt_template = prompt_template
        self.length = length
        self.max_new_tokens = int(max_new_tokens)
        self.check_versions = check_versions and os.environ.get(SKIP_CHECK_ENV, "") not in ("1", "true", "yes")

    # -- loading -----------------------------------------------------------------------
    def loader(self, device: Any, dtype: Any) -> ModelBundle:
        """Tokenizer and model via remote code; checks transformers (and bitsandbytes for
        int4) first, so an unusable environment fails before the weights are read."""
        if self.check_versions:
            check_transformers()
        if self.int4:
            import importlib.util

            if importlib.util.find_spec("bitsandbytes") is None:
                raise ModelLoadError("The CogVLM2 int4 model needs bitsandbytes and a CUDA GPU: "
                                     "`pip install bitsandbytes`, or use the bf16 model.")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(self.source, trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(
            self.source, torch_dtype=dtype, trust_remote_code=True, low_cpu_mem_usage=True)
        model.eval()
        if not self.int4:  # quantised weights are placed by bitsandbytes
            model = model.to(device)
        return ModelBundle(model=model, processor=tokenizer)

    # -- contract ----------------------------------------------------------------------
    def prompt(self, context: CaptionContext) -> str:
        """The course's prompt for this image's phase and disaster type."""
        return self.prompt_template.format(
            phase=context.phase, disaster_type=context.disaster_type or "unknown",
            length=self.length)

    def preprocess(self, image: Any, context: CaptionContext) -> dict:
        """Model inputs from the remote code's `build_conversation_input_ids`, batched
        (batch of one) and on the model's device; images in the model's dtype."""
        bundle = self._require_bundle()
        model, tokenizer = bundle.model, bundle.processor
        built = model.build_conversation_input_ids(
            tokenizer, query=self.prompt(context), history=[], images=[to_pil(image)],
            template_version="chat")
        device = getattr(model, "device", "cpu")
        dtype = getattr(model, "dtype", None)
        pixels = built["images"][0].to(device)
        if dtype is not None:
            pixels = pixels.to(dtype)
        return {
            "input_ids": built["input_ids"].unsqueeze(0).to(device),
            "token_type_ids": built["token_type_ids"].unsqueeze(0).to(device),
            "attention_mask": built["attention_mask"].unsqueeze(0).to(device),
            "images": [[pixels]],
        }

    def generation_kwargs(self) -> dict:
        """Greedy decoding settings passed to `generate`."""
        return {**GREEDY, "max_new_tokens": self.max_new_tokens, "pad_token_id": LLAMA3_PAD_ID}

    def forward(self, batch: dict) -> Any:
        """The generated token ids after the prompt (1-D)."""
        import torch

        model = self._require_bundle().model
        extra = {}
        if self.on_token is not None:
            extra["stopping_criteria"] = _TokenReport(self.on_token, batch["input_ids"].shape[1])
        with torch.inference_mode():
            out = model.generate(**batch, **self.generation_kwargs(), **extra)
        return out[0, batch["input_ids"].shape[1]:]

    def postprocess(self, output: Any, context: CaptionContext) -> str:
        """Decoded answer up to the end-of-text token, special tokens and extra
        whitespace removed."""
        tokenizer = self._require_bundle().processor
        text = tokenizer.decode(output)
        text = text.split("<|end_of_text|>")[0]
        return clean_text(text, SPECIAL_TOKENS)


def _TokenReport(on_token, prompt_length: int):
    """A transformers StoppingCriteriaList that reports each new token to `on_token` and
    stops generation when it answers True (a cancel from the worker's client)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Report(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            stop = bool(on_token(int(input_ids.shape[1]) - prompt_length))
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Report()])


def runs_here() -> bool:
    """Whether CogVLM2 can run in this process: transformers in the remote code's range, or
    the version check switched off for a patched copy of the remote code."""
    if os.environ.get(SKIP_CHECK_ENV, "") in ("1", "true", "yes"):
        return True
    try:
        check_transformers()
    except ModelLoadError:
        return False
    return True


def make_cogvlm2(*, int4: bool = False, **options):
    """The `cogvlm2` / `cogvlm2-int4` captioner: in this process where the installed
    transformers runs the remote code (the CogVLM2 environment itself), else a worker in the
    CogVLM2 environment (`make cogvlm2`) driven from here, under the same id and model name,
    so captions made either way count as the same model's."""
    local = CogVLM2Captioner(int4=int4, **options)
    if runs_here():
        return local
    return _worker_class()(local)


def _worker_class():
    from core.captions.envs import env_dir, env_python, require_env
    from core.captions.remote import WorkerCaptioner

    class CogVLM2WorkerCaptioner(WorkerCaptioner):
        """CogVLM2 in its own environment: the app's `cogvlm2` captioner when the app's
        transformers cannot run the remote code."""

        def __init__(self, local: CogVLM2Captioner) -> None:
            super().__init__("cogvlm2", python=env_python(), source=local.source, int4=local.int4,
                             label=local.label + ", in its own environment", prompt_template=local.prompt,
                             spec_dtype=local.spec_dtype, log_path=env_dir() / "worker.log",
                             extra_args=("--max-new-tokens", str(local.max_new_tokens)))
            self.id = local.id

        def check_ready(self, models_dir=None) -> None:
            require_env(self.label)  # first: without it nothing else matters
            super().check_ready(models_dir)

        def loader(self, device, dtype):
            self.python = str(require_env(self.label))
            return super().loader(device, dtype)

    return CogVLM2WorkerCaptioner
