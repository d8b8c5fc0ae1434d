"""YAML files into plain mappings, with one clear line for a missing or malformed file.

Prediction's options (:mod:`geoseg.prediction.options`), training recipes
(:mod:`geoseg.training.recipe`) and cluster profiles (``pipelines/cluster.py``) each load
their file through :func:`load_yaml` and validate the mapping into their own frozen type.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from .errors import ConfigError, InputNotFoundError

__all__ = ["load_yaml"]


def load_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path``, with clear errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    return data
