"""examples/visualize.py: each plot writes a non-empty PNG from small synthetic inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from conftest import MINI_CIFAR, load_script  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def vis():
    return load_script("examples/visualize.py", "byol_visualize_example")


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture
def step_log(tmp_path: Path) -> Path:
    """pretrain.py's per-step JSONL format, with a truncated last line as after a kill."""
    path = tmp_path / "run" / "log_steps.jsonl"
    path.parent.mkdir()
    with path.open("w") as f:
        for step in range(1, 41):
            f.write(json.dumps(dict(step=step, epoch=step // 10, loss=4 * math.exp(-step / 10),
                                    lr=0.1 * step / 40, tau=0.99 + 0.01 * step / 40,
                                    projection_std=0.06 - 0.001 * step)) + "\n")
        f.write('{"step": 41, "loss": 0.')
    return path


@pytest.fixture
def epoch_csv(tmp_path: Path) -> Path:
    path = tmp_path / "log_epochs.csv"
    rows = ["epoch,step,loss,knn_top1", "0,10,3.0,", "1,20,2.0,25.5", "2,30,1.5,31.0",
            "3,40,1.2,35.25"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_read_log_jsonl_and_csv(vis, step_log, epoch_csv):
    steps = vis.read_log(step_log)
    assert len(steps) == 40 and steps[0]["step"] == 1  # truncated line skipped
    epochs = vis.read_log(epoch_csv)
    assert epochs[0]["knn_top1"] is None and epochs[3]["knn_top1"] == 35.25
    with pytest.raises(FileNotFoundError):
        vis.read_log(step_log.parent / "absent.jsonl")


def test_training_curves_png(vis, step_log, tmp_path):
    out = vis.plot_training_curves(step_log, tmp_path / "plots" / "curves.png",
                                   projection_size=256)
    assert _is_png(out)


def test_training_curves_tolerate_missing_series(vis, tmp_path):
    records = [dict(step=i, loss=1.0 / i) for i in range(1, 6)]  # no lr/tau/std
    assert _is_png(vis.plot_training_curves(records, tmp_path / "c.png"))
    with pytest.raises(ValueError):
        vis.plot_training_curves([], tmp_path / "empty.png")


def test_knn_png(vis, epoch_csv, tmp_path):
    out = vis.plot_knn(epoch_csv, tmp_path / "knn.png", baseline={"random init": 30.0})
    assert _is_png(out)
    with pytest.raises(ValueError, match="knn"):
        vis.plot_knn([dict(epoch=0, loss=1.0)], tmp_path / "none.png")


def test_views_are_images_in_unit_range(vis):
    imgs = torch.rand(3, 3, 16, 16)
    v1, v2 = vis.make_views(imgs, preset="small", seed=0)
    assert v1.shape == v2.shape == (3, 3, 16, 16)
    assert v1.min() >= 0 and v1.max() <= 1
    w1, _ = vis.make_views(imgs, preset="small", seed=0)
    assert torch.equal(v1, w1)  # seeded


def test_augmentation_grid_png(vis, tmp_path):
    out = vis.plot_augmentations(torch.rand(4, 3, 16, 16), tmp_path / "aug.png", preset="small")
    assert _is_png(out)
    with pytest.raises(ValueError):
        vis.plot_augmentations(torch.rand(4, 1, 16, 16), tmp_path / "bad.png")


def test_load_images_npz_folder_digits(vis, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "x.npz", train_images=rng.integers(0, 256, (10, 3, 12, 12), dtype=np.uint8))
    x = vis.load_images(tmp_path / "x.npz", 4)
    assert x.shape == (4, 3, 12, 12) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    folder = tmp_path / "imgs" / "cls"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    y = vis.load_images(tmp_path / "imgs", 2, size=16)
    assert y.shape == (2, 3, 16, 16)
    pytest.importorskip("sklearn")
    assert vis.load_images("digits", 2, size=16).shape == (2, 3, 16, 16)
    with pytest.raises(FileNotFoundError):
        vis.load_images(tmp_path / "nothing", 2)


def test_init_knn_baseline_is_read_beside_the_epoch_log(vis, epoch_csv):
    assert vis.init_knn_baseline(epoch_csv) is None  # pretrain.py without --knn-every
    (epoch_csv.parent / "knn_init.json").write_text(json.dumps({"knn_top1": 31.5, "knn_k": 20}))
    assert vis.init_knn_baseline(epoch_csv) == {"initialisation (kNN@20)": 31.5}


def test_cli_writes_all_three(vis, step_log, epoch_csv, tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "x.npz", train_images=rng.integers(0, 256, (6, 3, 16, 16), dtype=np.uint8))
    (step_log.parent / "args.json").write_text(json.dumps({"proj_dim": 64}))
    assert vis.projection_size_from_args(step_log) == 64
    written = vis.main(["--step-log", str(step_log), "--epoch-log", str(epoch_csv),
                        "--images", str(tmp_path / "x.npz"), "--num-images", "3",
                        "--preset", "small", "--out-dir", str(tmp_path / "out")])
    assert [p.name for p in written] == ["training_curves.png", "knn_accuracy.png",
                                         "augmentations.png"]
    assert all(_is_png(p) for p in written)
    with pytest.raises(SystemExit):
        vis.main(["--out-dir", str(tmp_path)])


@pytest.mark.skipif(not MINI_CIFAR.exists(), reason="shared mini CIFAR-10 npz not present")
def test_real_cifar_grid(vis, tmp_path):
    imgs = vis.load_images(MINI_CIFAR, 3)
    assert imgs.shape == (3, 3, 32, 32)
    assert _is_png(vis.plot_augmentations(imgs, tmp_path / "cifar.png", preset="small"))
