"""Linear probes on frozen features or through a frozen encoder, one head per LR; check_frozen."""

from __future__ import annotations

import copy
import itertools
import math
from numbers import Real
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from byol_pytorch.eval.knn import _check_pair, _embed_batches, _positive_int
from byol_pytorch.schedules import warmup_cosine

__all__ = ["LinearHeads", "fit_linear_probe", "linear_probe_accuracy", "check_frozen"]
_DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}


def _check_lrs(lrs: Any) -> tuple[float, ...]:
    out = tuple(lrs) if isinstance(lrs, Sequence) and not isinstance(lrs, str) else (lrs,)
    if not out or not all(isinstance(lr, Real) and not isinstance(lr, bool) and math.isfinite(lr)
                          and lr > 0 for lr in out):
        raise ValueError(f"lrs must be a number > 0 or a non-empty sequence of them, got {lrs!r}")
    return tuple(map(float, out))


def _check_input(data: Any, labels: Any, encoder: Any, split: str, num_classes: int) -> None:
    if encoder is None:
        _check_pair(data, labels, split, num_classes)
    elif not isinstance(encoder, nn.Module) or labels is not None or not hasattr(data, "__len__"):
        raise TypeError("with an encoder (an nn.Module), data is a loader of (images, labels) "
                        "batches with a len(), and labels must be None")


