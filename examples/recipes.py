"""Every recipe number in one place: pretraining presets, the official settings by run length,
per-data-set defaults and normalisation, evaluation sizes, the paper's linear evaluation, and the
backbones by name. ``pretrain.py``, the evaluation scripts and the quickstart read them from here;
examples/README.md lists each value with its reference.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
import torchvision
from torch import nn

from byol_pytorch.augment import IMAGENET_MEAN, IMAGENET_STD
from byol_pytorch.deepmind import same_padding_

# Defaults per --preset (a flag given on the command line wins). "imagenet" is the official BYOL
# code (deepmind-research byol/configs/byol.py: LARS eta 1e-3, 10 warm-up epochs, batch 4096; LR,
# weight decay and tau by run length, IMAGENET_BY_EPOCHS; heads' output layers without bias,
# byol/utils/networks.py; zero-initialised last BN of each residual block). "small" is
# solo-learn's CIFAR recipe (scripts/pretrain/cifar/byol.yaml: LARS eta 0.02 with LARC clipping,
# LR 1.0, wd 1e-5, tau 0.99, batch 256, 1000 epochs, heads with biases) with the CIFAR stem.
PRESETS = {
    "imagenet": dict(backbone="resnet50", image_size=224, batch_size=4096, epochs=300,
                     warmup_epochs=10, lars_eta=0.001, lars_clip=False, cifar_stem=False,
                     crop_min_scale=0.08, flip_p=0.5, head_output_bias=False),
    "small": dict(backbone="resnet18", image_size=32, batch_size=256, epochs=1000, base_lr=1.0,
                  weight_decay=1e-5, warmup_epochs=10, tau=0.99, lars_eta=0.02, lars_clip=True,
                  cifar_stem=True, crop_min_scale=0.08, flip_p=0.5, head_output_bias=True),
}
# The official presets by epochs (byol/configs/byol.py _LR_PRESETS, _WD_PRESETS, _EMA_PRESETS):
# (base LR, weight decay, tau). Other lengths take the nearest on a log scale (200 -> 300).
IMAGENET_BY_EPOCHS = {40: (0.45, 1e-6, 0.97), 100: (0.45, 1e-6, 0.99), 300: (0.3, 1e-6, 0.99),
                      1000: (0.2, 1.5e-6, 0.996)}
DEFAULT_PRESET = {"folder": "imagenet", "stl10": "imagenet", "cifar10": "small",
                  "cifar100": "small", "npz": "small", "digits": "small"}
# Views for the digits: no flips (a mirrored 2 is not a 2), milder crops (a 20% crop of an 8x8
# digit is rarely the same digit); BYOLAugment / default_views arguments.
DIGIT_VIEWS = dict(crop_scale=(0.4, 1.0), flip_p=0.0)
# The embedded digits are a laptop demo: small images and a short run unless told otherwise.
DATASET_DEFAULTS = {"digits": dict(image_size=16, batch_size=128, epochs=10, warmup_epochs=1,
                                   crop_min_scale=DIGIT_VIEWS["crop_scale"][0],
                                   flip_p=DIGIT_VIEWS["flip_p"]),
                    "stl10": dict(image_size=96)}
# Per-channel (mean, std) of the views: each CIFAR's own (solo-learn's MEANS_N_STD), else
# ImageNet's (the paper).
NORMALIZATION = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                 "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
# The paper's linear evaluation (BYOL App. C.1) as DeepMind's code sets it: byol/configs/eval.py
# (80 epochs, SGD Nesterov momentum 0.9, base LR 0.2, no warm-up), utils/schedules.py (LR = base
# x batch / 256, cosine to 0), eval_experiment.py (optax.sgd: no weight decay); batch 1024.
PAPER_LINEAR_EVAL: Mapping[str, Any] = MappingProxyType(dict(
    epochs=80, batch_size=1024, base_lr=0.2, lr_reference_batch=256, momentum=0.9, nesterov=True,
    weight_decay=0.0))


def imagenet_settings(epochs: int) -> tuple[int, tuple[float, float, float]]:
    """(official run length whose settings apply, (base LR, weight decay, tau)) for ``epochs``."""
    nearest = min(IMAGENET_BY_EPOCHS, key=lambda e: abs(math.log(epochs / e)))
    return nearest, IMAGENET_BY_EPOCHS[nearest]


def fill_pretrain_defaults(args: Any, world_size: int = 1, on_cpu: bool = True) -> None:
    """In place, pretrain.py's arguments left at None: the architecture of ``--init-from``'s
    weights, then the preset's values (by data set; imagenet: the official settings for
    ``--epochs``), SyncBatchNorm (the imagenet preset on several GPUs) and the CIFAR stem (the
    small preset, ResNet stems). ValueError for an unknown backbone or unreadable weights."""
    from common import read_backbone

    args.preset = args.preset or DEFAULT_PRESET[args.dataset]
    args.same_padding = False
    if args.init_from:  # the weights' own architecture, unless given
        if not Path(args.init_from).is_file():
            raise ValueError(f"--init-from {args.init_from!r} does not exist")
        info = read_backbone(args.init_from)[1]
        for key in ("backbone", "cifar_stem", "same_padding"):
            if getattr(args, key) in (None, False) and key in info:
                setattr(args, key, info[key])
    warmup_given = args.warmup_epochs is not None
    for key, value in {**PRESETS[args.preset], **DATASET_DEFAULTS.get(args.dataset, {})}.items():
        if key != "cifar_stem" and getattr(args, key) is None:
            setattr(args, key, value)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.preset == "imagenet":
        for key, value in zip(("base_lr", "weight_decay", "tau"),
                              imagenet_settings(args.epochs)[1]):
            if getattr(args, key) is None:
                setattr(args, key, value)
    if not warmup_given:  # a short run keeps a short warm-up: at most 10% of the epochs
        args.warmup_epochs = min(args.warmup_epochs, 0.1 * args.epochs)
    if args.sync_bn is None:  # the official run pools BN statistics over all devices
        args.sync_bn = args.preset == "imagenet" and world_size > 1 and not on_cpu
    if args.cifar_stem is None:
        with torch.device("meta"):  # no weights allocated
            net = create_backbone(args.backbone, image_size=args.image_size)
        args.cifar_stem = PRESETS[args.preset]["cifar_stem"] and isinstance(
            getattr(net, "conv1", None), nn.Conv2d) and hasattr(net, "maxpool")


def normalization(dataset: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel of the views for images of ``dataset``."""
    return NORMALIZATION.get(dataset, (IMAGENET_MEAN, IMAGENET_STD))


