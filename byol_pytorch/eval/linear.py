"""Linear probe on frozen, precomputed features, and a check that the backbone stayed frozen."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from byol_pytorch.eval.knn import _check_features, _check_label_range
from byol_pytorch.schedules import warmup_cosine

__all__ = ["train_linear_probe", "linear_probe_accuracy", "check_frozen"]

_DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}


def train_linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    optimizer: str = "sgd",
    normalize: bool = False,
    device: torch.device | str | None = None,
    progress: bool = True,
    seed: int = 0,
) -> nn.Linear:
    """Fit ``nn.Linear(D, num_classes)`` with cross-entropy on frozen features.

    As in the paper's linear evaluation, the layer has no BatchNorm and sees the raw features
    (``normalize=True`` L2-normalises each row first; apply the same at test time, as
    :func:`linear_probe_accuracy` does). ``optimizer="sgd"`` is Nesterov SGD with momentum 0.9,
    ``"adamw"`` is AdamW; both follow a per-step cosine schedule from ``lr`` to 0. ``lr`` defaults
    to 0.1 (sgd) or 1e-3 (adamw). Weights start at N(0, 0.01), bias at 0, drawn from a private
    generator seeded with ``seed`` (the global RNG is untouched).

    Args:
        train_features: (N, D) float; stays where it is, mini-batches are moved to ``device``.
        train_labels: (N,) integer in [0, num_classes).
        device: where to train; ``None`` uses the device of ``train_features``.

    Returns:
        the trained layer, in eval mode, on ``device``.
    """
    _check_features(train_features, train_labels)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    _check_label_range(train_labels, num_classes, "train_labels")
    if optimizer not in _DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {sorted(_DEFAULT_LR)}, got {optimizer!r}")
    lr = _DEFAULT_LR[optimizer] if lr is None else lr
    if not lr > 0 or not weight_decay >= 0:
        raise ValueError(f"lr must be > 0 and weight_decay >= 0, got lr={lr}, "
                         f"weight_decay={weight_decay}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    n, dim = train_features.shape
    if n == 0:
        raise ValueError("train_features is empty; nothing to fit")
    device = train_features.device if device is None else torch.device(device)

    gen = torch.Generator().manual_seed(seed)
    head = nn.utils.skip_init(nn.Linear, dim, num_classes)  # default init would use global RNG
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=gen)
        head.bias.zero_()
    head.to(device).train()
    if optimizer == "sgd":
        opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, nesterov=True,
                              weight_decay=weight_decay)
    else:
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)

    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    step = 0
    bar = tqdm(range(epochs), desc="linear probe", disable=not progress, leave=False)
    for _ in bar:
        perm = torch.randperm(n, generator=gen).to(train_features.device)
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            x = train_features[idx].to(device, torch.float32, non_blocking=True)
            y = train_labels[idx].to(device, torch.long, non_blocking=True)
            if normalize:
                x = F.normalize(x, dim=1)
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(step, total, lr)
            loss = F.cross_entropy(head(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        if progress:
            bar.set_postfix(loss=f"{loss.item():.4f}")  # one sync per epoch, only when shown
    return head.eval()


@torch.no_grad()
def _predict_topk(
    head: nn.Linear, features: Tensor, top: int, normalize: bool, batch_size: int = 4096
) -> Tensor:
    device = head.weight.device
    out = []
    for start in range(0, features.shape[0], batch_size):
        x = features[start:start + batch_size].to(device, torch.float32)
        if normalize:
            x = F.normalize(x, dim=1)
        out.append(head(x).topk(top, dim=1).indices)
    return torch.cat(out)


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    **kwargs: Any,
) -> dict[str, float]:
    """Train a probe with :func:`train_linear_probe` (``**kwargs``) and score it on the test split.

    Returns:
        ``{"linear_top1": ..., "linear_top5": ...}`` in percent; top-5 only when
        ``num_classes >= 5``, as in :func:`byol_pytorch.eval.knn_accuracy`.
    """
    _check_features(train_features, train_labels, test_features)
    _check_features(test_features, test_labels)
    if test_features.shape[0] == 0:
        raise ValueError("test set is empty; nothing to evaluate")
    head = train_linear_probe(train_features, train_labels, num_classes, **kwargs)
    _check_label_range(test_labels, num_classes, "test_labels")
    top = 5 if num_classes >= 5 else 1
    pred = _predict_topk(head, test_features, top, kwargs.get("normalize", False))
    hits = pred == test_labels.to(pred.device).unsqueeze(1)
    n = test_features.shape[0]
    result = {"linear_top1": 100.0 * hits[:, 0].sum().item() / n}
    if top == 5:
        result["linear_top5"] = 100.0 * hits.any(dim=1).sum().item() / n
    return result


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
