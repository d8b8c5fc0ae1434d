"""Training and evaluation: labels burnt onto a scene's grid, chips and their augmentation,
recipes (YAML -> frozen, validated), learning-rate schedules, the training loop, and scores
of a class raster against labels.

May import: every library stage (the shared modules, ``geoseg.model``, ``geoseg.inputs``,
``geoseg.outputs``, ``geoseg.vector``, ``geoseg.prediction``); nothing in them imports
training. Only the training loop imports torch at module level.
"""
