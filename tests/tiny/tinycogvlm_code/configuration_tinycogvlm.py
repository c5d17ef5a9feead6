"""TinyCogVLM's configuration (remote code of the tiny test model built by
tests/tiny/cogvlm2_remote.py). NOT CogVLM2's: a few-thousand-parameter stand-in with the
same published interface, for plumbing tests only."""

from transformers import PretrainedConfig


class TinyCogVLMConfig(PretrainedConfig):
    """A one-layer Llama-style language model with a one-layer vision tower.

    vision_config: {"image_size": S, "patch_size": P, "hidden_size": width}; an image is
    (S/P)**2 vision tokens. answer_token_ids: the words the tiny model may answer with;
    it answers `answer_length` distinct words, then <|end_of_text|> (eos_token_id[0]).
    image_logit_scale: how strongly the image (its mean colour, its pooled patch features) shifts
    the next-token logits.
    """

    model_type = "tiny_cogvlm"

    def __init__(self, vocab_size=512, hidden_size=8, intermediate_size=16, num_attention_heads=2,
                 rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.02, vision_config=None,
                 answer_token_ids=None, min_answer_tokens=3, answer_length=8, image_logit_scale=4.0,
                 template_version="chat", pad_token_id=None, bos_token_id=None, eos_token_id=None,
                 tie_word_embeddings=False, use_cache=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.initializer_range = initializer_range
        self.vision_config = dict(vision_config or {"image_size": 16, "patch_size": 8, "hidden_size": 8})
        self.answer_token_ids = list(answer_token_ids or [])
        self.min_answer_tokens = min_answer_tokens
        self.answer_length = answer_length
        self.image_logit_scale = image_logit_scale
        self.template_version = template_version
        self.use_cache = use_cache
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
