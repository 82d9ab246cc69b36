"""Linear probes on frozen features: one head or several trained at once (a learning-rate sweep in
one pass over the data), the BYOL paper's optimiser and schedule, and a check that the backbone
stayed frozen.

Reference values (BYOL App. C.1 and DeepMind's code, deepmind-research ``byol/``) are collected in
:data:`PAPER_LINEAR_EVAL`; :func:`scale_lr`, :func:`linear_probe_optimizer` and
:func:`set_probe_lr` build exactly that optimiser and schedule.
"""

from __future__ import annotations

import math
from numbers import Real
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from byol_pytorch.eval.knn import _check_features, _check_label_range
from byol_pytorch.schedules import warmup_cosine

__all__ = [
    "PAPER_LINEAR_EVAL",
    "LinearHeads",
    "scale_lr",
    "linear_probe_optimizer",
    "set_probe_lr",
    "linear_heads_loss",
    "linear_probe_step",
    "topk_hits",
    "summarize_sweep",
    "train_linear_probes",
    "train_linear_probe",
    "linear_probe_sweep",
    "linear_probe_accuracy",
    "check_frozen",
]

# The paper's linear evaluation (BYOL App. C.1), as DeepMind's code sets it:
# byol/configs/eval.py: max_steps=80 * train_images_per_epoch // batch_size,
#   optimizer_config=dict(momentum=0.9, nesterov=True),
#   lr_schedule_config=dict(base_learning_rate=0.2, warmup_steps=0);
# byol/utils/schedules.py learning_schedule: lr = base * batch_size / 256, cosine decay to 0;
# byol/eval_experiment.py _optimizer: optax.sgd(lr, momentum=0.9, nesterov=True), no weight decay;
# batch 1024: BYOL App. C.1 ("a batch size of 1024").
PAPER_LINEAR_EVAL: Mapping[str, Any] = MappingProxyType(dict(  # read-only
    epochs=80, batch_size=1024, base_lr=0.2, lr_reference_batch=256, momentum=0.9, nesterov=True,
    weight_decay=0.0, warmup_steps=0, final_lr=0.0,
))

_DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}


