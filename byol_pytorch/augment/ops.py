"""Batched image ops, one parameter per image of (B, C, H, W); no host syncs or data-dependent
shapes. kornia computes grayscale and solarisation; each other op says why it is ours (measured:
benchmarks/results/augment_kornia_ops_cpu.txt)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale as _kornia_gray
from kornia.enhance import solarize as _kornia_solarize
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = torch.tensor([0.2989, 0.587, 0.114])  # luma of torchvision, PIL and the official code
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # colour-jitter op indices


def to_float_images(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images come back unchanged (any shape)."""
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise TypeError(f"expected uint8 [0, 255] or float [0, 1] images, got dtype {x.dtype}")
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel: (B, C, H, W) uint8 or float -> float; ``mean``, ``std``:
    one value per channel (or one for all), non-persistent buffers (no state-dict keys)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        try:
            mean_t, std_t = (torch.as_tensor(v, dtype=torch.float32).flatten() for v in (mean, std))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"mean and std must be sequences of floats, got {mean!r}, "
                            f"{std!r}") from None
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0 or (std_t <= 0).any():
            raise ValueError(f"mean and std need the same (non-zero) length and std must be "
                             f"positive, got {mean!r} and {std!r}")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    @property
    def channels(self) -> int:
        """Number of channels the statistics are for (1 applies to any number)."""
        return self.mean.numel()

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        """x: (B, C, H, W) -> normalised (B, C, H, W); ``inplace`` overwrites a float ``x``."""
        if x.dim() != 4 or self.channels not in (1, x.shape[1]):
            raise ValueError(f"Normalize expects a batch of images (B, C, H, W) with C = "
                             f"{self.channels} (the number of mean/std values, or any C for "
                             f"one), got shape {tuple(x.shape)}")
        y = to_float_images(x)
        mean = self.mean.to(y.device, y.dtype).view(1, -1, 1, 1)
        inv_std = self.std.to(y.device, y.dtype).reciprocal().view(1, -1, 1, 1)
        return y.sub_(mean).mul_(inv_std) if inplace or y is not x else (y - mean) * inv_std


def sample_crop_boxes(num: int, height: int, width: int,
                      scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), *,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """Random resized crop boxes -> (num, 4) int64 ``(top, left, h, w)`` on ``device``.

    The official BYOL sampler (byol/utils/dataset.py ``_decode_and_random_crop``), vectorised,
    ONE try: area ~ U(scale) * H * W, log aspect r ~ U(log ratio), ``w = round(sqrt(area * r))``,
    ``h = round(sqrt(area / r))``, each clipped to [1, side], offsets uniform integers. Draws on
    the generator's device (else ``device``): a CPU generator gives the same boxes everywhere.
    """
    if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"need 0 < min <= max (<= 1 for scale), got {scale=}, {ratio=}")
    u = torch.rand(num, 4, generator=generator,
                   device=generator.device if generator is not None else device)
    area = (scale[0] + (scale[1] - scale[0]) * u[:, 0]) * (height * width)
    aspect = torch.exp(math.log(ratio[0]) + math.log(ratio[1] / ratio[0]) * u[:, 1])
    w = torch.sqrt(area * aspect).round_().clamp_(1, width)
    h = torch.sqrt(area / aspect).round_().clamp_(1, height)
    # min(): float32 u * n can round up to n
    top = torch.minimum((u[:, 2] * (height - h + 1)).floor_(), height - h)
    left = torch.minimum((u[:, 3] * (width - w + 1)).floor_(), width - w)
    return torch.stack([top, left, h, w], dim=1).long().to(device, non_blocking=True)


