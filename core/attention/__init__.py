"""DAAM word-to-pixel attention maps: `record` installs recording cross-attention
processors on a UNet while it denoises; `analysis` turns the recorded token maps into
per-word maps, overlays, region shares and files. Nothing here imports torch at import
time."""

from core.attention.analysis import WordMap, load_maps, overlay, save_maps, share_inside, word_maps, word_tokens
from core.attention.joint import JointAttentionRecorder, record_joint_attention, sd3_word_maps
from core.attention.record import AttentionRecorder, record_attention

__all__ = ["AttentionRecorder", "JointAttentionRecorder", "WordMap", "load_maps", "overlay", "record_attention",
           "record_joint_attention", "save_maps", "sd3_word_maps", "share_inside", "word_maps", "word_tokens"]
