"""BYOL's loss, the normalised squared error of prediction and target projection: ``byol_loss``
in [0, 4] (0 when aligned), ``symmetric_byol_loss`` the paper's ``L + L~`` in [0, 8] (0.9.1's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["byol_loss", "symmetric_byol_loss"]


def byol_loss(q: Tensor, z: Tensor) -> Tensor:
    """q: (B, D) online predictions, z: (B, D) target projections (the caller detaches them) ->
    () float32 mean over the batch of ``2 - 2 cos(q, z)`` (paper eq. 2)."""
    if q.shape != z.shape or q.dim() != 2:
        raise ValueError(f"byol_loss expects two (B, D) tensors of one shape, got {tuple(q.shape)} "
                         f"and {tuple(z.shape)}")
    # fp32 even under autocast: normalising low-precision vectors loses the small angles that
    # carry the signal late in training.
    with torch.autocast(device_type=q.device.type, enabled=False):
        q = F.normalize(q.float(), dim=-1)
        z = F.normalize(z.float(), dim=-1)
        return (2 - 2 * (q * z).sum(dim=-1)).mean()


def symmetric_byol_loss(q1: Tensor, q2: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """``byol_loss(q1, z2) + byol_loss(q2, z1)``: each view's prediction (B, D) regresses the
    other view's target projection (B, D)."""
    return byol_loss(q1, z2) + byol_loss(q2, z1)
