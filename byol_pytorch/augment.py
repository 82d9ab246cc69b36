"""BYOL's image augmentations, batched on the device with random parameters drawn per image.

BYOL (Grill et al., 2020, App. B) builds each view of an image with: random resized crop (scale
0.08-1, aspect ratio 3/4-4/3) -> horizontal flip (p=0.5) -> colour jitter (brightness 0.4,
contrast 0.4, saturation 0.2, hue 0.1, the four adjustments in a random order, p=0.8) -> grayscale
(p=0.2) -> Gaussian blur (kernel ~10% of the image, sigma in [0.1, 2.0]) -> solarisation -> clamp
to [0, 1] -> ImageNet normalisation. The two views differ only in blur and solarisation
probabilities (Table 6), see :func:`default_views`.

Two definitions of the colour jitter are available (``BYOLAugment(jitter_style=...)``):

* ``"byol"``: DeepMind's official BYOL code (deepmind-research ``byol/utils/augmentations.py``,
  TF's image ops): brightness ADDS a delta in [-0.4, 0.4]; contrast scales each channel around
  ITS OWN mean; saturation scales HSV saturation (clipped to [0, 1]); hue rotates the HSV hue.
  Each op clips to [0, 1]. This is about twice as strong as torchvision's definitions with the
  same numbers; :func:`default_views` uses it for the paper's ImageNet views.
* ``"torchvision"``: torchvision's ``ColorJitter`` (multiplicative brightness, blends with the
  grayscale image or its mean), as in solo-learn's CIFAR recipe (``preset="small"``).

The Gaussian blur follows the official code too: zero ("SAME") padding and a kernel of
``2 * int(S / 10 / 2) + 1`` taps for output side S.

Every op is plain torch, vectorised over the batch with no Python loop over images: one
``grid_sample`` for all crops and flips, blend-style colour adjustments with per-image factors,
an exact HSV hue shift, per-image separable Gaussian blur as one grouped convolution. An op with
probability p < 1 runs on the whole batch and a per-image ``torch.where`` keeps its result where
the image drew it: no host syncs and no data-dependent shapes, so ``torch.compile`` traces one
graph. Deterministic given a :class:`torch.Generator`.

The standalone helpers take one factor per image. :func:`adjust_brightness`,
:func:`adjust_contrast`, :func:`adjust_saturation` follow torchvision's definitions (checked
against ``torchvision.transforms.v2.functional``); :func:`adjust_brightness_byol`,
:func:`adjust_contrast_byol`, :func:`adjust_saturation_byol` follow the official BYOL code;
:func:`adjust_hue` is the exact HSV hue rotation, the same in both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol_pytorch.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize

__all__ = [
    "JITTER_STYLES",
    "BYOLAugment",
    "adjust_brightness",
    "adjust_brightness_byol",
    "adjust_contrast",
    "adjust_contrast_byol",
    "adjust_hue",
    "adjust_saturation",
    "adjust_saturation_byol",
    "default_views",
    "gaussian_blur_per_image",
    "rgb_to_grayscale",
    "solarize",
]

# ITU-R 601-2 luma, the weights torchvision, PIL and the official BYOL code use for grayscale.
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# Index of each colour-jitter op in the drawn ``jitter_order``.
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = 0, 1, 2, 3
_CROP_TRIES = 10  # torchvision's RandomResizedCrop tries 10 boxes before falling back
# Colour-jitter definitions, see the module docstring.
JITTER_STYLES = ("byol", "torchvision")


# ---------------------------------------------------------------------------------------------
# Pure per-image helpers (all take (B, C, H, W) float images in [0, 1] and (B,) factors)
# ---------------------------------------------------------------------------------------------


def _per_image(v: Tensor | float, x: Tensor) -> Tensor:
    """Broadcastable (B, 1, 1, 1) view of a per-image value (or a python scalar)."""
    if not isinstance(v, Tensor):
        return torch.full((x.shape[0], 1, 1, 1), float(v), dtype=x.dtype, device=x.device)
    return v.to(device=x.device, dtype=x.dtype).reshape(-1, 1, 1, 1)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma of RGB images, torchvision's weights.

    Args:
        x: (B, 3, H, W) RGB images.

    Returns:
        (B, 1, H, W) grayscale images.
    """
    r, g, b = x.unbind(dim=1)
    # Same operation order as torchvision, so results match it bit for bit.
    return torch.mul(r, _GRAY_WEIGHTS[0]).add_(g, alpha=_GRAY_WEIGHTS[1]).add_(
        b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(1)


def adjust_brightness(x: Tensor, factor: Tensor | float) -> Tensor:
    """Multiply each image by its factor and clamp to [0, 1] (torchvision's ``adjust_brightness``).

    Args:
        x: (B, C, H, W) images in [0, 1].
        factor: (B,) per-image factors (1 leaves the image unchanged).

    Returns:
        (B, C, H, W) adjusted images.
    """
    return (x * _per_image(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with the mean of its grayscale (torchvision's ``adjust_contrast``).

    Args:
        x: (B, 3, H, W) RGB images in [0, 1].
        factor: (B,) per-image factors (1 leaves the image unchanged, 0 gives a flat grey image).

    Returns:
        (B, 3, H, W) adjusted images.
    """
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(mean, x, _per_image(factor, x)).clamp_(0.0, 1.0)


def adjust_saturation(x: Tensor, factor: Tensor | float) -> Tensor:
    """Blend each image with its grayscale version (torchvision's ``adjust_saturation``).

    Args:
        x: (B, 3, H, W) RGB images in [0, 1].
        factor: (B,) per-image factors (1 leaves the image unchanged, 0 gives grayscale).

    Returns:
        (B, 3, H, W) adjusted images.
    """
    return torch.lerp(rgb_to_grayscale(x), x, _per_image(factor, x)).clamp_(0.0, 1.0)


def adjust_hue(x: Tensor, factor: Tensor | float) -> Tensor:
    """Rotate the HSV hue of each image by ``factor`` turns (torchvision's ``adjust_hue``).

    Exact HSV math without building the HSV image: a hue shift keeps each pixel's max and min
    channel, so only the hue (in sextants) is computed and the closed-form HSV->RGB
    ``c = max - chroma * clamp(min(k, 4 - k), 0, 1)``, ``k = (n_c + 6 h) mod 6`` is applied.

    Args:
        x: (B, 3, H, W) RGB images in [0, 1].
        factor: (B,) per-image hue shifts in turns, in [-0.5, 0.5] (0 leaves the image unchanged).

    Returns:
        (B, 3, H, W) adjusted images.
    """
    r, g, b = x.unbind(dim=1)
    # Results go to out= / in-place targets where possible: fresh CPU allocations are slow.
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    chroma = torch.minimum(r, g)
    torch.minimum(chroma, b, out=chroma)
    chroma.neg_().add_(maxc)
    # Hue in sextants times chroma; grey pixels (chroma 0) get 0 as in torchvision.
    h6 = (r - g).add_(chroma, alpha=4.0)  # max is blue
    torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), h6, out=h6)
    torch.where(maxc == r, g - b, h6, out=h6)
    h6.div_(chroma.clamp_min(1e-12))  # |numerator| <= chroma, so the floor never inflates it
    # Channel offsets n = (5, 3, 1) for (R, G, B) in the closed-form HSV->RGB conversion.
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = (offsets + _per_image(factor, x) * 6.0) + h6.unsqueeze(1)  # (B, 3, H, W)
    # w = clamp(min(k, 4 - k), 0, 1) with k mod 6, written as 2 - |k - 2|, all in place.
    k.remainder_(6.0).sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    return k.mul_(chroma.unsqueeze(1)).neg_().add_(maxc.unsqueeze(1))


def adjust_brightness_byol(x: Tensor, delta: Tensor | float) -> Tensor:
    """Add ``delta`` to every pixel of each image and clip to [0, 1] (official BYOL / TF).

    Args:
        x: (B, C, H, W) images in [0, 1].
        delta: (B,) per-image offsets (0 leaves the image unchanged).

    Returns:
        (B, C, H, W) adjusted images.
    """
    return (x + _per_image(delta, x)).clamp_(0.0, 1.0)


def adjust_contrast_byol(x: Tensor, factor: Tensor | float) -> Tensor:
    """``factor * (c - mean(c)) + mean(c)`` for each channel c, then clip (official BYOL / TF).

    Each channel is scaled around its own spatial mean (torchvision uses the grayscale mean).

    Args:
        x: (B, C, H, W) images in [0, 1].
        factor: (B,) per-image factors (1 leaves the image unchanged).

    Returns:
        (B, C, H, W) adjusted images.
    """
    mean = x.mean(dim=(2, 3), keepdim=True)
    return torch.lerp(mean, x, _per_image(factor, x)).clamp_(0.0, 1.0)


def adjust_saturation_byol(x: Tensor, factor: Tensor | float) -> Tensor:
    """Scale the HSV saturation by ``factor``, clipped to [0, 1] (official BYOL / TF).

    Exact without the HSV round trip: hue and value (the max channel v) stay, and each channel's
    distance to v scales with the saturation, so ``c' = v + k (c - v)`` with
    ``k = clip(s * factor, 0, 1) / s = clamp(factor, 0, v / (v - min))`` per pixel.

    Args:
        x: (B, 3, H, W) RGB images in [0, 1].
        factor: (B,) per-image factors (1 leaves the image unchanged, 0 gives v in all channels).

    Returns:
        (B, 3, H, W) adjusted images.
    """
    w, v = _saturation_weight(x, factor)
    return torch.lerp(x, v, w).clamp_(0.0, 1.0)


def _saturation_weight(x: Tensor, factor: Tensor | float) -> tuple[Tensor, Tensor]:
    """``(1 - k, v)``, both (B, 1, H, W): saturation by ``factor`` is ``lerp(x, v, 1 - k)`` with
    the per-pixel k of :func:`adjust_saturation_byol` and the max channel v. A weight
    ``1 - k = 0`` leaves x exactly unchanged."""
    r, g, b = x.unbind(dim=1)
    v = torch.maximum(r, g)
    torch.maximum(v, b, out=v)
    rng = torch.minimum(r, g)
    torch.minimum(rng, b, out=rng)
    rng.neg_().add_(v).clamp_min_(1e-12)  # grey pixels: any k gives v
    k = torch.minimum(_per_image(factor, x).clamp_min(0.0).squeeze(1), rng.reciprocal_().mul_(v))
    return k.neg_().add_(1.0).unsqueeze(1), v.unsqueeze(1)


def _default_blur_kernel_size(image_size: int) -> int:
    """The official BYOL blur kernel for output side S: ``2 * int(S / 10 / 2) + 1`` taps.

    23 at 224 px, 9 at 96, 3 at 32, and 1 (no blur) below 20 px.
    """
    return 2 * int(image_size / 10.0 / 2) + 1


def _gaussian_kernels_1d(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1D Gaussian kernels, one per sigma (``exp(-x^2 / (2 sigma^2))`` at integer x).

    Args:
        sigma: (B,) standard deviations in pixels.
        kernel_size: odd kernel length K.

    Returns:
        (B, K) kernels, each summing to 1.
    """
    half = (kernel_size - 1) / 2
    pos = torch.linspace(-half, half, kernel_size, dtype=sigma.dtype, device=sigma.device)
    return torch.softmax(-0.5 * (pos / sigma.unsqueeze(1)) ** 2, dim=1)


def gaussian_blur_per_image(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a different sigma per image and zero padding.

    As the official BYOL code: horizontal then vertical pass, each with "SAME" zero padding.
    All images go through one pair of grouped convolutions (``groups = B * C``).

    Args:
        x: (B, C, H, W) images; H and W must exceed ``kernel_size // 2``.
        sigma: (B,) standard deviations in pixels.
        kernel_size: odd kernel length K.

    Returns:
        (B, C, H, W) blurred images.
    """
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    bsz, c, h, w = x.shape
    pad = kernel_size // 2
    if pad >= min(h, w):
        raise ValueError(f"blur kernel {kernel_size} is too large for {h}x{w} images "
                         f"(needs kernel_size // 2 < {min(h, w)})")
    kern = _gaussian_kernels_1d(sigma.to(device=x.device, dtype=torch.float32), kernel_size)
    kern = kern.to(x.dtype).repeat_interleave(c, dim=0)  # (B*C, K): one kernel per channel
    # Zero-padding all sides once then two "valid" passes equals "SAME" zero padding per pass
    # (the horizontal pass keeps the zero rows zero), and is ~3x faster on CPU than conv2d's
    # own padding argument for small images.
    y = F.pad(x.reshape(1, bsz * c, h, w), (pad, pad, pad, pad))
    y = F.conv2d(y, kern.view(bsz * c, 1, 1, kernel_size), groups=bsz * c)  # horizontal
    y = F.conv2d(y, kern.view(bsz * c, 1, kernel_size, 1), groups=bsz * c)  # vertical
    return y.view(bsz, c, h, w)


def solarize(x: Tensor, mask: Tensor | None = None, threshold: float = 0.5) -> Tensor:
    """Invert pixels at or above ``threshold`` (torchvision's ``solarize``) in the masked images.

    Args:
        x: (B, C, H, W) images in [0, 1].
        mask: (B,) bool, which images to solarise; None solarises all.
        threshold: pixels ``>= threshold`` become ``1 - x``.

    Returns:
        (B, C, H, W) images.
    """
    cond = x >= threshold
    if mask is not None:
        cond = cond & mask.to(x.device).view(-1, 1, 1, 1)
    return torch.where(cond, 1.0 - x, x)


# ---------------------------------------------------------------------------------------------
# Geometry: random resized crop + flip as one affine grid_sample
# ---------------------------------------------------------------------------------------------


def _sample_crop_boxes(u: Tensor, input_size: tuple[int, int], scale: tuple[float, float],
                      ratio: tuple[float, float]) -> Tensor:
    """torchvision's RandomResizedCrop box sampling, vectorised (continuous, not rounded, boxes).

    Each image tries ``_CROP_TRIES`` boxes with area fraction ~ U(scale) and log aspect ratio
    ~ U(log ratio) and keeps the first that fits; if none fits, it takes torchvision's fallback
    (the largest centred box with the aspect ratio clamped to ``ratio``).

    Args:
        u: (B, 4 * _CROP_TRIES) uniforms in [0, 1).
        input_size: (H, W) of the input images.
        scale: bounds of the crop's area as a fraction of the image.
        ratio: bounds of the crop's aspect ratio width / height.

    Returns:
        (B, 4) boxes ``(x0, y0, w, h)`` in input pixels.
    """
    in_h, in_w = input_size
    u = u.view(-1, _CROP_TRIES, 4)
    area = in_h * in_w * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(area * aspect)
    h = torch.sqrt(area / aspect)
    ok = (w <= in_w) & (h <= in_h)
    x0 = (in_w - w).clamp_min(0) * u[..., 2]
    y0 = (in_h - h).clamp_min(0) * u[..., 3]
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # first fitting try (0 if none)
    box = torch.stack([x0, y0, w, h], dim=-1).gather(1, first.unsqueeze(-1).expand(-1, 1, 4))
    box = box.squeeze(1)
    # torchvision's fallback when no try fits: centre crop with the ratio clamped to bounds.
    in_ratio = in_w / in_h
    if in_ratio < ratio[0]:
        fw, fh = float(in_w), in_w / ratio[0]
    elif in_ratio > ratio[1]:
        fw, fh = in_h * ratio[1], float(in_h)
    else:
        fw, fh = float(in_w), float(in_h)
    fallback = torch.tensor([(in_w - fw) / 2, (in_h - fh) / 2, fw, fh], dtype=u.dtype,
                            device=u.device)
    return torch.where(ok.any(dim=1, keepdim=True), box, fallback)


def _crop_flip_theta(boxes: Tensor, flip: Tensor, input_size: tuple[int, int]) -> Tensor:
    """Affine matrices for ``F.affine_grid(..., align_corners=False)`` that crop and maybe flip.

    Args:
        boxes: (B, 4) crop boxes ``(x0, y0, w, h)`` in input pixels.
        flip: (B,) bool, mirror horizontally.
        input_size: (H, W) of the input images.

    Returns:
        (B, 2, 3) matrices mapping output to input normalised coordinates.
    """
    in_h, in_w = input_size
    x0, y0, w, h = boxes.unbind(dim=1)
    sx = w / in_w
    sy = h / in_h
    tx = (2 * x0 + w) / in_w - 1  # box centre in normalised [-1, 1] coordinates
    ty = (2 * y0 + h) / in_h - 1
    sx = torch.where(flip, -sx, sx)
    zero = torch.zeros_like(sx)
    return torch.stack([sx, zero, tx, zero, sy, ty], dim=1).view(-1, 2, 3)


def _select(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Per image, ``new`` where ``mask`` is set, else ``old``: (B,) bool, (B, C, H, W) images."""
    return torch.where(mask.view(-1, 1, 1, 1), new, old)


def _like_input(out: Tensor, x: Tensor) -> Tensor:
    """``out`` in the memory format of ``x``: channels-last inputs give channels-last outputs."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


def _crop_grid(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.affine_grid(theta, (B, C, *size), align_corners=False)`` for axis-aligned ``theta``.

    Crops and flips have no rotation or shear, so x depends only on the column and y only on the
    row: two (B, S) outer products instead of affine_grid's batched matmul (slow on CPU).

    Args:
        theta: (B, 2, 3) affine matrices with zero off-diagonal terms.
        size: output (S_h, S_w).

    Returns:
        (B, S_h, S_w, 2) sampling grid for ``F.grid_sample``.
    """
    out_h, out_w = size
    bsz = theta.shape[0]
    # Pixel centres in normalised coordinates (align_corners=False).
    u = (torch.arange(out_w, device=theta.device, dtype=theta.dtype) * 2 + 1) / out_w - 1
    v = (torch.arange(out_h, device=theta.device, dtype=theta.dtype) * 2 + 1) / out_h - 1
    gx = torch.addcmul(theta[:, 0, 2:3], theta[:, 0, 0:1], u)  # (B, S_w)
    gy = torch.addcmul(theta[:, 1, 2:3], theta[:, 1, 1:2], v)  # (B, S_h)
    return torch.stack([gx.unsqueeze(1).expand(bsz, out_h, out_w),
                        gy.unsqueeze(2).expand(bsz, out_h, out_w)], dim=-1)


# ---------------------------------------------------------------------------------------------
# The augmentation module
# ---------------------------------------------------------------------------------------------


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    err = TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    if isinstance(v, (bool, str)):
        raise err
    if isinstance(v, int):
        v = (v, v)
    try:
        a, b = v
    except (TypeError, ValueError):
        raise err from None
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in (a, b)):
        raise err
    if a < 1 or b < 1:
        raise ValueError(f"{name} must be positive, got {v!r}")
    return a, b


def _range(v: Sequence[float], name: str, lo: float = 0.0, hi: float = math.inf,
           open_lo: bool = False) -> tuple[float, float]:
    try:
        a, b = (float(t) for t in v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (min, max) of floats, got {v!r}") from None
    bad_lo = a <= lo if open_lo else a < lo
    if bad_lo or b > hi or a > b:
        lo_s = f"({lo}" if open_lo else f"[{lo}"
        raise ValueError(f"{name} must satisfy min <= max within {lo_s}, {hi}], got {v!r}")
    return a, b


def _prob(p: float, name: str) -> float:
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
    return p


class BYOLAugment(nn.Module):
    """One BYOL view, with random parameters drawn PER IMAGE.

    Input (B, C, H, W) float images in [0, 1] on any device -> (B, C, S, S) normalised images
    (or (B, C, S_h, S_w) for a pair ``image_size``), same dtype, device and memory format.
    Runs under ``torch.no_grad``; ``x`` itself never needs gradients.

    Args:
        image_size: output side S, or (S_h, S_w).
        crop_scale: bounds of the crop area as a fraction of the input image.
        crop_ratio: bounds of the crop aspect ratio (width / height).
        flip_p: probability of a horizontal flip.
        jitter: (brightness, contrast, saturation, hue) strengths. ``jitter_style="byol"``:
            brightness adds a delta from ``[-b, b]``, contrast and saturation factors come from
            ``[1 - s, 1 + s]``. ``"torchvision"``: brightness, contrast and saturation factors
            come from ``[max(0, 1 - s), 1 + s]``. Both: hue shifts by ``[-hue, hue]`` turns.
        jitter_p: probability of colour jitter; its four ops run in a random order per image.
        jitter_style: which definitions the colour jitter follows (each op clips to [0, 1]):

            * ``"byol"`` (default): DeepMind's official BYOL code (deepmind-research
              ``byol/utils/augmentations.py``, TF's image ops): ``x + delta``; per channel
              ``factor * (c - mean(c)) + mean(c)``; HSV saturation ``clip(s * factor, 0, 1)``;
              HSV hue ``(h + delta) mod 1``.
            * ``"torchvision"``: ``torchvision.transforms.ColorJitter`` (as solo-learn's recipes):
              ``x * factor``; blend with the mean of the grayscale image; blend with the
              grayscale image; the same HSV hue rotation. About half as strong as ``"byol"``.
        grayscale_p: probability of converting to grayscale (kept as 3 channels).
        blur_p: probability of a Gaussian blur.
        blur_sigma: bounds of the blur's sigma in pixels (uniform).
        blur_kernel_size: odd blur kernel length; None -> the official
            ``2 * int(min(image_size) / 10 / 2) + 1`` (1, i.e. no blur, below 20 px).
        solarize_p: probability of solarisation.
        solarize_threshold: pixels at or above it are inverted.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        crop: False for inputs already cropped and resized to ``image_size`` (e.g. by data-loading
            workers): no random resized crop, no resize (inputs must be exactly ``image_size``),
            only the per-image flip; everything after it is unchanged.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        *,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 1.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel_size: int | None = None,
        solarize_p: float = 0.0,
        solarize_threshold: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        jitter_style: str = "byol",
        crop: bool = True,
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size, "image_size")
        self.crop_scale = _range(crop_scale, "crop_scale", 0.0, 1.0, open_lo=True)
        self.crop_ratio = _range(crop_ratio, "crop_ratio", 0.0, open_lo=True)
        self.flip_p = _prob(flip_p, "flip_p")
        try:
            jitter = tuple(float(j) for j in jitter)
        except (TypeError, ValueError):
            raise TypeError(f"jitter must be 4 floats (brightness, contrast, saturation, hue), "
                            f"got {jitter!r}") from None
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError("jitter must be 4 non-negative floats (brightness, contrast, "
                             f"saturation, hue) with hue <= 0.5, got {jitter!r}")
        self.jitter = jitter
        self.jitter_p = _prob(jitter_p, "jitter_p")
        if jitter_style not in JITTER_STYLES:
            raise ValueError(f"jitter_style must be one of {JITTER_STYLES}, got {jitter_style!r}")
        self.jitter_style = jitter_style
        if not isinstance(crop, bool):
            raise TypeError(f"crop must be a bool, got {crop!r}")
        self.crop = crop
        self.grayscale_p = _prob(grayscale_p, "grayscale_p")
        self.blur_p = _prob(blur_p, "blur_p")
        self.blur_sigma = _range(blur_sigma, "blur_sigma", 0.0, open_lo=True)
        if blur_kernel_size is None:
            blur_kernel_size = _default_blur_kernel_size(min(self.image_size))
        if isinstance(blur_kernel_size, bool) or not isinstance(blur_kernel_size, int) \
                or blur_kernel_size < 1 or blur_kernel_size % 2 == 0:
            raise ValueError(
                f"blur_kernel_size must be a positive odd int, got {blur_kernel_size!r}")
        if self.blur_p > 0 and blur_kernel_size // 2 >= min(self.image_size):
            raise ValueError(f"blur_kernel_size {blur_kernel_size} is too large for output size "
                             f"{self.image_size}; use a kernel below 2 * min(image_size)")
        self.blur_kernel_size = blur_kernel_size
        self.solarize_p = _prob(solarize_p, "solarize_p")
        self.solarize_threshold = float(solarize_threshold)
        if not 0.0 <= self.solarize_threshold <= 1.0:
            raise ValueError(f"solarize_threshold must lie in [0, 1], got {solarize_threshold}")
        self.normalize = Normalize(mean, std)

    @property
    def _jitter_active(self) -> bool:
        return self.jitter_p > 0 and any(s > 0 for s in self.jitter)

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, crop_scale={self.crop_scale}, "
                f"crop_ratio={self.crop_ratio}, flip_p={self.flip_p}, jitter={self.jitter}, "
                f"jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p}, blur_p={self.blur_p}, "
                f"blur_sigma={self.blur_sigma}, blur_kernel_size={self.blur_kernel_size}, "
                f"solarize_p={self.solarize_p}, jitter_style={self.jitter_style!r}, "
                f"crop={self.crop}")

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"BYOLAugment expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"BYOLAugment expects a batch of images (B, C, H, W), got shape "
                             f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0)")
        if not x.is_floating_point():
            raise TypeError(f"BYOLAugment expects float images in [0, 1], got dtype {x.dtype}; "
                            "convert uint8 images with x.float() / 255")
        c = x.shape[1]
        if (self._jitter_active or self.grayscale_p > 0) and c != 3:
            raise ValueError(f"colour jitter and grayscale need RGB images (C=3), got C={c}; "
                             "set jitter_p=0 and grayscale_p=0, or pass your own augment_fn")
        if self.normalize.channels not in (1, c):
            raise ValueError(f"mean/std have {self.normalize.channels} values but images have {c} "
                             "channels; pass mean and std with one value per channel")
        if not self.crop and tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"crop=False needs inputs of exactly image_size {self.image_size}, "
                             f"got {tuple(x.shape[-2:])}; resize them first or use crop=True")

    # -- parameters ----------------------------------------------------------------------------

    def _sample_params(self, batch_size: int, device: torch.device,
                       generator: torch.Generator | None,
                       input_size: tuple[int, int]) -> dict[str, Tensor]:
        """Draw the random parameters, one set per image.

        Draws happen on the generator's device (``device`` without one), then move to
        ``device``, so a CPU generator gives the same views on every device.

        Args:
            batch_size: number of images B.
            device: where the returned tensors live.
            generator: source of randomness.
            input_size: (H, W) of the input images the crops are drawn for.

        Returns:
            Dict of per-image tensors:
            ``crop`` (B, 4) boxes (x0, y0, w, h) in input pixels (the whole image with
            ``crop=False``); ``flip`` (B,) bool; ``jitter`` (B,) bool; ``brightness`` (B,) the
            additive delta for ``jitter_style="byol"``, the factor for ``"torchvision"``;
            ``contrast``, ``saturation`` (B,) factors and ``hue`` (B,) turns, as drawn (ignored
            where ``jitter`` is False);
            ``jitter_order`` (B, 4) long, op per slot (0 brightness, 1 contrast, 2 saturation,
            3 hue); ``jitter_pos`` (B,) long, the image's row in the jitter work buffer
            (hue runs in slot ``jitter_pos // ceil(B / 4)``); ``grayscale`` (B,) bool;
            ``blur`` (B,) bool; ``sigma`` (B,) float; ``solarize`` (B,) bool.
        """
        # without a generator, draw on the images' device: no host-to-device copies per step
        gen_device = generator.device if generator is not None else device
        bsz = batch_size
        # One uniform draw for (almost) everything keeps the RNG call count and launches low.
        n_crop = 4 * _CROP_TRIES
        u = torch.rand(bsz, n_crop + 13, generator=generator, device=gen_device)
        if self.crop:
            crop = _sample_crop_boxes(u[:, :n_crop], input_size, self.crop_scale, self.crop_ratio)
        else:  # same draws either way, so the other parameters do not depend on ``crop``
            crop = torch.tensor([0.0, 0.0, input_size[1], input_size[0]],
                                device=gen_device).repeat(bsz, 1)
        u = u[:, n_crop:]
        b, c, s, h = self.jitter

        def between(col: Tensor, lo: float, hi: float) -> Tensor:
            return lo + (hi - lo) * col

        if self.jitter_style == "byol":  # official: no clamp at 0 (factors < 0 need strength > 1)
            ranges = (-b, b), (1 - c, 1 + c), (1 - s, 1 + s)
        else:
            ranges = (max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s)

        # Random per-image order of the four jitter ops. Hue (the expensive one) goes to slot
        # jitter_pos // n where jitter_pos is a uniformly random distinct row among 4n >= B rows,
        # so each slot's hue images form a fixed-size contiguous block of rows (no sync, no
        # data-dependent shapes) while every image still gets a uniform random order.
        n = -(-bsz // 4)
        pos = torch.argsort(torch.rand(4 * n, generator=generator, device=gen_device))[:bsz]
        hue_slot = pos // n
        blend_order = torch.argsort(u[:, 10:13], dim=1)  # (B, 3) order of the 3 blend ops
        slots = torch.arange(4, device=gen_device).unsqueeze(0)
        idx = (slots - (slots > hue_slot.unsqueeze(1)).long()).clamp_(max=2)
        order = torch.where(slots == hue_slot.unsqueeze(1), _HUE, blend_order.gather(1, idx))
        params = {
            "crop": crop,
            "flip": u[:, 0] < self.flip_p,
            "jitter": u[:, 1] < self.jitter_p,
            "brightness": between(u[:, 2], *ranges[0]),
            "contrast": between(u[:, 3], *ranges[1]),
            "saturation": between(u[:, 4], *ranges[2]),
            "hue": between(u[:, 5], -h, h),
            "jitter_order": order,
            "jitter_pos": pos,
            "grayscale": u[:, 6] < self.grayscale_p,
            "blur": u[:, 7] < self.blur_p,
            "sigma": between(u[:, 8], *self.blur_sigma),
            "solarize": u[:, 9] < self.solarize_p,
        }
        return {k: v.to(device, non_blocking=True) for k, v in params.items()}

    # -- forward -------------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch, each image with its own random parameters.

        Args:
            x: (B, C, H, W) float images in [0, 1].
            generator: optional generator for reproducible draws (the same seed gives the same
                views; a CPU generator gives the same views on any device).

        Returns:
            (B, C, S_h, S_w) normalised images, same dtype, device and memory format as ``x``.
        """
        self._check_input(x)
        p = self._sample_params(x.shape[0], x.device, generator, (x.shape[2], x.shape[3]))
        y = self._crop_flip(x, p)
        # Colour maths in float32; the crop ran in the input dtype to read half the bytes.
        y = y.float() if y.dtype != torch.float32 else y
        y = y.contiguous().clamp_(0.0, 1.0)
        if self._jitter_active:
            y = self._colour_jitter(y, p)
        if self.grayscale_p > 0:
            y = _select(p["grayscale"], rgb_to_grayscale(y).expand_as(y), y)
        if self.blur_p > 0 and self.blur_kernel_size > 1:
            y = self._blur(y, p)
        if self.solarize_p > 0:
            y = solarize(y, p["solarize"], self.solarize_threshold)
        return _like_input(self.normalize(y, inplace=True).to(x.dtype), x)

    # -- the ops (separate so benchmarks can time them) ----------------------------------------

    def _crop_flip(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """All crops, resizes and flips as one bilinear ``grid_sample``: (B,C,H,W) -> (B,C,S,S).

        With ``crop=False`` only the flips.
        """
        if not self.crop:
            return _select(params["flip"], x.flip(-1), x)
        theta = _crop_flip_theta(params["crop"].float(), params["flip"], x.shape[-2:])
        grid = _crop_grid(theta, self.image_size).to(x.dtype)
        # Border padding only matters for the half pixel at the box edges.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _colour_jitter(self, y: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Brightness, contrast, saturation and hue in a random order per image.

        Images are gathered into a work buffer by ``params["jitter_pos"]`` so that the images
        whose hue runs in slot s are the contiguous rows ``[s*n, (s+1)*n)``: each slot runs the
        other three ops over the buffer (identity for the hue rows) and one hue shift over a
        quarter of it. So the batch costs ONE hue shift rather than 4 (measured 2.8x faster than
        four whole-batch hue shifts on CPU, benchmarks/results/augment_hue_layout_cpu.txt).
        Images without jitter come out unchanged. The ops follow ``self.jitter_style``; an op
        whose strength in ``self.jitter`` is 0 is skipped, as in both references.

        Args:
            y: (B, 3, S, S) float32 images in [0, 1].
            params: per-image parameters from :meth:`_sample_params`.

        Returns:
            (B, 3, S, S) jittered images (a new tensor).
        """
        bsz = y.shape[0]
        pos = params["jitter_pos"]
        n = -(-bsz // 4)
        # Spare rows (when 4 does not divide B) copy image 0; their results are dropped.
        src = torch.zeros(4 * n, dtype=torch.long, device=y.device)
        src[pos] = torch.arange(bsz, device=y.device)
        buf = y.index_select(0, src)
        on = params["jitter"][src]
        order = params["jitter_order"][src]
        factors = torch.stack([params["brightness"][src], params["contrast"][src],
                               params["saturation"][src]], dim=1).float()  # (4n, 3)
        hue = params["hue"][src].float()
        enabled = torch.tensor([st > 0 for st in self.jitter], device=y.device)
        op_on = on.unsqueeze(1) & enabled[order]  # (4n, 4): the op of each slot runs
        blend = (_byol_blend if self.jitter_style == "byol" else _torchvision_blend)(
            buf, op_on, order, factors)
        for slot in range(4):
            blend(slot)
            if self.jitter[_HUE] > 0:
                rows = slice(slot * n, (slot + 1) * n)
                part = buf[rows]
                part.copy_(_select(on[rows], adjust_hue(part, hue[rows]), part))
        return buf.index_select(0, pos)

    def _blur(self, y: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Per-image Gaussian blur of the images with ``params["blur"]`` set, clipped to [0, 1]
        (a normalised kernel can overshoot 1 by a rounding error)."""
        blurred = gaussian_blur_per_image(y, params["sigma"], self.blur_kernel_size)
        return _select(params["blur"], blurred.clamp_(0.0, 1.0), y)


def _torchvision_blend(buf: Tensor, op_on: Tensor, order: Tensor,
                       factors: Tensor) -> Callable[[int], None]:
    """Per-slot step of torchvision's brightness / contrast / saturation, in place on buf.

    Args:
        buf: (4n, 3, S, S) work buffer of :meth:`BYOLAugment._colour_jitter`.
        op_on: (4n, 4) bool, whether the op in each slot runs (jitter on, strength > 0).
        order: (4n, 4) long, the op of each slot.
        factors: (4n, 3) brightness, contrast, saturation parameters.

    Returns:
        ``step(slot)``, which applies that slot's op to every row of ``buf``.
    """
    # Per-slot blend weights for all slots at once (the step below only takes columns):
    # buf.lerp_(target, w) = (1 - w) * buf + w * target with w = 1 - factor, an exact no-op
    # at w = 0 (hue slots and images without jitter).
    chosen = factors.gather(1, order.clamp(max=2))  # (4n, 4)
    w_all = torch.where(op_on & (order != _HUE), 1.0 - chosen, 0.0)
    w_sat_all = (order == _SATURATION).to(buf.dtype)
    w_con_all = (order == _CONTRAST).to(buf.dtype)

    def step(slot: int) -> None:
        # Blend target: 0 for brightness, mean grey for contrast, grey for saturation.
        target = rgb_to_grayscale(buf)
        mean = target.mean(dim=(1, 2, 3), keepdim=True)
        target.mul_(w_sat_all[:, slot].view(-1, 1, 1, 1))
        target.addcmul_(mean, w_con_all[:, slot].view(-1, 1, 1, 1))
        buf.lerp_(target, w_all[:, slot].view(-1, 1, 1, 1)).clamp_(0.0, 1.0)

    return step


def _byol_blend(buf: Tensor, op_on: Tensor, order: Tensor,
                factors: Tensor) -> Callable[[int], None]:
    """Per-slot step of the official brightness / contrast / saturation, in place on buf.

    One pass over the whole buffer per slot, ``lerp(x, v, w) * scale + offset``: brightness and
    contrast are ``x * scale + offset`` (brightness: scale 1, offset delta; contrast: scale f,
    offset ``(1 - f) * mean_c``); saturation is ``lerp(x, v, w)`` with the per-pixel weight w of
    :func:`adjust_saturation_byol`; identity rows (scale 1, offset 0, w 0) come out exactly
    unchanged.

    Args and returns as :func:`_torchvision_blend` (``factors[:, 0]`` is the delta here).
    """
    is_b = op_on & (order == _BRIGHTNESS)
    is_c = op_on & (order == _CONTRAST)
    is_s = op_on & (order == _SATURATION)
    delta, con, sat = factors.unbind(dim=1)
    scale_all = torch.where(is_c, con.unsqueeze(1), 1.0)  # (4n, 4)
    shift_all = torch.where(is_b, delta.unsqueeze(1), 0.0)
    sat_all = torch.where(is_s, sat.unsqueeze(1), 1.0)

    def step(slot: int) -> None:
        scale = scale_all[:, slot].view(-1, 1, 1, 1)
        # shift + (1 - scale) * mean_c: delta for brightness, 0 for identity rows.
        mean = buf.mean(dim=(2, 3), keepdim=True)  # (4n, 3, 1, 1)
        off = torch.addcmul(shift_all[:, slot].view(-1, 1, 1, 1), mean, 1.0 - scale)
        w, v = _saturation_weight(buf, sat_all[:, slot])
        w.mul_(is_s[:, slot].view(-1, 1, 1, 1))  # 0 (exact identity) where saturation is off
        buf.lerp_(v, w).mul_(scale).add_(off).clamp_(0.0, 1.0)

    return step


def default_views(image_size: int | tuple[int, int], preset: str = "imagenet",
                  **overrides: Any) -> tuple[BYOLAugment, BYOLAugment]:
    """The paper's two asymmetric views (BYOL Table 6).

    View 1: blur p=1.0, solarize p=0.0. View 2: blur p=0.1, solarize p=0.2. Everything else as in
    :class:`BYOLAugment`'s defaults.

    Args:
        image_size: output side S, or (S_h, S_w).
        preset: ``"imagenet"`` (the paper's settings, with the official BYOL code's colour
            jitter, ``jitter_style="byol"``) or ``"small"`` for CIFAR-size images (32-96 px),
            solo-learn's recipe (``scripts/pretrain/cifar/augmentations/asymmetric.yaml``): crop
            scale (0.08, 1.0), no blur on either view, solarisation as in the paper,
            torchvision's colour jitter (``jitter_style="torchvision"``).
        **overrides: :class:`BYOLAugment` arguments applied to both views on top of the preset,
            e.g. ``flip_p=0.0`` for data whose mirror image means something else (text, digits).

    Returns:
        (view1, view2) augmentation modules.
    """
    if preset == "imagenet":
        common = dict(crop_scale=(0.08, 1.0), jitter_style="byol")
        blur = (1.0, 0.1)
    elif preset == "small":
        common = dict(crop_scale=(0.08, 1.0), jitter_style="torchvision")
        blur = (0.0, 0.0)
    else:
        raise ValueError(f"preset must be 'imagenet' or 'small', got {preset!r}")
    view1 = {**common, "blur_p": blur[0], "solarize_p": 0.0, **overrides}
    view2 = {**common, "blur_p": blur[1], "solarize_p": 0.2, **overrides}
    return BYOLAugment(image_size, **view1), BYOLAugment(image_size, **view2)
