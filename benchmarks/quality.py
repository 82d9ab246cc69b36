"""Representation quality: BYOL (ours) vs byol-pytorch 0.9.1 vs a lightly reference vs random init.

Pretrains a CIFAR-stem ResNet on the mini CIFAR-10 set (5,085 train images) minus a fixed, seeded
held-out split of 1,000 images (``examples/data.py``'s ``split_indices``, as ``pretrain.py`` holds
out its validation images), then reports on the held-out split:

* weighted kNN top-1 (k = 20 and 200, temperature 0.07, cosine similarity; the bank is the
  4,085 un-augmented training images), and
* linear-probe top-1 (``nn.Linear`` on frozen, standardised features of the training images),

as the mean and standard deviation over ``--seeds`` (each seed: initial weights, data order and
augmentations; the split stays fixed, so every model is scored on the same 1,000 images and the
per-seed differences between models are paired). A kNN@20 curve against training time is taken
from backbone snapshots during pretraining (``--plot`` draws it).

Every model gets the same backbone, initial weights (same seed), data order, epochs, batch size,
optimizer, LR schedule (linear warm-up + cosine) and precision. What differs is the library: its
augmentations, heads, loss and EMA schedule, with each library's defaults except where a variant
or the budget says otherwise (see ``VARIANTS`` and ``BUDGETS``). Models:

* ``random``: the initial weights, untrained (the curve's t = 0 point of every trained model);
* ``ours``: ``byol_pytorch.BYOL`` (this repository, public API);
* ``peer``: byol-pytorch 0.9.1, trained in its own interpreter (``--peer-python``) from a worker
  entry point of this file run with ``python -I`` (isolated: no repo root, no PYTHONPATH on
  ``sys.path``); it saves the backbone's snapshots and all models are evaluated here;
* ``lightly``: a reference BYOL assembled from lightly's building blocks as in lightly's own
  example (``examples/pytorch/byol.py``): ``BYOLProjectionHead``, ``BYOLPredictionHead``,
  ``NegativeCosineSimilarity``, ``update_momentum``/``deactivate_requires_grad``,
  ``cosine_schedule`` and its ``BYOLView1Transform``/``BYOLView2Transform`` on PIL images.
  Skipped with a message when ``lightly`` is not installed.

Usage::

    # CPU budget: a 0.3M-parameter ResNet-10 at 16 px, 3 seeds: ~4 min per model (lightly ~6)
    # with one thread, ~45 min for random + ours + both peers (see BUDGETS["cpu"] for why)
    python benchmarks/quality.py --budget cpu --threads 1 \
        --models random ours peer lightly --peer-python /path/to/peer/venv/bin/python \
        --output benchmarks/results/quality_cpu.json --plot benchmarks/results/quality_cpu.png
    # the former CPU budget (ResNet-18, 32 px, 10 epochs, ~25-50 min per model on 2 cores)
    python benchmarks/quality.py --budget cpu-long ...
    # GPU budget (>= 200 epochs; needs CUDA)
    python benchmarks/quality.py --budget gpu --peer-python ... --output quality_gpu.json
    # re-print the table and redraw the plot of a finished run
    python benchmarks/quality.py --from-json benchmarks/results/quality_cpu.json --plot out.png

If the data file is absent the script prints ``SKIP`` and exits with status 0.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

# NOTE: this file is also run by the PEER's interpreter (``--peer-worker``), where the name
# ``byol_pytorch`` is byol-pytorch 0.9.1. Module-level imports are therefore limited to
# torch/torchvision/numpy/stdlib; our library (and lightly) are imported inside the functions
# that use them.

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/cifar10_mini_train.npz"  # relative to the repo root
CURVE_K = 20  # the kNN k of the accuracy-vs-time curves
# This file's source as the driver imported it: the peer worker runs this copy, so a run that
# lasts an hour is not broken by an edit (or a checkout) of the file in the meantime.
_SOURCE = Path(__file__).read_text()

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
    "ours-crop0.2": ("ours", dict(augment_preset="small", crop_scale=(0.2, 1.0)),
                     "as ours but crop scale >= 0.2"),
    "ours-crop0.4": ("ours", dict(augment_preset="small", crop_scale=(0.4, 1.0)),
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


# ------------------------------------------------------------------------------------ data
def resolve_data_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists, else relative to the repo root (how the default is meant)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return (REPO_ROOT / p).resolve()


# ------------------------------------------------------------------------------- backbones
def cifar_resnet18() -> nn.Module:
    """torchvision resnet18 (random init) with the CIFAR stem, in plain torchvision.

    Same construction order as ``byol_pytorch.create_backbone("resnet18", cifar_stem=True)``, so
    under the same seed both give identical weights (checked and recorded as ``same_init``). The
    peer worker uses this one since our library cannot be imported there.
    """
    net = torchvision.models.resnet18(weights=None)
    conv1 = net.conv1
    net.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


class SmallResNet(nn.Module):
    """A CIFAR-stem ResNet of torchvision ``BasicBlock``s with chosen widths and depths.

    Same module names as torchvision's ResNet (``conv1``, ``bn1``, ``layer1``..``layer4``,
    ``avgpool``, ``fc``), so ``hidden_layer="avgpool"`` works for every library, and the same
    initialisation (Kaiming-normal fan-out convolutions, BatchNorm 1/0). Plain torch: the peer's
    interpreter builds it too.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128),
                 blocks: tuple[int, ...] = (1, 1, 1, 1), num_classes: int = 10) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock, conv1x1

        if len(widths) != 4 or len(blocks) != 4:
            raise ValueError(f"need 4 stages, got widths {widths} and blocks {blocks}")
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        inplanes = widths[0]
        for stage, (width, depth) in enumerate(zip(widths, blocks)):
            stride = 1 if stage == 0 else 2
            layers = []
            for i in range(depth):
                down = None
                if i == 0 and (stride != 1 or inplanes != width):
                    down = nn.Sequential(conv1x1(inplanes, width, stride), nn.BatchNorm2d(width))
                layers.append(BasicBlock(inplanes, width, stride if i == 0 else 1, down))
                inplanes = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# name -> constructor (random init under the caller's seed); every library uses these.
BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": cifar_resnet18,
    "resnet10-w16": lambda: SmallResNet((16, 32, 64, 128), (1, 1, 1, 1)),
    "resnet10-w32": lambda: SmallResNet((32, 64, 128, 256), (1, 1, 1, 1)),
}
BACKBONE_DESCRIPTIONS = {
    "resnet18": "torchvision resnet18, CIFAR stem (3x3 s1 conv1, no maxpool), avgpool (512-d)",
    "resnet10-w16": "ResNet-10 (1 BasicBlock per stage, widths 16-32-64-128, 0.31M parameters), "
                    "CIFAR stem, avgpool (128-d)",
    "resnet10-w32": "ResNet-10 (1 BasicBlock per stage, widths 32-64-128-256, 1.2M parameters), "
                    "CIFAR stem, avgpool (256-d)",
}


def state_checksum(state: dict[str, Tensor]) -> str:
    """sha256 over the names and bytes of a state_dict's tensors (to compare initial weights)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if isinstance(t, Tensor):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def seed_everything(seed: int) -> None:
    """torch, numpy's and Python's global generators (lightly's transforms draw from all three)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------------------- training
def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 0.

    Identical to ``byol_pytorch.schedules.warmup_cosine`` (checked in the tests); written out here
    because the peer worker cannot import our library.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    decay = total - warmup
    if decay <= 0:
        return base
    progress = min(step - warmup, decay) / decay
    return base * (math.cos(math.pi * progress) + 1) / 2


def snapshot_steps(total: int, points: int) -> list[int]:
    """The optimizer steps after which a curve snapshot is taken: 0 (the initial weights), then
    ``points`` steps spread evenly up to ``total`` (always included). Empty if ``points`` is 0."""
    if points <= 0 or total <= 0:
        return []
    return sorted({0, *(round(total * i / points) for i in range(1, points + 1))})


def make_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], cfg: dict[str, Any],
                   lr: float) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or AdamW, weight decay ``cfg["weight_decay"]`` on every parameter."""
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg["weight_decay"])
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg['optimizer']!r}")


def pretrain(
    learner: nn.Module,
    train_u8: Tensor,
    cfg: dict[str, Any],
    *,
    update_ema: Callable[[], None],
    tau_fn: Callable[[], float | None] = lambda: None,
    std_fn: Callable[[], float | None] = lambda: None,
    snapshot: Callable[[dict[str, Any]], None] | None = None,
    tag: str = "",
    step_log: Path | None = None,
) -> dict[str, Any]:
    """The training loop shared by every library (ours runs it here, the peer in its worker).

    Data order comes from a generator seeded with ``cfg["seed"]`` (identical for all models); the
    optimizer is ``cfg["optimizer"]`` (weight decay on all trainable parameters), the learning
    rate ``base_lr * batch / 256`` with warm-up + cosine per step (times
    ``cfg["predictor_lr_mult"]`` for the predictor); the forward runs under bf16 autocast when
    ``cfg["precision"] == "bf16"``. ``update_ema`` is called after each optimizer step.
    ``snapshot(meta)`` is called at the steps of :func:`snapshot_steps` (meta: step, epoch,
    training seconds so far); the time it takes is not counted as training time. Optionally writes
    a per-step JSONL log (step, epoch, loss, lr, tau, projection_std).

    Returns:
        wall time (snapshots excluded), steps, the mean loss per epoch and the last step's loss.
    """
    device = torch.device(cfg["device"])
    n, bsz = train_u8.shape[0], cfg["batch_size"]
    steps_per_epoch = n // bsz
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {bsz} exceeds the {n} training images")
    total = steps_per_epoch * cfg["epochs"]
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    base_lr = cfg["base_lr"] * bsz / 256
    warmup = min(cfg["warmup_epochs"] * steps_per_epoch, total)
    # The predictor may learn faster than the rest (SimSiam/DirectPred): parameter names of
    # ours and the peer ("online_predictor") and of the lightly reference ("prediction_head").
    mult = float(cfg.get("predictor_lr_mult", 1.0))
    pred, rest = [], []
    for name, p in learner.named_parameters():
        if p.requires_grad:
            (pred if ("online_predictor" in name or "prediction_head" in name) else rest).append(p)
    groups = [dict(params=rest, lr_mult=1.0)] + ([dict(params=pred, lr_mult=mult)] if pred else [])
    opt = make_optimizer(groups, cfg, base_lr)
    gen = torch.Generator().manual_seed(cfg["seed"])
    data = train_u8.to(device)
    use_amp = cfg["precision"] == "bf16"
    snap_at = set(snapshot_steps(total, cfg.get("curve_points", 0))) if snapshot else set()
    learner.train()
    epoch_losses: list[float] = []
    log_f = open(step_log, "w") if step_log is not None else None
    step, loss_val, epoch = 0, float("nan"), 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    paused = 0.0  # seconds spent in snapshots, taken off the training time

    def take_snapshot() -> None:
        nonlocal paused
        sync()
        t0 = time.perf_counter()
        snapshot(dict(step=step, epoch=epoch,
                      train_s=t0 - start - paused))  # type: ignore[misc]
        paused += time.perf_counter() - t0

    sync()
    start, cpu_start, load_start = time.perf_counter(), time.process_time(), _loadavg()
    try:
        if 0 in snap_at:
            take_snapshot()
        for epoch in range(cfg["epochs"]):
            perm = torch.randperm(n, generator=gen).to(device)
            running, count = torch.zeros((), device=device), 0
            for i in range(steps_per_epoch):
                if step >= total:
                    break
                lr = lr_at(step, total, base_lr, warmup)
                for g in opt.param_groups:
                    g["lr"] = lr * g["lr_mult"]
                x = data[perm[i * bsz:(i + 1) * bsz]].float().div_(255)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = learner(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tau = tau_fn()
                update_ema()
                running += loss.detach().float()
                count += 1
                step += 1
                if log_f is not None or step % 10 == 0 or step == total:
                    loss_val = float(loss.detach())  # a device sync: only every 10 steps
                    if not math.isfinite(loss_val):
                        raise FloatingPointError(f"[{tag}] loss is {loss_val} at step {step}; "
                                                 "lower --base-lr")
                if log_f is not None:
                    std = std_fn()
                    log_f.write(json.dumps(dict(step=step, epoch=epoch, loss=loss_val, lr=lr,
                                                tau=tau, projection_std=std)) + "\n")
                if step % 50 == 0 or step == total:
                    print(f"[{tag}] epoch {epoch + 1}/{cfg['epochs']} step {step}/{total} "
                          f"loss {loss_val:.4f} lr {lr:.4g} "
                          f"{time.perf_counter() - start - paused:.0f}s", flush=True)
                if step in snap_at:
                    take_snapshot()
            if count:
                epoch_losses.append(float(running) / count)
            if step >= total:
                break
    finally:
        if log_f is not None:
            log_f.close()
    sync()
    # Process CPU time (all threads) is reported next to wall time: on a shared machine the
    # wall time also counts other people's jobs; the 1-minute load averages show how busy it was.
    return dict(pretrain_wall_s=time.perf_counter() - start - paused,
                pretrain_cpu_s=time.process_time() - cpu_start,
                loadavg_1min=[load_start, _loadavg()], steps=step,
                epoch_mean_loss=epoch_losses, final_loss=loss_val)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


class LightlyBYOL(nn.Module):
    """BYOL assembled from lightly's building blocks, as lightly's ``examples/pytorch/byol.py``.

    ``loss = learner(x)`` on (B, 3, H, W) images in [0, 1] (exact uint8 / 255): each image goes
    through lightly's two view transforms as a PIL image (what its data loaders do), both views
    run through the online and the momentum networks one view at a time, and the loss is
    ``0.5 * (NegativeCosineSimilarity(p0, z1) + NegativeCosineSimilarity(p1, z0))``.
    ``update_ema()`` moves the momentum networks with ``update_momentum`` at
    ``cosine_schedule(step, total_steps, tau, 1)``. The backbone ``net`` is trained in place
    (the online backbone is ``nn.Sequential(*children[:-1])`` of it, sharing its modules).
    """

    def __init__(self, net: nn.Module, image_size: int, projection_size: int,
                 projection_hidden_size: int, tau: float, total_steps: int) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

        # lightly's idiom: the backbone is the network without its classifier (ends at avgpool)
        self.backbone = nn.Sequential(*list(net.children())[:-1])
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            dim = self.backbone(torch.zeros(2, 3, image_size, image_size)).flatten(1).shape[1]
            self.backbone.train(was_training)
        self.projection_head = BYOLProjectionHead(dim, projection_hidden_size, projection_size)
        self.prediction_head = BYOLPredictionHead(projection_size, projection_hidden_size,
                                                  projection_size)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        # lightly's CIFAR example: its BYOL views at the image size with the blur off
        self.view1 = BYOLView1Transform(input_size=image_size, gaussian_blur=0.0)
        self.view2 = BYOLView2Transform(input_size=image_size, gaussian_blur=0.0)
        self.tau, self.total_steps, self.step = tau, total_steps, 0

    def momentum(self) -> float:
        from lightly.utils.scheduler import cosine_schedule

        return cosine_schedule(min(self.step, self.total_steps), self.total_steps, self.tau, 1.0)

    def views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        from PIL import Image

        u8 = x.detach().mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        pil = [Image.fromarray(img) for img in u8]
        v0 = torch.stack([self.view1(p) for p in pil]).to(x.device)
        v1 = torch.stack([self.view2(p) for p in pil]).to(x.device)
        return v0, v1

    def online(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(1)))

    @torch.no_grad()
    def target(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(1)).detach()

    def forward(self, x: Tensor) -> Tensor:
        x0, x1 = self.views(x)
        p0, z0 = self.online(x0), self.target(x0)
        p1, z1 = self.online(x1), self.target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def update_ema(self) -> None:
        from lightly.models.utils import update_momentum

        m = self.momentum()
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        self.step += 1


def lightly_available() -> bool:
    """Whether ``lightly`` (with the building blocks used here) can be imported."""
    try:
        import lightly.loss  # noqa: F401
        import lightly.models.modules  # noqa: F401
        import lightly.transforms.byol_transform  # noqa: F401
    except ImportError:
        return False
    return True


def build_learner(library: str, kwargs: dict[str, Any], net: nn.Module, cfg: dict[str, Any],
                  total_steps: int) -> tuple[nn.Module, dict[str, Callable]]:
    """A BYOL learner of ``library`` ("ours", "peer" or "lightly") around ``net`` and its loop
    callbacks. Runs in whichever interpreter has that library as ``byol_pytorch``."""
    kwargs = dict(kwargs)
    if library == "lightly":
        net.to(cfg["device"])
        learner = LightlyBYOL(net, cfg["image_size"], cfg["projection_size"],
                              cfg["projection_hidden_size"], kwargs.pop("tau", cfg["tau"]),
                              total_steps).to(cfg["device"])
        return learner, dict(update_ema=learner.update_ema, tau_fn=learner.momentum)

    import byol_pytorch

    common = dict(image_size=cfg["image_size"], hidden_layer="avgpool",
                  projection_size=cfg["projection_size"],
                  projection_hidden_size=cfg["projection_hidden_size"])
    if library == "ours":
        cosine = kwargs.pop("cosine_tau", True)
        kwargs.setdefault("moving_average_decay", cfg["tau"])
        views = dict(kwargs.pop("views", {}))
        if "crop_scale" in kwargs:
            views["crop_scale"] = kwargs.pop("crop_scale")
        if views:  # the preset's two views with some BYOLAugment arguments changed
            kwargs["augment_fn"], kwargs["augment_fn2"] = byol_pytorch.default_views(
                cfg["image_size"], kwargs.pop("augment_preset"), **views)
        learner = byol_pytorch.BYOL(net, **common, **kwargs,
                                    total_steps=total_steps if cosine else None)
        learner.to(cfg["device"])

        def std() -> float | None:
            s = learner.last_projection_std
            return None if s is None else float(s)

        return learner, dict(update_ema=learner.update_moving_average,
                             tau_fn=lambda: learner.tau, std_fn=std)
    net.to(cfg["device"])  # the peer's constructor runs a forward on the backbone's device
    learner = byol_pytorch.BYOL(net, **common, **kwargs)
    beta = learner.target_ema_updater.beta
    return learner, dict(update_ema=learner.update_moving_average, tau_fn=lambda: beta)


def steps_for(n_train: int, cfg: dict[str, Any]) -> int:
    total = (n_train // cfg["batch_size"]) * cfg["epochs"]
    return min(total, cfg["max_steps"]) if cfg.get("max_steps") else total


def train_model(library: str, kwargs: dict[str, Any], train_u8: Tensor, cfg: dict[str, Any],
                make_net: Callable[[], nn.Module], tag: str, step_log: Path | None = None,
                on_snapshot: Callable[[dict[str, Any], dict[str, Tensor]], None] | None = None,
                ) -> tuple[nn.Module, dict[str, Any]]:
    """Seed, build the backbone and learner, pretrain; returns the backbone and the run record.

    ``on_snapshot(meta, state)`` receives CPU copies of the backbone's state_dict for the curve.
    """
    seed_everything(cfg["seed"])
    net = make_net()
    init = state_checksum(net.state_dict())
    learner, hooks = build_learner(library, kwargs, net, cfg, steps_for(len(train_u8), cfg))
    snapshot = None
    if on_snapshot is not None:
        def snapshot(meta: dict[str, Any]) -> None:
            on_snapshot(meta, {k: v.detach().to("cpu", copy=True)
                               for k, v in net.state_dict().items()})
    record = pretrain(learner, train_u8, cfg, tag=tag, step_log=step_log, snapshot=snapshot,
                      **hooks)
    record["init_checksum"] = init
    return net.cpu(), record


# ------------------------------------------------------------------------------ peer side
def peer_worker(config_path: str) -> None:
    """Entry point run by the peer's interpreter: train with byol-pytorch 0.9.1, save the backbone
    and its curve snapshots."""
    from importlib import metadata

    import byol_pytorch

    here = Path(config_path).parent
    job = json.loads(Path(config_path).read_text())
    cfg, repo = job["cfg"], Path(job["repo_root"]).resolve()
    where = Path(byol_pytorch.__file__).resolve()
    if repo in where.parents:
        raise SystemExit(f"peer worker imported OUR byol_pytorch ({where}); refusing to run")
    if any(p and Path(p).resolve() == repo for p in sys.path):
        raise SystemExit(f"peer worker has the repo root on sys.path: {sys.path}")
    torch.set_num_threads(cfg["threads"])
    train_u8 = torch.load(here / "train_u8.pt", weights_only=True)
    snaps: list[dict[str, Any]] = []

    def save(meta: dict[str, Any], state: dict[str, Tensor]) -> None:
        meta = dict(meta, file=f"snap_{len(snaps)}.pt")
        torch.save(state, here / meta["file"])
        snaps.append(meta)

    net, record = train_model("peer", job["kwargs"], train_u8, cfg, BACKBONES[cfg["backbone"]],
                              f"{job['name']} seed {cfg['seed']}", on_snapshot=save)
    torch.save(net.state_dict(), here / "backbone.pt")
    record.update(library_version=metadata.version("byol-pytorch"), library_file=str(where),
                  torch=torch.__version__, torchvision=torchvision.__version__,
                  python=platform.python_version(), snapshots=snaps)
    (here / "record.json").write_text(json.dumps(record))


def run_peer(peer_python: str, name: str, kwargs: dict[str, Any], train_u8: Tensor,
             cfg: dict[str, Any]
             ) -> tuple[nn.Module, dict[str, Any], list[tuple[dict[str, Any], dict[str, Tensor]]]]:
    """Train a peer model in a subprocess of ``peer_python``; its backbone, record, snapshots."""
    with tempfile.TemporaryDirectory(prefix="byol_peer_") as tmp:
        job = dict(cfg=cfg, kwargs=kwargs, name=name, repo_root=str(REPO_ROOT))
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        torch.save(train_u8, Path(tmp) / "train_u8.pt")  # the peer cannot import examples/data
        # the worker runs the code this driver runs (see _SOURCE), from outside the repo
        script = Path(tmp) / "quality_worker.py"
        script.write_text(_SOURCE)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        # -I: isolated mode, so neither the cwd nor PYTHONPATH lands on sys.path (the script's
        # folder, the temp dir, does); cwd is the temp dir (outside the repo) as a second guard.
        cmd = [peer_python, "-I", str(script), "--peer-worker", str(Path(tmp) / "job.json")]
        sys.stdout.flush()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"peer worker failed with status {proc.returncode}: {cmd}")
        record = json.loads((Path(tmp) / "record.json").read_text())
        record["subprocess_wall_s"] = time.perf_counter() - start
        net = BACKBONES[cfg["backbone"]]()
        net.load_state_dict(torch.load(Path(tmp) / "backbone.pt", weights_only=True))
        snaps = [(meta, torch.load(Path(tmp) / meta.pop("file"), weights_only=True))
                 for meta in record.pop("snapshots")]
    return net, record, snaps


# ------------------------------------------------------------------------------ evaluation
class Embedder(nn.Module):
    """Resize [0, 1] images to ``size`` (antialiased, as the training views are resized crops),
    ImageNet-normalise (as every library does in training), then the backbone's ``avgpool``
    output flattened to (B, D)."""

    def __init__(self, net: nn.Module, size: int | None = None) -> None:
        super().__init__()
        from byol_pytorch import FeatureExtractor, Normalize

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
    """Raw (un-normalised) (N, D) features and labels, on CPU, in fp32."""
    from byol_pytorch.eval import extract_features

    model = Embedder(copy.deepcopy(net), size).to(device)
    loader = ((images_u8[i:i + batch_size].float() / 255, labels[i:i + batch_size])
              for i in range(0, len(images_u8), batch_size))
    return extract_features(model, loader, device, normalize=False, progress=False)


def evaluate(net: nn.Module, images: Tensor, labels: Tensor, train_idx: np.ndarray,
             test_idx: np.ndarray, cfg: dict[str, Any], linear: bool = True) -> dict[str, Any]:
    """kNN (cosine, T=0.07, each k in cfg["knn_k"]) and, with ``linear``, linear-probe top-1 on
    the held-out split, at the budget's image size."""
    from byol_pytorch.eval import knn_accuracy, linear_probe_accuracy

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
        # before the linear head); SGD + cosine, as byol_pytorch.eval.train_linear_probe does.
        feature_std = f_tr.std(0)
        mean, std = f_tr.mean(0), feature_std.clamp_min(1e-6)
        lin = linear_probe_accuracy((f_tr - mean) / std, y_tr, (f_te - mean) / std, y_te,
                                    num_classes, epochs=cfg["probe_epochs"], lr=0.1,
                                    weight_decay=5e-4, batch_size=256, optimizer="sgd",
                                    progress=False, seed=cfg["seed"])
        out["linear_top1"] = lin["linear_top1"]
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


