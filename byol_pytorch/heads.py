"""Projector and predictor heads, and the optional simplicial embedding."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MLP", "SimplicialEmbedding", "SEM"]


class MLP(nn.Sequential):
    """Linear -> BatchNorm1d -> ReLU -> Linear: BYOL's projector and predictor.

    Paper (Sec. 3.3): "a multi-layer perceptron (MLP) consisting in a linear layer with output size
    4096 followed by batch normalization, rectified linear units (ReLU), and a final linear layer
    with output dimension 256." Shapes: (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256,
                 sync_batchnorm: bool = False) -> None:
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"MLP {name} must be a positive int, got {value!r}")
        norm = nn.SyncBatchNorm if sync_batchnorm else nn.BatchNorm1d
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            norm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


class SimplicialEmbedding(nn.Module):
    """Simplicial embedding (Lavoie et al., 2022): softmax over groups of features.

    Linear -> LayerNorm -> reshape (B, L, V) -> softmax(x / temperature) over V -> (B, L * V).
    Not part of BYOL; offered for byol-pytorch 0.9.1 users who enabled it.
    """

    def __init__(self, in_dim: int, num_simplices: int = 32, simplex_dim: int = 8,
                 temperature: float = 0.1) -> None:
        super().__init__()
        if num_simplices <= 0 or simplex_dim <= 0:
            raise ValueError(f"num_simplices and simplex_dim must be positive, got "
                             f"{num_simplices}, {simplex_dim}")
        if temperature <= 0:
            raise ValueError(f"sem temperature must be positive, got {temperature}")
        self.num_simplices, self.simplex_dim, self.temperature = num_simplices, simplex_dim, temperature
        self.proj = nn.Linear(in_dim, num_simplices * simplex_dim)
        self.norm = nn.LayerNorm(num_simplices * simplex_dim)

    @property
    def out_dim(self) -> int:
        return self.num_simplices * self.simplex_dim

    def forward(self, y: Tensor) -> Tensor:
        """(B, in_dim) -> (B, L * V), each of the L groups of V values summing to 1."""
        logits = self.norm(self.proj(y)).unflatten(-1, (self.num_simplices, self.simplex_dim))
        return F.softmax(logits / self.temperature, dim=-1).flatten(1)


SEM = SimplicialEmbedding  # the name byol-pytorch 0.9.1 exports
