"""What the evaluation scripts (and pretrain.py's kNN monitor) share: the frozen encoder, the
arguments, reading a backbone back (any file common.read_backbone takes), the labelled splits,
and embedding them on every process."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

import recipes
from common import DistInfo, all_gather_varsize, fail, parse_hidden_layer, read_backbone
from data import build_dataset, check_data_args, default_workers, eval_transform, shard

from byol_pytorch import FeatureExtractor, Normalize
from byol_pytorch.augment import IMAGENET_MEAN, IMAGENET_STD, to_float_images
from byol_pytorch.eval import extract_features, knn_accuracy
from byol_pytorch.features import HiddenLayer

__all__ = ["EvalEncoder", "add_eval_args", "setup_eval", "EvalSetup", "embed_splits",
           "knn_monitor", "write_result"]


class EvalEncoder(nn.Module):
    """Frozen-feature model: uint8/float images -> normalised as the pretraining views -> (B, D),
    the output of the hooked pretraining layer (what ``BYOL(...)(x, return_embedding=True,
    return_projection=False)`` computes)."""

    def __init__(self, backbone: nn.Module, hidden_layer: HiddenLayer = -2,
                 token_pool: str = "cls", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.encoder = FeatureExtractor(backbone, hidden_layer, token_pool=token_pool)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1] -> (B, D) float."""
        return self.encoder(self.normalize(x))


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by knn_eval.py and linear_eval.py (model and data defaults come from the
    checkpoint's pretraining arguments when it has them)."""
    g = parser.add_argument_group("checkpoint and model")
    g.add_argument("--checkpoint", required=True, help="pretrain.py's checkpoint.pt or "
                   "backbone.pt/.safetensors, a torchvision/timm state dict, or a file of "
                   "python -m byol_pytorch.convert (the paper's weights); detected")
    g.add_argument("--backbone", default=None, help="backbone name; default: from the checkpoint "
                   "(args.json next to a bare backbone, or a converted file's metadata)")
    g.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the backbone has the CIFAR stem; default: from the checkpoint")
    g.add_argument("--hidden-layer", default=None, help="representation layer (name, index or "
                   "'none'); default: the one used in pretraining")
    g.add_argument("--token-pool", default=None, choices=["cls", "mean"])
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default=None, help="default: the pretraining data set")
    g.add_argument("--data-path", default=None, help="default: the pretraining data path")
    g.add_argument("--download", action="store_true", help="let torchvision download the data")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="held-out fraction for data sets without a test split (default: as in "
                   "pretraining, so the split is the same)")
    g.add_argument("--split-seed", type=int, default=None)
    g.add_argument("--image-size", type=int, default=None, help="centre-crop side")
    g.add_argument("--resize-size", type=int, default=None, help="short side before the "
                   "centre crop (default: image size x 256/224, or image size for small images)")
    g.add_argument("--batch-size", type=int, default=256, help="images per process per "
                   "feature-extraction batch")
    g.add_argument("--workers", type=int, default=None, help="CPU decoding workers per process "
                   "(default: 0 for the in-memory npz/digits, else min(4, CPUs per process))")
    g = parser.add_argument_group("run")
    g.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    g.add_argument("--output", default=None, help="JSON file for the result (default: next to "
                   "the checkpoint)")
    g.add_argument("--seed", type=int, default=0)


_FROM_PRETRAINING = {"backbone": None, "cifar_stem": False, "hidden_layer": -2, "token_pool": "cls",
                     "dataset": "digits", "data_path": None, "val_fraction": 0.1, "split_seed": 0}


@dataclass
class EvalSetup:
    """What both evaluation scripts need: the frozen encoder and the labelled splits."""

    encoder: EvalEncoder
    train_set: Any
    val_set: Any
    num_classes: int
    info: dict[str, Any]


