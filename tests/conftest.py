"""Shared fixtures: seeded RNG, tiny backbones and image batches."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
MINI_CIFAR = REPO_ROOT.parent / "shared" / "data" / "cifar10_mini_train.npz"


def load_script(relative_path: str, module_name: str) -> ModuleType:
    """Import a script of the repository (not a package module) by path, as ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(scope="session")
def peer_runs(tmp_path_factory) -> dict:
    """What tests/peer/run_0_9_1.py produces in byol-pytorch 0.9.1's own interpreter
    (``BYOL_PEER_PYTHON``); the test skips without one."""
    python = os.environ.get("BYOL_PEER_PYTHON")
    if not python:
        pytest.skip("BYOL_PEER_PYTHON (an interpreter with byol-pytorch 0.9.1) is not set")
    out = tmp_path_factory.mktemp("peer") / "runs.pt"
    script = REPO_ROOT / "tests" / "peer" / "run_0_9_1.py"
    # -I and another cwd: this repository's byol_pytorch must not shadow the peer's
    proc = subprocess.run([python, "-I", str(script), str(out)], cwd=out.parent,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(out)
