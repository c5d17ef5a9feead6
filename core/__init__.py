"""Headless core of xBD Diffusion Lab.

Importing this package is cheap: it pulls in no torch, diffusers or gradio. Heavy
libraries are imported inside the functions that need them.
"""

__version__ = "0.1.0"
