"""byol-pytorch 0.9.1's module path: ``from byol_pytorch.byol_pytorch import BYOL, ...``.

Code written for 0.9.1 imports helpers from here. Each name keeps 0.9.1's signature and meaning;
where this library has the piece (``BYOL``, ``NetWrapper``, ``SEM``, ``EMA``, the heads) the
name is that piece, otherwise it is a small function written to the same contract. New code should
import from ``byol_pytorch`` instead.
"""

from __future__ import annotations

import random
from functools import wraps
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from byol_pytorch import heads
from byol_pytorch.byol import BYOL
from byol_pytorch.ema import EMA
from byol_pytorch.features import NetWrapper
from byol_pytorch.heads import SEM

__all__ = [
    "BYOL", "EMA", "MLP", "MaybeSyncBatchnorm", "NetWrapper", "RandomApply", "SEM", "SimSiamMLP",
    "cosine_loss_fn", "default", "exists", "get_module_device", "loss_fn", "set_requires_grad",
    "singleton", "update_moving_average",
]

T = TypeVar("T")


def exists(v: Any) -> bool:
    """``v is not None``."""
    return v is not None


def default(val: T | None, def_val: T) -> T:
    """``val``, or ``def_val`` when ``val`` is None."""
    return def_val if val is None else val


def singleton(cache_key: str) -> Callable:
    """Method decorator: the first result is stored in ``self.<cache_key>`` and returned from then
    on (until that attribute is set back to None)."""
    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def cached(self: Any, *args: Any, **kwargs: Any) -> Any:
            instance = getattr(self, cache_key)
            if instance is None:
                instance = fn(self, *args, **kwargs)
                setattr(self, cache_key, instance)
            return instance
        return cached
    return decorate


def get_module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter."""
    return next(module.parameters()).device


def set_requires_grad(model: nn.Module, val: bool) -> None:
    """Set ``requires_grad`` of every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad = val


def MaybeSyncBatchnorm(is_distributed: bool | None = None) -> type[nn.Module]:  # noqa: N802
    """``nn.SyncBatchNorm`` if ``is_distributed`` (None: a process group of 2+ is initialised),
    else ``nn.BatchNorm1d``."""
    if is_distributed is None:
        is_distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return nn.SyncBatchNorm if is_distributed else nn.BatchNorm1d


def MLP(dim: int, projection_size: int, hidden_size: int = 4096,  # noqa: N802
        sync_batchnorm: bool | None = None) -> nn.Sequential:
    """0.9.1's argument order for :class:`byol_pytorch.MLP`: (B, dim) -> (B, projection_size)."""
    return heads.MLP(dim, hidden_size, projection_size,
                     MaybeSyncBatchnorm(sync_batchnorm) is nn.SyncBatchNorm)


def SimSiamMLP(dim: int, projection_size: int, hidden_size: int = 4096,  # noqa: N802
               sync_batchnorm: bool | None = None) -> nn.Sequential:
    """0.9.1's argument order for :class:`byol_pytorch.SimSiamMLP`: (B, dim) -> (B, projection)."""
    return heads.SimSiamMLP(dim, hidden_size, projection_size,
                            MaybeSyncBatchnorm(sync_batchnorm) is nn.SyncBatchNorm)


def cosine_loss_fn(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample ``2 - 2 cos(x, y)`` over the last dim: (..., D), (..., D) -> (...), no mean."""
    return 2 - 2 * (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(dim=-1)


loss_fn = cosine_loss_fn  # its name before 0.9


class RandomApply(nn.Module):
    """Apply ``fn`` with probability ``p``: one draw of Python's ``random`` per call (per batch)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], p: float) -> None:
        super().__init__()
        self.fn = fn
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return x if random.random() > self.p else self.fn(x)


@torch.no_grad()
def update_moving_average(ema_updater: EMA, ma_model: nn.Module, current_model: nn.Module) -> None:
    """``ma = ema_updater.update_average(ma, current)`` for the parameters of the two models, paired
    in order (buffers are left alone, as in 0.9.1)."""
    for current, ma in zip(current_model.parameters(), ma_model.parameters()):
        ma.copy_(ema_updater.update_average(ma.detach(), current.detach()))
