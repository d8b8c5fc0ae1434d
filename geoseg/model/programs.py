"""Imported programs in bundles: an ONNX graph, a TorchScript module or a torch.export
program, kept as its file's bytes in the bundle's safetensors file (tensor
``geoseg.network``, uint8) beside the metadata, and loaded for the runtime that runs it.

What a model file is comes from its content, never from its name (:func:`sniff_kind`): an
ONNX protobuf, a zip archive with TorchScript's ``code/`` or a ``.pt2`` archive's
``archive_format``; a zip with only ``data.pkl`` is a pickled checkpoint and is refused
(DESIGN.md promise 8: a pickle can run any code when loaded). TorchScript and torch.export
programs run only as the network, and only when the user chose to import them.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import replacing, shared_mode
from ..errors import BundleError, InputNotFoundError
from .meta import META_KEY, NETWORK_TENSOR, BundleMeta, file_sha256

PICKLE_HINT = ("pickled checkpoints can run any code when loaded and are refused: save the "
               "network with torch.jit.save (TorchScript), torch.export.save (.pt2) or "
               "torch.onnx.export, or wrap an smp state_dict with `geoseg model create "
               "--weights`")


def sniff_kind(path: str | os.PathLike) -> str:
    """``onnx``, ``torchscript`` or ``pt2`` from the file's content; anything else is one
    BundleError line (a pickled checkpoint with the reason it is refused)."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: model file not found")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as exc:
            raise BundleError(f"{path}: a damaged zip archive ({exc})") from exc
        parts = {n.split("/", 1)[1] if "/" in n else n for n in names}
        if any(n.endswith("archive_format") for n in names) or \
                any("serialized_exported_program" in n for n in names):
            return "pt2"
        if any(p.startswith("code/") for p in parts) and "constants.pkl" in parts:
            return "torchscript"
        if "data.pkl" in parts:
            raise BundleError(f"{path}: a pickled torch checkpoint (torch.save); "
                              f"{PICKLE_HINT}")
        raise BundleError(f"{path}: a zip archive that is neither TorchScript nor a "
                          "torch.export .pt2 program")
    if head[:1] == b"\x80":
        raise BundleError(f"{path}: a pickle (torch.save of an old format); {PICKLE_HINT}")
    if _looks_like_onnx(path):
        return "onnx"
    raise BundleError(f"{path}: not a model file geoseg can import (an ONNX graph, a "
                      "TorchScript module or a torch.export .pt2 program)")


def _looks_like_onnx(path: Path) -> bool:
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a dependency
        return path.suffix == ".onnx"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not a protobuf of ModelProto
        return False
    return len(model.graph.node) > 0


def save_program(meta: BundleMeta, data: bytes, path: str | os.PathLike) -> str:
    """A bundle holding ``data`` (the program file's bytes) and ``meta``; returns its
    sha256. Written under a temporary name, then renamed."""
    from safetensors.numpy import save_file

    with replacing(path) as tmp:
        save_file({NETWORK_TENSOR: np.frombuffer(data, np.uint8)}, str(tmp),
                  metadata={META_KEY: meta.to_json()})
        os.chmod(tmp, shared_mode())
    return file_sha256(path)


def read_program(path: str | os.PathLike) -> bytes:
    """The program file's bytes from a bundle of an imported network."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        if NETWORK_TENSOR not in f.keys():
            raise BundleError(f"{path}: its metadata names an imported network but the file "
                              f"holds no {NETWORK_TENSOR} tensor")
        return f.get_tensor(NETWORK_TENSOR).tobytes()


def load_torch_program(kind: str, data: bytes, *, device: str) -> Any:
    """A TorchScript module or a torch.export program's module on ``device``, eval mode.
    A ``.pt2`` that this torch cannot read (another torch version's format) is one line."""
    import torch

    if kind == "torchscript":
        import warnings

        try:
            with warnings.catch_warnings():  # deprecated in torch 2.14; users still have it
                warnings.simplefilter("ignore", FutureWarning)
                module = torch.jit.load(io.BytesIO(data), map_location=device)
        except Exception as exc:  # noqa: BLE001 - torch's loader errors vary
            raise BundleError(f"torch cannot load the TorchScript module "
                              f"({str(exc).splitlines()[0][:200]})") from exc
        return module.eval()
    if kind == "pt2":
        check_pt2_version(data)
        try:
            program = torch.export.load(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001
            raise BundleError(f"torch {torch.__version__} cannot load the .pt2 program "
                              f"({str(exc).splitlines()[0][:200]}); export it again with "
                              "this torch version") from exc
        return program.module().to(device)
    raise BundleError(f"{kind!r} is not a torch program kind")


def pt2_torch_version(data: bytes) -> str | None:
    """The torch version that saved a ``.pt2`` archive (``torch_version`` in its
    ``models/*.json``), or None when it does not say."""
    import json

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in archive.namelist():
                if "/models/" in name and name.endswith(".json"):
                    version = json.loads(archive.read(name)).get("torch_version")
                    if version:
                        return str(version).split("+")[0]
    except (zipfile.BadZipFile, ValueError, AttributeError):
        return None
    return None


def check_pt2_version(data: bytes) -> None:
    """Refuse a ``.pt2`` saved by another torch major version in one line: torch.export's
    format is only promised within one."""
    import torch

    saved = pt2_torch_version(data)
    here = torch.__version__.split("+")[0]
    if saved and saved.split(".")[0] != here.split(".")[0]:
        raise BundleError(f"the .pt2 program was saved by torch {saved}; this is torch "
                          f"{here}, and torch.export programs load only within one major "
                          f"version: export it again with torch {here.split('.')[0]}.x")
