"""Scene paths from what users type: files, folders, globs and text files of paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from geoseg.errors import InputNotFoundError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
LIST_SUFFIXES = (".txt", ".lst", ".list")


def expand_inputs(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Scene paths from files, folders (their rasters, sorted), glob patterns and text
    files of paths (one a line, ``#`` comments; relative to the text file's folder).
    Duplicates are dropped, order is kept. Missing paths are kept: they fail alone."""
    out: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            out += sorted(p for p in path.iterdir()
                          if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    entry = Path(line)
                    out.append(entry if entry.is_absolute() else path.parent / entry)
        elif any(ch in text for ch in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise InputNotFoundError(f"{text}: the pattern matches no file; check it")
            out += [p for p in matches if p.is_file()]
        else:
            out.append(path)
    seen, unique = set(), []
    for p in out:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
