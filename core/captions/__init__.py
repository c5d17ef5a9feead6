"""Captions: machine captioners and the caption store (`core.captions.store`).

Importing this package is cheap; captioner modules import their model libraries lazily.
"""
