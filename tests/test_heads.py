"""Projector/predictor MLPs, SimSiam's projector and the simplicial embedding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byol_pytorch.heads import MLP, SEM, SimSiamMLP, simplicial_projector


def test_mlp_layout_and_paper_sizes():
    mlp = MLP(2048)
    assert [type(m) for m in mlp] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features) == (2048, 4096)
    assert (mlp[3].in_features, mlp[3].out_features) == (4096, 256)
    assert mlp(torch.randn(3, 2048)).shape == (3, 256)


def test_mlp_sync_batchnorm_and_validation():
    assert isinstance(MLP(4, 8, 2, sync_batchnorm=True)[1], nn.SyncBatchNorm)
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        MLP(4, 0, 2)


def test_simsiam_mlp_standardises_its_output():
    """SimSiam's projector ends in a BN without affine: in train mode each output unit has batch
    mean 0 and variance 1, whatever the input scale."""
    mlp = SimSiamMLP(6, 16, 5)
    assert (mlp[0].in_features, mlp[3].in_features, mlp[6].out_features) == (6, 16, 5)
    out = mlp(100 * torch.randn(32, 6) + 7)
    assert torch.allclose(out.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(out.var(0, unbiased=False), torch.ones(5), atol=1e-3)
    assert sum(p.numel() for p in mlp[7].parameters()) == 0


def test_sem_is_a_softmax_per_group():
    sem = SEM(12, temperature=0.5, dim_simplex=3)
    x = torch.randn(5, 12)
    expected = torch.softmax(x.view(5, 4, 3) / 0.5, dim=-1).view(5, 12)
    assert torch.allclose(sem(x), expected, atol=1e-6)
    assert not list(sem.parameters())
    with pytest.raises(ValueError, match="divisible by dim_simplex"):
        SEM(10, dim_simplex=3)
    with pytest.raises(ValueError, match="temperature must be positive"):
        SEM(16, temperature=0.0)


def test_sem_temperature_sharpens():
    x = torch.randn(64, 32)
    sharp, soft = SEM(32, temperature=0.01), SEM(32, temperature=10.0)
    assert sharp(x).view(64, 4, 8).max(-1).values.mean() > soft(x).view(64, 4, 8).max(-1).values.mean()


def test_simplicial_projector_layout():
    head = simplicial_projector(10, MLP(12, 8, 4), num_simplices=4, simplex_dim=3)
    embed, sem, mlp = head
    assert (embed[0].in_features, embed[0].out_features) == (10, 12)
    assert isinstance(embed[1], nn.BatchNorm1d) and sem.dim_simplex == 3
    assert head(torch.randn(6, 10)).shape == (6, 4)
