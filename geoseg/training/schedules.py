"""Learning-rate schedules by name: the one list recipes are checked against
(:mod:`geoseg.training.recipe`) and the training loop builds its schedule from. Checking a
recipe imports no torch: each builder imports it when it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def _onecycle(optimizer: torch.optim.Optimizer, *, lr: float, steps: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                               pct_start=0.15)


def _cosine(optimizer: torch.optim.Optimizer, *, lr: float, steps: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def _constant(optimizer: torch.optim.Optimizer, *, lr: float, steps: int) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


SCHEDULES: dict[str, Callable[..., Any]] = {
    "onecycle": _onecycle, "cosine": _cosine, "constant": _constant}
"""Schedule builders by name: ``SCHEDULES[name](optimizer, lr=..., steps=...)``."""
