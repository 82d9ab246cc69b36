"""Projector/predictor MLPs and the simplicial embedding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byol_pytorch.heads import MLP, SEM, SimplicialEmbedding


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


def test_simplicial_embedding_rows_sum_to_one_per_simplex():
    sem = SimplicialEmbedding(10, num_simplices=4, simplex_dim=3, temperature=0.5)
    out = sem(torch.randn(5, 10))
    assert out.shape == (5, 12) and sem.out_dim == 12
    sums = out.view(5, 4, 3).sum(-1)
    assert torch.allclose(sums, torch.ones(5, 4), atol=1e-6)
    assert (out >= 0).all()
    assert SEM is SimplicialEmbedding


def test_simplicial_embedding_temperature_sharpens():
    torch.manual_seed(0)
    x = torch.randn(64, 10)
    sharp = SimplicialEmbedding(10, 4, 8, temperature=0.01)
    soft = SimplicialEmbedding(10, 4, 8, temperature=10.0)
    soft.load_state_dict(sharp.state_dict())
    assert sharp(x).view(64, 4, 8).max(-1).values.mean() > soft(x).view(64, 4, 8).max(-1).values.mean()
    with pytest.raises(ValueError, match="temperature must be positive"):
        SimplicialEmbedding(10, temperature=0.0)
