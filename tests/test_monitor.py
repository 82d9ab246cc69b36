"""Collapse detection: the spread of normalised projections."""

from __future__ import annotations

import pytest
import torch

from byol_pytorch.monitor import CollapseWarning, is_collapsed, projection_std


def test_healthy_near_inverse_sqrt_d_collapsed_warns_and_bad_shape() -> None:
    assert projection_std(z := torch.randn(4096, 64)).item() == pytest.approx(64 ** -0.5, rel=0.05)
    assert not is_collapsed(projection_std(z), 64)
    std = projection_std(torch.randn(1, 64).repeat(256, 1) + 1e-4 * torch.randn(256, 64))
    with pytest.warns(CollapseWarning, match="representation collapse"):
        assert std.item() < 1e-3 and is_collapsed(std, 64)
    with pytest.raises(ValueError, match="B >= 2"):
        projection_std(torch.randn(1, 8))
