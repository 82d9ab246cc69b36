"""Data sets for the example scripts: every item is ``(uint8 image (3, S, S), int label)``.

Images are decoded and resized on CPU workers to one fixed size so that batches stack; they stay
uint8 until they reach the device (:func:`to_device_images` converts them to float in [0, 1]),
which moves 4x fewer bytes through worker queues, pinned memory and the host-to-device copy than
float32. The learner then augments them on the device.

Data sets (``--dataset``):

* ``folder``: an ImageNet-style tree ``root/{train,val}/<class>/<image>`` (or ``root/<class>/...``
  without a ``val`` folder: a held-out split is then carved out with :func:`split_indices`).
* ``cifar10``, ``cifar100``, ``stl10``: torchvision, read from ``root`` (``download=True`` to
  fetch; off by default). STL-10 pretrains on ``train+unlabeled`` (105k images).
* ``npz``: a file with ``train_images`` uint8 (N, 3, H, W) and optionally ``train_labels`` (N,).
* ``digits``: scikit-learn's bundled 1,797 handwritten digits (8x8 grayscale, no download),
  upsampled and repeated to 3 channels.

Data sets without their own test split (``npz``, ``digits``, ``folder`` without ``val``) hold out
a seeded ``val_fraction`` of the images: it is excluded from pretraining and used as the
evaluation split by kNN monitoring, knn_eval.py and linear_eval.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

__all__ = [
    "DATASETS", "check_data_args", "split_indices", "pretrain_transform", "eval_transform",
    "train_eval_transform", "build_dataset", "shard", "to_device_images", "TensorImageDataset",
    "default_workers",
]

DATASETS = ("folder", "cifar10", "cifar100", "stl10", "npz", "digits")
TORCHVISION_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                    "stl10": "stl10_binary"}
UNLABELLED = -1  # label of images without one (STL-10 "unlabeled", npz without train_labels)


# ------------------------------------------------------------------------------ validation
def check_data_args(dataset: str, root: str | None, download: bool = False) -> str | None:
    """An error message if the data cannot be found (checked before any work), else None."""
    if dataset == "digits":
        return None
    if dataset not in DATASETS:
        return f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}"
    if not root:
        return f"--dataset {dataset} needs --data-path"
    path = Path(root)
    if dataset == "npz":
        if not path.is_file():
            return f"npz file {str(path)!r} does not exist"
        with np.load(path) as f:
            if "train_images" not in f.files:
                return f"{path} has no 'train_images' array (found {f.files})"
        return None
    if dataset == "folder":
        if not path.is_dir():
            return f"image folder {str(path)!r} does not exist (expected root/train/<class>/...)"
        return None
    if not download and not (path / TORCHVISION_DIRS[dataset]).is_dir():
        return (f"{dataset} not found under {str(path)!r} (expected "
                f"{path / TORCHVISION_DIRS[dataset]}); pass --download to fetch it")
    return None


# ------------------------------------------------------------------------------ transforms
class _PlainTensor(torch.nn.Module):
    """tv_tensors.Image -> plain Tensor (collates and pickles without torchvision subclasses)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.as_subclass(Tensor).contiguous()


def pretrain_transform(load_size: int) -> Callable[[Any], Tensor]:
    """PIL/uint8 image -> uint8 (3, L, L): short side resized to L, centre L x L kept.

    The learner's random resized crop then picks its crops inside this image on the device.
    """
    return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(load_size, antialias=True),
                       v2.CenterCrop(load_size), _PlainTensor()])


def eval_transform(image_size: int, resize_size: int | None = None) -> Callable[[Any], Tensor]:
    """The standard evaluation view: resize the short side to ``resize_size``, centre crop."""
    return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(resize_size or image_size, antialias=True),
                       v2.CenterCrop(image_size), _PlainTensor()])


def train_eval_transform(image_size: int, crop_scale: tuple[float, float] = (0.08, 1.0)
                         ) -> Callable[[Any], Tensor]:
    """Linear-evaluation training view (BYOL App. C.1): random resized crop + horizontal flip."""
    return v2.Compose([v2.ToImage(), v2.RGB(),
                       v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
                       v2.RandomHorizontalFlip(), _PlainTensor()])


