"""Shared fixtures: seeded RNG, tiny backbones and image batches; running the example scripts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
MINI_CIFAR = REPO_ROOT.parent / "shared" / "data" / "cifar10_mini_train.npz"
EXAMPLES = REPO_ROOT / "examples"
# Intra-op threads of every test and of the 0.9.1 peer: two cores on CI, do not oversubscribe.
THREADS = min(2, os.cpu_count() or 1)
sys.path.insert(0, str(EXAMPLES))
from common import read_log  # noqa: E402,F401  (examples/common.py: pretrain.py's log.jsonl)

# A few-second pretraining run: 16 px images, small heads, a log record per step.
TINY = ["--image-size", "16", "--batch-size", "8", "--proj-dim", "16", "--proj-hidden-dim", "32",
        "--log-every", "1", "--no-tensorboard"]


def run_script(script: str | Path, *args: str, nproc: int = 1, timeout: int = 300,
               env: dict[str, str] | None = None, torchrun_args: tuple[str, ...] = (),
               check: bool = True) -> subprocess.CompletedProcess:
    """examples/<script> (or a path), under torchrun for nproc > 1; ``check``: exit status 0."""
    cmd = [sys.executable, str(EXAMPLES / script), *map(str, args)]
    if nproc > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                    *torchrun_args]
    # One intra-op thread per process: two cores shared by everything in the test run.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
                          env=env, check=False)
    assert not check or proc.returncode == 0, (f"{script} failed:\n{proc.stdout[-3000:]}\n"
                                               f"{proc.stderr[-3000:]}")
    return proc


def assert_same_model(a: Path, b: Path) -> None:
    """The two checkpoints hold bit-identical learner tensors (online, predictor, target)."""
    a, b = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    assert a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


def pretrain_error(argv: list[str], capsys) -> str:
    """Run pretrain.py's main() in-process, expect a non-zero SystemExit, return stderr."""
    pretrain = importlib.import_module("pretrain")
    with pytest.raises(SystemExit) as exc:
        pretrain.main(pretrain.get_args_parser().parse_args(argv))
    assert exc.value.code not in (0, None)
    return capsys.readouterr().err


def class_images(rng: np.random.Generator, label: int, n: int, size: int) -> np.ndarray:
    """(n, 3, size, size) uint8 noise around a class-specific colour (so kNN has signal)."""
    colour = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]][label % 3]).reshape(1, 3, 1, 1)
    noise = rng.integers(-40, 40, (n, 3, size, size))
    return np.clip(colour + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def npz_file(tmp_path_factory) -> Path:
    """48 labelled 16x16 images in the npz format (train_images, train_labels)."""
    path, rng = tmp_path_factory.mktemp("npz") / "tiny.npz", np.random.default_rng(1)
    labels = np.arange(48) % 3
    np.savez(path, train_images=np.concatenate([class_images(rng, y, 1, 16) for y in labels]),
             train_labels=labels.astype(np.int64))
    return path


def load_script(relative_path: str, module_name: str) -> ModuleType:
    """Import a script of the repository (not a package module) by path, as ``module_name``."""
    spec = importlib.util.spec_from_file_location(module_name, REPO_ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Comparisons with the real 0.9.1 train it in another interpreter first: end-to-end, slow.
    for item in items:
        if "peer_runs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)


class TinyNet(nn.Module):
    """A plain nn.Module backbone: conv -> BN -> ReLU -> pool -> fc (classifier)."""

    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width)
        self.relu, self.pool = nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 16, 16)  # (B, C, H, W) float in [0, 1]


def make_learner(net: nn.Module | None = None, **overrides):
    """A BYOL learner with small heads around TinyNet (16 px), so that CPU tests stay fast."""
    from byol_pytorch import BYOL

    kwargs = dict(image_size=16, projection_size=8, projection_hidden_size=16) | overrides
    return BYOL(net if net is not None else TinyNet(), **kwargs)


def train_steps(learner, images: torch.Tensor, steps: int = 1, lr: float = 0.1,
                opt: torch.optim.Optimizer | None = None) -> list[float]:
    """The README's loop (forward, backward, step, EMA) on one batch; returns the losses."""
    opt = opt or torch.optim.SGD(learner.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = learner(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if learner.use_momentum:
            learner.update_moving_average()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="session")
def peer_runs(tmp_path_factory) -> dict:
    """tests/peer/run_0_9_1.py's output in 0.9.1's interpreter (``BYOL_PEER_PYTHON``) or a skip."""
    python = os.environ.get("BYOL_PEER_PYTHON") or pytest.skip(
        "BYOL_PEER_PYTHON (an interpreter with byol-pytorch 0.9.1) is not set")
    out = tmp_path_factory.mktemp("peer") / "runs.pt"
    # -I and another cwd: this repository's byol_pytorch must not shadow the peer's. The tests'
    # thread count: training from one start is compared to rounding, which threads change.
    proc = subprocess.run([python, "-I", str(REPO_ROOT / "tests/peer/run_0_9_1.py"), str(out)],
                          cwd=out.parent, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(out)