def setup_eval(args: argparse.Namespace, train_view: Any = None, val_view: Any = None
               ) -> EvalSetup:
    """Resolve defaults from the checkpoint, validate, build the encoder and the data splits.

    ``train_view(image_size)`` builds the training split's transform instead of the centre crop;
    ``val_view(image_size, resize_size)`` the validation split's (and the training split's without
    ``train_view``) instead of ``data.eval_transform``. SystemExit with a clear message on bad
    input.
    """
    if not Path(args.checkpoint).is_file():
        raise fail(f"--checkpoint {args.checkpoint!r} does not exist")
    try:
        state, pre = read_backbone(args.checkpoint)
    except ValueError as err:
        raise fail(f"cannot read {args.checkpoint}: {err}") from None
    for key, default in _FROM_PRETRAINING.items():
        if getattr(args, key) is None:
            setattr(args, key, pre.get(key, default))
    if args.backbone is None:
        raise fail("a bare backbone state dict without args.json next to it: pass --backbone "
                   "(and --cifar-stem / --hidden-layer as in pretraining)")
    size, resize = recipes.eval_sizes(pre.get("preset", "small"),
                                      args.image_size or pre.get("image_size"))
    args.image_size, args.resize_size = size, args.resize_size or resize
    error = check_data_args(args.dataset, args.data_path, args.download)
    if error:
        raise fail(error)
    if args.workers is None:
        args.workers = default_workers(args.dataset, cap=4)
    try:
        # models built for one input size (ViTs) are rebuilt at the pretraining size
        backbone = recipes.rebuild_backbone(
            args.backbone, state, args.checkpoint, same_padding=bool(pre.get("same_padding")),
            cifar_stem=args.cifar_stem, image_size=pre.get("image_size", args.image_size))
        # the normalisation of the pretraining views (each CIFAR's own statistics, else ImageNet's)
        mean, std = recipes.normalization(pre.get("dataset", args.dataset))
        encoder = EvalEncoder(backbone, parse_hidden_layer(args.hidden_layer), args.token_pool,
                              mean, std)
    except (ValueError, RuntimeError) as err:
        raise fail(f"cannot rebuild the backbone {args.backbone!r} from {args.checkpoint}: {err}"
                   ) from None
    view = (val_view or eval_transform)(args.image_size, args.resize_size)
    kw = dict(download=args.download, val_fraction=args.val_fraction, split_seed=args.split_seed)
    train_tf = train_view(args.image_size) if train_view is not None else view
    train_set, num_classes = build_dataset(args.dataset, args.data_path, "train", train_tf, **kw)
    val_set, _ = build_dataset(args.dataset, args.data_path, "val", view, **kw)
    if num_classes is None:
        raise fail(f"{args.dataset} at {args.data_path} has no labels: nothing to evaluate")
    info = dict(checkpoint=str(args.checkpoint), backbone=args.backbone,
                hidden_layer=args.hidden_layer, dataset=args.dataset, num_train=len(train_set),
                num_val=len(val_set), num_classes=num_classes, image_size=args.image_size,
                workers=args.workers)
    return EvalSetup(encoder, train_set, val_set, num_classes, info)


def embed_splits(encoder: nn.Module, datasets: Sequence[Any], run: DistInfo, batch_size: int,
                 workers: int, normalize: bool = True, progress: bool = True) -> list[Tensor]:
    """[features, labels] of each data set: every process embeds its shard, then all-gather.

    Features (N, D) float32 on the device, L2-normalised if ``normalize``; labels (N,).
    """
    out = []
    for dataset in datasets:
        loader = DataLoader(shard(dataset, run.rank, run.world_size), batch_size=batch_size,
                            num_workers=workers, pin_memory=run.device.type == "cuda",
                            generator=torch.Generator())  # not the global RNG (training's)
        feats, labels = extract_features(encoder, loader, run.device, normalize=normalize,
                                         progress=progress and run.is_main)
        out += [all_gather_varsize(feats.to(run.device)), all_gather_varsize(labels.to(run.device))]
    return out


class _LearnerEncoder(nn.Module):
    """uint8 images -> a BYOL learner's representation (the hooked layer), for the kNN monitor."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, x: Tensor) -> Tensor:
        return self.learner(to_float_images(x), return_embedding=True, return_projection=False)


def knn_monitor(learner: nn.Module, datasets: Sequence[Any], run: DistInfo, k: int,
                batch_size: int = 64, workers: int = 0) -> float:
    """kNN top-1 (%) of a learner's online representation: (train, val) data sets of uint8 images,
    every process embeds its shard."""
    if dist.is_initialized():  # ranks' BN statistics drift after the last broadcast: rank 0's
        for buffer in learner.buffers():
            dist.broadcast(buffer, 0)
    bank, bank_y, query, query_y = embed_splits(_LearnerEncoder(learner), datasets, run,
                                                batch_size, workers, progress=False)
    k = min(k, bank.shape[0])
    return knn_accuracy(bank, bank_y, query, query_y, k=k)[f"knn_top1@{k}"]


def write_result(result: Mapping[str, Any], output: str | None, checkpoint: str,
                 name: str) -> Path:
    """Write ``result`` as JSON (rank 0 calls it) to ``output`` or next to the checkpoint."""
    path = Path(output) if output else Path(checkpoint).with_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(result), indent=2))
    return path
