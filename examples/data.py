"""Data sets for the example scripts: items are ``(uint8 images, int label)``.

Pretraining (:class:`PretrainViews`, :class:`SeededViews`): CPU workers decode each image once and
cut BOTH views' random resized crops from the full-resolution image, as the official BYOL input
pipeline does (``byol/utils/dataset.py``: one box per view, bicubic resize to the view size),
giving ``uint8 (2, 3, S, S)``. The crops of an image are a pure function of (seed, epoch, index),
so a resumed run, any number of workers and any number of processes see the same crops. The rest
of each view's augmentation (flip, colour, blur, solarisation) runs on the device. Evaluation
items are ``uint8 (3, S, S)`` centre crops. Images stay uint8 until they reach the device
(:func:`to_device_images` converts them to float in [0, 1]), which moves 4x fewer bytes through
worker queues, pinned memory and the host-to-device copy than float32.

Data sets (``--dataset``):

* ``folder``: an ImageNet-style tree ``root/{train,val}/<class>/<image>`` (or ``root/<class>/...``
  without a ``val`` folder: a held-out split is then carved out with :func:`split_indices`).
* ``cifar10``, ``cifar100``, ``stl10``: torchvision, read from ``root`` (``download=True`` to
  fetch; off by default). STL-10 pretrains on ``train+unlabeled`` (105k images).
* ``npz``: a file with ``train_images`` uint8 (N, 3, H, W) and optionally ``train_labels`` (N,).
* ``digits``: scikit-learn's bundled 1,797 handwritten digits (8x8 grayscale, no download),
  upsampled and repeated to 3 channels.

An image file that cannot be decoded (zero bytes, truncated, not an image) raises
:class:`BadImageError` naming it; :class:`SubstitutingViews` (pretraining) and
:class:`ReplaceUnreadable` (evaluation) replace it by the next readable item of the data set
(index + 1, + 2, ...), the same substitute every time, so that a resumed run stays exact.

Data sets without their own test split (``npz``, ``digits``, ``folder`` without ``val``) hold out
a seeded ``val_fraction`` of the images: it is excluded from pretraining and used as the
evaluation split by kNN monitoring, knn_eval.py and linear_eval.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from byol_pytorch.augment import sample_crop_boxes, to_float_images

__all__ = [
    "DATASETS", "check_data_args", "split_indices", "PretrainViews",
    "SeededViews", "SubstitutingViews", "ReplaceUnreadable", "BadImageError", "read_image",
    "readable_item", "SeededSampler", "eval_transform", "train_eval_transform", "build_dataset",
    "shard", "to_device_images", "TensorImageDataset", "default_workers", "load_npz",
    "load_digits", "pretrain_loader", "labelled_splits",
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


def _rgb_uint8(img: Any) -> Tensor:
    """PIL image or uint8 (C, H, W) tensor -> uint8 (3, H, W) tensor."""
    if not isinstance(img, Tensor):
        img = TF.pil_to_tensor(img.convert("RGB") if img.mode != "RGB" else img)
    img = img.as_subclass(Tensor)
    return img.expand(3, -1, -1) if img.shape[0] == 1 else img


class PretrainViews:
    """Image (PIL or uint8 tensor) -> uint8 (2, 3, S, S): two random resized crops of the image.

    Each view's box comes from the official sampler (``byol_pytorch.augment.sample_crop_boxes``)
    on the full-resolution image, and the crop
    is resized to S x S with bicubic interpolation (antialiased), as the official pipeline does
    before its device-side augmentation. Randomness comes from ``self.generator``, which
    :class:`SeededViews` seeds per item.
    """

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.image_size, self.scale, self.ratio = image_size, scale, ratio
        self.generator = torch.Generator()

    def crop(self, img: Any, views: int = 1) -> Tensor:
        """``views`` crops of one image: uint8 (views, 3, S, S)."""
        img = _rgb_uint8(img)  # once: tensor crops of uint8 measured 2.5x faster than PIL's
        boxes = sample_crop_boxes(views, *img.shape[-2:], self.scale, self.ratio,
                                  generator=self.generator)
        return torch.stack([TF.resized_crop(img, *box, [self.image_size, self.image_size],
                                            interpolation=InterpolationMode.BICUBIC,
                                            antialias=True) for box in boxes.tolist()])

    def one(self, img: Any) -> Tensor:
        """One view: uint8 (3, S, S)."""
        return self.crop(img)[0]

    def __call__(self, img: Any) -> Tensor:
        return self.crop(img, views=2)


class SeededViews(Dataset):
    """Wraps a data set whose transform is a :class:`PretrainViews`: item ``(index, seed)`` ->
    ``(uint8 (2, 3, S, S), label)``, the crops drawn from a generator seeded with ``seed``."""

    def __init__(self, dataset: Dataset, views: PretrainViews) -> None:
        self.dataset, self.views = dataset, views

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int]:
        index, seed = item
        self.views.generator.manual_seed(seed)  # the transform runs inside dataset[index]
        return self.dataset[index]


class BadImageError(OSError):
    """An image file that cannot be decoded (zero bytes, truncated, not an image)."""


def read_image(path: str) -> Any:
    """ImageFolder loader: the RGB PIL image, or :class:`BadImageError` naming the file."""
    from PIL import UnidentifiedImageError
    from torchvision.datasets.folder import pil_loader

    try:
        return pil_loader(path)  # open + convert("RGB"): decodes the whole file
    except (OSError, SyntaxError, ValueError) as err:  # what PIL raises for broken files
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            why = "empty file"
        elif isinstance(err, UnidentifiedImageError):
            why = "not an image PIL can read"
        else:
            why = f"{type(err).__name__}: {err}"
        raise BadImageError(f"unreadable image {path} ({why})") from None


def readable_item(dataset: Dataset, index: int, before_try: Callable[[], Any] = lambda: None
                  ) -> tuple[Any, list[str]]:
    """``dataset[index]``, or where its image cannot be decoded the next readable item (index
    + 1, + 2, ..., wrapping around), and the messages of the unreadable ones passed over.
    ``before_try`` runs before each attempt (to re-seed the crops: the substitute's crops then
    depend only on the item seed, as any item's)."""
    failures: list[str] = []
    for offset in range(len(dataset)):
        before_try()
        try:
            return dataset[(index + offset) % len(dataset)], failures
        except BadImageError as err:
            failures.append(str(err))
    raise BadImageError(f"none of the {len(dataset)} images can be read (e.g. "
                        f"{failures[0] if failures else 'no files'}); check the data path")


class SubstitutingViews(SeededViews):
    """:class:`SeededViews` that replaces an unreadable image by the next readable one
    (:func:`readable_item`); items are ``(views, label, messages)``, ``messages`` naming the
    unreadable files passed over (one per line, "" if none), for the main process to report:
    the workers that find them are other processes."""

    def __getitem__(self, item: tuple[int, int]) -> tuple[Tensor, int, str]:
        index, seed = item
        (views, label), failures = readable_item(
            self.dataset, index, lambda: self.views.generator.manual_seed(seed))
        return views, label, "\n".join(failures)


class ReplaceUnreadable(Dataset):
    """Evaluation items with unreadable images replaced by the next readable item
    (:func:`readable_item`), each such file reported once per process on stderr."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.reported: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item, failures = readable_item(self.dataset, index)
        for message in set(failures) - self.reported:
            self.reported.add(message)
            print(f"warning: {message}: replaced by the next readable image for evaluation",
                  file=sys.stderr, flush=True)
        return item


class SeededSampler(DistributedSampler):
    """DistributedSampler that yields ``(index, seed)`` with a seed that depends only on
    (``seed``, epoch, index), and that can start part-way into an epoch (``set_start``), so that a
    run resumed mid-epoch sees exactly the batches, and crops, the interrupted run had left."""

    start = 0

    def set_start(self, index: int) -> None:
        self.start = index

    def item_seed(self, index: int) -> int:
        return ((self.seed * 1_000_003 + self.epoch) * 2_147_483_647 + index) % 2**63

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start:]
        return iter([(i, self.item_seed(i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def eval_transform(image_size: int, resize_size: int | None = None) -> Callable[[Any], Tensor]:
    """The standard evaluation view: resize the short side to ``resize_size``, centre crop."""
    return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(resize_size or image_size, antialias=True),
                       v2.CenterCrop(image_size), _PlainTensor()])


def train_eval_transform(image_size: int, crop_scale: tuple[float, float] = (0.08, 1.0)
                         ) -> Callable[[Any], Tensor]:
    """Linear-evaluation training view (BYOL App. C.1; ``LINEAR_TRAIN`` in the official
    ``dataset.py``): the pretraining crop sampler, bicubic resize, random horizontal flip."""
    crop = PretrainViews(image_size, crop_scale)
    crop.generator = None  # the global torch RNG of the worker (seeded per worker by DataLoader)
    return v2.Compose([crop.one, v2.RandomHorizontalFlip(), _PlainTensor()])


def to_device_images(x: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """uint8 (B, C, H, W) batch -> float32 in [0, 1] on ``device`` (the copy moves uint8)."""
    x = to_float_images(x.to(device, non_blocking=True))
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


def load_npz(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """(N, 3, H, W) uint8 images (1-channel ones repeated to 3) and (N,) int64 labels (None when
    the file has no ``train_labels``) from an npz with ``train_images`` and ``train_labels``."""
    with np.load(path) as f:
        if "train_images" not in f.files:
            raise ValueError(f"{path} has no 'train_images' array (found {f.files})")
        images = torch.from_numpy(np.ascontiguousarray(f["train_images"]))
        labels = torch.from_numpy(f["train_labels"]).long() if "train_labels" in f.files else None
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{path}: train_images must be uint8 (N, 3, H, W), got "
                         f"{images.dtype} {tuple(images.shape)}")
    if labels is not None and labels.shape != (images.shape[0],):
        raise ValueError(f"{path}: train_labels must have shape ({images.shape[0]},), got "
                         f"{tuple(labels.shape)}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return images, labels


def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled 1,797 digits: (N, 3, 8, 8) uint8 images and (N,) int64 labels."""
    from sklearn import datasets

    digits = datasets.load_digits()  # (1797, 8, 8) float in [0, 16]
    images = torch.from_numpy(np.round(digits.images * (255.0 / 16.0)).astype(np.uint8))
    return images.unsqueeze(1).expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(digits.target)


def _held_out(dataset: Dataset, split: str, val_fraction: float, seed: int) -> Dataset:
    train_idx, val_idx = split_indices(len(dataset), val_fraction, seed)
    return Subset(dataset, val_idx if split == "val" else train_idx)


def _image_folder(root: Path, transform: Callable) -> Dataset:
    """ImageFolder whose unreadable files raise :class:`BadImageError`; a clear error if the
    folder holds no image."""
    import torchvision.datasets as tvd

    try:
        return tvd.ImageFolder(root, transform, loader=read_image)
    except FileNotFoundError as err:  # no class folder, or no image file in any of them
        raise FileNotFoundError(f"no images in {root} ({err}); expected "
                                "root/train/<class>/<image> or root/<class>/<image>") from None


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
            ds = _image_folder(path / ("val" if split == "val" else "train"), transform)
            return ds, len(ds.classes)
        ds = _image_folder(train_dir, transform)
        return _held_out(ds, split, val_fraction, split_seed), len(ds.classes)
    images, labels = load_npz(root) if name == "npz" else load_digits()
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


def pretrain_loader(args: Any, rank: int, world_size: int, pin_memory: bool
                    ) -> tuple[DataLoader, SeededSampler, int | None]:
    """pretrain.py's loader of uint8 (B, 2, 3, S, S) view crops, its sampler, and the number of
    classes (None if unlabelled). Unreadable images are replaced by readable ones; data with no
    readable image fails now, not hours in."""
    crops = PretrainViews(args.image_size, (args.crop_min_scale, 1.0))
    images, num_classes = build_dataset(args.dataset, args.data_path, "pretrain", crops,
                                        download=args.download, val_fraction=args.val_fraction,
                                        split_seed=args.split_seed)
    dataset = SubstitutingViews(images, crops)
    _ = dataset[(0, 0)]
    sampler = SeededSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True,
                            seed=args.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=args.batch_size // (world_size * args.accum_steps),
                        sampler=sampler, drop_last=True, num_workers=args.workers,
                        pin_memory=pin_memory, persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(args.seed))
    return loader, sampler, num_classes


def labelled_splits(args: Any, transform: Callable) -> list[Dataset]:
    """pretrain.py's labelled (train, val) splits for kNN monitoring, unreadable images replaced."""
    return [ReplaceUnreadable(build_dataset(args.dataset, args.data_path, part, transform,
                                            val_fraction=args.val_fraction,
                                            split_seed=args.split_seed)[0])
            for part in ("train", "val")]
