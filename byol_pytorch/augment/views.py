"""BYOL's views (Grill et al., 2020, App. B): :class:`BYOLAugment` and :func:`default_views`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from byol_pytorch.augment import ops


def _floats(v: Any, n: int, name: str, hi: float = float("inf")) -> tuple:
    try:
        t = tuple(float(a) for a in v)
    except (TypeError, ValueError):
        t = ()
    if len(t) != n or isinstance(v, str):
        raise TypeError(f"{name} must be {n} floats, got {v!r}")
    if not all(0 <= a <= hi for a in t) or n == 2 and not 0 < t[0] <= t[1]:
        raise ValueError(f"{name} must lie in [0, {hi}] (a pair: 0 < min <= max), got {v!r}")
    return t


class BYOLAugment(nn.Module):
    """One BYOL view, random parameters drawn PER IMAGE on the images' device: (B, C, H, W) float
    in [0, 1] -> (B, C, S_h, S_w) normalised, same dtype, device and memory format. Random resized
    crop (``crop_scale``/``crop_ratio``: area and w / h bounds), flip, colour jitter (a random op
    order per image), grayscale, blur, solarisation, normalisation; an image that does not draw an
    op keeps it exactly. One ``torch.compile`` graph; ``forward`` = ``apply(x, sample_params())``.

    ``jitter``: strengths (b, c, s, h); hue shifts by U(-h, h) turns (HSV); 0 skips the op.
    ``jitter_style`` (each op clips to [0, 1]): ``"byol"`` (the official code, TF's ops): ``x +
    U(-b, b)``; each channel scaled around ITS OWN mean by U(1 - c, 1 + c); HSV saturation times
    U(1 - s, 1 + s). ``"torchvision"`` (``ColorJitter``, solo-learn): ``x * f``; blends with the
    grey image's mean and with the grey image; f ~ U(max(0, 1 - v), 1 + v): half as strong.
    ``blur_kernel_size``: odd; None: the official ``2 * int(min(image_size) / 20) + 1`` (1 below
    20 px), zero padding. ``crop=False``: inputs already cropped to ``image_size`` by the workers.
    """

    def __init__(self, image_size: int | tuple[int, int], *,
                 crop_scale: tuple[float, float] = (0.08, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5,
                 jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
                 jitter_p: float = 0.8, grayscale_p: float = 0.2, blur_p: float = 1.0,
                 blur_sigma: tuple[float, float] = (0.1, 2.0), blur_kernel_size: int | None = None,
                 solarize_p: float = 0.0, solarize_threshold: float = 0.5,
                 mean: Sequence[float] = ops.IMAGENET_MEAN, std: Sequence[float] = ops.IMAGENET_STD,
                 jitter_style: str = "byol", crop: bool = True) -> None:
        super().__init__()
        size = (image_size,) * 2 if isinstance(image_size, int) else image_size
        if not (isinstance(size, Sequence) and len(size) == 2 and all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise TypeError(f"image_size must be a positive int or pair, got {image_size!r}")
        self.image_size = tuple(size)
        self.crop_scale = _floats(crop_scale, 2, "crop_scale", hi=1.0)
        self.crop_ratio = _floats(crop_ratio, 2, "crop_ratio")
        self.blur_sigma = _floats(blur_sigma, 2, "blur_sigma")
        self.jitter = _floats(jitter, 4, "jitter (brightness, contrast, saturation, hue)")
        _floats(self.jitter[3:], 1, "jitter's hue", hi=0.5)
        for name, p in dict(flip_p=flip_p, jitter_p=jitter_p, grayscale_p=grayscale_p,
                            blur_p=blur_p, solarize_p=solarize_p,
                            solarize_threshold=solarize_threshold).items():
            setattr(self, name, _floats([p], 1, name, hi=1.0)[0])
        if jitter_style not in ("byol", "torchvision") or not isinstance(crop, bool):
            raise ValueError(f"need jitter_style 'byol' or 'torchvision' and crop a bool, got "
                             f"{jitter_style!r} and {crop!r}")
        k = 2 * int(min(self.image_size) / 20) + 1 if blur_kernel_size is None else blur_kernel_size
        if isinstance(k, bool) or not isinstance(k, int) or k % 2 == 0 or k < 1 or \
                self.blur_p > 0 and k // 2 >= min(self.image_size):
            raise ValueError(f"blur_kernel_size must be a positive odd int below "
                             f"2 * min(image_size) = {2 * min(self.image_size)}, got {k!r}")
        self.jitter_style, self.crop, self.blur_kernel_size = jitter_style, crop, k
        self.normalize = ops.Normalize(mean, std)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if k[0] != "_" and k != "training")

    def sample_params(self, batch_size: int, input_size: tuple[int, int],
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Per-image parameters on ``device``, drawn on the generator's device (a CPU generator
        gives the same views anywhere): boxes (B, 4); flip, jitter, grayscale, blur, solarize
        (B,) bool; factors (B, 4) (b, c, s, h); order (B, 4) op per slot; pos (B,); sigma (B,)."""
        gen_device = generator.device if generator is not None else device
        b, (bs, cs, ss, hs) = batch_size, self.jitter
        boxes = ops.sample_crop_boxes(b, *input_size, self.crop_scale, self.crop_ratio,
                                      generator=generator, device=gen_device)
        u = torch.rand(b, 13, generator=generator, device=gen_device)
        byol = self.jitter_style == "byol"  # byol: brightness is a delta, factors may be < 0
        lo = [v if byol else max(0.0, v) for v in (-bs if byol else 1 - bs, 1 - cs, 1 - ss)]
        ranges = zip((*lo, -hs, self.blur_sigma[0]),
                     (bs if byol else 1 + bs, 1 + cs, 1 + ss, hs, self.blur_sigma[1]))
        values = torch.stack([a + (z - a) * u[:, i] for i, (a, z) in enumerate(ranges)], dim=1)
        # hue in slot pos // n: a fixed n rows per slot, yet a uniformly random order per image
        n = -(-b // 4)
        pos = torch.argsort(torch.rand(4 * n, generator=generator, device=gen_device))[:b]
        slots, hue_slot = torch.arange(4, device=gen_device), (pos // n).unsqueeze(1)
        idx = (slots - (slots > hue_slot).long()).clamp_(max=2)
        order = torch.where(slots == hue_slot, ops.HUE, u[:, 10:13].argsort(1).gather(1, idx))
        return {k: v.to(device, non_blocking=True) for k, v in dict(
            boxes=boxes, factors=values[:, :4], sigma=values[:, 4], order=order, pos=pos,
            flip=u[:, 5] < self.flip_p, jitter=u[:, 6] < self.jitter_p,
            grayscale=u[:, 7] < self.grayscale_p, blur=u[:, 8] < self.blur_p,
            solarize=u[:, 9] < self.solarize_p).items()}

    @torch.no_grad()
    def apply(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """Augment ``x`` (B, C, H, W) float in [0, 1] with parameters from :meth:`sample_params`
        -> (B, C, S_h, S_w) normalised, same dtype, device and memory format as ``x``."""
        self._check_input(x)

        def select(key: str, new: Tensor, old: Tensor) -> Tensor:
            return torch.where(p[key].view(-1, 1, 1, 1), new, old)

        y = ops.resized_crop(x, p["boxes"], p["flip"], self.image_size) if self.crop else \
            select("flip", x.flip(-1), x)
        y = y.float().contiguous().clamp_(0.0, 1.0)  # colour maths in float32
        if self.jitter_p > 0 and any(self.jitter):
            y = ops.colour_jitter(y, p["jitter"], p["factors"], p["order"], p["pos"],
                                  self.jitter_style, [s > 0 for s in self.jitter])
        if self.grayscale_p > 0:
            y = select("grayscale", ops.rgb_to_grayscale(y).expand_as(y), y)
        if self.blur_p > 0 and self.blur_kernel_size > 1:
            blurred = ops.gaussian_blur(y, p["sigma"], self.blur_kernel_size)
            y = select("blur", blurred.clamp_(0.0, 1.0), y)  # weights sum to 1 up to rounding
        if self.solarize_p > 0:
            y = ops.solarize(y, p["solarize"], self.solarize_threshold)
        y = self.normalize(y, inplace=True).to(x.dtype)
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, C, H, W) float in [0, 1] -> (B, C, S_h, S_w); ``generator`` makes it reproducible."""
        self._check_input(x)
        return self.apply(x, self.sample_params(x.shape[0], x.shape[-2:], generator, x.device))

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"BYOLAugment expects float images in [0, 1], got "
                            f"{getattr(x, 'dtype', type(x))}; convert uint8 ones with "
                            "byol_pytorch.augment.to_float_images")
        fix = ("pass a batch of images (B, C, H, W), e.g. x.unsqueeze(0)" if x.dim() != 4 else
               "colour jitter and grayscale need RGB images (C=3): set jitter_p=0 and "
               "grayscale_p=0, or pass your own augment_fn" if x.shape[1] != 3 and (
                   self.jitter_p > 0 and any(self.jitter) or self.grayscale_p > 0) else
               f"crop=False needs inputs of exactly image_size {self.image_size}: resize them "
               "or use crop=True" if not self.crop and x.shape[-2:] != self.image_size else "")
        if fix:  # Normalize checks C against mean and std
            raise ValueError(f"BYOLAugment got images of shape {tuple(x.shape)}; {fix}")


def default_views(image_size: int | tuple[int, int], preset: str = "imagenet",
                  **overrides: Any) -> tuple[BYOLAugment, BYOLAugment]:
    """The paper's two asymmetric views (BYOL Table 6): blur p 1.0 / 0.1, solarize p 0.0 / 0.2.

    ``preset``: ``"imagenet"`` (the paper, ``jitter_style="byol"``) or ``"small"``, 32-96 px
    (solo-learn's CIFAR ``asymmetric.yaml``: no blur, ``jitter_style="torchvision"``);
    ``overrides``: :class:`BYOLAugment` arguments for both views (e.g. ``flip_p=0.0``)."""
    if preset not in ("imagenet", "small"):
        raise ValueError(f"preset must be 'imagenet' or 'small', got {preset!r}")
    small = preset == "small"  # crop_scale (0.08, 1), the default, in both presets
    view1, view2 = ({"jitter_style": "torchvision" if small else "byol", "solarize_p": sol,
                     "blur_p": 0.0 if small else blur, **overrides}
                    for blur, sol in ((1.0, 0.0), (0.1, 0.2)))
    return BYOLAugment(image_size, **view1), BYOLAugment(image_size, **view2)
