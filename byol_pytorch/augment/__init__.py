"""BYOL's augmentations: per-image batched ops (:mod:`.ops`) and the two views (:mod:`.views`)."""

from byol_pytorch.augment.ops import (IMAGENET_MEAN, IMAGENET_STD, Normalize, sample_crop_boxes,
                                      to_float_images)
from byol_pytorch.augment.views import BYOLAugment, default_views

__all__ = ["BYOLAugment", "default_views", "Normalize", "to_float_images", "sample_crop_boxes",
           "IMAGENET_MEAN", "IMAGENET_STD"]
