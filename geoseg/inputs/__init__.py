"""Inputs: what a scene is and whether it fits the model.

Owns opening and reading scenes (``scene``: the only raster reader, boundless reads and
masks), paths and URLs as text (``sources``; a scene's output folder name too), mosaics and
resampled reads as VRTs (``vrt``), STAC items, collections and catalogs as scenes
(``stac``), a scene's pixel size and values against the model's (``fit``), and extents in
words (``extents``).

May import: the shared modules (errors, config, classes, grid, tiling, names, atomic) and
``geoseg.model``'s metadata, which a scene is checked against. Never outputs, vector,
prediction or training.
"""
