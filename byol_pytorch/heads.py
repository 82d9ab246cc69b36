"""Projector and predictor heads: BYOL's MLP and SimSiam's 3-layer projector."""

from __future__ import annotations

from torch import nn

__all__ = ["MLP", "SimSiamMLP", "batch_norm", "projection_head"]


def batch_norm(sync_batchnorm: bool | None) -> type[nn.Module]:
    """``nn.SyncBatchNorm`` if ``sync_batchnorm`` else BatchNorm1d: the library's one rule for
    None is BatchNorm1d, whatever torch.distributed's state (scripts convert whole models)."""
    return nn.SyncBatchNorm if sync_batchnorm else nn.BatchNorm1d


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class MLP(nn.Sequential):
    """Linear -> BatchNorm1d -> ReLU -> Linear: (B, in_dim) -> (B, out_dim). Paper Sec. 3.3: "a
    linear layer with output size 4096 followed by batch normalization, rectified linear units
    (ReLU), and a final linear layer with output dimension 256". The official last layer has no
    bias (``output_bias=False``); 0.9.1's had one (the default: its checkpoints load)."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256,
                 sync_batchnorm: bool | None = False, output_bias: bool = True) -> None:
        _check_dims(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        super().__init__(nn.Linear(in_dim, hidden_dim), batch_norm(sync_batchnorm)(hidden_dim),
                         nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=output_bias))


class SimSiamMLP(nn.Sequential):
    """SimSiam's projector (Chen & He, 2021), (B, in_dim) -> (B, out_dim): (Linear -> BN ->
    ReLU) x 2 -> Linear -> BN; no biases (a BN follows each Linear), no affine in the last BN."""

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256,
                 sync_batchnorm: bool | None = False) -> None:
        _check_dims(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        norm = batch_norm(sync_batchnorm)
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False), norm(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False), norm(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False), norm(out_dim, affine=False))


def projection_head(in_dim: int, hidden_dim: int, out_dim: int, *, simsiam: bool = False,
                    sync_batchnorm: bool | None = False, output_bias: bool = True) -> nn.Sequential:
    """BYOL's projector (:class:`MLP`), or SimSiam's (:class:`SimSiamMLP`) with ``simsiam``."""
    if simsiam:
        return SimSiamMLP(in_dim, hidden_dim, out_dim, sync_batchnorm)
    return MLP(in_dim, hidden_dim, out_dim, sync_batchnorm, output_bias)
