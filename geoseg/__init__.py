"""geoseg: segment satellite and aerial scenes of any size into georeferenced classes.

The library is pure functions and small frozen values; it never imports dask (the Dask
orchestration lives in ``pipelines/``) and imports torch only in ``model.py``/``train.py``.
"""

__version__ = "0.1.0"
