"""DAAM word-to-pixel attention maps: `record` installs recording cross-attention
processors on a UNet while it denoises; `analysis` turns the recorded token maps into
per-word maps, overlays, region shares and files. Nothing here imports torch at import
time."""

from core.attention.analysis import WordMap, load_maps, overlay, save_maps, share_inside, word_maps, word_tokens
from core.attention.record import AttentionRecorder, record_attention

__all__ = ["AttentionRecorder", "WordMap", "load_maps", "overlay", "record_attention", "save_maps",
           "share_inside", "word_maps", "word_tokens"]
