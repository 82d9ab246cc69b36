"""Shared fixtures: seeded RNG, tiny backbones and image batches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

MINI_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_mini_train.npz"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    # Two cores on CI: keep intra-op threads bounded so that subprocess tests do not oversubscribe.
    torch.set_num_threads(min(2, os.cpu_count() or 1))


class TinyNet(nn.Module):
    """A plain nn.Module backbone: conv -> BN -> ReLU -> pool -> fc (classifier)."""

    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()


@pytest.fixture
def images() -> torch.Tensor:
    """(4, 3, 16, 16) float images in [0, 1]."""
    return torch.rand(4, 3, 16, 16)


def small_byol_kwargs(**overrides):
    """Small heads so that CPU tests stay fast."""
    kwargs = dict(image_size=16, projection_size=8, projection_hidden_size=16)
    kwargs.update(overrides)
    return kwargs
