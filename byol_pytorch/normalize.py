"""Per-channel image normalisation: the one place where images are normalised.

Used by the augmentations (the last step of every view), by ``BYOL(...)(x, return_embedding=True)``
(embeddings get the views' normalisation) and by the evaluation encoders of the examples and
benchmarks, so pretraining and evaluation cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; uint8 images are scaled to [0, 1] first.

    Input (B, C, H, W) uint8 in [0, 255] or float in [0, 1] -> (B, C, H, W) float (float32 for
    uint8, else the input's dtype). ``mean`` and ``std`` have one value per channel (or one for
    all); they are non-persistent buffers, so they follow ``.to()`` and add no state-dict keys.

    Args:
        mean: per-channel mean, e.g. :data:`IMAGENET_MEAN`.
        std: per-channel standard deviation, all positive.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        try:
            mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
            std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"mean and std must be sequences of floats, got {mean!r} and "
                            f"{std!r}") from None
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(f"mean and std need the same (non-zero) length, got "
                             f"{mean_t.numel()} and {std_t.numel()}")
        if (std_t <= 0).any():
            raise ValueError(f"std must be positive, got {tuple(std_t.tolist())}")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    @property
    def channels(self) -> int:
        """Number of channels the statistics are for (1 applies to any number)."""
        return self.mean.numel()

    def extra_repr(self) -> str:
        return f"mean={tuple(self.mean.tolist())}, std={tuple(self.std.tolist())}"

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        """x: (B, C, H, W) -> normalised (B, C, H, W); ``inplace`` overwrites a float ``x``."""
        if x.dim() != 4:
            raise ValueError(f"Normalize expects a batch of images (B, C, H, W), got shape "
                             f"{tuple(x.shape)}")
        if self.channels not in (1, x.shape[1]):
            raise ValueError(f"mean/std have {self.channels} values but the images have "
                             f"{x.shape[1]} channels; pass one value per channel")
        if x.dtype == torch.uint8:
            x, inplace = x.float().div_(255), True
        elif not x.is_floating_point():
            raise TypeError(f"Normalize expects uint8 or float images, got dtype {x.dtype}")
        mean = self.mean.to(x.device, x.dtype).view(1, -1, 1, 1)
        inv_std = self.std.to(x.device, x.dtype).reciprocal().view(1, -1, 1, 1)
        return x.sub_(mean).mul_(inv_std) if inplace else (x - mean) * inv_std
