"""Backbone construction by name (torchvision or timm), with the CIFAR stem for small images."""

from __future__ import annotations

import difflib

import torchvision
from torch import nn

__all__ = ["create_backbone", "cifar_stem_", "zero_init_residual_"]


def cifar_stem_(resnet: nn.Module) -> nn.Module:
    """In place: a 3x3 stride-1 first convolution and no max-pool, for 32-96 px images.

    The standard ImageNet stem (7x7 stride 2 + max-pool) shrinks a 32 px image to 8 px before the
    first block; the CIFAR variant (He et al. 2016, Sec. 4.2) keeps the resolution.
    Works on torchvision (``conv1``/``maxpool``) and timm (``conv1``/``maxpool``) ResNets.
    """
    conv1 = getattr(resnet, "conv1", None)
    if not isinstance(conv1, nn.Conv2d) or not hasattr(resnet, "maxpool"):
        raise ValueError(f"cifar_stem_ expects a ResNet with conv1 and maxpool, got "
                         f"{type(resnet).__name__}")
    resnet.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    resnet.maxpool = nn.Identity()
    return resnet


def zero_init_residual_(model: nn.Module) -> int:
    """In place: zero the scale of the last BatchNorm of every residual block; returns their number.

    Each block then starts as its shortcut (Goyal et al., 2017), as in the official BYOL ResNets
    and torchvision's ``zero_init_residual=True``. Covers torchvision's ``BasicBlock`` /
    ``Bottleneck`` and timm blocks with a ``zero_init_last()`` method; other modules are untouched.
    """
    from torchvision.models.resnet import BasicBlock, Bottleneck

    blocks = 0
    for module in model.modules():
        if isinstance(module, (BasicBlock, Bottleneck)):
            last_bn = module.bn3 if isinstance(module, Bottleneck) else module.bn2
            nn.init.zeros_(last_bn.weight)
        elif callable(getattr(module, "zero_init_last", None)):
            module.zero_init_last()
        else:
            continue
        blocks += 1
    return blocks


def create_backbone(name: str, *, cifar_stem: bool = False, image_size: int | None = None,
                    zero_init_residual: bool = False, **kwargs) -> nn.Module:
    """Backbone by name, randomly initialised: ``"resnet50"`` (torchvision) or ``"timm:vit_small_patch16_224"``.

    Names without a prefix are looked up in torchvision first, then timm. ``cifar_stem`` applies
    :func:`cifar_stem_` (ResNets only). ``image_size`` is passed to models built for one input
    size (ViTs, Swin: timm's ``img_size``, torchvision's ``image_size``) and ignored by the others.
    ``zero_init_residual`` applies :func:`zero_init_residual_` (models without residual blocks
    are unchanged). Nothing is downloaded: weights are random.
    """
    if name.startswith("timm:"):
        model = _timm(name[5:], image_size, kwargs)
    else:
        name = name[3:] if name.startswith("tv:") else name
        tv_names = torchvision.models.list_models(module=torchvision.models)
        if name in tv_names:
            model = _sized(lambda **kw: torchvision.models.get_model(name, weights=None, **kw),
                           "image_size", image_size, kwargs)
        else:
            model = _timm(name, image_size, kwargs, extra_names=tv_names)
    if zero_init_residual:
        zero_init_residual_(model)
    return cifar_stem_(model) if cifar_stem else model


def _sized(build, size_arg: str, image_size: int | None, kwargs: dict) -> nn.Module:
    """``build(size_arg=image_size, **kwargs)`` if the model takes that argument, else without it."""
    if image_size is None or size_arg in kwargs:
        return build(**kwargs)
    try:
        return build(**{size_arg: image_size}, **kwargs)
    except TypeError as err:  # a model for any input size: "unexpected keyword argument"
        if size_arg not in str(err):
            raise
        return build(**kwargs)


def _timm(name: str, image_size: int | None, kwargs: dict, extra_names: list[str] = ()
          ) -> nn.Module:
    import timm

    if not timm.is_model(name):
        known = list(extra_names) + timm.list_models()
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        raise ValueError(f"unknown backbone {name!r} (neither torchvision nor timm); "
                         f"closest names: {close}")
    return _sized(lambda **kw: timm.create_model(name, pretrained=False, **kw), "img_size",
                  image_size, kwargs)

