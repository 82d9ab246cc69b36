"""Evaluation of frozen representations: weighted kNN and linear probes (with an LR sweep)."""

from __future__ import annotations

from byol_pytorch.eval.knn import extract_features, knn_accuracy, knn_predict
from byol_pytorch.eval.linear import (
    PAPER_LINEAR_EVAL,
    LinearHeads,
    check_frozen,
    linear_heads_loss,
    linear_probe_accuracy,
    linear_probe_optimizer,
    linear_probe_step,
    linear_probe_sweep,
    scale_lr,
    set_probe_lr,
    summarize_sweep,
    topk_hits,
    train_linear_probe,
    train_linear_probes,
)

__all__ = [
    "extract_features",
    "knn_predict",
    "knn_accuracy",
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