class LinearHeads(nn.Module):
    """An ``nn.Linear(D, C)`` per LR, from one N(0, 0.01) draw (``seed``): (B, D) -> (H, B, C)."""

    def __init__(self, in_features: int, num_classes: int, lrs: float | Sequence[float], *,
                 normalize: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.lrs, self.normalize = _check_lrs(lrs), normalize  # normalize: L2-normalised input
        head = nn.utils.skip_init(nn.Linear, in_features, num_classes)  # no global RNG draw
        nn.init.normal_(head.weight, 0.0, 0.01, generator=torch.Generator().manual_seed(seed))
        nn.init.zeros_(head.bias)
        self.heads = nn.ModuleList(copy.deepcopy(head) for _ in self.lrs)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.heads[0].in_features:
            raise ValueError(f"features must be (B, {self.heads[0].in_features}), not {[*x.shape]}")
        return torch.stack([h(F.normalize(x, dim=1) if self.normalize else x) for h in self.heads])


def fit_linear_probe(
    data: Tensor | Iterable, labels: Tensor | None = None, *, num_classes: int,
    encoder: nn.Module | None = None, lrs: float | Sequence[float] | None = None,
    epochs: int = 100, batch_size: int = 256, optimizer: str = "sgd", weight_decay: float = 0.0,
    normalize: bool = False, amp_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None, seed: int = 0, progress: bool = True,
) -> LinearHeads:
    """One head per LR (each as alone) on features (N, D) + labels (N,) or on a loader of (images,
    labels) through a frozen ``encoder`` (DDP over a process group's ranks) -> LinearHeads."""
    if optimizer not in _DEFAULT_LR or not weight_decay >= 0:
        raise ValueError(f"optimizer must be sgd or adamw and weight_decay >= 0, not {optimizer!r}"
                         f" and {weight_decay}")
    _positive_int(num_classes=num_classes, epochs=epochs, batch_size=batch_size)
    lrs = _check_lrs(_DEFAULT_LR[optimizer] if lrs is None else lrs)
    _check_input(data, labels, encoder, "train", num_classes)
    total = epochs * (len(data) if encoder is not None else -(-len(data) // batch_size))
    _positive_int(**{"the number of training batches (is the data set empty?)": total})
    order = torch.Generator().manual_seed(seed)  # the batch order of tensors, drawn after the
    if encoder is None:  # heads' initial weights as before: the former train_linear_probe's numbers
        torch.empty(num_classes, data.shape[1]).normal_(generator=order)

    def epoch_batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        if encoder is None:
            return ((data[i], labels[i]) for i in torch.randperm(len(data), generator=order)
                    .split(batch_size))
        if hasattr(getattr(data, "sampler", None), "set_epoch"):  # a DistributedSampler
            data.sampler.set_epoch(epoch)
        return _embed_batches(encoder, data, None, amp_dtype, num_classes)

    batches = (batch for epoch in range(epochs) for batch in epoch_batches(epoch))
    first = next(batches)  # gives the feature size (and the default device)
    device = torch.device(device or first[0].device)
    heads = LinearHeads(first[0].shape[1], num_classes, lrs, normalize=normalize, seed=seed)
    groups = [dict(params=h.parameters(), lr=lr) for h, lr in zip(heads.to(device).heads, lrs)]
    opt = (torch.optim.AdamW(groups, weight_decay=weight_decay) if optimizer == "adamw" else
           torch.optim.SGD(groups, momentum=0.9, nesterov=True, weight_decay=weight_decay))
    ddp = encoder is not None and dist.is_available() and dist.is_initialized()
    model = DistributedDataParallel(heads) if ddp else heads  # gradients averaged over ranks
    for step, (x, y) in enumerate(tqdm(itertools.chain([first], batches), "linear probe", total,
                                       disable=not progress, leave=False)):
        for group, lr in zip(opt.param_groups, lrs):  # a group per head: its own LR
            group["lr"] = warmup_cosine(step, total, lr)  # cosine to 0, no warm-up
        y, logits = y.to(device, torch.long), model(x.to(device, torch.float32))
        # a sum of per-head losses: each head's gradient is exactly that of its own loss
        loss = torch.stack([F.cross_entropy(out, y) for out in logits]).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return heads.eval()


@torch.no_grad()
def linear_probe_accuracy(
    probe: LinearHeads, data: Tensor | Iterable, labels: Tensor | None = None, *,
    encoder: nn.Module | None = None, amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Top-1/5 (%) of every head (``*_per_lr``) and of the best (first top-1) on features (M, D) +
    labels (M,), or on a loader through ``encoder`` (counts summed over the ranks)."""
    if not isinstance(probe, LinearHeads):
        raise TypeError(f"probe must be a LinearHeads (fit_linear_probe), got {type(probe)}")
    num_classes, device = probe.heads[0].out_features, probe.heads[0].weight.device
    _check_input(data, labels, encoder, "test", num_classes)
    batches = (((x, y) for x, y in zip(data.split(4096), labels.split(4096))) if encoder is None
               else _embed_batches(encoder, data, None, amp_dtype, num_classes))
    counts = torch.zeros(len(probe.lrs) + 1, 2, dtype=torch.long, device=device)  # last row: n
    for x, y in batches:
        top = probe(x.to(device, torch.float32)).topk(min(5, num_classes), dim=2).indices
        hits = top == y.to(device).view(1, -1, 1)  # (H, B, top)
        counts[:-1] += torch.stack([hits[:, :, 0].sum(1), hits.any(dim=2).sum(1)], dim=1)
        counts[-1] += len(y)
    if encoder is not None and dist.is_available() and dist.is_initialized():
        dist.all_reduce(counts)  # each rank evaluated its shard
    if counts[-1, 0] == 0:
        raise ValueError("no test sample; nothing to evaluate")
    top1, top5 = (100.0 * counts[:-1].double() / counts[-1, 0]).T.tolist()
    best = top1.index(max(top1))
    out = dict(linear_top1=top1[best], best_index=best, best_lr=probe.lrs[best],
               lrs=list(probe.lrs), linear_top1_per_lr=top1)
    if num_classes >= 5:  # as knn_accuracy: top-5 of fewer classes means nothing
        out.update(linear_top5=top5[best], linear_top5_per_lr=top5)
    return out


def check_frozen(backbone_before: Mapping[str, Tensor], backbone: nn.Module) -> None:
    """Raise if ``backbone.state_dict()`` differs from (or aliases) the snapshot (MoCo v3)."""
    if not isinstance(backbone_before, Mapping) or not isinstance(backbone, nn.Module):
        raise TypeError("check_frozen takes a state_dict snapshot (a mapping) and an nn.Module, "
                        f"got {type(backbone_before).__name__}, {type(backbone).__name__}")
    now = backbone.state_dict()
    if now.keys() != backbone_before.keys():
        raise RuntimeError(f"state_dict keys differ: {sorted(set(now) ^ set(backbone_before))}")
    for name, now_t in now.items():
        before = backbone_before[name]
        if not isinstance(now_t, Tensor) or not isinstance(before, Tensor):
            continue  # extra_state and similar non-tensor entries
        if before.numel() and before.data_ptr() == now_t.data_ptr():  # one address space (UVA)
            raise ValueError(f"snapshot tensor {name!r} shares memory with the model; take it "
                             "with {k: v.detach().clone() for k, v in state_dict().items()}")
        if before.shape != now_t.shape or not torch.equal(before.to(now_t.device), now_t):
            raise RuntimeError(f"backbone tensor {name!r} changed during linear evaluation; "
                               "freeze it with requires_grad_(False) and keep it in eval mode")
