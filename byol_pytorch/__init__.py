"""byol-torch: Bootstrap Your Own Latent (Grill et al., 2020) for any PyTorch backbone; a
drop-in for byol-pytorch 0.9.1, whose names live in ``byol_pytorch.byol_pytorch``."""

import torch


def _check_torch(version: str) -> None:
    """Fail at import, with the fix, on a torch older than setup.cfg's bound (torch.compiler and
    the device-generic torch.amp.GradScaler appeared in 2.3); unusual version strings pass."""
    try:
        found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    except ValueError:
        return
    if found < (2, 3):
        raise ImportError(f"byol_pytorch needs torch>=2.3, found torch {version}; upgrade it: "
                          "pip install 'torch>=2.3' 'torchvision>=0.18'")


_check_torch(torch.__version__)  # before the modules that use newer torch APIs
from byol_pytorch.augment import BYOLAugment, Normalize, default_views  # noqa: E402
from byol_pytorch.byol import BYOL, unwrap, update_moving_average  # noqa: E402
from byol_pytorch.byol_pytorch import EMA, SEM, NetWrapper  # noqa: E402  (0.9.1's names)
from byol_pytorch.deepmind import load_deepmind_checkpoint  # noqa: E402
from byol_pytorch.ema import ema_update_, make_target  # noqa: E402
from byol_pytorch.features import FeatureExtractor, resolve_layer  # noqa: E402
from byol_pytorch.heads import MLP, SimSiamMLP  # noqa: E402
from byol_pytorch.losses import byol_loss, symmetric_byol_loss  # noqa: E402
from byol_pytorch.optim import LARS, param_groups  # noqa: E402
from byol_pytorch.schedules import cosine_tau, warmup_cosine  # noqa: E402
from byol_pytorch.trainer import BYOLTrainer, MockDataset  # noqa: E402
from byol_pytorch.version import __version__  # noqa: E402

__all__ = [
    "BYOL", "BYOLAugment", "BYOLTrainer", "EMA", "FeatureExtractor", "LARS", "MLP", "MockDataset",
    "NetWrapper", "Normalize", "SEM", "SimSiamMLP", "__version__", "byol_loss", "cosine_tau",
    "default_views", "ema_update_", "load_deepmind_checkpoint", "make_target", "param_groups",
    "resolve_layer", "symmetric_byol_loss", "unwrap", "update_moving_average", "warmup_cosine",
]
