"""Outputs: what a run leaves beside a scene, written so GIS tools read it.

Owns the class and probability rasters (staged, published as COGs), the class raster as
later steps read it back, class styles and categories (GDAL PAM, QGIS), ``preview.png``,
the batch's ``index.html`` and the scene's STAC item out.

May import: the shared modules, ``geoseg.model`` (the metadata a raster is tagged with) and
``geoseg.inputs`` (reading a scene for its preview). Never vector, prediction or training.
"""
