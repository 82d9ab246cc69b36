"""BatchNorm with per-view statistics while both views run as one stacked batch.

BYOL normalises each view with its own batch statistics (the paper's networks see one view per
call). Running the two views as two calls costs twice the kernel launches and, on CPU, noticeably
less efficient convolutions at half the batch; stacking them into one batch of 2B is faster but,
naively, makes every BatchNorm layer mix the statistics of both views. :class:`PerViewBatchNorm`
keeps the stacked batch for every other layer and splits only the batch-norm calls: each view's
rows are normalised with that view's statistics and the running statistics are updated view by
view, in the same order as two separate calls, so the result equals two separate passes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["PerViewBatchNorm"]

# Both signatures put the input first and the ``training`` flag at position 5:
# F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
# torch.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
_BATCH_NORMS = (F.batch_norm, torch.batch_norm)
_TRAINING_ARG = 5


class PerViewBatchNorm(TorchFunctionMode):
    """Within this context, batch norm in training mode normalises each of ``num_views`` equal,
    contiguous chunks of the batch on its own.

    Inputs are (num_views * B, C, ...) with view k in rows ``[k * B, (k + 1) * B)``. Every call of
    ``F.batch_norm`` / ``torch.batch_norm`` that uses batch statistics (training mode, or
    ``track_running_stats=False``) runs once per chunk and the chunks are concatenated; all other
    operations run on the whole batch. Layers that mix samples by other means (a hand-written
    batch statistic, ``SyncBatchNorm``'s cross-process path) are not split.

    Note: a BatchNorm module increments ``num_batches_tracked`` once per call, i.e. once for all
    views; this changes the running statistics only for layers built with ``momentum=None``.
    """

    def __init__(self, num_views: int = 2) -> None:
        super().__init__()
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive int, got {num_views!r}")
        self.num_views = num_views

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _BATCH_NORMS and self.num_views > 1:
            training = kwargs["training"] if "training" in kwargs else (
                len(args) > _TRAINING_ARG and args[_TRAINING_ARG])
            if training:
                x = args[0]
                if x.shape[0] % self.num_views:
                    raise RuntimeError(
                        f"per-view batch norm got a batch of {x.shape[0]} rows, not a multiple of "
                        f"{self.num_views} views; the backbone reshapes its batch, so use "
                        "BYOL(..., view_batching='separate')")
                chunks = x.chunk(self.num_views)
                return torch.cat([func(chunk, *args[1:], **kwargs) for chunk in chunks])
        return func(*args, **kwargs)
