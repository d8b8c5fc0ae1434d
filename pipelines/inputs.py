"""Scene paths from what users type: files, folders, globs, text files of paths, and URLs or
GDAL ``/vsi*`` paths (kept as text: see ``geoseg.inputs.sources``)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from geoseg.errors import InputNotFoundError
from geoseg.inputs.sources import is_virtual

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
LIST_SUFFIXES = (".txt", ".lst", ".list")


def expand_inputs(items: Iterable[str | os.PathLike], *, recursive: bool = False,
                  exclude: str | os.PathLike | None = None) -> list[str]:
    """Scene paths from files, folders (their rasters, sorted; with ``recursive`` those of
    every sub-folder too, hidden ones left out), glob patterns, text files of paths (one a
    line, ``#`` comments; relative to the text file's folder) and URLs or ``/vsi*`` paths
    (as given). Duplicates are dropped, order is kept. Missing paths are kept: they fail
    alone. Rasters found in folders under ``exclude`` (the batch's output folder) are left
    out: a rerun never takes its own outputs for scenes."""
    skip = Path(exclude).resolve() if exclude is not None else None
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        path = Path(text)
        if is_virtual(text):
            out.append(text)
        elif path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            out += sorted(str(p) for p in found
                          if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
                          and not any(part.startswith(".")
                                      for part in p.relative_to(path).parts)
                          and not (skip and p.resolve().is_relative_to(skip)))
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    entry = Path(line)
                    out.append(line if is_virtual(line) or entry.is_absolute()
                               else str(path.parent / entry))
        elif any(ch in text for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise InputNotFoundError(f"{text}: the pattern matches no file; check it")
            out += [str(p) for p in matches if p.is_file()]
        else:
            out.append(text)
    seen, unique = set(), []
    for p in out:
        key = p if is_virtual(p) or not Path(p).exists() else str(Path(p).resolve())
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