def to_device_images(x: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """uint8 (B, C, H, W) batch -> float32 in [0, 1] on ``device`` (the copy moves uint8)."""
    x = x.to(device, non_blocking=True)
    x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


# ------------------------------------------------------------------------------ data sets
class TensorImageDataset(Dataset):
    """In-memory uint8 images (N, C, H, W) with optional labels, transformed per item."""

    def __init__(self, images: Tensor, labels: Tensor | None, transform: Callable | None = None):
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, UNLABELLED if self.labels is None else int(self.labels[i])


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic (train, val) index split: a seeded permutation, val = its first part.

    The same (n, val_fraction, seed) always gives the same split, on any machine.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise ValueError(f"cannot hold out {n_val} of {n} images; lower val_fraction")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def _load_npz(path: str | Path) -> tuple[Tensor, Tensor | None]:
    with np.load(path) as f:
        images = torch.from_numpy(np.ascontiguousarray(f["train_images"]))
        labels = torch.from_numpy(f["train_labels"]).long() if "train_labels" in f.files else None
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{path}: train_images must be uint8 (N, 3, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images, labels


def _load_digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # (1797, 8, 8) float in [0, 16]
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
    return images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(digits.target)


def _held_out(dataset: Dataset, split: str, val_fraction: float, seed: int) -> Dataset:
    train_idx, val_idx = split_indices(len(dataset), val_fraction, seed)
    return Subset(dataset, val_idx if split == "val" else train_idx)


def build_dataset(
    name: str,
    root: str | None,
    split: str,
    transform: Callable,
    *,
    download: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> tuple[Dataset, int | None]:
    """A data set of ``(uint8 (3, S, S), label)`` items and its number of classes (None if
    unlabelled).

    Args:
        split: ``"pretrain"`` (images for self-supervised training), ``"train"`` (labelled
            training images for evaluation) or ``"val"`` (held-out evaluation images).
        transform: PIL/uint8 image -> uint8 tensor, e.g. :func:`pretrain_transform`.
    """
    if split not in ("pretrain", "train", "val"):
        raise ValueError(f"split must be 'pretrain', 'train' or 'val', got {split!r}")
    error = check_data_args(name, root, download)
    if error:
        raise FileNotFoundError(error)
    import torchvision.datasets as tvd

    if name in ("cifar10", "cifar100"):
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        ds = cls(root, train=split != "val", transform=transform, download=download)
        return ds, len(ds.classes)
    if name == "stl10":
        stl_split = {"pretrain": "train+unlabeled", "train": "train", "val": "test"}[split]
        ds = tvd.STL10(root, split=stl_split, transform=transform, download=download)
        return ds, 10
    if name == "folder":
        path = Path(root)
        train_dir = path / "train" if (path / "train").is_dir() else path
        if (path / "val").is_dir():
            ds = tvd.ImageFolder(path / ("val" if split == "val" else "train"), transform)
            return ds, len(ds.classes)
        ds = tvd.ImageFolder(train_dir, transform)
        return _held_out(ds, split, val_fraction, split_seed), len(ds.classes)
    images, labels = _load_npz(root) if name == "npz" else _load_digits()
    ds = TensorImageDataset(images, labels, transform)
    num_classes = None if labels is None else int(labels.max()) + 1
    return _held_out(ds, split, val_fraction, split_seed), num_classes


def shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    """Every ``world_size``-th item starting at ``rank``: disjoint shards, no padding, for
    evaluation (DistributedSampler would repeat items to even out the shards)."""
    if world_size == 1:
        return dataset
    return Subset(dataset, range(rank, len(dataset), world_size))


def default_workers(name: str, cap: int) -> int:
    """DataLoader workers per process: 0 for the in-memory npz/digits (workers would only copy
    tensors), else this process's share of the CPUs, between 1 and ``cap``."""
    if name in ("npz", "digits"):
        return 0
    per_process = (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(cap, per_process))


def has_own_val_split(name: str, root: str | None) -> bool:
    """Whether the data set has a test/val split of its own (else a held-out part is used)."""
    if name in ("cifar10", "cifar100", "stl10"):
        return True
    return name == "folder" and root is not None and (Path(root) / "val").is_dir()
