"""Polygons: a finished block's classes as polygons, the seam merge across blocks,
coverage operations (exact unions, minimum area, simplification) and vector files by format.

Owns everything from a block of classes to ``polygons.<ext>``, for ``geoseg predict
--vectorize`` and ``geoseg vectorize`` alike.

May import: the shared modules, ``geoseg.inputs`` (reading a class raster) and
``geoseg.outputs`` (the class raster's description, staging and publishing). Never the
model, prediction or training: polygons need no network.
"""
