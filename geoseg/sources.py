"""Where a scene lives: local paths, URLs and GDAL virtual file systems, as text.

A scene is any path GDAL opens (DESIGN.md promise 10). URLs map to GDAL's network file
systems (``https://host/a.tif`` -> ``/vsicurl/https://host/a.tif``, ``s3://bucket/key`` ->
``/vsis3/bucket/key``, ``gs://`` -> ``/vsigs/``, ``az://`` -> ``/vsiaz/``); ``/vsi*`` paths
pass as they are. They stay strings end to end: ``pathlib.Path`` folds ``//`` and would
turn ``/vsicurl/http://host`` into ``/vsicurl/http:/host``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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


def _parents(path: str) -> list[str]:
    """The folder names above a scene's file (for a URL, its path's), outermost first."""
    text = path
    if is_virtual(text):
        while text.startswith("/vsi") and text.count("/") >= 2:
            text = text.split("/", 2)[2]
        if "://" in text:
            text = urlsplit(text).path
        parts = PurePosixPath(text).parts[:-1]
    else:
        parts = Path(text).resolve().parts[:-1]
    return [p for p in parts if p not in ("/", "\\", "")]


def folder_names(paths: Sequence[str | os.PathLike]) -> dict[str, str]:
    """Each scene's output folder name: its stem (:func:`source_stem`); scenes that share a
    stem get the fewest parent folders that tell them apart in front, joined by ``_``
    (``a/x.tif`` and ``b/x.tif`` -> ``a_x`` and ``b_x``)."""
    texts = [os.fspath(p) for p in paths]
    groups: dict[str, list[str]] = {}
    for text in texts:
        groups.setdefault(source_stem(text), []).append(text)
    names: dict[str, str] = {}
    for stem, group in groups.items():
        if len(group) == 1:
            names[group[0]] = stem
            continue
        parents = {t: _parents(t) for t in group}
        deepest = max(len(v) for v in parents.values())
        for depth in range(1, deepest + 1):
            candidate = {t: "_".join([*parents[t][-depth:], stem]) for t in group}
            if len(set(candidate.values())) == len(group):
                break
        else:  # the same place given twice in other spellings: numbered, in input order
            candidate = {t: f"{stem}_{i + 1}" for i, t in enumerate(group)}
        names.update(candidate)
    return names
