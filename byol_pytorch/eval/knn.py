"""Feature extraction and weighted kNN (InstDisc / DINO rule); the input checks of both modules."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # not tqdm.auto: it calls iter() twice (DataLoader workers start twice)

__all__ = ["extract_features", "knn_predict", "knn_accuracy"]
_INT = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _positive_int(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_pair(x: Any, labels: Any, split: str, num_classes: int | None = None) -> None:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise ValueError(f"{split} features must be a float (N, D) tensor, not {type(x).__name__} "
                         f"{tuple(getattr(x, 'shape', ()))}")
    if not isinstance(labels, Tensor) or labels.dtype not in _INT or labels.shape != x.shape[:1]:
        raise ValueError(f"{split} labels must be an integer tensor of shape ({len(x)},); .long()")
    if num_classes and labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{split} labels must lie in [0, num_classes={num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def _embed_batches(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
                   amp_dtype: torch.dtype | None = None, num_classes: int | None = None
                   ) -> Iterator[tuple[Tensor, Tensor]]:
    """(images, labels, ...) -> (features (B, D) float32, labels (B,) int64); model in eval mode."""
    device = torch.device(device or next((t.device for t in (*model.parameters(),
                                                              *model.buffers())), "cpu"))
    modes = [(m, m.training) for m in model.modules()]  # frozen submodules stay frozen
    model.eval()
    try:
        for batch in loader:
            if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                raise TypeError("loader must yield (images, labels); give unlabelled images -1")
            with torch.no_grad(), torch.autocast(device.type, amp_dtype, enabled=bool(amp_dtype)):
                out = model(batch[0].to(device, non_blocking=True)).flatten(1).float()
            labels = torch.as_tensor(batch[1]).reshape(-1).long()
            _check_pair(out, labels, "loader", num_classes)
            yield out, labels
    finally:  # at the end, or when the generator is closed or garbage-collected
        for m, mode in modes:
            m.training = mode


def extract_features(model: nn.Module, loader: Iterable, device: torch.device | str | None = None,
                     *, normalize: bool = True, progress: bool = True) -> tuple[Tensor, Tensor]:
    """(images, labels) batches -> features (N, D) float32 (L2-normalised), labels (N,), on CPU."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"extract_features expects an nn.Module, got {type(model).__name__}")
    batches = _embed_batches(model, tqdm(loader, "features", disable=not progress, leave=False),
                             device)
    pairs = [((F.normalize(f, dim=1) if normalize else f).cpu(), y) for f, y in batches]
    if not pairs:
        raise ValueError("loader yielded no batch; check the data set is not empty")
    return torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])


def _knn_votes(query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int,
               ks: Sequence[int], temperature: float, chunk_size: int
               ) -> Iterator[tuple[slice, list[Tensor]]]:
    """Check the inputs; then per chunk of queries: (rows, [class scores (q, C) fp32 per k])."""
    _positive_int(num_classes=num_classes, chunk_size=chunk_size, **{f"k ({k!r})": k for k in ks})
    _check_pair(bank, bank_labels, "bank/train", num_classes)
    if not isinstance(query, Tensor) or query.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise ValueError(f"query/test features must be a (Q, D={bank.shape[1]}) tensor, got "
                         f"{getattr(query, 'shape', type(query))}; embed both with one model")
    if max(ks) > len(bank):
        raise ValueError(f"k={max(ks)} exceeds the bank size {len(bank)}; use a smaller k")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (DINO uses 0.07), got {temperature}")
    # Cosine similarity without a normalised copy of the bank (1.28M x 2048 fp32 is 10 GB):
    # each similarity column is divided by the bank row's norm instead.
    acc = torch.float64 if bank.dtype == torch.float64 else torch.float32
    inv_norm = torch.linalg.vector_norm(bank, dim=1, dtype=acc).float().clamp_min(1e-12) ** -1
    labels = bank_labels.to(bank.device, torch.long)  # scatter_add_ needs int64

    def chunks() -> Iterator[tuple[slice, list[Tensor]]]:
        for start in range(0, max(len(query), 1), chunk_size):  # no query: one empty chunk
            rows = slice(start, start + chunk_size)
            q = F.normalize(query[rows].to(bank.device, torch.float32), dim=1).to(bank.dtype)
            sim = (q @ bank.T).float().mul_(inv_norm)  # (q, N); in place: it is the big one
            top_sim, top_idx = sim.topk(max(ks), dim=1)  # sorted: [:, :k] is each k's top-k
            weights, top_labels = (top_sim / temperature).exp(), labels[top_idx]
            yield rows, [torch.zeros(len(q), num_classes, device=bank.device).scatter_add_(
                1, top_labels[:, :k], weights[:, :k]) for k in ks]
    return chunks()


@torch.no_grad()  # not inference_mode: the returned scores must be ordinary tensors
def knn_predict(query: Tensor, bank: Tensor, bank_labels: Tensor, num_classes: int, k: int = 200,
                temperature: float = 0.07, chunk_size: int = 1024) -> Tensor:
    """Votes sum(exp(cos / T)) of the top-k neighbours: query (Q, D), bank (N, D) -> (Q, C) float32;
    it runs on the bank's device and dtype, ``chunk_size`` queries (x N similarities) at a time."""
    chunks = _knn_votes(query, bank, bank_labels, num_classes, [k], temperature, chunk_size)
    return torch.cat([votes[0] for _, votes in chunks])


@torch.no_grad()
def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor,
                 test_labels: Tensor, k: int | Sequence[int] = (20, 200), temperature: float = 0.07,
                 num_classes: int | None = None, chunk_size: int = 1024) -> dict[str, float]:
    """Weighted-kNN accuracy (%) of test (Q, D) against train (N, D): ``knn_top1@k`` per k, and
    ``knn_top5@k`` if num_classes >= 5 (a class without a vote is no hit)."""
    ks = [k] if isinstance(k, int) else list(k)
    _check_pair(train_features, train_labels, "bank/train")
    _check_pair(test_features, test_labels, "query/test")
    if not ks or len(test_features) == 0:
        raise ValueError(f"need some k and a test set, got k={k} and {len(test_features)} rows")
    if num_classes is None and train_labels.numel():  # default: the largest label + 1
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    chunks = _knn_votes(test_features, train_features, train_labels, num_classes, ks,
                        temperature, chunk_size)
    _check_pair(test_features, test_labels, "query/test", num_classes)
    hits = torch.zeros(len(ks), 2, dtype=torch.long, device=train_features.device)
    for rows, votes in chunks:
        target = test_labels[rows].to(train_features.device).unsqueeze(1)
        for i, scores in enumerate(votes):
            top_scores, top_classes = scores.topk(min(5, num_classes), dim=1)
            hit = (top_classes == target) & (top_scores > 0)  # (q, top); no vote, no hit
            hits[i] += torch.stack([hit[:, 0].sum(), hit.any(dim=1).sum()])
    acc = (100.0 * hits.double() / len(test_features)).tolist()  # one sync, at the end
    names = ("knn_top1@{}", "knn_top5@{}")[:2 if num_classes >= 5 else 1]
    return {name.format(kk): a[j] for kk, a in zip(ks, acc) for j, name in enumerate(names)}
