"""Projector/predictor MLPs, SimSiam's projector, and the one rule for sync_batchnorm=None."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from byol_pytorch.heads import MLP, SimSiamMLP, batch_norm, projection_head


def test_mlp_layout_paper_sizes_and_simsiam_standardises_its_output() -> None:
    assert list(map(type, mlp := MLP(2048))) == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (mlp[0].in_features, mlp[0].out_features, mlp[3].out_features) == (2048, 4096, 256)
    assert mlp(torch.randn(3, 2048)).shape == (3, 256)
    assert mlp[3].bias is not None and MLP(4, 8, 2, output_bias=False)[3].bias is None
    with pytest.raises(ValueError, match="hidden_dim must be a positive int"):
        MLP(4, 0, 2)
    # SimSiam's ends in a BN without affine: per unit batch mean 0, variance 1, whatever the scale
    mlp = projection_head(6, 16, 5, simsiam=True)
    assert isinstance(mlp, SimSiamMLP) and isinstance(projection_head(6, 16, 5), MLP)
    assert (mlp[0].in_features, mlp[3].in_features, mlp[6].out_features) == (6, 16, 5)
    out = mlp(100 * torch.randn(32, 6) + 7)
    torch.testing.assert_close(out.mean(0), torch.zeros(5), rtol=0, atol=1e-5)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(5), rtol=0, atol=1e-3)
    assert sum(p.numel() for p in mlp[7].parameters()) == 0


def test_sync_batchnorm_none_means_batchnorm1d_even_under_a_process_group(monkeypatch) -> None:
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # what 0.9.1 looked at
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 8)
    assert batch_norm(None) is nn.BatchNorm1d and batch_norm(False) is nn.BatchNorm1d
    assert batch_norm(True) is nn.SyncBatchNorm and type(MLP(4, 8, 2)[1]) is nn.BatchNorm1d
    assert isinstance(SimSiamMLP(4, 8, 2, sync_batchnorm=True)[7], nn.SyncBatchNorm)
