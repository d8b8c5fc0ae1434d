"""Where library logs and warnings go during a run: a log file in OUT, not the terminal.

geoseg's own lines (progress, one ``error:`` line per failed scene, the summary) are the only
thing on stderr. Everything the libraries say — dask's scheduler, nanny and worker logs
("Compute Failed" with its traceback, "Worker process still alive ... killing"), tornado's
comm errors, Python warnings (rasterio's NotGeoreferencedWarning, a busy dashboard port) —
goes to ``OUT/geoseg.log``; with ``--debug`` or ``-v`` to stderr as well.

Worker processes of the local cluster inherit the same routing through the ``DASK_LOGGING``
environment variable (a ``logging.config.dictConfig``, which ``distributed`` applies when it
is imported in a new process) and :class:`~pipelines.worker.QuietWarnings`, which sends their
warnings into logging.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
LIBRARY_LOGGERS = ("distributed", "dask", "tornado", "asyncio", "py.warnings", "rasterio",
                   "fiona", "pyogrio")


def worker_logging(path: Path, *, verbose: bool) -> dict:
    """The dictConfig that worker processes apply at start: the same file, and stderr only
    when ``verbose``."""
    handlers: dict = {"file": {"class": "logging.FileHandler", "filename": str(path),
                               "formatter": "plain", "level": "INFO"}}
    if verbose:
        handlers["stderr"] = {"class": "logging.StreamHandler", "formatter": "plain",
                              "level": "INFO", "stream": "ext://sys.stderr"}
    return {"version": 1, "disable_existing_loggers": False,
            "formatters": {"plain": {"format": FORMAT}},
            "handlers": handlers,
            "loggers": {name: {"level": "INFO", "handlers": list(handlers),
                               "propagate": False} for name in LIBRARY_LOGGERS},
            "root": {"level": "WARNING", "handlers": list(handlers)}}


@contextmanager
def library_logs(path: Path, *, verbose: bool) -> Iterator[Path]:
    """Route library logging and warnings to ``path`` (and stderr when ``verbose``) while
    the block runs, for this process and the local cluster's workers; restore after."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(FORMAT))
    handlers = [handler]
    if verbose:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(FORMAT))
        handlers.append(stream)
    saved = {}
    for name in (None, *LIBRARY_LOGGERS):
        logger = logging.getLogger(name)
        saved[name] = (logger.handlers[:], logger.propagate)
        logger.handlers = list(handlers)
        logger.propagate = False
    # dask's own logging set-up gives some child loggers a stderr handler of their own
    # ("distributed.client", "tornado.application"): they send to their parent instead
    for name, entry in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(entry, logging.Logger) and name not in saved and any(
                name.startswith(f"{top}.") for top in LIBRARY_LOGGERS):
            saved[name] = (entry.handlers[:], entry.propagate)
            entry.handlers, entry.propagate = [], True
    old_env = os.environ.get("DASK_LOGGING")
    os.environ["DASK_LOGGING"] = repr(worker_logging(path, verbose=verbose))
    logging.captureWarnings(True)
    try:
        yield path
    finally:
        logging.captureWarnings(False)
        if old_env is None:
            os.environ.pop("DASK_LOGGING", None)
        else:
            os.environ["DASK_LOGGING"] = old_env
        for name, (old_handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = old_handlers, propagate
        handler.close()
