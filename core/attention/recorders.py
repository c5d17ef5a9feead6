"""The recorder for a backbone's kind of text attention, and the word maps from what it
recorded: UNet cross-attention (core.attention.record) or SD3's joint attention
(core.attention.joint), chosen from the spec's `attention` capability."""

from __future__ import annotations


def recorder_for(pipe, spec, cfg, *, keep_per_step: bool = False):
    """A context manager recording `pipe`'s text attention while it denoises; `cfg` is the
    backend's `attention_cfg(request)`."""
    if spec.attention == "joint":
        from core.attention.joint import record_joint_attention

        return record_joint_attention(pipe, cfg=cfg, keep_per_step=keep_per_step)
    from core.attention.record import record_attention

    return record_attention(pipe, cfg=cfg, keep_per_step=keep_per_step)


def word_maps_for(raw, prompt: str, pipe, spec, *, t5_dropped: bool | None = None) -> dict:
    """{word: WordMap} from a recorder, or from one step's raw maps (then `t5_dropped` says
    whether SD3 ran without T5)."""
    if spec.attention == "joint":
        from core.attention.joint import sd3_word_maps

        t5 = None if t5_dropped else getattr(pipe, "tokenizer_3", None)
        return sd3_word_maps(raw, prompt, pipe.tokenizer, t5)
    from core.attention.analysis import word_maps

    return word_maps(raw, prompt, pipe.tokenizer)
