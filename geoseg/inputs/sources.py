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


def scene_dir(out_dir: str | os.PathLike, scene_path: str | os.PathLike) -> Path:
    """``OUT/<scene stem>/`` (for a URL, the stem of its last path part)."""
    return Path(out_dir) / source_stem(scene_path)


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
    """Each scene's output folder name: its stem (:func:`source_stem`); scenes whose names
    would clash (case-insensitively, as on some file systems) get the fewest parent folders
    that tell them apart in front, joined by ``_`` (``a/x.tif`` and ``b/x.tif`` -> ``a_x``
    and ``b_x``); names still equal after every parent are numbered in input order."""
    texts = [os.fspath(p) for p in paths]
    parents = {t: _parents(t) for t in texts}
    depth = dict.fromkeys(texts, 0)

    def name(t: str) -> str:
        return "_".join([*parents[t][len(parents[t]) - depth[t]:], source_stem(t)])

    while True:
        groups: dict[str, list[str]] = {}
        for t in texts:
            groups.setdefault(name(t).lower(), []).append(t)
        clashes = [g for g in groups.values() if len(g) > 1]
        deeper = [t for g in clashes for t in g if depth[t] < len(parents[t])]
        if not deeper:
            break
        for t in deeper:
            depth[t] += 1
    names = {t: name(t) for t in texts}
    taken = {n.lower() for n in names.values()}
    for group in clashes:  # the same place spelled twice, or no parent left to tell
        for i, t in enumerate(group[1:], start=2):
            candidate = f"{names[t]}_{i}"
            while candidate.lower() in taken:
                candidate += "_"
            names[t] = candidate
            taken.add(candidate.lower())
    return names
