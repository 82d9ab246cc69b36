"""examples/visualize.py: the three PNGs from pretrain.py's log.jsonl and an image source."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import MINI_CIFAR, load_script

Axes = pytest.importorskip("matplotlib.axes").Axes
vis = load_script("examples/visualize.py", "byol_visualize_example")


def write_log(folder, knn: bool = True, steps: int = 40) -> str:
    """pretrain.py's log.jsonl (+ args.json): knn_init, step records, epoch records per 10."""
    (folder / "args.json").write_text(json.dumps({"proj_dim": 64}))
    recs = [dict(event="knn_init", step=0, knn_top1=31.5, knn_k=20)] if knn else []
    for s in range(1, steps + 1):
        recs.append(dict(event="step", step=s, epoch=s // 10, loss=4 / s,
                         lr=0.1 * s / steps, tau=0.99 + s / 4000, projection_std=0.06 - s / 1e3))
        if s % 10 == 0:
            recs.append(dict(recs[-1], event="epoch", knn_top1=s if knn and s > 10 else None))
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(folder / "log.jsonl")


def png(path) -> tuple[str, tuple[int, int]]:
    return (im := Image.open(path)).verify() or (im.format, im.size)  # verify: raises if broken


def test_cli_plots_image_sources_views_and_errors(tmp_path, npz_file, monkeypatch, capsys):
    source = torch.from_numpy(np.load(npz_file)["train_images"]).float() / 255
    x = vis.load_images(npz_file, 4, seed=1)
    assert x.shape == (4, 3, 16, 16) and all(any(torch.equal(a, s) for s in source) for a in x)
    stripe = np.pad(np.full((20, 6, 3), 255, np.uint8), ((0, 0), (12, 12), (0, 0)))  # centred
    Image.fromarray(stripe).save(tmp_path / "a.png")  # before the plots land in tmp_path
    y = vis.load_images(tmp_path, 1, size=16)  # 20x30: short side to 16, then the centre 16
    assert torch.allclose(y, y.flip(-1)) and y[..., 0].max() == 0 and y.max() > 0.99
    (v1, v2), (w1, _), (u1, _) = (vis.make_views(x, 8, "small", seed) for seed in (0, 0, 1))
    assert v1.shape == v2.shape == (4, 3, 8, 8) and 0 <= v1.min() and v1.max() <= 1
    assert torch.equal(v1, w1) and not torch.equal(v1, v2) and not torch.equal(v1, u1)
    off = dict(crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0)
    assert torch.allclose(vis.make_views(x, preset="small", **off)[0], x, atol=1e-6)  # [0, 1]
    lines, axhline = [], Axes.axhline  # every horizontal line drawn
    monkeypatch.setattr(Axes, "axhline", lambda ax, y=0, *a, **kw: (
        lines.append((y, kw.get("ls"), kw.get("label"))), axhline(ax, y, *a, **kw))[1])
    written = vis.main(["--log", write_log(tmp_path), "--images", str(npz_file), "--num-images",
                        "3", "--preset", "small", "--out-dir", str(tmp_path)])
    assert [(p.name, *png(p)) for p in written] == [
        ("training_curves.png", "PNG", (900, 600)), ("knn_accuracy.png", "PNG", (600, 400)),
        ("augmentations.png", "PNG", (390, 370))]
    assert (31.5, "--", "initialisation (kNN@20)") in lines  # from the knn_init record
    assert (0.1 / 8, "--", "collapse threshold 0.0125") in lines  # proj_dim 64 from args.json
    assert png(vis.plot_knn([dict(epoch=1, knn_top1=40.0)], tmp_path / "k.png"))[0] == "PNG"
    assert len(lines) == 3  # no knn_init record given: no new line
    out = vis.plot_training_curves([dict(step=i, loss=i) for i in range(9)], tmp_path / "c.png")
    assert png(out) == ("PNG", (900, 600))  # no lr, tau, std: panels with a note
    written = vis.main(["--log", write_log(tmp_path, knn=False), "--out-dir", str(tmp_path)])
    assert [p.name for p in written] == ["training_curves.png"]  # kNN never evaluated
    with pytest.raises(ValueError, match="--knn-every"):
        vis.plot_knn([dict(epoch=0, knn_top1=None)], tmp_path / "k.png")
    with pytest.raises(SystemExit):  # a log with only the knn_init record
        vis.main(["--log", write_log(tmp_path, steps=0), "--out-dir", str(tmp_path)])
    assert "no 'step' records" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        vis.load_images(tmp_path / "nothing", 2)


@pytest.mark.skipif(not MINI_CIFAR.exists(), reason="shared mini CIFAR-10 npz not present")
def test_real_cifar_grid(tmp_path):
    imgs = vis.load_images(MINI_CIFAR, 3)
    assert imgs.shape == (3, 3, 32, 32) and imgs.std() > 0.05
    assert png(vis.plot_augmentations(imgs, tmp_path / "c.png", preset="small"))[1] == (390, 370)
