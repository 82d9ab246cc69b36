"""Backbone construction by name (torchvision or timm), with the CIFAR stem for small images."""

from __future__ import annotations

import difflib

import torchvision
from torch import nn

__all__ = ["create_backbone", "cifar_stem_"]


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


def create_backbone(name: str, *, cifar_stem: bool = False, image_size: int | None = None,
                    **kwargs) -> nn.Module:
    """Backbone by name, randomly initialised: ``"resnet50"`` (torchvision) or ``"timm:vit_small_patch16_224"``.

    Names without a prefix are looked up in torchvision first, then timm. ``cifar_stem`` applies
    :func:`cifar_stem_` (ResNets only). ``image_size`` is passed to models built for one input
    size (ViTs, Swin: timm's ``img_size``, torchvision's ``image_size``) and ignored by the others.
    Nothing is downloaded: weights are random.
    """
    if name.startswith("timm:"):
        return _timm(name[5:], cifar_stem, image_size, kwargs)
    if name.startswith("tv:"):
        name = name[3:]
    tv_names = torchvision.models.list_models(module=torchvision.models)
    if name in tv_names:
        model = _sized(lambda **kw: torchvision.models.get_model(name, weights=None, **kw),
                       "image_size", image_size, kwargs)
        return cifar_stem_(model) if cifar_stem else model
    return _timm(name, cifar_stem, image_size, kwargs, extra_names=tv_names)


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


def _timm(name: str, cifar_stem: bool, image_size: int | None, kwargs: dict,
          extra_names: list[str] = ()) -> nn.Module:
    import timm

    if not timm.is_model(name):
        known = list(extra_names) + timm.list_models()
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        raise ValueError(f"unknown backbone {name!r} (neither torchvision nor timm); "
                         f"closest names: {close}")
    model = _sized(lambda **kw: timm.create_model(name, pretrained=False, **kw), "img_size",
                   image_size, kwargs)
    return cifar_stem_(model) if cifar_stem else model

