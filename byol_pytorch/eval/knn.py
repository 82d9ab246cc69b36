"""Weighted k-nearest-neighbour evaluation of frozen features (InstDisc / DINO / lightly rule)."""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # not tqdm.auto: it calls iter() twice (DataLoader workers start twice)

__all__ = ["extract_features", "knn_predict", "knn_accuracy"]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def extract_features(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str | None = None,
    *,
    normalize: bool = True,
    progress: bool = True,
) -> tuple[Tensor, Tensor]:
    """Embed a whole data set with ``model`` in eval mode.

    ``loader`` yields ``(images, labels, ...)``; extra items are ignored. The model's output
    (B, D) or (B, ...) is flattened to (B, D). Each submodule's train/eval flag is restored
    afterwards, so frozen BatchNorm layers inside a training model stay frozen.

    Args:
        device: where to run the model; ``None`` uses the device of the model's parameters.
        normalize: L2-normalise each feature vector (what the kNN rule assumes).
        progress: show a tqdm bar.

    Returns:
        features (N, D) float32 and labels (N,) int64, both on CPU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"extract_features expects an nn.Module, got {type(model).__name__}")
    device = _model_device(model) if device is None else torch.device(device)
    modes = [(m, m.training) for m in model.modules()]
    features, labels = [], []
    model.eval()
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc="features", disable=not progress, leave=False):
                if not isinstance(batch, (list, tuple)) or len(batch) < 2:
                    raise TypeError("loader must yield (images, labels) pairs; wrap an unlabelled "
                                    "data set so that it returns a dummy label")
                out = model(batch[0].to(device, non_blocking=True)).flatten(1).float()
                if normalize:
                    out = F.normalize(out, dim=1)
                features.append(out.cpu())
                labels.append(torch.as_tensor(batch[1]).reshape(-1).long().cpu())
    finally:
        for m, mode in modes:
            m.training = mode
    if not features:
        raise ValueError("loader yielded no batch; check the data set is not empty")
    return torch.cat(features), torch.cat(labels)


def _check_features(bank: Tensor, bank_labels: Tensor, query: Tensor | None = None) -> None:
    if not isinstance(bank, Tensor) or bank.ndim != 2 or not bank.is_floating_point():
        raise ValueError("bank/train features must be a floating (N, D) tensor, got "
                         f"{getattr(bank, 'shape', type(bank))}")
    labels_ok = isinstance(bank_labels, Tensor) and bank_labels.ndim == 1
    if not labels_ok or bank_labels.dtype not in _INT_DTYPES:
        raise ValueError("labels must be an integer (N,) tensor; convert with .long()")
    if bank_labels.numel() != bank.shape[0]:
        raise ValueError(f"{bank.shape[0]} bank features but {bank_labels.numel()} bank labels")
    if query is not None:
        if not isinstance(query, Tensor) or query.ndim != 2 or not query.is_floating_point():
            raise ValueError("query/test features must be a floating (Q, D) tensor, got "
                             f"{getattr(query, 'shape', type(query))}")
        if query.shape[1] != bank.shape[1]:
            raise ValueError(f"feature sizes differ: query D={query.shape[1]}, "
                             f"bank D={bank.shape[1]}; embed both with the same model")


def _check_k(ks: Sequence[int], n_bank: int) -> None:
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if k > n_bank:
            raise ValueError(f"k={k} exceeds the bank size {n_bank}; use a smaller k")


def _check_scalars(num_classes: int, temperature: float, chunk_size: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (DINO uses 0.07), got {temperature}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def _check_label_range(labels: Tensor, num_classes: int, name: str) -> None:
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, num_classes={num_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")


def _neighbour_chunks(
    query: Tensor, bank: Tensor, bank_labels: Tensor, k: int, chunk_size: int
) -> Iterator[tuple[slice, Tensor, Tensor]]:
    """Yields (query rows, top-k cosine similarities (q, k) fp32, their labels (q, k))."""
    # Cosine similarity without a normalised copy of the bank (1.28M x 2048 fp32 is 10 GB):
    # divide each similarity column by the bank row norm instead.
    acc = torch.float64 if bank.dtype == torch.float64 else torch.float32
    inv_norm = torch.linalg.vector_norm(bank, dim=1, dtype=acc).float().clamp_min(1e-12)
    inv_norm = inv_norm.reciprocal()
    labels = bank_labels.to(bank.device, torch.long)  # scatter_add_ needs int64 indices
    for start in range(0, query.shape[0], chunk_size):
        rows = slice(start, min(start + chunk_size, query.shape[0]))
        q = F.normalize(query[rows].to(bank.device, torch.float32), dim=1).to(bank.dtype)
        sim = (q @ bank.T).float().mul_(inv_norm)  # (q, N); in place: it is the big one
        top_sim, top_idx = sim.topk(k, dim=1)  # sorted, so [:, :k'] is the top-k' for k' < k
        yield rows, top_sim, labels[top_idx]


def _vote(top_sim: Tensor, top_labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    weights = (top_sim / temperature).exp()
    scores = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device)
    return scores.scatter_add_(1, top_labels, weights)


def knn_predict(
    query: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores of a weighted kNN vote: sum of ``exp(cos_sim / T)`` over the top-k neighbours.

    Features need not be normalised (cosine similarity is used). Computation runs on the bank's
    device and dtype (put the bank on a GPU, possibly in fp16, for ImageNet-size banks); queries are
    processed ``chunk_size`` at a time so only a (chunk_size, N) float32 similarity matrix is alive
    (1024 x 1.28M is 5 GB; lower ``chunk_size`` on smaller GPUs).
    Ranked predictions are ``scores.argsort(dim=1, descending=True)``.

    Args:
        query: (Q, D) features to classify.
        bank: (N, D) reference (training) features.
        bank_labels: (N,) integer labels in [0, num_classes).

    Returns:
        scores (Q, num_classes) float32 on the bank's device.
    """
    _check_features(bank, bank_labels, query)
    _check_scalars(num_classes, temperature, chunk_size)
    _check_k([k], bank.shape[0])
    _check_label_range(bank_labels, num_classes, "bank_labels")
    scores = torch.empty(query.shape[0], num_classes, device=bank.device)
    with torch.no_grad():  # not inference_mode: the returned scores must be ordinary tensors
        for rows, top_sim, top_labels in _neighbour_chunks(query, bank, bank_labels, k, chunk_size):
            scores[rows] = _vote(top_sim, top_labels, num_classes, temperature)
    return scores


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int | Sequence[int] = (20, 200),
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Weighted-kNN top-1 (and top-5) accuracy in percent, for one or several ``k``.

    The neighbour search is done once for the largest ``k``. Keys are ``"knn_top1@{k}"`` and, when
    ``num_classes >= 5``, ``"knn_top5@{k}"`` (with fewer classes top-5 would be meaningless, so
    only top-1 is reported). A class that no neighbour voted for never counts as a top-5 hit, so
    results do not depend on how ties among zero scores are broken. ``num_classes`` defaults to
    ``max(label) + 1`` over both splits. Runs on the device of ``train_features``.

    Args:
        train_features: (N, D) bank; test_features: (Q, D); labels (N,), (Q,) integer.

    Returns:
        e.g. ``{"knn_top1@20": 91.2, "knn_top5@20": 99.1, "knn_top1@200": 90.4, ...}``.
    """
    _check_features(train_features, train_labels, test_features)
    _check_features(test_features, test_labels)
    ks = [k] if isinstance(k, int) else list(k)
    if not ks:
        raise ValueError("k must be an int or a non-empty sequence of ints")
    _check_k(ks, train_features.shape[0])
    if test_features.shape[0] == 0:
        raise ValueError("test set is empty; nothing to evaluate")
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    _check_scalars(num_classes, temperature, chunk_size)
    _check_label_range(train_labels, num_classes, "train_labels")
    _check_label_range(test_labels, num_classes, "test_labels")

    top = 5 if num_classes >= 5 else 1
    device = train_features.device
    correct = {kk: torch.zeros(2, dtype=torch.long, device=device) for kk in ks}
    with torch.no_grad():
        chunks = _neighbour_chunks(test_features, train_features, train_labels, max(ks), chunk_size)
        for rows, top_sim, top_labels in chunks:
            target = test_labels[rows].to(device).unsqueeze(1)
            for kk in ks:
                scores = _vote(top_sim[:, :kk], top_labels[:, :kk], num_classes, temperature)
                top_scores, top_classes = scores.topk(top, dim=1)
                # A zero-score class got no neighbour's vote; ranking it by tie-break is arbitrary.
                hits = (top_classes == target) & (top_scores > 0)  # (q, top)
                correct[kk][0] += hits[:, 0].sum()
                correct[kk][1] += hits.any(dim=1).sum()
    n = test_features.shape[0]
    result = {}
    for kk in ks:
        c1, c5 = correct[kk].tolist()  # one sync per k, at the end
        result[f"knn_top1@{kk}"] = 100.0 * c1 / n
        if top == 5:
            result[f"knn_top5@{kk}"] = 100.0 * c5 / n
    return result