# ------------------------------------------------------------------------------ reporting
def hardware_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = dict(cpu=cpu, cpu_count=os.cpu_count(),
                                torch_threads=torch.get_num_threads(),
                                platform=platform.platform(), python=platform.python_version(),
                                torch=torch.__version__, torchvision=torchvision.__version__)
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


def metric_keys(ks: list[int]) -> list[str]:
    return [f"knn_top1@{k}" for k in ks] + ["linear_top1"]


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max and the values."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return dict(mean=float(arr.mean()), std=std, min=float(arr.min()), max=float(arr.max()),
                n=len(arr), values=[float(v) for v in arr])


def summarize(runs: dict[str, list[dict[str, Any]]], ks: list[int]) -> dict[str, Any]:
    """Per model: mean/std over seeds of each metric and of the pretraining wall time; per trained
    model, the per-seed (paired: same seed, same init) differences to ``random`` and to ``ours``."""
    out: dict[str, Any] = {}
    by_seed = {name: {r["seed"]: r for r in recs if "skipped" not in r}
               for name, recs in runs.items()}
    for name, recs in runs.items():
        done = [r for r in recs if "skipped" not in r]
        if not done:
            out[name] = dict(skipped=recs[0]["skipped"] if recs else "no run")
            continue
        s: dict[str, Any] = {m: mean_std([r[m] for r in done]) for m in metric_keys(ks)}
        s["seeds"] = [r["seed"] for r in done]
        s["steps"] = done[0].get("steps", 0)
        walls = [r["pretrain_wall_s"] for r in done if "pretrain_wall_s" in r]
        if walls:
            s["pretrain_wall_s"] = mean_std(walls)
        for ref in ("random", "ours"):
            if ref == name or ref not in by_seed:
                continue
            pairs = [(by_seed[name][sd], by_seed[ref][sd]) for sd in by_seed[name]
                     if sd in by_seed[ref]]
            if pairs:
                s[f"minus_{ref}"] = {m: mean_std([a[m] - b[m] for a, b in pairs])
                                     for m in metric_keys(ks)}
        out[name] = s
    return out


