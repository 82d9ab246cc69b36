"""What is measured: the budgets, the model variants, a run's settings and its LR schedule."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from byol_pytorch.schedules import warmup_cosine

from .train import BACKBONES

CURVE_K = 20  # the kNN k of the accuracy-vs-time curves

BUDGETS: dict[str, dict[str, Any]] = {
    # A budget that shows learning in ~4 minutes per model with ONE thread of this 2-core AVX2
    # machine (each choice measured here: results/quality_cpu_tuning.md):
    # * backbone: ResNet-10 (one BasicBlock per stage), widths 16-32-64-128, 0.31M parameters:
    #   a BYOL step costs ~1/40 of ResNet-18's at 32 px, so a run sees ~30x more images; at
    #   16 px the same network reaches 54% kNN@20 when trained WITH labels for one minute, so
    #   capacity and resolution are not what limits BYOL here. Width 32 learned less per second;
    # * 16 px: the views are crops of the 32 px images resized to 16 (evaluation resizes the
    #   whole image to 16): a step costs ~1/3 of 32 px for the same kNN gain per second;
    # * batch 64, 36 epochs (2,268 steps): more updates per second than 128 at the same images/s;
    # * AdamW, LR 1e-3 (base_lr 0.004 per 256 images), warm-up 2 epochs then cosine, weight decay
    #   1e-4: steadier kNN than SGD (0.05-0.25) and than AdamW at 5e-4 or 2e-3-4e-3; and Adam is
    #   invariant to the loss's scale, which differs between the libraries (lightly: 1/4 of ours);
    # * tau 0.99 -> 1 (cosine); smaller heads (128-d output, 1024 hidden) than the paper's.
    "cpu": dict(backbone="resnet10-w16", image_size=16, epochs=36, batch_size=64,
                optimizer="adamw", base_lr=0.004, warmup_epochs=2, weight_decay=1e-4, tau=0.99,
                projection_size=128, projection_hidden_size=1024, predictor_lr_mult=1.0,
                device="cpu", precision="fp32", probe_epochs=100, seeds=[0, 1, 2],
                curve_points=10),
    # The former CPU budget. fp32: CPU bf16 autocast is only fast with native bf16 instructions
    # (AVX512-BF16 / AMX); on an AVX2-only CPU it measured 20x slower than fp32. ~5 s per step on
    # 2 AVX2 cores, so 10 epochs (310 steps) take ~25-50 min per model; kNN@20 moves only ~3
    # points off random init (results/quality_cpu_long.json).
    "cpu-long": dict(backbone="resnet18", image_size=None, epochs=10, batch_size=128,
                     optimizer="sgd", base_lr=0.06, warmup_epochs=0, weight_decay=5e-4, tau=0.99,
                     projection_size=256, projection_hidden_size=4096, predictor_lr_mult=1.0,
                     device="cpu", precision="fp32", probe_epochs=100, seeds=[0],
                     curve_points=0),
    # The usual CIFAR recipe length (solo-learn / lightly benchmarks run 200-1000 epochs).
    "gpu": dict(backbone="resnet18", image_size=None, epochs=200, batch_size=256,
                optimizer="sgd", base_lr=0.06, warmup_epochs=10, weight_decay=5e-4, tau=0.99,
                projection_size=256, projection_hidden_size=4096, predictor_lr_mult=1.0,
                device="cuda", precision="bf16", probe_epochs=100, seeds=[0, 1, 2],
                curve_points=10),
}
# The budget settings the command line may override (--max-steps: no budget sets it).
OVERRIDES = ("backbone", "image_size", "epochs", "batch_size", "optimizer", "base_lr",
             "warmup_epochs", "weight_decay", "tau", "projection_size", "projection_hidden_size",
             "device", "precision", "probe_epochs", "max_steps", "curve_points",
             "predictor_lr_mult")

# name -> (library, constructor keyword arguments, description). ``tau`` defaults to the
# budget's for ours and lightly; the peer keeps its own default (constant 0.99). ``views``:
# BYOLAugment arguments changed on both of the preset's views (``default_views(**views)``).
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    # The recipe's small-data preset (examples/pretrain.py --preset small): its augmentations;
    # the optimizer is the benchmark's, shared by every model.
    "ours": ("ours", dict(augment_preset="small"),
             "byol_pytorch.BYOL, augment_preset='small' (solo-learn's CIFAR views: crop scale "
             ">= 0.08, torchvision colour jitter, no blur, solarize 0/0.2; parameters per image), "
             "tau cosine from the budget's tau to 1, per-view BatchNorm statistics, loss "
             "(2 - 2cos) summed over both views"),
    "ours-crop0.2": ("ours", dict(augment_preset="small", views=dict(crop_scale=(0.2, 1.0))),
                     "as ours but crop scale >= 0.2"),
    "ours-crop0.4": ("ours", dict(augment_preset="small", views=dict(crop_scale=(0.4, 1.0))),
                     "as ours but crop scale >= 0.4 (the quickstart's)"),
    "ours-colour0.5": ("ours", dict(augment_preset="small",
                                    views=dict(jitter=(0.2, 0.2, 0.1, 0.05), grayscale_p=0.1)),
                       "as ours but half the colour jitter and grayscale p 0.1"),
    "ours-colour2": ("ours", dict(augment_preset="small",
                                  views=dict(jitter=(0.8, 0.8, 0.8, 0.2))),
                     "as ours but SimCLR's strength-1 colour jitter (0.8, 0.8, 0.8, 0.2)"),
    "ours-nocolour": ("ours", dict(augment_preset="small", views=dict(jitter_p=0.0,
                                                                      grayscale_p=0.0)),
                      "as ours but no colour jitter, no grayscale (crops, flips, solarize)"),
    "ours-tau0.996": ("ours", dict(augment_preset="small", moving_average_decay=0.996),
                      "as ours but tau 0.996 -> 1 (the ImageNet preset's tau)"),
    "ours-tau0.99": ("ours", dict(augment_preset="small", moving_average_decay=0.99,
                                  cosine_tau=False),
                     "as ours but constant tau = 0.99 (the peer's default)"),
    "ours-tau0.9": ("ours", dict(augment_preset="small", moving_average_decay=0.9,
                                 cosine_tau=False),
                    "as ours but constant tau = 0.9"),
    "ours-imagenet": ("ours", dict(augment_preset="imagenet"),
                      "as ours but augment_preset='imagenet' (official BYOL colour jitter, blur)"),
    "ours-joint": ("ours", dict(augment_preset="small", view_batching="joint"),
                   "as ours but view_batching='joint' (BatchNorm statistics over both views, as "
                   "the peer does)"),
    "peer": ("peer", dict(),
             "byol-pytorch 0.9.1 defaults: its augmentations (SimCLR-style, one random draw per "
             "BATCH), use_simplicial_embeddings=True, constant tau 0.99, views concatenated"),
    "peer-nosem": ("peer", dict(use_simplicial_embeddings=False),
                   "byol-pytorch 0.9.1 defaults but use_simplicial_embeddings=False (plain BYOL "
                   "heads)"),
    "lightly": ("lightly", dict(),
                "lightly's BYOL example assembled from its blocks: BYOLProjectionHead/"
                "BYOLPredictionHead, NegativeCosineSimilarity loss 0.5 * (L(p0, z1) + L(p1, z0)), "
                "update_momentum with cosine_schedule from the budget's tau to 1 (per step), "
                "BYOLView1/2Transform on PIL images per image with its CIFAR setting "
                "(gaussian_blur=0.0), one pass per view"),
}
RANDOM_NOTE = ("random initialisation (same seed, so the same weights, as every trained model of "
               "that seed), no training")


def make_config(budget: str, data_size: int, overrides: Mapping[str, Any] | None = None, *,
                seeds: Sequence[int] | None = None, threads: int = 1,
                knn_k: Sequence[int] = (20, 200), split_seed: int = 0) -> dict[str, Any]:
    """The budget's settings with ``overrides`` (None: the budget's value); ``image_size`` None
    -> ``data_size`` (the images' side). ValueError, naming the flag, for a bad setting."""
    if budget not in BUDGETS:
        raise ValueError(f"--budget must be one of {sorted(BUDGETS)}, got {budget!r}")
    cfg = dict(BUDGETS[budget])
    cfg["max_steps"] = None
    for key, value in (overrides or {}).items():
        if key not in OVERRIDES:
            raise ValueError(f"{key!r} is not a budget setting; choose from {OVERRIDES}")
        if value is not None:
            cfg[key] = value
    for key, allowed in (("precision", ("fp32", "bf16")), ("optimizer", ("sgd", "adamw")),
                         ("backbone", sorted(BACKBONES))):
        if cfg[key] not in allowed:
            raise ValueError(f"--{key} must be one of {list(allowed)}, got {cfg[key]!r}")
    if cfg["image_size"] is None:
        cfg["image_size"] = data_size
    cfg["seeds"] = list(seeds) if seeds else list(cfg["seeds"])
    cfg.update(threads=threads, knn_k=list(knn_k), split_seed=split_seed, budget=budget)
    return cfg


def lr_schedule(cfg: Mapping[str, Any], n_train: int) -> list[float]:
    """The LR of every optimizer step of a run on ``n_train`` images: ``base_lr * batch / 256``,
    linear warm-up over ``warmup_epochs``, then cosine to 0 (``warmup_cosine``); one entry per
    step: ``epochs`` x full batches, at most ``max_steps``."""
    steps_per_epoch = n_train // cfg["batch_size"]
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {cfg['batch_size']} exceeds the {n_train} training images")
    total = steps_per_epoch * cfg["epochs"]
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    warmup = min(cfg["warmup_epochs"] * steps_per_epoch, total)
    base = cfg["base_lr"] * cfg["batch_size"] / 256
    return [warmup_cosine(step, total, base, warmup) for step in range(total)]
