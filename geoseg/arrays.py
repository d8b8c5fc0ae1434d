"""One set of array functions over numpy and torch: the steps around the network
(normalization, test-time augmentation views, softmax, weighting and stitching) are written
once against the array API standard (through ``array_api_compat``) and run on whichever
array kind the runtime gives (DESIGN.md promise 13).

* ``--runtime torch``: torch tensors on the model's device (CUDA or the CPU); a batch's
  probabilities never leave the device.
* ``--runtime onnxruntime``: numpy arrays in host memory, which its session takes and gives.
  A prediction on ONNX Runtime imports no torch at all (3 s of a small job's start-up).

The array kind is decided by the runtime (:func:`namespace`), never by what is installed,
so the same runtime computes the same bits on every machine. torch is imported only by the
torch namespace and by :func:`from_host` on a torch tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from array_api_compat import array_namespace, device, is_torch_array

__all__ = ["array_namespace", "device", "from_host", "is_torch_array", "namespace", "rot90",
           "softmax", "to_host"]


def namespace(runtime: str) -> Any:
    """The array namespace a runtime computes in: numpy (``array_api_compat.numpy``) for
    onnxruntime, torch (``array_api_compat.torch``) for torch."""
    from importlib import import_module

    return import_module("array_api_compat." + ("numpy" if runtime == "onnxruntime"
                                                 else "torch"))


def is_numpy_namespace(xp: Any) -> bool:
    """Whether ``xp`` is the host (numpy) namespace."""
    return xp.__name__.endswith(".numpy")


def array_device(xp: Any, model_device: str) -> str:
    """Where ``xp``'s arrays live for a model on ``model_device``: the model's device for
    torch, host memory ("cpu") for numpy (an ONNX Runtime session on CUDA copies in and out
    itself)."""
    return "cpu" if is_numpy_namespace(xp) else model_device


def to_host(x: Any, *, copy: bool = False) -> np.ndarray:
    """``x`` as a numpy array in host memory (``copy``: never a view of ``x``)."""
    if isinstance(x, np.ndarray):
        return x.copy() if copy else x
    return x.to("cpu", copy=copy).numpy()


def from_host(xp: Any, array: np.ndarray, where: str) -> Any:
    """A host numpy ``array`` in ``xp`` on device ``where`` (numpy: the array itself)."""
    if is_numpy_namespace(xp):
        return array
    import torch

    return torch.from_numpy(array).to(where)


def rot90(xp: Any, x: Any, k: int) -> Any:
    """``x`` (N, C, H, W) rotated by ``k`` quarter turns in the (H, W) plane, counter-
    clockwise as ``numpy.rot90`` and ``torch.rot90`` turn them (exact: a permutation)."""
    k %= 4
    if k == 0:
        return x
    if k == 2:
        return xp.flip(xp.flip(x, axis=2), axis=3)
    if k == 1:
        return xp.permute_dims(xp.flip(x, axis=3), (0, 1, 3, 2))
    return xp.flip(xp.permute_dims(x, (0, 1, 3, 2)), axis=3)


def softmax(x: Any, axis: int = 1) -> Any:
    """float32 softmax over ``axis``: torch's own kernel on tensors (twice as fast on a
    contiguous NCHW tensor on the CPU), ``exp(x - max) / sum`` elsewhere."""
    if is_torch_array(x):
        import torch

        return torch.softmax(x.float().contiguous(), dim=axis)
    xp = array_namespace(x)
    x = xp.astype(x, xp.float32, copy=False)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e
