"""Projector and predictor heads, and the simplicial embedding byol-pytorch 0.9.1 offered."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MLP", "SimSiamMLP", "SEM", "simplicial_projector"]


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _norm(sync_batchnorm: bool) -> type[nn.Module]:
    return nn.SyncBatchNorm if sync_batchnorm else nn.BatchNorm1d


class MLP(nn.Sequential):
    """Linear -> BatchNorm1d -> ReLU -> Linear: BYOL's projector and predictor.

    Paper (Sec. 3.3): "a multi-layer perceptron (MLP) consisting in a linear layer with output size
    4096 followed by batch normalization, rectified linear units (ReLU), and a final linear layer
    with output dimension 256." The official code's final layer has no bias
    (``byol/utils/networks.py``: ``with_bias=False``): ``output_bias=False``; byol-pytorch 0.9.1's
    has one (the default here, so that its checkpoints load). Shapes: (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256,
                 sync_batchnorm: bool = False, output_bias: bool = True) -> None:
        _check_dims(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            _norm(sync_batchnorm)(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=output_bias),
        )


class SimSiamMLP(nn.Sequential):
    """SimSiam's 3-layer projector (Chen & He, 2021, Sec. 4): BatchNorm after every layer.

    (Linear -> BN -> ReLU) x 2 -> Linear -> BN(affine=False), linear layers without bias (BN
    follows each). The layer indices are those of byol-pytorch 0.9.1's ``SimSiamMLP``, so its
    ``use_momentum=False`` checkpoints load. Shapes: (B, in_dim) -> (B, out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256,
                 sync_batchnorm: bool = False) -> None:
        _check_dims(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim)
        norm = _norm(sync_batchnorm)
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            norm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False),
            norm(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
            norm(out_dim, affine=False),
        )


class SEM(nn.Module):
    """Simplicial embedding (Lavoie et al., 2022): a softmax over each group of ``dim_simplex``.

    (..., dim) -> (..., dim), every consecutive group of ``dim_simplex`` values summing to 1.
    No parameters; byol-pytorch 0.9.1's ``SEM(dim, temperature, dim_simplex)``.
    """

    def __init__(self, dim: int, temperature: float = 0.1, dim_simplex: int = 8) -> None:
        super().__init__()
        _check_dims(dim=dim, dim_simplex=dim_simplex)
        if dim % dim_simplex:
            raise ValueError(f"SEM dim {dim} must be divisible by dim_simplex {dim_simplex}")
        if not temperature > 0:
            raise ValueError(f"SEM temperature must be positive, got {temperature}")
        self.dim, self.dim_simplex, self.temperature = dim, dim_simplex, temperature

    def forward(self, t: Tensor) -> Tensor:
        groups = t.unflatten(-1, (-1, self.dim_simplex))  # (..., L, V)
        return (groups / self.temperature).softmax(dim=-1).flatten(-2)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, temperature={self.temperature}, dim_simplex={self.dim_simplex}"


def simplicial_projector(in_dim: int, projector: nn.Module, num_simplices: int = 32,
                         simplex_dim: int = 8, temperature: float = 0.1,
                         sync_batchnorm: bool = False) -> nn.Sequential:
    """``(Linear -> BN) -> SEM -> projector``: 0.9.1's projector with simplicial embeddings.

    Not part of BYOL. The layout (and so the ``state_dict`` keys) is 0.9.1's. ``projector`` takes
    ``num_simplices * simplex_dim`` inputs. Shapes: (B, in_dim) -> projector's output.
    """
    _check_dims(num_simplices=num_simplices, simplex_dim=simplex_dim)
    sem_dim = num_simplices * simplex_dim
    embed = nn.Sequential(nn.Linear(in_dim, sem_dim), _norm(sync_batchnorm)(sem_dim))
    return nn.Sequential(embed, SEM(sem_dim, temperature, simplex_dim), projector)
