"""Where a scene lives: local paths, URLs and GDAL virtual file systems, as text.

A scene is any path GDAL opens (DESIGN.md promise 10). URLs map to GDAL's network file
systems (``https://host/a.tif`` -> ``/vsicurl/https://host/a.tif``, ``s3://bucket/key`` ->
``/vsis3/bucket/key``, ``gs://`` -> ``/vsigs/``, ``az://`` -> ``/vsiaz/``); ``/vsi*`` paths
pass as they are. They stay strings end to end: ``pathlib.Path`` folds ``//`` and would
turn ``/vsicurl/http://host`` into ``/vsicurl/http:/host``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

URL_SCHEMES = {"http://": "/vsicurl/", "https://": "/vsicurl/", "s3://": "/vsis3/",
               "gs://": "/vsigs/", "az://": "/vsiaz/"}
"""URL prefixes and the GDAL file system that reads them (http(s) keep their scheme)."""


def is_virtual(path: str | os.PathLike) -> bool:
    """A URL or a ``/vsi*`` path: nothing on the local disk to check first."""
    text = os.fspath(path)
    return text.startswith("/vsi") or any(text.lower().startswith(s) for s in URL_SCHEMES)


def gdal_path(path: str | os.PathLike) -> str:
    """The path GDAL opens for ``path`` (see the module docstring)."""
    text = os.fspath(path)
    for scheme, vsi in URL_SCHEMES.items():
        if text.lower().startswith(scheme):
            return vsi + (text if vsi == "/vsicurl/" else text[len(scheme):])
    return text


def source_stem(path: str | os.PathLike) -> str:
    """The name of a scene's output folder: its file name without the extension, for a URL
    the last part of its path (no query string)."""
    text = os.fspath(path)
    if not is_virtual(text):
        return Path(text).stem
    while text.startswith("/vsi") and text.count("/") >= 2:
        text = text.split("/", 2)[2]  # /vsicurl/https://h/x.tif, /vsizip//vsis3/b/a.zip/x.tif
    if "://" in text:
        text = urlsplit(text).path
    return PurePosixPath(text).stem
