"""The Gradio front end: one module per tab, thin adapters over `core`."""
