"""Prediction: the plan of a scene, the model step of a block, the stitch, and the scene's
flow (every step of a block as data) with its local runner, part files and report.

The flow composes the stages before it: it reads with ``inputs``, runs ``model``, writes
with ``outputs`` and polygonizes with ``vector``; the Dask runner in ``pipelines/`` submits
the same steps as tasks. Prediction's options (:class:`~geoseg.prediction.options.PredictOptions`)
live here because checking them needs the names every stage registers.

May import: the shared modules, ``geoseg.model``, ``geoseg.inputs``, ``geoseg.outputs`` and
``geoseg.vector``. Never training, the API or ``pipelines``.
"""