def scale_lr(base_lr: float, batch_size: int, reference_batch: int = 256) -> float:
    """The linear scaling rule: ``base_lr * batch_size / reference_batch`` (BYOL: 0.2 x 1024/256).

    As ``byol/utils/schedules.py`` (``scaled_lr = base_learning_rate * batch_size / 256.``).
    """
    _check_lrs([base_lr], "base_lr")
    for name, value in (("batch_size", batch_size), ("reference_batch", reference_batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return base_lr * batch_size / reference_batch


def _check_lrs(lrs: Any, name: str = "lrs") -> list[float]:
    """A non-empty list of finite, positive learning rates (a single number is one LR)."""
    if isinstance(lrs, Real) and not isinstance(lrs, bool):
        lrs = [lrs]
    if isinstance(lrs, (str, bytes)) or not isinstance(lrs, Sequence) or len(lrs) == 0:
        raise ValueError(f"{name} must be a positive number or a non-empty sequence of them, "
                         f"got {lrs!r}")
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, Real) or not math.isfinite(lr) or lr <= 0:
            where = f" (in {list(lrs)!r})" if len(lrs) > 1 else ""
            raise ValueError(f"{name} must be > 0 and finite, got {lr!r}{where}")
    return [float(lr) for lr in lrs]


def _resolve_lrs(lrs: Any, optimizer: str) -> list[float]:
    """``lrs`` checked, or the optimiser's default LR; also checks the optimiser's name."""
    if optimizer not in _DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {sorted(_DEFAULT_LR)}, got {optimizer!r}")
    return _check_lrs([_DEFAULT_LR[optimizer]] if lrs is None else lrs)


def _check_pair(features: Any, labels: Any, split: str) -> None:
    """Features (N, D) and labels (N,) of one split, with the split named in the message."""
    if (isinstance(features, Tensor) and features.ndim == 2 and isinstance(labels, Tensor)
            and labels.ndim == 1 and labels.numel() != features.shape[0]):
        raise ValueError(f"{features.shape[0]} {split} features but {labels.numel()} {split} "
                         "labels; they must pair up")
    _check_features(features, labels)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class LinearHeads(nn.Module):
    """``num_heads`` independent ``nn.Linear(in_features, num_classes)`` applied to the same input.

    Every head starts from the same weights: N(0, 0.01) drawn once from ``generator`` (or from a
    private generator seeded with ``seed``; the global RNG is untouched), bias 0. Trained with
    :func:`linear_probe_optimizer` (one parameter group per head) and :func:`linear_heads_loss`
    (a sum of per-head losses), each head follows exactly the trajectory it would follow alone.
    """

    def __init__(self, in_features: int, num_classes: int, num_heads: int = 1, *, seed: int = 0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("num_classes", num_classes),
                            ("num_heads", num_heads)):
            _check_positive_int(name, value)
        gen = torch.Generator().manual_seed(seed) if generator is None else generator
        weight = torch.empty(num_classes, in_features).normal_(0.0, 0.01, generator=gen)
        self.heads = nn.ModuleList()
        for _ in range(num_heads):
            head = nn.utils.skip_init(nn.Linear, in_features, num_classes)  # no global RNG draw
            with torch.no_grad():
                head.weight.copy_(weight)
                head.bias.zero_()
            self.heads.append(head)

    def __len__(self) -> int:
        return len(self.heads)

    def __getitem__(self, index: int) -> nn.Linear:
        return self.heads[index]

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, D) -> logits (H, B, C) of the H heads."""
        return torch.stack([head(x) for head in self.heads])


def linear_probe_optimizer(
    heads: LinearHeads,
    lrs: float | Sequence[float],
    *,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """An optimiser with one parameter group per head; group ``i`` peaks at ``lrs[i]``.

    ``"sgd"`` is the paper's SGD with Nesterov momentum 0.9 (``byol/configs/eval.py``
    ``optimizer_config``), ``"adamw"`` is AdamW. Each group keeps its peak LR as
    ``group["peak_lr"]``; :func:`set_probe_lr` sets ``group["lr"]`` from it at every step. The LRs
    are used as given (scale a base LR with :func:`scale_lr` first).
    """
    if not isinstance(heads, LinearHeads):
        raise TypeError(f"heads must be a LinearHeads, got {type(heads).__name__}")
    lrs = _check_lrs(lrs)
    if len(lrs) != len(heads):
        raise ValueError(f"{len(lrs)} learning rates for {len(heads)} heads; give one per head")
    if optimizer not in _DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {sorted(_DEFAULT_LR)}, got {optimizer!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    groups = [dict(params=list(head.parameters()), lr=lr, peak_lr=lr)
              for head, lr in zip(heads.heads, lrs)]
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lrs[0], momentum=PAPER_LINEAR_EVAL["momentum"],
                               nesterov=PAPER_LINEAR_EVAL["nesterov"], weight_decay=weight_decay)
    return torch.optim.AdamW(groups, lr=lrs[0], weight_decay=weight_decay)


def set_probe_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> list[float]:
    """Set every group's LR for ``step`` of ``total_steps``: cosine from its peak to 0, no warm-up.

    ``lr = peak_lr * (1 + cos(pi * step / total_steps)) / 2``, as ``learning_schedule`` with
    ``warmup_steps=0`` in ``byol/utils/schedules.py``; steps past ``total_steps`` stay at 0.

    Returns:
        the LR of each group, in group order.
    """
    out = []
    for group in optimizer.param_groups:
        if "peak_lr" not in group:
            raise ValueError("the optimizer's groups have no 'peak_lr'; build it with "
                             "linear_probe_optimizer")
        group["lr"] = warmup_cosine(step, total_steps, group["peak_lr"], warmup_steps=0, final=0.0)
        out.append(group["lr"])
    return out


def linear_heads_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Sum over heads of each head's mean cross-entropy: logits (H, B, C), labels (B,) -> ().

    Each head's gradient is exactly that of its own loss.
    """
    if logits.ndim != 3 or labels.ndim != 1 or logits.shape[1] != labels.shape[0]:
        raise ValueError(f"expected logits (H, B, C) and labels (B,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    return torch.stack([F.cross_entropy(head_logits, labels) for head_logits in logits]).sum()


def linear_probe_step(model: nn.Module, optimizer: torch.optim.Optimizer, features: Tensor,
                      labels: Tensor, step: int, total_steps: int) -> Tensor:
    """One update of all heads on one batch: features (B, D) float, labels (B,) int64.

    Sets the LRs (:func:`set_probe_lr`), then forward, backward and step. ``model`` is a
    :class:`LinearHeads`, possibly wrapped (DDP). Returns the summed loss, detached (no sync).
    """
    set_probe_lr(optimizer, step, total_steps)
    loss = linear_heads_loss(model(features), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def topk_hits(logits: Tensor, labels: Tensor, top: int = 5) -> Tensor:
    """Per-head hit counts: logits (H, B, C), labels (B,) -> int64 (H, 2), [top-1, top-``top``]."""
    if logits.ndim != 3 or labels.ndim != 1 or logits.shape[1] != labels.shape[0]:
        raise ValueError(f"expected logits (H, B, C) and labels (B,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    top = min(top, logits.shape[2])
    hits = logits.topk(top, dim=2).indices == labels.to(logits.device).view(1, -1, 1)
    return torch.stack([hits[:, :, 0].sum(1), hits.any(dim=2).sum(1)], dim=1)


def summarize_sweep(lrs: Sequence[float], top1: Sequence[float],
                    top5: Sequence[float] | None = None) -> dict[str, Any]:
    """Pick the head with the highest top-1 (ties: the first listed) and report every head.

    Returns:
        ``{"lrs": [...], "linear_top1_per_lr": [...], ("linear_top5_per_lr": [...],)
        "best_index": i, "best_lr": lrs[i], "linear_top1": top1[i], ("linear_top5": top5[i])}``.
    """
    lrs, top1 = [float(v) for v in lrs], [float(v) for v in top1]
    if not lrs or len(top1) != len(lrs) or (top5 is not None and len(top5) != len(lrs)):
        raise ValueError(f"need one accuracy per learning rate, got {len(lrs)} LRs, "
                         f"{len(top1)} top-1" + ("" if top5 is None else f", {len(top5)} top-5"))
    best = max(range(len(lrs)), key=lambda i: (top1[i], -i))
    out: dict[str, Any] = {"lrs": lrs, "linear_top1_per_lr": top1}
    if top5 is not None:
        out["linear_top5_per_lr"] = [float(v) for v in top5]
    out.update(best_index=best, best_lr=lrs[best], linear_top1=top1[best])
    if top5 is not None:
        out["linear_top5"] = out["linear_top5_per_lr"][best]
    return out


def train_linear_probes(
    train_features: Tensor,
    train_labels: Tensor,
    num_classes: int,
    *,
    lrs: float | Sequence[float] | None = None,
    epochs: int = 100,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    optimizer: str = "sgd",
    normalize: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> LinearHeads:
    """Fit one linear head per learning rate in ``lrs``, all in one pass over the same batches.

    Exactly equivalent to calling :func:`train_linear_probe` once per LR with the same ``seed``
    (same initial weights, same batch order), at the cost of one pass. The heads see the raw
    features (``normalize=True`` L2-normalises each row first; apply the same at test time, as
    :func:`linear_probe_sweep` does). ``optimizer="sgd"`` is Nesterov SGD with momentum 0.9,
    ``"adamw"`` is AdamW; both follow a per-step cosine schedule from each LR to 0, without
    warm-up. ``lrs`` are used as given (no batch scaling); default: 0.1 (sgd) or 1e-3 (adamw).

    Args:
        train_features: (N, D) float; stays where it is, mini-batches are moved to ``device``.
        train_labels: (N,) integer in [0, num_classes).
        lrs: one peak learning rate per head (or a single number).
        device: where to train; ``None`` uses the device of ``train_features``.

    Returns:
        the trained :class:`LinearHeads` (head ``i`` trained with ``lrs[i]``), in eval mode, on
        ``device``.
    """
    _check_pair(train_features, train_labels, "train")
    _check_positive_int("num_classes", num_classes)
    _check_label_range(train_labels, num_classes, "train_labels")
    lrs = _resolve_lrs(lrs, optimizer)
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    n, dim = train_features.shape
    if n == 0:
        raise ValueError("train_features is empty; nothing to fit")
    device = train_features.device if device is None else torch.device(device)

    gen = torch.Generator().manual_seed(seed)  # initial weights, then the batch order
    heads = LinearHeads(dim, num_classes, len(lrs), generator=gen).to(device).train()
    opt = linear_probe_optimizer(heads, lrs, optimizer=optimizer, weight_decay=weight_decay)
    total = epochs * -(-n // batch_size)
    step = 0
    bar = tqdm(range(epochs), desc=f"linear probe ({len(lrs)} LR)", disable=not progress,
               leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=gen).to(train_features.device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            x = train_features[idx].to(device, torch.float32, non_blocking=True)
            y = train_labels[idx].to(device, torch.long, non_blocking=True)
            if normalize:
                x = F.normalize(x, dim=1)
            loss = linear_probe_step(heads, opt, x, y, step, total)
            step += 1
        if progress:  # one sync per epoch, only when shown
            bar.set_postfix(loss=f"{loss.item() / len(lrs):.4f}")
    return heads.eval()


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    num_classes: int,
    *,
    lr: float | None = None,
    **kwargs: Any,
) -> nn.Linear:
    """Fit ``nn.Linear(D, num_classes)`` with cross-entropy on frozen features: one head of
    :func:`train_linear_probes` (same keyword arguments, a single ``lr``).

    Weights start at N(0, 0.01), bias at 0, drawn from a private generator seeded with ``seed``
    (the global RNG is untouched).

    Args:
        train_features: (N, D) float; train_labels: (N,) integer in [0, num_classes).

    Returns:
        the trained layer, in eval mode, on ``device``.
    """
    if lr is not None:
        _check_lrs([lr], "lr")
    return train_linear_probes(train_features, train_labels, num_classes,
                               lrs=None if lr is None else [lr], **kwargs)[0]


@torch.no_grad()
def _predict_topk(heads: LinearHeads, features: Tensor, labels: Tensor, top: int,
                  normalize: bool, batch_size: int = 4096) -> Tensor:
    """Hit counts (H, 2) of every head on (features (N, D), labels (N,))."""
    device = heads[0].weight.device
    counts = torch.zeros(len(heads), 2, dtype=torch.long, device=device)
    for start in range(0, features.shape[0], batch_size):
        x = features[start:start + batch_size].to(device, torch.float32)
        if normalize:
            x = F.normalize(x, dim=1)
        counts += topk_hits(heads(x), labels[start:start + batch_size].to(device), top)
    return counts


def linear_probe_sweep(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    *,
    lrs: float | Sequence[float] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Train one head per LR in one pass (:func:`train_linear_probes`, ``**kwargs``), score each
    on the test split and pick the best (:func:`summarize_sweep`).

    Shapes: train (N, D) / (N,), test (M, D) / (M,). The best head is selected on the test split
    itself, as DINO's ``eval_linear.py`` does (the BYOL paper selects on a held-out part of train).

    Returns:
        :func:`summarize_sweep`'s dict, accuracies in percent; top-5 keys only when
        ``num_classes >= 5``.
    """
    _check_pair(train_features, train_labels, "train")
    _check_features(train_features, train_labels, test_features)
    _check_pair(test_features, test_labels, "test")
    if test_features.shape[0] == 0:
        raise ValueError("test set is empty; nothing to evaluate")
    lr_list = _resolve_lrs(lrs, kwargs.get("optimizer", "sgd"))
    heads = train_linear_probes(train_features, train_labels, num_classes, lrs=lr_list, **kwargs)
    _check_label_range(test_labels, num_classes, "test_labels")
    top = 5 if num_classes >= 5 else 1
    counts = _predict_topk(heads, test_features, test_labels, top,
                           kwargs.get("normalize", False)).cpu()
    acc = (100.0 * counts.double() / test_features.shape[0]).tolist()
    return summarize_sweep(lr_list, [a[0] for a in acc], [a[1] for a in acc] if top == 5 else None)


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    **kwargs: Any,
) -> dict[str, float]:
    """Train a probe with :func:`train_linear_probe` (``**kwargs``) and score it on the test split.

    Shapes: train (N, D) / (N,), test (M, D) / (M,).

    Returns:
        ``{"linear_top1": ..., "linear_top5": ...}`` in percent; top-5 only when
        ``num_classes >= 5``, as in :func:`byol_pytorch.eval.knn_accuracy`.
    """
    lr = kwargs.pop("lr", None)
    if lr is not None:
        _check_lrs([lr], "lr")
    result = linear_probe_sweep(train_features, train_labels, test_features, test_labels,
                                num_classes, lrs=None if lr is None else [lr], **kwargs)
    return {k: result[k] for k in ("linear_top1", "linear_top5") if k in result}


def check_frozen(backbone_before: Mapping[str, Tensor], backbone: nn.Module) -> None:
    """Raise if any tensor of ``backbone.state_dict()`` differs from the snapshot (MoCo v3 check).

    Take the snapshot as ``{k: v.detach().clone() for k, v in backbone.state_dict().items()}``
    before linear evaluation; a bare ``state_dict()`` shares storage with the model and would
    always compare equal, so it is rejected.

    Raises:
        TypeError: wrong argument types.
        ValueError: the snapshot aliases the model's tensors.
        RuntimeError: a key is missing/extra, or a tensor changed (the first one is named).
    """
    if not isinstance(backbone_before, Mapping):
        raise TypeError("backbone_before must be a state_dict snapshot (a mapping of tensors), "
                        f"got {type(backbone_before).__name__}")
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
    now = backbone.state_dict()
    if now.keys() != backbone_before.keys():
        diff = sorted(set(now) ^ set(backbone_before))[:5]
        raise RuntimeError(f"backbone state_dict keys differ from the snapshot (e.g. {diff})")
    for name, current in now.items():
        before = backbone_before[name]
        if not isinstance(current, Tensor) or not isinstance(before, Tensor):
            continue  # extra_state and similar non-tensor entries
        if (before.numel() and before.device == current.device
                and before.data_ptr() == current.data_ptr()):
            raise ValueError(f"snapshot tensor {name!r} shares memory with the model; take it "
                             "with {k: v.detach().clone() for k, v in state_dict().items()}")
        if before.shape != current.shape or not torch.equal(before.to(current.device), current):
            raise RuntimeError(f"backbone tensor {name!r} changed during linear evaluation; "
                               "freeze it with requires_grad_(False) and keep it in eval mode")
