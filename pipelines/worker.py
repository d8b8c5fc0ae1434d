"""Per-worker state: the loaded model, once per worker process (a ``WorkerPlugin``).

Tasks name their model by reference (:class:`~pipelines.tasks.ModelRef`: a path on shared
storage and the sha256 it must have), never by value; the plugin loads it on first use and
keeps it for every later task on that worker.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from distributed import WorkerPlugin, get_worker

PLUGIN_NAME = "geoseg-models"


class ModelCache(WorkerPlugin):
    """Loaded bundles by (sha256, device, runtime, compile); ``loads`` lists every load
    (for tests: a model loaded once per process appears once)."""

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.bundles: dict = {}
        self.loads: list[str] = []
        self.lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {}  # sent to workers empty: a lock and loaded networks do not travel

    def __setstate__(self, state: dict) -> None:
        type(self).__init__(self)

    def get(self, path: str, sha256: str, *, device: str, threads: int | None,
            compile: bool = False, batch_size: int = 8, runtime: str = "torch") -> Any:
        """The bundle at ``path`` in its inference form, loaded on first use; a file whose
        hash changed since the batch was planned is refused."""
        with self.lock:
            key = (sha256, device, runtime, compile, batch_size if compile else None)
            bundle = self.bundles.get(key)
            if bundle is None:
                from geoseg.errors import BundleError
                from geoseg.model.devices import resolve_device, set_model_threads
                from geoseg.model.loading import load_for_prediction

                set_model_threads(threads, runtime)
                bundle = load_for_prediction(path, device=resolve_device(device),
                                             compile=compile, batch_size=batch_size,
                                             runtime=runtime)
                if bundle.sha256 != sha256:
                    raise BundleError(f"{path}: changed while the batch was running "
                                      f"(sha256 {bundle.sha256[:12]}, expected "
                                      f"{sha256[:12]}); rerun with a fixed model file")
                self.bundles[key] = bundle
                self.loads.append(sha256)
            return bundle


def model_cache(worker: Any = None) -> ModelCache:
    """This worker's cache (registered by the client with ``register_plugin``; added here
    on a worker that joined without it)."""
    worker = worker or get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None:
        plugin = ModelCache()
        worker.plugins[PLUGIN_NAME] = plugin
    return plugin


class QuietWarnings(WorkerPlugin):
    """Python warnings raised in a worker's tasks go to logging (the run's log file), not
    to the terminal the worker inherited."""

    name = "geoseg-warnings"

    def setup(self, worker: Any) -> None:
        logging.captureWarnings(True)
