"""benchmarks/quality.py: held-out split, shared pieces, and a tiny end-to-end run (ours only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from byol_pytorch import create_backbone
from byol_pytorch.schedules import warmup_cosine

from conftest import MINI_CIFAR, REPO_ROOT, load_script


@pytest.fixture(scope="module")
def quality():
    return load_script("benchmarks/quality.py", "byol_quality_benchmark")


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=rng.integers(0, 256, (40, 3, 16, 16), dtype=np.uint8),
             train_labels=np.arange(40, dtype=np.int64) % 4)
    return path


def test_split_is_deterministic_disjoint_and_complete(quality):
    train, test = quality.split_indices(5085, 1000, seed=0)
    train2, test2 = quality.split_indices(5085, 1000, seed=0)
    assert np.array_equal(train, train2) and np.array_equal(test, test2)
    assert len(train) == 4085 and len(test) == 1000
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(5085))
    assert np.all(np.diff(test) > 0)  # sorted
    _, other = quality.split_indices(5085, 1000, seed=1)
    assert not np.array_equal(test, other)


@pytest.mark.parametrize("n_test", [0, 10, -1])
def test_split_rejects_bad_sizes(quality, n_test):
    with pytest.raises(ValueError):
        quality.split_indices(10, n_test)


def test_lr_schedule_matches_library(quality):
    for total, warmup in ((50, 0), (50, 7), (3, 3)):
        for step in range(total + 2):
            assert quality.lr_at(step, total, 0.3, warmup) == pytest.approx(
                warmup_cosine(step, total, 0.3, warmup))


def test_peer_backbone_is_ours_with_same_seed(quality):
    torch.manual_seed(3)
    ours = create_backbone("resnet18", cifar_stem=True).state_dict()
    torch.manual_seed(3)
    plain = quality.cifar_resnet18().state_dict()
    assert ours.keys() == plain.keys()
    assert all(torch.equal(ours[k], plain[k]) for k in ours)
    assert quality.state_checksum(ours) == quality.state_checksum(plain)


def test_end_to_end_tiny(quality, tiny_npz, tmp_path, capsys):
    out = tmp_path / "res" / "quality.json"
    argv = ["--data", str(tiny_npz), "--n-test", "8", "--batch-size", "8", "--epochs", "1",
            "--precision", "fp32",
            "--max-steps", "2", "--projection-size", "8", "--projection-hidden-size", "16",
            "--probe-epochs", "2", "--knn-k", "3", "5", "--models", "random", "ours", "peer",
            "--output", str(out), "--log-dir", str(tmp_path / "logs")]
    result = quality.main(argv)
    text = capsys.readouterr().out
    assert "| model |" in text and "skipped: no --peer-python" in text
    saved = json.loads(out.read_text())
    assert set(saved) >= {"config", "hardware", "versions", "data", "models", "notes", "table",
                          "same_init", "backbone"}
    assert saved["same_init"] is True
    assert saved["data"]["n_train"] == 32 and saved["data"]["n_test"] == 8
    assert {"cpu", "torch", "torchvision", "gpu"} <= set(saved["hardware"])
    assert saved["config"]["epochs"] == 1 and saved["config"]["max_steps"] == 2
    models = saved["models"]
    assert list(models) == ["random", "ours", "peer"]
    assert models["peer"] == {"skipped": "no --peer-python given"}
    for name in ("random", "ours"):
        r = models[name]
        assert {"knn_top1@3", "knn_top1@5", "linear_top1", "eval_wall_s", "total_wall_s",
                "init_checksum"} <= set(r)
        assert all(0.0 <= r[k] <= 100.0 for k in ("knn_top1@3", "knn_top1@5", "linear_top1"))
    assert models["ours"]["steps"] == 2 and models["ours"]["pretrain_wall_s"] > 0
    assert models["ours"]["init_checksum"] == models["random"]["init_checksum"]
    steps = [json.loads(line) for line in (tmp_path / "logs" / "ours_steps.jsonl").open()]
    assert [s["step"] for s in steps] == [1, 2]
    assert {"loss", "lr", "tau", "projection_std"} <= set(steps[0])
    assert result["models"]["ours"]["linear_top1"] == models["ours"]["linear_top1"]


def test_skips_without_data(quality, tmp_path, capsys):
    assert quality.main(["--data", str(tmp_path / "absent.npz")]) is None
    assert "SKIP" in capsys.readouterr().out


def test_unknown_model_is_rejected(quality, tiny_npz):
    with pytest.raises(SystemExit, match="unknown models"):
        quality.main(["--data", str(tiny_npz), "--models", "nope"])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BYOL_PEER_PYTHON"),
                    reason="set BYOL_PEER_PYTHON to an interpreter with byol-pytorch 0.9.1")
def test_peer_worker_tiny(quality, tiny_npz, tmp_path):
    out = tmp_path / "quality.json"
    quality.main(["--data", str(tiny_npz), "--n-test", "8", "--batch-size", "8", "--epochs", "1",
                  "--max-steps", "1", "--projection-size", "8", "--projection-hidden-size", "16",
                  "--probe-epochs", "1", "--knn-k", "3", "--models", "peer-nosem",
                  "--peer-python", os.environ["BYOL_PEER_PYTHON"], "--output", str(out)])
    peer = json.loads(out.read_text())["models"]["peer-nosem"]
    assert peer["library_version"] == "0.9.1"
    assert str(REPO_ROOT) not in peer["library_file"]  # the peer's own package
    assert peer["steps"] == 1 and "knn_top1@3" in peer


@pytest.mark.skipif(not MINI_CIFAR.exists(), reason="shared mini CIFAR-10 npz not present")
def test_real_split_covers_every_class(quality):
    images, labels = quality.load_npz(MINI_CIFAR)
    train, test = quality.split_indices(len(images), 1000, seed=0)
    assert len(test) == 1000 and len(train) == len(images) - 1000
    assert set(labels[torch.from_numpy(test)].tolist()) == set(range(10))
