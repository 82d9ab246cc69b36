"""Scoring a backbone on the held-out split with ``byol_pytorch.eval``: weighted kNN and a linear
probe on frozen features, and the kNN@CURVE_K curve of a run's snapshots."""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol_pytorch import FeatureExtractor, Normalize
from byol_pytorch.augment import to_float_images
from byol_pytorch.eval import (extract_features, fit_linear_probe, knn_accuracy,
                               linear_probe_accuracy)

from .budgets import CURVE_K


class Embedder(nn.Module):
    """(B, 3, H, W) float in [0, 1] -> (B, D): resize to ``size`` (antialiased, as the training
    views are resized crops), ImageNet-normalise (as every library does in training), then the
    backbone's ``avgpool`` output flattened."""

    def __init__(self, net: nn.Module, size: int | None = None) -> None:
        super().__init__()
        self.normalize = Normalize()  # ImageNet statistics
        self.features = FeatureExtractor(net, "avgpool")
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)
        return self.features(self.normalize(x))


def embed(net: nn.Module, images_u8: Tensor, labels: Tensor, device: str,
          size: int | None = None, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """(N, 3, H, W) uint8 -> raw (un-normalised) features (N, D) fp32 and labels (N,), on CPU."""
    model = Embedder(copy.deepcopy(net), size).to(device)
    loader = ((to_float_images(images_u8[i:i + batch_size]), labels[i:i + batch_size])
              for i in range(0, len(images_u8), batch_size))
    return extract_features(model, loader, device, normalize=False, progress=False)


def evaluate(net: nn.Module, images: Tensor, labels: Tensor, train_idx: np.ndarray,
             test_idx: np.ndarray, cfg: dict[str, Any], linear: bool = True) -> dict[str, Any]:
    """kNN top-1 (cosine, T=0.07, each k in ``cfg["knn_k"]``; bank: the training split) and,
    with ``linear``, linear-probe top-1 on the held-out split, at the budget's image size."""
    start = time.perf_counter()
    num_classes = int(labels.max()) + 1
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    size = cfg["image_size"]
    f_tr, y_tr = embed(net, images[tr], labels[tr], cfg["device"], size)
    f_te, y_te = embed(net, images[te], labels[te], cfg["device"], size)
    out: dict[str, Any] = {}
    knn = knn_accuracy(f_tr, y_tr, f_te, y_te, k=list(cfg["knn_k"]), temperature=0.07,
                       num_classes=num_classes)
    out.update({k: v for k, v in knn.items() if k.startswith("knn_top1")})
    if linear:
        # Linear probe on standardised features (statistics of the training split), which makes
        # one learning rate fit every model whatever its feature scale (as MoCo v3/MAE's BN
        # before the linear head); SGD (Nesterov) + cosine to 0, seeded per run.
        feature_std = f_tr.std(0)
        mean, std = f_tr.mean(0), feature_std.clamp_min(1e-6)
        probe = fit_linear_probe((f_tr - mean) / std, y_tr, num_classes=num_classes, lrs=0.1,
                                 epochs=cfg["probe_epochs"], batch_size=256, optimizer="sgd",
                                 weight_decay=5e-4, progress=False, seed=cfg["seed"])
        out["linear_top1"] = linear_probe_accuracy(probe, (f_te - mean) / std, y_te)["linear_top1"]
        out["feature_std"] = float(feature_std.mean())
    out["eval_wall_s"] = time.perf_counter() - start
    return out


def curve(snaps: list[tuple[dict[str, Any], dict[str, Tensor]]], make_net: Callable[[], nn.Module],
          images: Tensor, labels: Tensor, train_idx: np.ndarray, test_idx: np.ndarray,
          cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """kNN@CURVE_K of each snapshot: [{step, epoch, train_s, knn_top1@K}, ...]."""
    points = []
    kcfg = dict(cfg, knn_k=[CURVE_K])
    for meta, state in snaps:
        net = make_net()
        net.load_state_dict(state)
        acc = evaluate(net, images, labels, train_idx, test_idx, kcfg, linear=False)
        points.append(dict(step=meta["step"], epoch=meta["epoch"],
                           train_s=round(meta["train_s"], 2),
                           **{f"knn_top1@{CURVE_K}": acc[f"knn_top1@{CURVE_K}"]}))
    return points