def _fmt(s: dict[str, Any], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{s['mean']:{sign}.1f} ± {s['std']:.1f}" if s["n"] > 1 else f"{s['mean']:{sign}.1f}"


def markdown_table(summary: dict[str, Any], ks: list[int]) -> str:
    """Mean ± seed std of each metric, the paired kNN@ks[0] gain over random init, wall time."""
    k0 = ks[0]
    cols = ([f"kNN@{k}" for k in ks] + ["linear", f"kNN@{k0} - random", "pretrain (s)", "steps",
                                        "seeds"])
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, s in summary.items():
        if "skipped" in s:
            lines.append(f"| {name} | skipped: {s['skipped']} |" + " |" * (len(cols) - 1))
            continue
        gain = s.get("minus_random", {}).get(f"knn_top1@{k0}")
        wall = s.get("pretrain_wall_s")
        vals = [_fmt(s[m]) for m in metric_keys(ks)] + [
            "-" if gain is None else _fmt(gain, signed=True),
            "-" if wall is None else f"{wall['mean']:.0f}",
            str(s["steps"]), str(len(s["seeds"]))]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def verdict(summary: dict[str, Any], ks: list[int]) -> list[str]:
    """Plain-language comparisons: ours vs random and ours vs each other trained model, each with
    the paired difference's seed spread."""
    key = f"knn_top1@{ks[0]}"
    lines = []
    ours = summary.get("ours", {})
    if "minus_random" in ours:
        d = ours["minus_random"][key]
        lines.append(f"ours - random, kNN@{ks[0]}: {_fmt(d, True)} points (paired over seeds; "
                     f"target >= +10): {'MET' if d['mean'] >= 10 else 'NOT MET'}")
    for name, s in summary.items():
        if name in ("ours", "random") or "skipped" in s or "minus_ours" not in s:
            continue
        d = s["minus_ours"][key]
        diff = -d["mean"]
        spread = max(d["std"], ours.get(key, {}).get("std", 0.0), s[key]["std"])
        state = ("ours ahead by more than the seed spread" if diff > spread else
                 f"{name} ahead by more than the seed spread" if -diff > spread else
                 "within the seed spread")
        lines.append(f"ours - {name}, kNN@{ks[0]}: {diff:+.1f} points (largest seed std "
                     f"{spread:.1f}): {state}")
    return lines


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """kNN@CURVE_K against pretraining time, one line per trained model (mean over seeds at each
    snapshot, shaded between the seeds' min and max), random init as a dashed band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"knn_top1@{CURVE_K}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"ours": "tab:blue", "peer": "tab:red", "lightly": "tab:green"}
    for name, recs in result["runs"].items():
        curves = [r["curve"] for r in recs if r.get("curve")]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        t = np.mean([[p["train_s"] for p in c[:n]] for c in curves], axis=0) / 60
        acc = np.array([[p[key] for p in c[:n]] for c in curves])
        colour = colours.get(name)
        ax.plot(t, acc.mean(0), marker="o", ms=3, label=f"{name} ({len(curves)} seeds)",
                color=colour)
        if len(curves) > 1:
            ax.fill_between(t, acc.min(0), acc.max(0), alpha=0.2, color=colour)
    rnd = result.get("summary", {}).get("random", {})
    if key in rnd:
        ax.axhline(rnd[key]["mean"], ls="--", color="gray", label="random init")
        ax.axhspan(rnd[key]["min"], rnd[key]["max"], color="gray", alpha=0.15)
    cfg = result["config"]
    ax.set_xlabel(f"pretraining time (min, {result['hardware']['torch_threads']} thread(s), "
                  f"{result['hardware']['cpu']})")
    ax.set_ylabel(f"held-out kNN@{CURVE_K} top-1 (%)")
    ax.set_title(f"budget {cfg['budget']}: {cfg['backbone']}, {cfg['image_size']} px, "
                 f"{cfg['epochs']} epochs, batch {cfg['batch_size']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="npz with train_images (N,3,H,W) uint8 and train_labels; relative paths "
                        "that do not exist from the cwd are taken from the repo root")
    p.add_argument("--models", nargs="+", default=["random", "ours", "peer", "lightly"],
                   help=f"any of: random {' '.join(VARIANTS)}")
    p.add_argument("--peer-python", default=None,
                   help="interpreter with byol-pytorch 0.9.1 installed; peer models are skipped "
                        "without it")
    p.add_argument("--output", type=Path, default=None, help="JSON results file")
    p.add_argument("--plot", type=Path, default=None,
                   help="PNG of kNN@20 against pretraining time (needs matplotlib)")
    p.add_argument("--from-json", type=Path, default=None,
                   help="no training: re-print the table (and --plot) of this results file")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="write a per-step JSONL log per trained model of ours here")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (init, data order, augmentation); default: the budget's")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--knn-k", type=int, nargs="+", default=[20, 200])
    # Overrides of the budget's settings.
    for name, typ in (("backbone", str), ("image-size", int), ("epochs", int),
                      ("batch-size", int), ("optimizer", str), ("base-lr", float),
                      ("warmup-epochs", int), ("weight-decay", float), ("tau", float),
                      ("projection-size", int), ("projection-hidden-size", int),
                      ("device", str), ("precision", str), ("probe-epochs", int),
                      ("max-steps", int), ("curve-points", int), ("predictor-lr-mult", float)):
        p.add_argument(f"--{name}", type=typ, default=None, help="overrides the budget's value")
    p.add_argument("--peer-worker", default=None, help=argparse.SUPPRESS)
    return p


OVERRIDES = ("backbone", "image_size", "epochs", "batch_size", "optimizer", "base_lr",
             "warmup_epochs", "weight_decay", "tau", "projection_size", "projection_hidden_size",
             "device", "precision", "probe_epochs", "max_steps", "curve_points",
             "predictor_lr_mult")


def make_config(args: argparse.Namespace, data_size: int) -> dict[str, Any]:
    """The budget's settings with the command line's overrides; ``image_size`` None -> the data's."""
    cfg = dict(BUDGETS[args.budget])
    cfg["max_steps"] = None
    for key in OVERRIDES:
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if cfg["precision"] not in ("fp32", "bf16"):
        raise SystemExit(f"--precision must be fp32 or bf16, got {cfg['precision']!r}")
    if cfg["optimizer"] not in ("sgd", "adamw"):
        raise SystemExit(f"--optimizer must be sgd or adamw, got {cfg['optimizer']!r}")
    if cfg["backbone"] not in BACKBONES:
        raise SystemExit(f"--backbone must be one of {sorted(BACKBONES)}, got {cfg['backbone']!r}")
    if cfg["image_size"] is None:
        cfg["image_size"] = data_size
    cfg["seeds"] = list(args.seeds) if args.seeds else list(cfg["seeds"])
    cfg.update(threads=args.threads, knn_k=list(args.knn_k), split_seed=args.split_seed,
               budget=args.budget)
    return cfg


def report(result: dict[str, Any], models: list[str], plot: Path | None) -> None:
    """Print the table, the verdict lines and the notes; draw the plot if asked."""
    print()
    print(result["table"])
    print()
    for line in result.get("verdict", []):
        print(line)
    for name in models:
        print(f"- {name}: {result['notes'].get(name, '')}")
    if plot is not None:
        plot_curves(result, plot)
        print(f"plot: {plot}")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = get_args_parser().parse_args(argv)
    if args.peer_worker:
        peer_worker(args.peer_worker)
        return None
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        report(result, list(result["runs"]), args.plot)
        return result
    unknown = [m for m in args.models if m != "random" and m not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from random {' '.join(VARIANTS)}")
    data = resolve_data_path(args.data)
    if not data.exists():
        print(f"SKIP: data file {data} not found (pass --data)")
        return None
    torch.set_num_threads(args.threads)
    import byol_pytorch
    from byol_pytorch import create_backbone

    sys.path.insert(0, str(REPO_ROOT / "examples"))
    from data import load_npz, split_indices  # examples/data.py, as pretrain.py splits

    images, labels = load_npz(data)
    if labels is None:
        raise SystemExit(f"{data} has no train_labels: the evaluation needs labels")
    cfg = make_config(args, data_size=images.shape[-1])
    if cfg["device"].startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--budget gpu / --device cuda needs a CUDA device; none is available")
    if not 0 < args.n_test < len(images):
        raise SystemExit(f"--n-test must lie in (0, {len(images)}), got {args.n_test}")
    train_list, test_list = split_indices(len(images), args.n_test / len(images), args.split_seed)
    train_idx, test_idx = np.asarray(train_list), np.asarray(test_list)
    train_u8 = images[torch.from_numpy(train_idx)]
    if cfg["backbone"] == "resnet18":
        # ours builds it with the library's own constructor; the same weights as the peer's
        # plain-torchvision copy under the same seed (recorded as same_init)
        make_ours: Callable[[], nn.Module] = lambda: create_backbone(  # noqa: E731
            "resnet18", cifar_stem=True)
    else:
        make_ours = BACKBONES[cfg["backbone"]]
    make_plain = BACKBONES[cfg["backbone"]]
    torch.manual_seed(cfg["seeds"][0])
    init_ours = state_checksum(make_ours().state_dict())
    torch.manual_seed(cfg["seeds"][0])
    same_init = init_ours == state_checksum(make_plain().state_dict())
    has_lightly = lightly_available()
    versions: dict[str, Any] = dict(ours=byol_pytorch.__version__)
    if has_lightly:
        from importlib import metadata

        versions["lightly"] = metadata.version("lightly")
    result: dict[str, Any] = dict(
        config=cfg, hardware=hardware_info(cfg["device"]), versions=versions,
        data=dict(path=str(data), n_total=len(images), n_train=len(train_idx),
                  n_test=len(test_idx), source_size=int(images.shape[-1]),
                  image_size=cfg["image_size"],
                  test_idx_sha=hashlib.sha256(test_idx.tobytes()).hexdigest()[:16]),
        backbone=BACKBONE_DESCRIPTIONS[cfg["backbone"]], same_init=same_init,
        runs={name: [] for name in args.models}, notes={})
    print(f"data {data}: {len(train_idx)} train / {len(test_idx)} held-out, "
          f"{images.shape[-1]}px -> {cfg['image_size']}px; budget {args.budget}: {cfg}",
          flush=True)
    print(f"hardware: {result['hardware']}", flush=True)
    run_start = time.perf_counter()

    def finish() -> None:
        result["summary"] = summarize(result["runs"], cfg["knn_k"])
        result["table"] = markdown_table(result["summary"], cfg["knn_k"])
        result["verdict"] = verdict(result["summary"], cfg["knn_k"])
        result["total_wall_s"] = time.perf_counter() - run_start
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=1) + "\n")

    # Seeds outermost: an interrupted run still holds every model for the first seeds.
    for seed in cfg["seeds"]:
        scfg = dict(cfg, seed=seed)
        for name in args.models:
            t0 = time.perf_counter()
            snaps: list[tuple[dict[str, Any], dict[str, Tensor]]] = []
            tag = f"{name} seed {seed}"
            if name == "random":
                seed_everything(seed)
                net = make_ours()
                record: dict[str, Any] = dict(init_checksum=state_checksum(net.state_dict()),
                                              steps=0)
                result["notes"][name] = ("random initialisation (same seed, so the same weights, "
                                         "as every trained model of that seed), no training")
            else:
                library, kwargs, desc = VARIANTS[name]
                result["notes"][name] = desc
                skip = None
                if library == "peer" and not args.peer_python:
                    skip = "no --peer-python given"
                elif library == "lightly" and not has_lightly:
                    skip = "lightly is not installed (pip install lightly)"
                if skip:
                    print(f"[{name}] skipped: {skip}", flush=True)
                    result["runs"][name].append(dict(seed=seed, skipped=skip))
                    continue
                if library == "peer":
                    net, record, snaps = run_peer(args.peer_python, name, kwargs, train_u8,
                                                  scfg)
                    result["versions"]["peer"] = record.get("library_version")
                else:
                    log = None
                    if args.log_dir is not None:
                        args.log_dir.mkdir(parents=True, exist_ok=True)
                        log = args.log_dir / f"{name}_seed{seed}_steps.jsonl"
                    net, record = train_model(
                        library, kwargs, train_u8, scfg,
                        make_ours if library == "ours" else make_plain, tag, log,
                        on_snapshot=lambda meta, state: snaps.append((meta, state)))
            record["seed"] = seed
            record.update(evaluate(net, images, labels, train_idx, test_idx, scfg))
            if snaps:
                record["curve"] = curve(snaps, make_plain, images, labels, train_idx, test_idx,
                                        scfg)
            record["total_wall_s"] = time.perf_counter() - t0
            result["runs"][name].append(record)
            knn = ", ".join(f"kNN@{k} {record[f'knn_top1@{k}']:.1f}" for k in cfg["knn_k"])
            print(f"[{tag}] {knn}, linear {record['linear_top1']:.1f} "
                  f"(pretrain {record.get('pretrain_wall_s', 0):.0f}s, "
                  f"total {record['total_wall_s']:.0f}s)", flush=True)
            finish()  # partial results survive an interrupted run

    finish()
    report(result, args.models, args.plot)
    print(f"total wall time {result['total_wall_s']:.0f}s")
    return result


if __name__ == "__main__":
    main()
