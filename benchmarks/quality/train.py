"""The training every library shares: the benchmark's backbones, seeding, the optimizer, the loop.

The peer's interpreter runs this module too (``peers.peer_worker``), where ``byol_pytorch`` is
byol-pytorch 0.9.1: it imports only the standard library, numpy, torch and torchvision, and the
LR schedule and the images (floats in [0, 1]) come from the caller.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

# build(kwargs, net, cfg, total_steps) -> (learner, loop callbacks): one per library
Builder = Callable[[dict[str, Any], nn.Module, dict[str, Any], int],
                   tuple[nn.Module, dict[str, Callable]]]


def cifar_resnet18() -> nn.Module:
    """torchvision resnet18 (random init) with the CIFAR stem, in plain torchvision.

    Same construction order as ``examples/recipes.py``'s ``create_backbone("resnet18",
    cifar_stem=True)``, so under the same seed both give identical weights (checked and recorded
    as ``same_init``); the peer's interpreter builds this one.
    """
    net = torchvision.models.resnet18(weights=None)
    conv1 = net.conv1
    net.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


class SmallResNet(nn.Module):
    """A CIFAR-stem ResNet of torchvision ``BasicBlock``s: (B, 3, H, W) -> (B, num_classes).

    torchvision's module names (``conv1``, ``bn1``, ``layer1``..``layer4``, ``avgpool``, ``fc``),
    so ``hidden_layer="avgpool"`` works for every library, and its initialisation
    (Kaiming-normal fan-out convolutions, BatchNorm 1/0).
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


def snapshot_steps(total: int, points: int) -> list[int]:
    """The optimizer steps after which a curve snapshot is taken: 0 (the initial weights), then
    ``points`` steps spread evenly up to ``total`` (always included). Empty if ``points`` is 0."""
    if points <= 0 or total <= 0:
        return []
    return sorted({0, *(round(total * i / points) for i in range(1, points + 1))})


def make_optimizer(params: list[dict[str, Any]], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (momentum 0.9) or AdamW, weight decay ``cfg["weight_decay"]`` on every parameter; the
    loop sets each group's LR before every step."""
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=cfg["weight_decay"])
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=0.0, weight_decay=cfg["weight_decay"])
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg['optimizer']!r}")


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def pretrain(
    learner: nn.Module, images: Tensor, cfg: dict[str, Any], lrs: Sequence[float], *,
    update_ema: Callable[[], None], tau_fn: Callable[[], float | None] = lambda: None,
    std_fn: Callable[[], float | None] = lambda: None,
    snapshot: Callable[[dict[str, Any]], None] | None = None, tag: str = "",
    step_log: Path | None = None,
) -> dict[str, Any]:
    """Train ``learner`` (``loss = learner(x)``, x: (B, 3, H, W) float in [0, 1]) on ``images``
    (N, 3, H, W) float in [0, 1] for ``len(lrs)`` steps, ``lrs[step]`` at each.

    Data order comes from a generator seeded with ``cfg["seed"]`` (identical for all models); the
    optimizer is ``cfg["optimizer"]`` (weight decay on all trainable parameters; the predictor's
    LR times ``cfg["predictor_lr_mult"]``); the forward runs under bf16 autocast when
    ``cfg["precision"] == "bf16"``. ``update_ema`` is called after each optimizer step.
    ``snapshot(meta)`` is called at the steps of :func:`snapshot_steps` (meta: step, epoch,
    training seconds so far), its time not counted as training time. Optionally writes a
    per-step JSONL log (step, epoch, loss, lr, tau, projection_std).

    Returns:
        wall time (snapshots excluded), steps, the mean loss per epoch and the last step's loss.
    """
    device = torch.device(cfg["device"])
    n, bsz, total = images.shape[0], cfg["batch_size"], len(lrs)
    steps_per_epoch = n // bsz
    # The predictor may learn faster than the rest (SimSiam/DirectPred): parameter names of
    # ours and the peer ("online_predictor") and of the lightly reference ("prediction_head").
    mult = float(cfg.get("predictor_lr_mult", 1.0))
    pred, rest = [], []
    for name, p in learner.named_parameters():
        if p.requires_grad:
            (pred if ("online_predictor" in name or "prediction_head" in name) else rest).append(p)
    groups = [dict(params=rest, lr_mult=1.0)] + ([dict(params=pred, lr_mult=mult)] if pred else [])
    opt = make_optimizer(groups, cfg)
    gen = torch.Generator().manual_seed(cfg["seed"])
    data = images.to(device)
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
        snapshot(dict(step=step, epoch=epoch, train_s=t0 - start - paused))  # type: ignore[misc]
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
                lr = lrs[step]
                for g in opt.param_groups:
                    g["lr"] = lr * g["lr_mult"]
                x = data[perm[i * bsz:(i + 1) * bsz]]
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
                    log_f.write(json.dumps(dict(step=step, epoch=epoch, loss=loss_val, lr=lr,
                                                tau=tau, projection_std=std_fn())) + "\n")
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


def build_ours(kwargs: dict[str, Any], net: nn.Module, cfg: dict[str, Any],
               total_steps: int) -> tuple[nn.Module, dict[str, Callable]]:
    """``byol_pytorch.BYOL`` around ``net`` with a variant's ``kwargs``, and its loop callbacks."""
    from byol_pytorch import BYOL, default_views  # here: never called in the peer's interpreter

    kwargs = dict(kwargs)
    cosine = kwargs.pop("cosine_tau", True)
    kwargs.setdefault("moving_average_decay", cfg["tau"])
    views = kwargs.pop("views", {})
    if views:  # the preset's two views with some BYOLAugment arguments changed
        kwargs["augment_fn"], kwargs["augment_fn2"] = default_views(
            cfg["image_size"], kwargs.pop("augment_preset"), **views)
    learner = BYOL(net, image_size=cfg["image_size"], hidden_layer="avgpool",
                   projection_size=cfg["projection_size"],
                   projection_hidden_size=cfg["projection_hidden_size"], **kwargs,
                   total_steps=total_steps if cosine else None).to(cfg["device"])

    def std() -> float | None:
        s = learner.last_projection_std
        return None if s is None else float(s)

    return learner, dict(update_ema=learner.update_moving_average, tau_fn=lambda: learner.tau,
                         std_fn=std)


def train_model(build: Builder, kwargs: dict[str, Any], images: Tensor, cfg: dict[str, Any],
                lrs: Sequence[float], make_net: Callable[[], nn.Module], tag: str,
                step_log: Path | None = None,
                on_snapshot: Callable[[dict[str, Any], dict[str, Tensor]], None] | None = None,
                ) -> tuple[nn.Module, dict[str, Any]]:
    """Seed, build the backbone and the learner, pretrain; returns the backbone (on CPU) and the
    run record. ``on_snapshot(meta, state)`` receives CPU copies of the backbone's state_dict."""
    seed_everything(cfg["seed"])
    net = make_net()
    init = state_checksum(net.state_dict())
    learner, hooks = build(kwargs, net, cfg, len(lrs))
    snapshot = None
    if on_snapshot is not None:
        def snapshot(meta: dict[str, Any]) -> None:
            on_snapshot(meta, {k: v.detach().to("cpu", copy=True)
                               for k, v in net.state_dict().items()})
    record = pretrain(learner, images, cfg, lrs, tag=tag, step_log=step_log, snapshot=snapshot,
                      **hooks)
    record["init_checksum"] = init
    return net.cpu(), record
