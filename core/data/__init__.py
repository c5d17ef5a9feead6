"""xBD data layer: file names, indexing, labels, masks, metadata, images and overlays.

Pure IO on numpy and Pillow. Import the submodules you need (`core.data.index`,
`core.data.labels`, ...); nothing is imported here so `import core.data` stays cheap.
"""
