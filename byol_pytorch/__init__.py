"""byol-torch: Bootstrap Your Own Latent (Grill et al., 2020) for any PyTorch backbone.

A drop-in for byol-pytorch 0.9.1 (same import name, ``byol_pytorch``); its module
``byol_pytorch.byol_pytorch`` is here too, with the same names.
"""

import torch

from byol_pytorch._install import check_torch, warn_if_shadowed

check_torch(torch.__version__)  # before the modules that use newer torch APIs
from byol_pytorch.augment import BYOLAugment, default_views  # noqa: E402
from byol_pytorch.byol import BYOL, unwrap, update_moving_average  # noqa: E402
from byol_pytorch.ema import EMA, ema_update_, make_target  # noqa: E402
from byol_pytorch.features import FeatureExtractor, NetWrapper, resolve_layer  # noqa: E402
from byol_pytorch.heads import MLP, SEM, SimSiamMLP  # noqa: E402
from byol_pytorch.losses import byol_loss, symmetric_byol_loss  # noqa: E402
from byol_pytorch.models import cifar_stem_, create_backbone  # noqa: E402
from byol_pytorch.normalize import Normalize  # noqa: E402
from byol_pytorch.schedules import cosine_tau, warmup_cosine  # noqa: E402
from byol_pytorch.trainer import BYOLTrainer, MockDataset  # noqa: E402
from byol_pytorch.version import __version__  # noqa: E402

warn_if_shadowed()

__all__ = [
    "BYOL",
    "BYOLAugment",
    "BYOLTrainer",
    "EMA",
    "FeatureExtractor",
    "MLP",
    "MockDataset",
    "NetWrapper",
    "Normalize",
    "SEM",
    "SimSiamMLP",
    "__version__",
    "byol_loss",
    "cifar_stem_",
    "cosine_tau",
    "create_backbone",
    "default_views",
    "ema_update_",
    "make_target",
    "resolve_layer",
    "symmetric_byol_loss",
    "unwrap",
    "update_moving_average",
    "warmup_cosine",
]
