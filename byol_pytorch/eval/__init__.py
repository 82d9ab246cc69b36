"""Evaluation of frozen representations: weighted kNN and linear probes (one head per LR)."""

from byol_pytorch.eval.knn import extract_features, knn_accuracy, knn_predict
from byol_pytorch.eval.linear import (LinearHeads, check_frozen, fit_linear_probe,
                                      linear_probe_accuracy)

__all__ = ["extract_features", "knn_predict", "knn_accuracy", "fit_linear_probe",
           "linear_probe_accuracy", "check_frozen", "LinearHeads"]
