"""Collapse detection."""

from __future__ import annotations

import math

import pytest
import torch

from byol_pytorch.monitor import CollapseWarning, is_collapsed, projection_std


def test_healthy_projections_near_inverse_sqrt_d():
    z = torch.randn(4096, 64)
    assert projection_std(z).item() == pytest.approx(1 / math.sqrt(64), rel=0.05)
    assert not is_collapsed(projection_std(z), 64)


def test_collapsed_projections_warn():
    z = torch.randn(1, 64).repeat(256, 1) + 1e-4 * torch.randn(256, 64)
    std = projection_std(z)
    assert std.item() < 1e-3
    with pytest.warns(CollapseWarning, match="representation collapse"):
        assert is_collapsed(std, 64)


def test_bad_shape():
    with pytest.raises(ValueError, match="B >= 2"):
        projection_std(torch.randn(1, 8))
