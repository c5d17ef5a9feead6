"""A vision-language captioner that current transformers runs natively: Qwen2-VL.

Why Qwen2-VL (`Qwen/Qwen2-VL-2B-Instruct` by default; Qwen2.5-VL folders load the same way):

- transformers supports it natively (`AutoModelForImageTextToText`, `AutoProcessor`), so no
  remote code and no pinned old transformers, unlike CogVLM2;
- it follows instructions, so it gets the *same* course prompt as CogVLM2 (phase and
  disaster type filled in) and its captions can be compared with CogVLM2's one for one;
  Florence-2 only takes fixed task tokens (`<MORE_DETAILED_CAPTION>`) and could not be told
  whether the tile is pre- or post-event;
- the 2B model needs ~5 GB of GPU memory in bf16, so it runs next to a parked diffusion
  model on the course's GPUs, and on a CPU for checks.

Greedy decoding (`do_sample=False`), bf16 on compute capability >= 8 else fp16 (the
ModelManager decides; float32 on the CPU). The prompt goes through the processor's chat
template when the folder has one, else Qwen's chat format is written out directly.
"""

from __future__ import annotations

from typing import Any

from core.captions.captioners import CaptionContext, Captioner, ModelBundle, clean_text, to_pil
from core.captions.cogvlm2 import COURSE_PROMPT

QWEN2_VL_ID = "Qwen/Qwen2-VL-2B-Instruct"

_MANUAL_TEMPLATE = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n"
                    "<|im_start|>assistant\n")


class NativeVLMCaptioner(Captioner):
    """Qwen2-VL (or Qwen2.5-VL) captions with the course's prompt.

    source: hub id or local folder. length: "one paragraph" or "one sentence".
    max_new_tokens: cap on the answer length (tokens).
    """

    id = "qwen2-vl"
    label = "Qwen2-VL 2B (native transformers)"
    needs_model = True
    spec_dtype = "bf16"

    def __init__(self, source: str = QWEN2_VL_ID, *, prompt_template: str = COURSE_PROMPT,
                 length: str = "one paragraph", max_new_tokens: int = 256) -> None:
        super().__init__()
        self.source = str(source)
        self.prompt_template = prompt_template
        self.length = length
        self.max_new_tokens = int(max_new_tokens)

    def loader(self, device: Any, dtype: Any) -> ModelBundle:
        """Processor and model from `self.source` (hub id or folder) on `device`."""
        self.check_ready()  # not on disk: say how to get it, not transformers' "couldn't connect"
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(self.source)
        model = AutoModelForImageTextToText.from_pretrained(self.source, dtype=dtype)
        model.eval()
        return ModelBundle(model=model.to(device), processor=processor)

    def prompt(self, context: CaptionContext) -> str:
        """The course's prompt for this image's phase and disaster type."""
        return self.prompt_template.format(
            phase=context.phase, disaster_type=context.disaster_type or "unknown",
            length=self.length)

    def chat_text(self, processor: Any, prompt: str) -> str:
        """The full model input text: chat template with one image and `prompt`."""
        if getattr(processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": prompt}]}]
            return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _MANUAL_TEMPLATE.format(prompt=prompt)

    def preprocess(self, image: Any, context: CaptionContext) -> dict:
        """Processor outputs (ids, pixel values, grid sizes) on the model's device."""
        bundle = self._require_bundle()
        processor, model = bundle.processor, bundle.model
        text = self.chat_text(processor, self.prompt(context))
        inputs = processor(images=[to_pil(image)], text=[text], return_tensors="pt")
        out = {}
        for key, value in inputs.items():
            value = value.to(model.device)
            if key == "pixel_values":
                value = value.to(model.dtype)
            out[key] = value
        return out

    def forward(self, batch: dict) -> Any:
        """Generated ids after the prompt (greedy), 1-D."""
        import torch

        model = self._require_bundle().model
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=False, num_beams=1,
                                 max_new_tokens=self.max_new_tokens)
        return out[0, batch["input_ids"].shape[1]:]

    def postprocess(self, output: Any, context: CaptionContext) -> str:
        """Decoded text without special tokens, whitespace normalised."""
        processor = self._require_bundle().processor
        tokenizer = getattr(processor, "tokenizer", processor)
        return clean_text(tokenizer.decode(output, skip_special_tokens=True))
