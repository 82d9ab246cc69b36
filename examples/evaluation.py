"""What knn_eval.py and linear_eval.py share: reading a pretrained backbone back, the frozen
encoder, their command-line arguments, and building the encoder and the labelled splits."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from byol_pytorch.features import FeatureExtractor, HiddenLayer
from byol_pytorch.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize
from common import fail, load_checkpoint, parse_hidden_layer

__all__ = ["load_pretrained_backbone", "EvalEncoder", "add_eval_args", "setup_eval", "EvalSetup",
           "write_result"]


BACKBONE_PREFIX = "online_encoder.net."


def load_pretrained_backbone(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Backbone weights and pretraining arguments from a pretrain.py output.

    Accepts a full checkpoint (``checkpoint.pt``: the backbone is the learner's online encoder)
    or a bare backbone state dict (``backbone.pt`` / ``backbone.safetensors``); for a bare one,
    the arguments come from ``args.json`` next to it if it exists (else ``{}``).

    Returns:
        (backbone state dict, pretraining args as a dict)
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    if "model" in ckpt and isinstance(ckpt["model"], Mapping):  # full checkpoint
        state = {k[len(BACKBONE_PREFIX):]: v for k, v in ckpt["model"].items()
                 if k.startswith(BACKBONE_PREFIX)}
        if not state:
            raise ValueError(f"{path} has a 'model' entry without {BACKBONE_PREFIX!r} keys: "
                             "not a BYOL checkpoint from pretrain.py")
        return state, dict(ckpt.get("args", {}))
    if not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} is neither a pretrain.py checkpoint nor a bare state dict")
    args_file = path.parent / "args.json"
    args = json.loads(args_file.read_text()) if args_file.is_file() else {}
    return dict(ckpt), args


class EvalEncoder(nn.Module):
    """Frozen-feature model for evaluation: uint8/float images -> normalised -> (B, D).

    The images are normalised with the statistics the views had in pretraining (``mean``,
    ``std``), and the representation is the output of ``hidden_layer`` (the one hooked during
    pretraining), as ``BYOL(...)(x, return_embedding=True, return_projection=False)`` computes it.
    """

    def __init__(self, backbone: nn.Module, hidden_layer: HiddenLayer = -2,
                 token_pool: str = "cls", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.encoder = FeatureExtractor(backbone, hidden_layer, token_pool=token_pool)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) uint8 in [0, 255] or float in [0, 1] -> (B, D) float."""
        return self.encoder(self.normalize(x if x.dtype == torch.uint8 else x.float()))


# ------------------------------------------------------------------------------ evaluation setup
def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by knn_eval.py and linear_eval.py (model and data defaults come from the
    checkpoint's pretraining arguments when it has them)."""
    g = parser.add_argument_group("checkpoint and model")
    g.add_argument("--checkpoint", required=True, help="pretrain.py output: checkpoint.pt (full) "
                   "or backbone.pt / backbone.safetensors (bare state dict); detected")
    g.add_argument("--backbone", default=None, help="backbone name; default: from the checkpoint "
                   "(or args.json next to a bare backbone)")
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


_EVAL_FROM_PRETRAIN = {"backbone": None, "cifar_stem": False, "hidden_layer": -2,
                       "token_pool": "cls", "dataset": "digits", "data_path": None,
                       "val_fraction": 0.1, "split_seed": 0, "image_size": None}


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

    ``train_view(image_size)`` builds the transform of the training split instead of the centre
    crop (linear eval with augmentation); ``val_view(image_size, resize_size)`` that of the
    validation split (and of the training split without ``train_view``) instead of
    ``data.eval_transform``. Raises SystemExit with a clear message on bad input.
    """
    from byol_pytorch import cifar_stem_, create_backbone
    from data import (build_dataset, check_data_args, default_workers, eval_transform,
                      normalization)

    if not Path(args.checkpoint).is_file():
        raise fail(f"--checkpoint {args.checkpoint!r} does not exist")
    try:
        state, pre = load_pretrained_backbone(args.checkpoint)
    except (ValueError, RuntimeError, OSError) as err:
        raise fail(f"cannot read {args.checkpoint}: {err}") from None
    for key, default in _EVAL_FROM_PRETRAIN.items():
        if getattr(args, key) is None:
            setattr(args, key, pre.get(key, default))
    if args.backbone is None:
        raise fail("a bare backbone state dict without args.json next to it: pass --backbone "
                   "(and --cifar-stem / --hidden-layer as in pretraining)")
    if args.image_size is None:
        args.image_size = 32 if pre.get("preset", "small") == "small" else 224
    if args.resize_size is None:
        small = pre.get("preset", "small") == "small" or args.image_size <= 96
        args.resize_size = args.image_size if small else int(args.image_size * 256 / 224)
    error = check_data_args(args.dataset, args.data_path, args.download)
    if error:
        raise fail(error)
    if args.workers is None:
        args.workers = default_workers(args.dataset, cap=4)
    try:
        # Models built for one input size (ViTs) are rebuilt at the pretraining size.
        backbone = create_backbone(args.backbone, image_size=pre.get("image_size", args.image_size))
        if args.cifar_stem:
            cifar_stem_(backbone)
        backbone.load_state_dict(state)
        # the normalisation of the pretraining views (each CIFAR's own statistics, else ImageNet's)
        mean, std = normalization(pre.get("dataset", args.dataset))
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


def write_result(result: Mapping[str, Any], output: str | None, checkpoint: str,
                 name: str) -> Path:
    """Write ``result`` as JSON (rank 0 calls it) to ``output`` or next to the checkpoint."""
    path = Path(output) if output else Path(checkpoint).with_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(result), indent=2))
    return path
