"""Collapse detection: the spread of L2-normalised projections. Unit vectors spread over the
sphere in d dimensions have a per-coordinate std of about 1/sqrt(d) over the batch; a collapsed
network maps every image to one point, std 0 (Chen & He, SimSiam, 2021, Sec. 4.1)."""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["projection_std", "is_collapsed", "CollapseWarning"]


class CollapseWarning(UserWarning):
    """The representation is collapsing: all images map to (nearly) the same projection."""


@torch.no_grad()
def projection_std(z: Tensor) -> Tensor:
    """z: (B, D) projections, B >= 2 -> () float32 on z's device (no host sync): the mean over
    dimensions of the batch std of ``z / |z|``, ~1/sqrt(D) when healthy, ~0 on collapse."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"projection_std needs a (B, D) batch with B >= 2, got {tuple(z.shape)}")
    return F.normalize(z.float(), dim=1).std(dim=0).mean()


def is_collapsed(std: float | Tensor, dim: int, ratio: float = 0.1, warn: bool = True) -> bool:
    """Whether ``std`` (:func:`projection_std`) fell below ``ratio / sqrt(dim)``; warns if so."""
    value, threshold = float(std), ratio / math.sqrt(dim)
    if value < threshold and warn:
        warnings.warn(f"representation collapse: projection std {value:.4g} < {threshold:.4g} "
                      f"({ratio} x 1/sqrt({dim})); lower the learning rate, check the views and "
                      "that update_moving_average() runs after every optimizer step",
                      CollapseWarning, stacklevel=2)
    return value < threshold