def eval_sizes(preset: str | None, image_size: int | None = None) -> tuple[int, int]:
    """(centre-crop side, short side it is cut from) for evaluation: 224 of 256 (x 224/256 at
    other sizes) for the imagenet preset; small images are used whole."""
    small = preset != "imagenet"
    size = image_size or (32 if small else 224)
    return size, size if small or size <= 96 else int(size * 256 / 224)


def cifar_stem_(resnet: nn.Module) -> nn.Module:
    """In place: a 3x3 stride-1 first convolution and no max-pool, for 32-96 px images.

    The ImageNet stem (7x7 stride 2 + max-pool) shrinks a 32 px image to 8 px before the first
    block; the CIFAR variant (He et al. 2016, Sec. 4.2) keeps the resolution. torchvision or timm.
    """
    conv1 = getattr(resnet, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(resnet, "maxpool"):
        raise ValueError(f"cifar_stem_ expects a ResNet with conv1 and maxpool, got "
                         f"{type(resnet).__name__}")
    resnet.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    resnet.maxpool = nn.Identity()
    return resnet


def zero_init_residual_(model: nn.Module) -> int:
    """In place: zero the scale of the last BatchNorm of every residual block (Goyal et al., 2017),
    as the official BYOL ResNets; torchvision's BasicBlock/Bottleneck and timm blocks with
    ``zero_init_last()``. Returns the number of blocks."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    blocks = 0
    for module in model.modules():
        if isinstance(module, (BasicBlock, Bottleneck)):
            nn.init.zeros_((module.bn3 if isinstance(module, Bottleneck) else module.bn2).weight)
        elif callable(getattr(module, "zero_init_last", None)):
            module.zero_init_last()
        else:
            continue
        blocks += 1
    return blocks


def create_backbone(name: str, *, cifar_stem: bool = False, image_size: int | None = None,
                    zero_init_residual: bool = False, **kwargs: Any) -> nn.Module:
    """A randomly initialised backbone by name: ``"resnet50"`` (torchvision first, then timm) or
    ``"timm:vit_small_patch16_224"``. ``image_size`` reaches models built for one input size (timm's
    ``img_size``, torchvision's ``image_size``). Nothing is downloaded."""
    import timm

    tv_names = torchvision.models.list_models(module=torchvision.models)
    bare = name.removeprefix("timm:").removeprefix("tv:")
    if not name.startswith("timm:") and bare in tv_names:
        build, size_arg = (lambda **kw: torchvision.models.get_model(bare, weights=None, **kw),
                           "image_size")
    elif timm.is_model(bare):
        build, size_arg = lambda **kw: timm.create_model(bare, pretrained=False, **kw), "img_size"
    else:
        close = difflib.get_close_matches(bare, list(dict.fromkeys(tv_names + timm.list_models())),
                                        n=5, cutoff=0.5)
        raise ValueError(f"unknown backbone {name!r} (neither torchvision nor timm); "
                         f"closest names: {close}")
    try:
        model = build(**({size_arg: image_size} if image_size else {}), **kwargs)
    except TypeError as err:  # a model for any input size: "unexpected keyword argument"
        if size_arg not in str(err):
            raise
        model = build(**kwargs)
    if zero_init_residual:
        zero_init_residual_(model)
    return cifar_stem_(model) if cifar_stem else model


def rebuild_backbone(name: str, state: Mapping[str, torch.Tensor] | None, source: str | Path, *,
                     same_padding: bool = False, **kwargs: Any) -> nn.Module:
    """:func:`create_backbone` (``kwargs``), padded as the paper's network if ``same_padding`` (the
    weights of ``python -m byol_pytorch.convert``), then ``state`` (read from ``source``) loaded:
    the one way pretrain.py's ``--init-from`` and the evaluation scripts rebuild a backbone."""
    from common import load_backbone_weights

    net = create_backbone(name, **kwargs)
    if same_padding:
        same_padding_(net)
    if state is not None:
        load_backbone_weights(net, state, source)
    return net