def resized_crop(x: Tensor, boxes: Tensor, flip: Tensor, size: tuple[int, int]) -> Tensor:
    """Crop to each box (B, 4) ``(top, left, h, w)``, mirror where ``flip`` (B,), resize to
    ``size``: (B, C, H, W) -> (B, C, *size). Ours: ONE bilinear ``grid_sample``, sampled as
    torchvision's ``resized_crop`` without antialias; kornia's ``warp_affine`` computes the same
    but was measured 1.7-2.7x slower."""
    (in_h, in_w), (out_h, out_w) = x.shape[-2:], size
    top, left, h, w = boxes.to(x.device, torch.float32).unbind(dim=1)
    # Output pixel centre j + 0.5 samples the input at left + (j + 0.5) * w / out_w.
    cols, rows = (torch.arange(n, device=x.device, dtype=torch.float32) + 0.5 for n in size[::-1])
    cols = torch.where(flip.view(-1, 1), out_w - cols, cols)
    gx = torch.addcmul(left.view(-1, 1), cols, (w / out_w).view(-1, 1)).mul_(2 / in_w).sub_(1)
    gy = torch.addcmul(top.view(-1, 1), rows, (h / out_h).view(-1, 1)).mul_(2 / in_h).sub_(1)
    grid = torch.stack([gx.unsqueeze(1).expand(-1, out_h, out_w),
                        gy.unsqueeze(2).expand(-1, out_h, out_w)], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma with the official weights (kornia's op): (B, 3, H, W) -> (B, 1, H, W)."""
    return _kornia_gray(x, _GRAY)


def solarize(x: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Pixels ``>= threshold`` -> ``1 - x`` in the images where ``mask`` (B,) is set (kornia's
    op: a per-image threshold, infinite for the others, leaves them exactly unchanged)."""
    return _kornia_solarize(x, torch.where(mask.to(x.device), threshold, math.inf))


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur, one sigma (B,) per image, zero ("SAME") padding as the official
    code: (B, C, H, W) -> (B, C, H, W). Ours: kornia's ``gaussian_blur2d`` computes the same but
    was measured 2.2x slower at 32 px and reads sigma on the host (a sync on CUDA)."""
    (bsz, c, h, w), pad = x.shape, kernel_size // 2
    pos = torch.arange(kernel_size, device=x.device, dtype=torch.float32) - pad
    kern = torch.softmax(-0.5 * (pos / sigma.to(x.device, torch.float32).view(-1, 1)) ** 2, 1)
    kern = kern.to(x.dtype).repeat_interleave(c, dim=0)  # (B*C, K)
    # Padding once then two "valid" passes equals per-pass zero padding (the horizontal pass
    # keeps the zero rows zero), and is ~3x faster on CPU than conv2d's padding argument.
    y = F.pad(x.reshape(1, bsz * c, h, w), (pad, pad, pad, pad))
    y = F.conv2d(y, kern.view(bsz * c, 1, 1, kernel_size), groups=bsz * c)
    return F.conv2d(y, kern.view(bsz * c, 1, kernel_size, 1), groups=bsz * c).view(bsz, c, h, w)


def adjust_hue(x: Tensor, turns: Tensor) -> Tensor:
    """Rotate the HSV hue by ``turns`` (B,): (B, 3, H, W) in [0, 1] -> (B, 3, H, W). Ours: exact
    HSV maths without the HSV image (a hue shift keeps each pixel's max and min channel), 3.8x
    faster than kornia's ``adjust_hue`` round trip."""
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    chroma = torch.minimum(torch.minimum(r, g), b).neg_().add_(maxc)
    h6 = (r - g).add_(chroma, alpha=4.0)  # hue in sextants times chroma; grey pixels get 0
    torch.where(maxc == g, (b - r).add_(chroma, alpha=2.0), h6, out=h6)
    torch.where(maxc == r, g - b, h6, out=h6)
    h6.div_(chroma.clamp_min(1e-12))
    # Closed-form HSV -> RGB: c = max - chroma * clamp(min(k, 4 - k), 0, 1), k = (n_c + 6h) mod 6
    # with channel offsets n = (5, 3, 1), written in place as 2 - |k - 2|.
    offsets = 5.0 - 2.0 * torch.arange(3, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = (offsets + turns.to(x.dtype).view(-1, 1, 1, 1) * 6.0) + h6.unsqueeze(1)
    k.remainder_(6.0).sub_(2.0).abs_().neg_().add_(2.0).clamp_(0.0, 1.0)
    return k.mul_(chroma.unsqueeze(1)).neg_().add_(maxc.unsqueeze(1))


def _saturation_weight(x: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """Official HSV saturation as ``lerp(x, v, 1 - k)``, max channel v, ``k = clip(s * f, 0, 1)
    / s = clamp(f, 0, v / (v - min))``: returns (1 - k, v), both (B, 1, H, W)."""
    r, g, b = x.unbind(dim=1)
    v = torch.maximum(torch.maximum(r, g), b)
    rng = torch.minimum(torch.minimum(r, g), b).neg_().add_(v).clamp_min_(1e-12)
    k = torch.minimum(factor.clamp_min(0.0).view(-1, 1, 1), rng.reciprocal_().mul_(v))
    return k.neg_().add_(1.0).unsqueeze(1), v.unsqueeze(1)


def colour_jitter(x: Tensor, on: Tensor, factors: Tensor, order: Tensor, pos: Tensor,
                  style: str, enabled: Sequence[bool] = (True,) * 4) -> Tensor:
    """Colour jitter (``style`` as :class:`BYOLAugment`), ops in a random order per image: x (B, 3,
    H, W) float32 in [0, 1], on (B,) bool, factors (B, 4), order (B, 4) op per slot, pos (B,)
    distinct rows of 4 ceil(B / 4) (hue in slot pos // ceil(B / 4)), enabled (4,) -> (B, 3, H, W).

    Ours: kornia's ops (grey weights 0.299) in each slot were 7-11x slower. With the images at
    rows ``pos`` of a work buffer, each slot runs brightness, contrast and saturation as ONE
    in-place ``lerp(x, target, w) * scale + offset`` and hue on a quarter of the rows (2.8x
    faster than 4 hue shifts: benchmarks/results/augment_hue_layout_cpu.txt)."""
    n = -(-x.shape[0] // 4)
    src = torch.zeros(4 * n, dtype=torch.long, device=x.device)  # spare rows copy image 0
    src[pos] = torch.arange(x.shape[0], device=x.device)
    buf, on, order, factors = x.index_select(0, src), on[src], order[src], factors[src]
    runs = on.unsqueeze(1) & (order != HUE)  # (4n, 4): the slot's blend op runs
    for op in (op for op, is_on in enumerate(enabled) if not is_on):
        runs &= order != op
    w_tv = torch.where(runs, 1.0 - factors.gather(1, order.clamp(max=2)), 0.0)
    f, w_tv, is_b, is_c, is_s = (t[..., None, None, None] for t in (  # (4n, 4, 1, 1, 1)
        factors, w_tv, *(runs & (order == op) for op in (BRIGHTNESS, CONTRAST, SATURATION))))
    for slot in range(4):
        if style == "byol":  # x + delta; per channel f * (c - mean(c)) + mean(c); HSV s * f
            scale = torch.where(is_c[:, slot], f[:, CONTRAST], 1.0)
            off = torch.addcmul(torch.where(is_b[:, slot], f[:, BRIGHTNESS], 0.0),
                                buf.mean(dim=(2, 3), keepdim=True), 1.0 - scale)
            w, v = _saturation_weight(buf, torch.where(is_s[:, slot], f[:, SATURATION], 1.0))
            buf.lerp_(v, w.mul_(is_s[:, slot])).mul_(scale).add_(off)
        else:  # x * f = lerp(x, 0, 1 - f); lerp to the grey image's mean; to the grey image
            grey = rgb_to_grayscale(buf)
            mean = grey.mean(dim=(1, 2, 3), keepdim=True).mul_(is_c[:, slot])
            buf.lerp_(grey.mul_(is_s[:, slot]).add_(mean), w_tv[:, slot])
        buf.clamp_(0.0, 1.0)
        if enabled[HUE]:
            rows = slice(slot * n, (slot + 1) * n)
            part, hue_on = buf[rows], on[rows, None, None, None]
            part.copy_(torch.where(hue_on, adjust_hue(part, factors[rows, HUE]), part))
    return buf.index_select(0, pos)
