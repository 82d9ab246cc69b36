"""Evaluation of frozen representations: weighted kNN and linear probe."""

from __future__ import annotations

from byol_pytorch.eval.knn import extract_features, knn_accuracy, knn_predict
from byol_pytorch.eval.linear import check_frozen, linear_probe_accuracy, train_linear_probe

__all__ = [
    "extract_features",
    "knn_predict",
    "knn_accuracy",
    "train_linear_probe",
    "linear_probe_accuracy",
    "check_frozen",
]
