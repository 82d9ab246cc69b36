"""Tests for byol_pytorch.augment: shapes, per-image randomness, rates, and op-level equivalence
with reference implementations: torchvision's (``jitter_style="torchvision"``) and ports, written
here, of DeepMind's official BYOL augmentations (deepmind-research byol/utils/augmentations.py,
``jitter_style="byol"``, the zero-padded blur, grayscale and solarisation)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from conftest import MINI_CIFAR

import byol_pytorch.augment as augment_module
from byol_pytorch.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BYOLAugment,
    adjust_brightness,
    adjust_brightness_byol,
    adjust_contrast,
    adjust_contrast_byol,
    adjust_hue,
    adjust_saturation,
    adjust_saturation_byol,
    crop_flip_theta,
    crop_grid,
    default_blur_kernel_size,
    default_views,
    gaussian_blur_per_image,
    rgb_to_grayscale,
    solarize,
)

CIFAR = MINI_CIFAR
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
# Everything off except what a test switches on; identity normalisation.
PLAIN = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
             grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, mean=(0.0, 0.0, 0.0),
             std=(1.0, 1.0, 1.0))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int, h: int = 16, w: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random images in [0, 1] with exact 0s and 1s and grey pixels, to hit edge cases."""
    x = torch.rand(b, 3, h, w or h, generator=gen(seed))
    x[:, :, 0, 0] = 0.0
    x[:, :, 0, 1] = 1.0
    x[:, :, 1, 0] = 0.5  # grey pixel: hue undefined
    return x


def unnormalise(y: torch.Tensor) -> torch.Tensor:
    return y.float() * STD.to(y.device) + MEAN.to(y.device)


# ----------------------------------------------------------------------------------------------
# Ports of DeepMind's official BYOL augmentations (deepmind-research byol/utils/augmentations.py),
# one (3, H, W) image at a time, straight from its formulas. Colour ops clip to [0, 1] after
# each op, as the official _color_transform_single_image does.
# ----------------------------------------------------------------------------------------------


def ref_rgb_to_hsv(r: torch.Tensor, g: torch.Tensor, b: torch.Tensor):
    vv = torch.maximum(torch.maximum(r, g), b)
    range_ = vv - torch.minimum(torch.minimum(r, g), b)
    sat = torch.where(vv > 0, range_ / vv, torch.zeros_like(vv))
    norm = torch.where(range_ != 0, 1.0 / (6.0 * range_), torch.full_like(vv, 1e9))
    hr = norm * (g - b)
    hg = norm * (b - r) + 2.0 / 6.0
    hb = norm * (r - g) + 4.0 / 6.0
    hue = torch.where(r == vv, hr, torch.where(g == vv, hg, hb))
    hue = hue * (range_ > 0)
    hue = hue + (hue < 0)
    return hue, sat, vv


def ref_hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    c = s * v
    m = v - c
    dh = (h % 1.0) * 6.0
    fmodu = dh % 2.0
    x = c * (1 - torch.abs(fmodu - 1))
    hcat = torch.floor(dh).long()
    zero = torch.zeros_like(c)

    def among(a: int, b: int) -> torch.Tensor:
        return (hcat == a) | (hcat == b)

    rr = torch.where(among(0, 5), c, torch.where(among(1, 4), x, zero)) + m
    gg = torch.where(among(1, 2), c, torch.where(among(0, 3), x, zero)) + m
    bb = torch.where(among(3, 4), c, torch.where(among(2, 5), x, zero)) + m
    return torch.stack([rr, gg, bb])


def ref_brightness(img: torch.Tensor, delta: float) -> torch.Tensor:
    return (img + delta).clip(0.0, 1.0)


def ref_contrast(img: torch.Tensor, factor: float) -> torch.Tensor:
    mean = img.mean(dim=(-2, -1), keepdim=True)  # per channel
    return (factor * (img - mean) + mean).clip(0.0, 1.0)


def ref_saturation(img: torch.Tensor, factor: float) -> torch.Tensor:
    h, s, v = ref_rgb_to_hsv(*img)
    return ref_hsv_to_rgb(h, torch.clip(s * factor, 0.0, 1.0), v).clip(0.0, 1.0)


def ref_hue(img: torch.Tensor, delta: float) -> torch.Tensor:
    h, s, v = ref_rgb_to_hsv(*img)
    return ref_hsv_to_rgb((h + delta) % 1.0, s, v).clip(0.0, 1.0)


REF_JITTER = [ref_brightness, ref_contrast, ref_saturation, ref_hue]  # jitter_order's op indices


def ref_grayscale(img: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.2989, 0.5870, 0.1140])
    return torch.tensordot(weights, img, dims=([0], [0])).expand(3, -1, -1)


def ref_blur(img: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Official gaussian_blur: separable, "SAME" zero padding, radius from the image height
    (``kernel_size = H / blur_divider``, ``radius = int(kernel_size / 2)``) unless given."""
    if radius is None:
        kernel_size = img.shape[1] / 10.0  # blur_divider=10.
        radius = int(kernel_size / 2)
    x = torch.arange(-radius, radius + 1).float()
    f = torch.exp(-x**2 / (2.0 * sigma**2))
    f = f / f.sum()
    h, w = img.shape[1:]
    padded = F.pad(img, (radius, radius, radius, radius))  # zeros
    horiz = sum(f[t] * padded[:, :, t:t + w] for t in range(2 * radius + 1))  # (3, H + 2r, W)
    return sum(f[t] * horiz[:, t:t + h, :] for t in range(2 * radius + 1))


def ref_solarize(img: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return torch.where(img < threshold, img, 1.0 - img)


# ----------------------------------------------------------------------------------------------
# Shapes, dtypes, layout, range
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shape_dtype_device_kept(dtype: torch.dtype) -> None:
    for view in default_views(24):
        y = view(images(5, 40, 48).to(dtype), gen())
        assert y.shape == (5, 3, 24, 24)
        assert y.dtype == dtype
        assert y.device == torch.device("cpu")
        assert torch.isfinite(y.float()).all()


def test_rectangular_output_size() -> None:
    y = BYOLAugment((16, 24))(images(3, 32), gen())
    assert y.shape == (3, 3, 16, 24)


def test_channels_last_input_matches_contiguous() -> None:
    view = default_views(16)[1]
    x = images(6, 20)
    y = view(x, gen(3))
    y_cl = view(x.contiguous(memory_format=torch.channels_last), gen(3))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y, atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", ["imagenet", "small"])
def test_unnormalised_values_in_unit_range(preset: str) -> None:
    for view in default_views(16, preset):
        z = unnormalise(view(images(64, 20), gen()))
        assert z.min() >= -1e-4 and z.max() <= 1 + 1e-4


def test_output_does_not_track_gradients() -> None:
    x = images(2).requires_grad_(True)
    assert not BYOLAugment(8)(x).requires_grad


# ----------------------------------------------------------------------------------------------
# Per-image randomness and parameter ranges
# ----------------------------------------------------------------------------------------------


def test_params_differ_per_image() -> None:
    p = default_views(32)[0].sample_params(64, "cpu", gen())
    assert torch.unique(p["crop"], dim=0).shape[0] == 64
    assert 0 < p["flip"].sum() < 64
    assert 0 < p["jitter"].sum() < 64
    for key in ("brightness", "contrast", "saturation", "hue", "sigma"):
        assert torch.unique(p[key]).numel() == 64, key
    assert torch.unique(p["jitter_order"], dim=0).shape[0] > 1


def test_identical_images_get_different_views() -> None:
    x = images(1, 24).expand(8, -1, -1, -1).contiguous()
    for view in default_views(16) + default_views(16, "small"):
        y = view(x, gen(1)).flatten(1)
        dist = torch.cdist(y, y)
        off_diag = dist[~torch.eye(8, dtype=torch.bool)]
        assert off_diag.min() > 1e-3


def test_crop_boxes_respect_scale_and_ratio() -> None:
    for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.2, 0.5), (0.5, 2.0))]:
        aug = BYOLAugment(32, crop_scale=scale, crop_ratio=ratio)
        box = aug.sample_params(4096, "cpu", gen(), input_size=(64, 64))["crop"]
        x0, y0, w, h = box.unbind(1)
        area = w * h / 64**2
        assert area.min() >= scale[0] - 1e-5 and area.max() <= scale[1] + 1e-5
        assert (w / h).min() >= ratio[0] - 1e-5 and (w / h).max() <= ratio[1] + 1e-5
        assert x0.min() >= 0 and y0.min() >= 0
        assert (x0 + w).max() <= 64 + 1e-4 and (y0 + h).max() <= 64 + 1e-4
        # Both bounds are actually reached, i.e. the draw spans the range.
        assert area.min() < scale[0] + 0.05 and area.max() > scale[1] - 0.05


def test_crop_fallback_for_extreme_aspect_input() -> None:
    # A 4x64 strip cannot hold a 3/4..4/3 box of 8% area or more: torchvision's fallback kicks in.
    aug = BYOLAugment(8, crop_scale=(0.5, 1.0))
    box = aug.sample_params(16, "cpu", gen(), input_size=(4, 64))["crop"]
    assert torch.allclose(box[:, 3], torch.full((16,), 4.0))  # full height
    assert torch.allclose(box[:, 2], torch.full((16,), 4 * 4 / 3))  # width = height * max ratio


@pytest.mark.parametrize("style,brightness", [("torchvision", (0.6, 1.4)), ("byol", (-0.4, 0.4))])
def test_factor_and_sigma_ranges(style: str, brightness: tuple[float, float]) -> None:
    # torchvision's brightness is a factor around 1, the official one an additive delta.
    aug = BYOLAugment(32, jitter=(0.4, 0.3, 0.2, 0.1), blur_sigma=(0.5, 1.5), jitter_style=style)
    p = aug.sample_params(4096, "cpu", gen())
    for key, (lo, hi) in {"brightness": brightness, "contrast": (0.7, 1.3),
                          "saturation": (0.8, 1.2), "hue": (-0.1, 0.1),
                          "sigma": (0.5, 1.5)}.items():
        v = p[key]
        assert v.min() >= lo and v.max() <= hi, key
        assert v.min() < lo + 0.01 and v.max() > hi - 0.01, key  # spans the range


def test_brightness_factor_never_negative() -> None:
    aug = BYOLAugment(8, jitter=(1.5, 0, 0, 0), jitter_style="torchvision")
    p = aug.sample_params(1024, "cpu", gen())
    assert p["brightness"].min() >= 0.0 and p["brightness"].max() <= 2.5


def test_rates_close_to_probabilities() -> None:
    view1, view2 = default_views(8)
    n = 4096
    p1 = view1.sample_params(n, "cpu", gen(0))
    p2 = view2.sample_params(n, "cpu", gen(1))
    # 5 binomial standard deviations at n=4096 is <= 0.04: with fixed seeds these cannot flake.
    for p in (p1, p2):
        assert abs(p["flip"].float().mean() - 0.5) < 0.04
        assert abs(p["jitter"].float().mean() - 0.8) < 0.04
        assert abs(p["grayscale"].float().mean() - 0.2) < 0.04
    assert p1["blur"].all() and not p1["solarize"].any()
    assert abs(p2["blur"].float().mean() - 0.1) < 0.03
    assert abs(p2["solarize"].float().mean() - 0.2) < 0.04


def test_measured_flip_rate_in_outputs() -> None:
    # Left-right asymmetric images; see how often the output comes back mirrored.
    aug = BYOLAugment(8, **{**PLAIN, "flip_p": 0.5})
    x = torch.linspace(0, 1, 8).expand(2048, 3, 8, 8).contiguous()
    y = aug(x, gen())
    flipped = y[:, 0, 0, 0] > y[:, 0, 0, -1]
    assert abs(flipped.float().mean() - 0.5) < 0.05


def test_measured_solarize_and_grayscale_rates_in_outputs() -> None:
    n = 2048
    x = torch.tensor([0.9, 0.2, 0.1]).view(1, 3, 1, 1).expand(n, 3, 4, 4).contiguous()
    sol = BYOLAugment(4, **{**PLAIN, "solarize_p": 0.2})(x, gen())
    assert abs((sol[:, 0, 0, 0] < 0.5).float().mean() - 0.2) < 0.04  # 0.9 -> 0.1 when solarised
    gray = BYOLAugment(4, **{**PLAIN, "grayscale_p": 0.2})(x, gen())
    assert abs((gray[:, 0, 0, 0] < 0.5).float().mean() - 0.2) < 0.04


def test_jitter_order_is_uniform_per_image() -> None:
    p = BYOLAugment(8).sample_params(4096, "cpu", gen())
    order = p["jitter_order"]
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(4096, 4))
    for slot, op in itertools.product(range(4), range(4)):
        assert abs((order[:, slot] == op).float().mean() - 0.25) < 0.03
    perms = {tuple(r) for r in order.tolist()}
    assert len(perms) == 24
    # Hue's slot is where the jitter buffer row puts it.
    n = math.ceil(4096 / 4)
    assert torch.equal(order.argmax(dim=1), p["jitter_pos"] // n)


def test_hue_slot_uniform_for_batch_not_divisible_by_four() -> None:
    aug = BYOLAugment(8)
    g = gen()
    slots = torch.cat([aug.sample_params(1, "cpu", g)["jitter_order"].argmax(1)
                       for _ in range(800)])
    counts = torch.bincount(slots, minlength=4).float() / 800
    assert (counts - 0.25).abs().max() < 0.07


# ----------------------------------------------------------------------------------------------
# Views and presets
# ----------------------------------------------------------------------------------------------


def test_default_views_are_asymmetric() -> None:
    v1, v2 = default_views(224)
    assert (v1.blur_p, v2.blur_p) == (1.0, 0.1)
    assert (v1.solarize_p, v2.solarize_p) == (0.0, 0.2)
    for v in (v1, v2):
        assert v.crop_scale == (0.08, 1.0)
        assert v.jitter == (0.4, 0.4, 0.2, 0.1) and v.jitter_p == 0.8
        assert v.grayscale_p == 0.2 and v.flip_p == 0.5
        assert v.blur_kernel_size == 23 and v.blur_sigma == (0.1, 2.0)
        assert v.solarize_threshold == 0.5
        assert v.jitter_style == "byol" and v.crop


def test_small_preset() -> None:
    v1, v2 = default_views(32, preset="small")
    assert v1.blur_p == v2.blur_p == 0.0
    assert v1.crop_scale == v2.crop_scale == (0.08, 1.0)  # solo-learn asymmetric.yaml rrc
    assert (v1.solarize_p, v2.solarize_p) == (0.0, 0.2)
    assert v1.jitter_style == v2.jitter_style == "torchvision"  # solo-learn's CIFAR recipe


def test_default_views_overrides_apply_to_both_views_over_the_preset() -> None:
    v1, v2 = default_views(32, preset="small", crop_scale=(0.4, 1.0), flip_p=0.0, blur_p=0.5)
    assert v1.crop_scale == v2.crop_scale == (0.4, 1.0)
    assert v1.flip_p == v2.flip_p == 0.0 and v1.blur_p == v2.blur_p == 0.5
    assert (v1.solarize_p, v2.solarize_p) == (0.0, 0.2)  # what was not overridden stays
    flips = v1.sample_params(256, torch.device("cpu"), gen(1))["flip"]
    assert not flips.any()
    with pytest.raises(TypeError):
        default_views(32, crop_min=0.4)  # a misspelt argument is not silently dropped


def test_default_blur_kernel_size() -> None:
    assert default_blur_kernel_size(224) == 23
    assert default_blur_kernel_size(96) == 9
    assert default_blur_kernel_size(32) == 3
    assert default_blur_kernel_size(16) == 1  # official rule: no blur below 20 px
    assert all(default_blur_kernel_size(s) % 2 == 1 for s in range(1, 300))
    # The official rule: kernel_size = H / blur_divider (10.0), radius = int(kernel_size / 2).
    assert all(default_blur_kernel_size(s) == 2 * int(s / 10.0 / 2) + 1 for s in range(1, 1000))
    assert BYOLAugment((40, 64)).blur_kernel_size == 5


# ----------------------------------------------------------------------------------------------
# Determinism and errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "kornia"])
def test_deterministic_with_generator(backend: str) -> None:
    style = "torchvision" if backend == "kornia" else "byol"
    view = default_views(16, backend=backend, jitter_style=style)[1]
    x = images(8, 20)
    a, b, c = view(x, gen(7)), view(x, gen(7)), view(x, gen(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_kornia_backend_leaves_global_rng_alone_with_generator() -> None:
    view = default_views(16, backend="kornia", jitter_style="torchvision")[0]
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    view(images(4, 20), gen())
    assert torch.equal(torch.rand(3), expected)


def test_bad_inputs_raise_clear_errors() -> None:
    aug = BYOLAugment(8)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        aug(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="float"):
        aug(torch.randint(0, 255, (2, 3, 8, 8), dtype=torch.uint8))
    with pytest.raises(ValueError, match="augment_fn"):
        aug(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="augment_fn"):
        aug(torch.rand(2, 4, 8, 8))
    with pytest.raises(TypeError, match="Tensor"):
        aug([[0.0]])


def test_non_rgb_works_without_colour_ops() -> None:
    aug = BYOLAugment(8, jitter_p=0.0, grayscale_p=0.0, solarize_p=0.5, mean=(0.5,), std=(0.5,))
    y = aug(torch.rand(4, 1, 12, 12), gen())
    assert y.shape == (4, 1, 8, 8)
    with pytest.raises(ValueError, match="one value per channel"):
        BYOLAugment(8, jitter_p=0.0, grayscale_p=0.0)(torch.rand(2, 2, 8, 8))


@pytest.mark.parametrize("kwargs", [
    dict(crop_scale=(0.5, 0.2)), dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.5, 1.5)),
    dict(crop_ratio=(2.0, 1.0)), dict(flip_p=1.5), dict(jitter_p=-0.1), dict(blur_kernel_size=4),
    dict(blur_kernel_size=31), dict(blur_sigma=(0.0, 1.0)), dict(jitter=(0.4, 0.4, 0.2, 0.6)),
    dict(jitter=(0.4, 0.4, 0.2)), dict(backend="numpy"), dict(std=(0.0, 1.0, 1.0)),
    dict(solarize_threshold=1.5), dict(mean=(0.5, 0.5)), dict(jitter_style="tf"),
    dict(crop="no"), dict(backend="kornia"),  # kornia cannot run the default "byol" jitter
])
def test_bad_config_raises(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        BYOLAugment(8, **kwargs)


def test_bad_preset_and_size() -> None:
    with pytest.raises(ValueError, match="preset"):
        default_views(32, preset="cifar")
    with pytest.raises(ValueError):
        BYOLAugment(0)
    with pytest.raises(TypeError):
        BYOLAugment("32")  # type: ignore[arg-type]


def test_params_for_wrong_batch_size_rejected() -> None:
    aug = BYOLAugment(8)
    p = aug.sample_params(4, "cpu", gen())
    with pytest.raises(ValueError, match="batch size"):
        aug(images(6, 8), params=p)


# ----------------------------------------------------------------------------------------------
# Equivalence of each op with a reference implementation
# ----------------------------------------------------------------------------------------------


def test_identity_crop_is_identity_and_forced_flip_is_torch_flip() -> None:
    x = images(4, 12)
    same = BYOLAugment(12, **PLAIN)(x, gen())
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = BYOLAugment(12, **{**PLAIN, "flip_p": 1.0})(x, gen())
    torch.testing.assert_close(flipped, torch.flip(x, dims=[-1]), atol=1e-5, rtol=0)


def test_explicit_crop_box_matches_slicing_and_interpolate() -> None:
    x = images(2, 32)
    aug = BYOLAugment(16, **PLAIN)
    p = aug.sample_params(2, "cpu", gen(), input_size=(32, 32))
    p["crop"] = torch.tensor([[8.0, 4.0, 16.0, 16.0], [0.0, 16.0, 16.0, 16.0]])
    y = aug(x, params=p)
    torch.testing.assert_close(y[0], x[0, :, 4:20, 8:24], atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1], x[1, :, 16:32, 0:16], atol=1e-5, rtol=0)
    # Upsampling a box is bilinear resizing of that box. Only the outer ring of output pixels
    # differs: it blends in the real pixels just outside the box, where cropping first (as
    # interpolate here) clamps to the box edge.
    up = BYOLAugment(32, **PLAIN)
    p["flip"] = torch.tensor([False, True])
    y = up(x, params=p)[..., 1:-1, 1:-1]
    ref = F.interpolate(x[:, :, 4:20, 8:24], size=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[0], ref[0, :, 1:-1, 1:-1], atol=1e-5, rtol=0)
    ref = F.interpolate(x[:, :, 16:32, 0:16], size=32, mode="bilinear", align_corners=False)
    ref = torch.flip(ref[1], dims=[-1])[:, 1:-1, 1:-1]
    torch.testing.assert_close(y[1], ref, atol=1e-5, rtol=0)


def test_crop_grid_matches_affine_grid() -> None:
    aug = BYOLAugment(8)
    p = aug.sample_params(16, "cpu", gen(), input_size=(20, 30))
    theta = crop_flip_theta(p["crop"], p["flip"], (20, 30))
    ref = F.affine_grid(theta, [16, 3, 12, 9], align_corners=False)
    torch.testing.assert_close(crop_grid(theta, (12, 9)), ref, atol=1e-6, rtol=0)


def test_crop_downsampling_matches_interpolate_at_integer_factor() -> None:
    x = images(1, 32)
    aug = BYOLAugment(8, **PLAIN)
    p = aug.sample_params(1, "cpu", gen(), input_size=(32, 32))
    p["crop"] = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    ref = F.interpolate(x[:, :, :16, :16], size=8, mode="bilinear", align_corners=False,
                        antialias=False)
    torch.testing.assert_close(aug(x, params=p), ref, atol=1e-5, rtol=0)


FACTORS = torch.tensor([0.0, 0.3, 0.6, 1.0, 1.4, 2.0])


@pytest.mark.parametrize("ours,theirs", [(adjust_brightness, TF.adjust_brightness),
                                         (adjust_contrast, TF.adjust_contrast),
                                         (adjust_saturation, TF.adjust_saturation)])
def test_blend_ops_match_torchvision(ours, theirs) -> None:
    x = images(len(FACTORS), 10)
    y = ours(x, FACTORS)
    ref = torch.stack([theirs(x[i], float(f)) for i, f in enumerate(FACTORS)])
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=0)


def test_hue_matches_torchvision() -> None:
    factors = torch.tensor([-0.5, -0.31, -0.1, 0.0, 0.05, 0.1, 0.27, 0.5])
    x = images(len(factors), 16)
    x[:, :, 2, :6] = torch.eye(3).repeat(1, 2).T.reshape(6, 3).T.unsqueeze(0)  # pure primaries
    y = adjust_hue(x, factors)
    ref = torch.stack([TF.adjust_hue(x[i], float(f)) for i, f in enumerate(factors)])
    torch.testing.assert_close(y, ref, atol=1e-3, rtol=0)
    assert (y - ref).abs().max() < 1e-5  # in practice far tighter than the tolerance


def test_grayscale_matches_torchvision() -> None:
    x = images(3, 8)
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=0, rtol=0)


@pytest.mark.parametrize("kernel_size", [3, 7, 23])
def test_blur_matches_torchvision_away_from_the_border(kernel_size: int) -> None:
    # Same kernels as torchvision; only the padding differs (zero as the official code vs
    # torchvision's reflect), so pixels farther than the kernel radius from the border agree.
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    x = images(4, 48)
    y = gaussian_blur_per_image(x, sigma, kernel_size)
    ref = torch.stack([TF.gaussian_blur(x[i], [kernel_size, kernel_size], [float(s), float(s)])
                       for i, s in enumerate(sigma)])
    r = kernel_size // 2
    inner = (..., slice(r, -r), slice(r, -r))
    torch.testing.assert_close(y[inner], ref[inner], atol=1e-5, rtol=0)
    assert (y[:, :, 0, 0] < ref[:, :, 0, 0] - 1e-3).any()  # zero padding darkens the corners


def test_blur_rejects_kernel_too_large_for_image() -> None:
    with pytest.raises(ValueError, match="too large"):
        gaussian_blur_per_image(torch.rand(1, 3, 4, 4), torch.ones(1), 9)


def test_solarize_matches_torchvision() -> None:
    x = images(3, 8)
    mask = torch.tensor([True, False, True])
    y = solarize(x, mask, 0.5)
    ref = torch.stack([TF.solarize(x[0], 0.5), x[1], TF.solarize(x[2], 0.5)])
    torch.testing.assert_close(y, ref, atol=0, rtol=0)


def reference_pipeline(aug: BYOLAugment, x: torch.Tensor, p: dict) -> torch.Tensor:
    """Image-by-image composition of the pipeline (identity crops only): torchvision's colour
    ops or the official ones (per ``aug.jitter_style``), the official zero-padded blur."""
    ops = REF_JITTER if aug.jitter_style == "byol" else [
        TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    keys = ["brightness", "contrast", "saturation", "hue"]
    out = []
    for i in range(x.shape[0]):
        img = x[i]
        if p["flip"][i]:
            img = TF.horizontal_flip(img)
        if p["jitter"][i]:
            for op in p["jitter_order"][i].tolist():
                img = ops[op](img, float(p[keys[op]][i]))
        if p["grayscale"][i]:
            img = ref_grayscale(img)
        if p["blur"][i]:
            img = ref_blur(img, float(p["sigma"][i]), radius=aug.blur_kernel_size // 2)
        if p["solarize"][i]:
            img = ref_solarize(img, aug.solarize_threshold)
        out.append(TF.normalize(img.clip(0.0, 1.0), aug.mean.tolist(), aug.std.tolist()))
    return torch.stack(out)


@pytest.mark.parametrize("style", ["torchvision", "byol"])
@pytest.mark.parametrize("batch", [1, 6, 16])
def test_full_pipeline_matches_per_image_reference(batch: int, style: str) -> None:
    # Identity crops so the reference needs no resampling; all other ops on with p in (0, 1).
    aug = BYOLAugment(16, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter=(0.4, 0.4, 0.4, 0.2),
                      jitter_p=0.8, grayscale_p=0.3, blur_p=0.5, blur_kernel_size=5,
                      solarize_p=0.5, jitter_style=style)
    x = images(batch, 16, seed=batch)
    p = aug.sample_params(batch, "cpu", gen(batch))
    torch.testing.assert_close(aug(x, params=p), reference_pipeline(aug, x, p), atol=1e-4, rtol=0)


@pytest.mark.parametrize("style", ["torchvision", "byol"])
@pytest.mark.parametrize("batch", [1, 7, 16])
def test_sampled_fast_path_matches_explicit_params_path(batch: int, style: str) -> None:
    # forward() uses sample_params' buffer layout directly; transform() rebuilds it from the
    # order. Both must give the per-image reference.
    aug = BYOLAugment(12, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), blur_p=0.5,
                      solarize_p=0.5, blur_kernel_size=3, jitter_style=style)
    x = images(batch, 12, seed=batch)
    fast = aug(x, gen(batch))
    p = aug.sample_params(batch, "cpu", gen(batch), input_size=(12, 12))
    torch.testing.assert_close(fast, aug(x, params=p), atol=1e-6, rtol=0)
    torch.testing.assert_close(fast, reference_pipeline(aug, x, p), atol=1e-4, rtol=0)


def test_accelerator_code_path_matches_cpu_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # On GPUs, ops with p < 1 run on the whole batch and select (and the official jitter is one
    # fused pass per slot); force that path on CPU.
    x = images(24, 28)
    always = dict(jitter_p=1.0, grayscale_p=0.5, blur_p=0.5, solarize_p=0.5)
    for view in (*default_views(24), *default_views(24, "small"), BYOLAugment(24, **always),
                 BYOLAugment(24, **always, jitter_style="torchvision"), BYOLAugment(
                     24, **always, jitter=(1.5, 1.5, 1.5, 0.5), crop=False, flip_p=0.5)):
        if not view.crop:
            x = x[..., :24, :24]
        subset = view(x, gen(4))
        monkeypatch.setattr(augment_module, "_subset_ops", lambda device: False)
        select = view(x, gen(4))
        monkeypatch.undo()
        torch.testing.assert_close(select, subset, atol=1e-6, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["torch", "kornia"])
def test_cuda_matches_cpu_with_cpu_generator(backend: str) -> None:
    x = images(32, 40)
    for view in default_views(32, backend=backend):
        cpu = view(x, gen(9))
        cuda = view.cuda()(x.cuda(), gen(9))
        assert cuda.device.type == "cuda" and cuda.dtype == x.dtype
        if backend == "torch":  # kornia's CUDA RNG stream differs from its CPU one
            torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0)
        half = view(x.cuda().half(), gen(9))
        assert half.dtype == torch.float16 and torch.isfinite(half).all()


def test_jitter_random_order_matters_and_is_respected() -> None:
    # The same image with brightness 1.4 then saturation 0 vs saturation then brightness differ
    # (clamping); the pipeline must follow each image's own order.
    aug = BYOLAugment(8, **{**PLAIN, "jitter_p": 1.0, "jitter": (0.4, 0.4, 1.0, 0.1)},
                      jitter_style="torchvision")
    x = images(1, 8).expand(2, -1, -1, -1).contiguous()
    p = aug.sample_params(2, "cpu", gen())
    p.update(brightness=torch.tensor([1.4, 1.4]), contrast=torch.ones(2),
             saturation=torch.zeros(2), hue=torch.zeros(2),
             jitter_order=torch.tensor([[3, 0, 2, 1], [3, 2, 0, 1]]))
    y = aug(x, params=p)
    ref0 = TF.adjust_saturation(TF.adjust_brightness(x[0], 1.4), 0.0)
    ref1 = TF.adjust_brightness(TF.adjust_saturation(x[1], 0.0), 1.4)
    torch.testing.assert_close(y[0], ref0, atol=1e-5, rtol=0)
    torch.testing.assert_close(y[1], ref1, atol=1e-5, rtol=0)
    assert (ref0 - ref1).abs().max() > 0.01


def test_edited_jitter_order_all_hue_in_one_slot() -> None:
    # More images share a hue slot than sample_params' layout allows: transform() re-lays them.
    aug = BYOLAugment(8, **{**PLAIN, "jitter_p": 1.0}, jitter_style="torchvision")
    x = images(5, 8)
    p = aug.sample_params(5, "cpu", gen())
    p["jitter_order"] = torch.tensor([[1, 2, 0, 3]]).expand(5, 4).clone()
    y = aug(x, params=p)
    ref = torch.stack([TF.adjust_hue(TF.adjust_brightness(TF.adjust_saturation(TF.adjust_contrast(
        x[i], float(p["contrast"][i])), float(p["saturation"][i])), float(p["brightness"][i])),
        float(p["hue"][i])) for i in range(5)])
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=0)
    p["jitter_order"][0] = torch.tensor([0, 0, 1, 2])
    with pytest.raises(ValueError, match="permutation"):
        aug(x, params=p)


@pytest.mark.parametrize("style", ["torchvision", "byol"])
def test_images_without_jitter_are_unchanged_exactly(style: str) -> None:
    aug = BYOLAugment(8, **{**PLAIN, "jitter_p": 0.5}, jitter_style=style)
    x = images(32, 8)
    p = aug.sample_params(32, "cpu", gen())
    y = aug(x, params=p)
    off = ~p["jitter"]
    assert off.any() and p["jitter"].any()
    torch.testing.assert_close(y[off], x[off], atol=1e-6, rtol=0)
    assert (y[~off] - x[~off]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


# ----------------------------------------------------------------------------------------------
# jitter_style="byol", blur, grayscale and solarisation against the ports of the official code
# ----------------------------------------------------------------------------------------------


def one_op_view(op: int, strength: float, size: int = 12) -> BYOLAugment:
    """Official jitter on every image with only op ``op`` non-trivial (the others draw identity
    parameters: delta 0, factors 1, hue 0)."""
    jitter = [0.0] * 4
    jitter[op] = strength
    return BYOLAugment(size, **{**PLAIN, "jitter_p": 1.0, "jitter": tuple(jitter)})


# (op index in jitter_order, helper, reference, per-image values for the helper, strength).
# Strengths above 1 give negative contrast / saturation factors, which the official code allows.
BYOL_OPS = {
    "brightness": (0, adjust_brightness_byol, ref_brightness,
                   [-0.4, -0.13, 0.0, 0.05, 0.21, 0.4], 0.4),
    "contrast": (1, adjust_contrast_byol, ref_contrast, [-0.5, 0.0, 0.3, 0.6, 1.0, 1.4, 2.0], 1.5),
    "saturation": (2, adjust_saturation_byol, ref_saturation,
                   [-0.5, 0.0, 0.3, 0.8, 1.0, 1.2, 2.0, 5.0], 1.5),
    "hue": (3, adjust_hue, ref_hue, [-0.5, -0.31, -0.1, 0.0, 0.05, 0.1, 0.27, 0.5], 0.5),
}
# Brightness and contrast are plain arithmetic: float32 rounding only (measured 0 and 6e-8).
# Saturation (6e-7) and hue go through the reference's HSV round trip while ours computes the
# same values in closed form. For hue the round trip's hue, 1 / (6 * range) times a difference
# plus an offset, is rounded and then multiplied back by 6 * chroma, which scales its rounding
# error up: measured up to 1.4e-6, hence 2e-6 (still ~10 float32 ulps of values near 1).
BYOL_ATOL = {"brightness": 1e-6, "contrast": 1e-6, "saturation": 1e-6, "hue": 2e-6}


@pytest.mark.parametrize("name", list(BYOL_OPS))
def test_byol_colour_op_matches_official_formula(name: str) -> None:
    op, helper, ref, values, strength = BYOL_OPS[name]
    values = torch.tensor(values)
    x = images(len(values), 12)
    x[:, :, 2, :6] = torch.eye(3).repeat(1, 2).T.reshape(6, 3).T.unsqueeze(0)  # pure primaries
    expected = torch.stack([ref(x[i], float(v)) for i, v in enumerate(values)])
    torch.testing.assert_close(helper(x, values), expected, atol=BYOL_ATOL[name], rtol=0)
    # Inside the pipeline, with the per-image parameters it draws.
    aug = one_op_view(op, strength)
    x = images(32, 12, seed=op)
    p = aug.sample_params(32, "cpu", gen(op))
    expected = torch.stack([ref(x[i], float(p[name][i])) for i in range(32)])
    torch.testing.assert_close(aug(x, params=p), expected, atol=BYOL_ATOL[name], rtol=0)


def test_byol_full_jitter_with_fixed_orders_and_factors() -> None:
    orders = list(itertools.permutations(range(4)))  # all 24 orders, one image each
    b = len(orders)
    aug = BYOLAugment(12, **{**PLAIN, "jitter_p": 1.0})
    assert aug.jitter_style == "byol"
    x = images(b, 12)
    p = aug.sample_params(b, "cpu", gen())
    p.update(jitter_order=torch.tensor(orders), brightness=torch.linspace(-0.4, 0.4, b),
             contrast=torch.linspace(1.4, 0.6, b), saturation=torch.linspace(0.8, 1.2, b).roll(7),
             hue=torch.linspace(-0.1, 0.1, b).roll(13))
    keys = ["brightness", "contrast", "saturation", "hue"]
    expected = []
    for i, order in enumerate(orders):
        img = x[i]
        for op in order:
            img = REF_JITTER[op](img, float(p[keys[op]][i]))
        expected.append(img)
    expected = torch.stack(expected)
    torch.testing.assert_close(aug(x, params=p), expected, atol=2e-6, rtol=0)  # hue, see above
    # The order matters, so this also checks that each image follows its own.
    first_order = torch.stack([REF_JITTER[0](REF_JITTER[1](REF_JITTER[2](REF_JITTER[3](
        x[i], float(p["hue"][i])), float(p["saturation"][i])), float(p["contrast"][i])),
        float(p["brightness"][i])) for i in range(b)])
    assert (first_order - expected).abs().amax(dim=(1, 2, 3)).max() > 0.01


def test_byol_jitter_gate_and_random_order_through_forward() -> None:
    # forward() with its own draws (p in (0, 1)) equals the per-image reference.
    aug = BYOLAugment(12, **{**PLAIN, "jitter_p": 0.7, "grayscale_p": 0.3})
    x = images(40, 12)
    p = aug.sample_params(40, "cpu", gen(3), input_size=(12, 12))
    torch.testing.assert_close(aug(x, gen(3)), reference_pipeline(aug, x, p), atol=2e-6, rtol=0)


def test_grayscale_matches_official_formula() -> None:
    x = images(4, 10)
    expected = torch.stack([ref_grayscale(img) for img in x])
    torch.testing.assert_close(rgb_to_grayscale(x).expand_as(x), expected, atol=1e-6, rtol=0)
    aug = BYOLAugment(10, **{**PLAIN, "grayscale_p": 1.0})
    torch.testing.assert_close(aug(x, gen()), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [16, 24, 40, 64])
def test_blur_matches_official_zero_padding_and_kernel_rule(size: int) -> None:
    # Default kernel (the official H / 10 rule): 1 (no blur), 3, 5 and 7 taps.
    aug = BYOLAugment(size, **{**PLAIN, "blur_p": 1.0})
    assert aug.blur_kernel_size == 2 * int(size / 10.0 / 2) + 1
    x = images(4, size)
    p = aug.sample_params(4, "cpu", gen())
    expected = torch.stack([ref_blur(x[i], float(p["sigma"][i])) for i in range(4)])
    torch.testing.assert_close(aug(x, params=p), expected, atol=1e-6, rtol=0)
    if size == 16:
        assert torch.equal(aug(x, params=p), x)


@pytest.mark.parametrize("kernel_size", [1, 3, 7, 23])
def test_blur_helper_matches_official_formula(kernel_size: int) -> None:
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    x = images(4, 24)
    expected = torch.stack([ref_blur(x[i], float(s), radius=kernel_size // 2)
                            for i, s in enumerate(sigma)])
    torch.testing.assert_close(gaussian_blur_per_image(x, sigma, kernel_size), expected,
                               atol=1e-6, rtol=0)


def test_solarize_matches_official_formula() -> None:
    x = images(4, 8)
    x[:, 0, 2, :3] = torch.tensor([0.4999, 0.5, 0.5001])
    expected = torch.stack([ref_solarize(img) for img in x])
    assert torch.equal(solarize(x), expected)
    aug = BYOLAugment(8, **{**PLAIN, "solarize_p": 1.0})
    assert torch.equal(aug(x, gen()), expected)


def test_byol_jitter_is_stronger_than_torchvision_on_photos() -> None:
    # Behavioural check of which formulas run: with the same numbers (0.4, 0.4, 0.2, 0.1) the
    # official jitter changes real photos about twice as much as torchvision's (measured 0.165
    # vs 0.089 mean absolute change per pixel value).
    datasets = pytest.importorskip("sklearn.datasets")
    photos = torch.stack([torch.tensor(im).permute(2, 0, 1)
                          for im in datasets.load_sample_images().images]).float() / 255
    x = F.interpolate(photos, size=(48, 72), mode="area").repeat(64, 1, 1, 1)  # 128 images
    change = {}
    for style in ("torchvision", "byol"):
        aug = BYOLAugment((48, 72), **{**PLAIN, "jitter_p": 1.0}, jitter_style=style, crop=False)
        assert aug.jitter == (0.4, 0.4, 0.2, 0.1)
        change[style] = float((aug(x, gen()) - x).abs().mean())
    assert change["torchvision"] > 0.02
    assert change["byol"] > 1.5 * change["torchvision"], change


# ----------------------------------------------------------------------------------------------
# crop=False: inputs already cropped and resized by the data-loading workers
# ----------------------------------------------------------------------------------------------


def test_no_crop_identity_returns_the_normalised_input() -> None:
    x = images(6, 16, 20)
    off = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    y = BYOLAugment((16, 20), **off, crop=False)(x, gen())
    torch.testing.assert_close(y, (x - MEAN) / STD, atol=1e-6, rtol=0)
    assert torch.equal(BYOLAugment((16, 20), **PLAIN, crop=False)(x, gen()), x)
    half = BYOLAugment((16, 20), **PLAIN, crop=False)(x.half(), gen())
    assert half.dtype == torch.float16 and torch.equal(half, x.half())


def test_no_crop_flips_each_image_at_flip_p(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_grid_sample(*args, **kwargs):
        raise AssertionError("crop=False must not resample")

    monkeypatch.setattr(augment_module.F, "grid_sample", no_grid_sample)
    aug = BYOLAugment(8, **{**PLAIN, "flip_p": 0.5}, crop=False)
    x = images(2048, 8)
    p = aug.sample_params(2048, "cpu", gen())
    y = aug(x, params=p)
    f = p["flip"]
    assert torch.equal(y[f], x[f].flip(-1)) and torch.equal(y[~f], x[~f])
    y = aug(x, gen(1))
    flipped = (y == x.flip(-1)).flatten(1).all(dim=1)
    assert ((y == x).flatten(1).all(dim=1) | flipped).all()
    assert abs(flipped.float().mean() - 0.5) < 0.04  # 5 binomial sd at n=2048 is 0.055
    assert torch.equal(BYOLAugment(8, **{**PLAIN, "flip_p": 1.0}, crop=False)(x), x.flip(-1))


def test_no_crop_rest_of_the_pipeline_unchanged() -> None:
    # Same draws as an identity crop: the same views, without the resampling.
    x = images(16, 24)
    for cropped, uncropped in zip(default_views(24, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0)),
                                  default_views(24, crop=False)):
        torch.testing.assert_close(uncropped(x, gen(2)), cropped(x, gen(2)), atol=1e-5, rtol=0)


def test_no_crop_rejects_inputs_of_another_size() -> None:
    aug = BYOLAugment((16, 12), crop=False)
    with pytest.raises(ValueError, match=r"\(16, 12\).*\(20, 20\)"):
        aug(images(2, 20))
    with pytest.raises(ValueError, match=r"\(16, 12\).*\(12, 16\)"):
        aug(images(2, 12, 16))


def test_no_crop_kornia_backend() -> None:
    x = images(4, 16)
    aug = BYOLAugment(16, **PLAIN, crop=False, backend="kornia")
    torch.testing.assert_close(aug(x, gen()), x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="image_size"):
        aug(images(4, 20))


# ----------------------------------------------------------------------------------------------
# Kornia backend
# ----------------------------------------------------------------------------------------------


def test_kornia_backend_runs_with_per_image_crops() -> None:
    x = images(1, 24).expand(8, -1, -1, -1).contiguous()
    crops_only = BYOLAugment(16, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                             backend="kornia")
    y = crops_only(x, gen()).flatten(1)
    assert y.shape == (8, 3 * 16 * 16)
    assert torch.cdist(y, y)[~torch.eye(8, dtype=torch.bool)].min() > 1e-3
    for view in default_views(16, backend="kornia", jitter_style="torchvision"):
        z = unnormalise(view(x, gen()))
        assert z.shape == (8, 3, 16, 16) and z.min() >= -1e-4 and z.max() <= 1 + 1e-4


def test_kornia_backend_rejects_byol_jitter() -> None:
    with pytest.raises(ValueError, match="jitter_style='torchvision'"):
        BYOLAugment(16, backend="kornia")
    with pytest.raises(ValueError, match="kornia"):
        default_views(16, backend="kornia")
    # Without jitter the style does not matter; with the override both views build.
    assert BYOLAugment(16, backend="kornia", jitter_p=0.0).backend == "kornia"
    assert all(v.jitter_style == "torchvision"
               for v in default_views(16, backend="kornia", jitter_style="torchvision"))


def test_kornia_blur_pads_with_zeros() -> None:
    aug = BYOLAugment(24, **{**PLAIN, "blur_p": 1.0, "blur_sigma": (1.5, 1.5)}, backend="kornia")
    x = torch.ones(2, 3, 24, 24)
    y = aug(x, gen())
    expected = ref_blur(x[0], 1.5)
    torch.testing.assert_close(y, expected.expand_as(y), atol=1e-5, rtol=0)


def test_kornia_solarize_uses_paper_threshold() -> None:
    aug = BYOLAugment(4, **{**PLAIN, "solarize_p": 1.0}, backend="kornia")
    x = torch.tensor([0.2, 0.49, 0.5, 0.9]).view(1, 1, 1, 4).expand(2, 3, 4, 4).contiguous()
    torch.testing.assert_close(aug(x, gen()), TF.solarize(x, 0.5), atol=1e-6, rtol=0)


def test_backends_agree_in_distribution() -> None:
    """Pixel mean and std over many views agree between backends (loose: the draws differ)."""
    x = images(256, 28)
    stats = {}
    for backend in ("torch", "kornia"):
        views = default_views(24, backend=backend, jitter_style="torchvision")
        z = torch.cat([unnormalise(v(x, gen(5))) for v in views])
        stats[backend] = torch.stack([z.mean(), z.std()])
    torch.testing.assert_close(stats["torch"], stats["kornia"], atol=0.03, rtol=0)


@pytest.mark.skipif(not CIFAR.exists(), reason="CIFAR-10 mini data set not available")
def test_real_images_small_preset() -> None:
    import numpy as np

    data = np.load(CIFAR)["train_images"][:256]
    x = torch.from_numpy(data).float() / 255
    assert x.shape[1:] == (3, 32, 32)
    views = default_views(32, preset="small")
    y1, y2 = (v(x, gen(i)) for i, v in enumerate(views))
    for y in (y1, y2):
        z = unnormalise(y)
        assert z.min() >= -1e-4 and z.max() <= 1 + 1e-4
    # The two views of an image are different but, on average, closer than views of two images.
    same = (y1 - y2).flatten(1).norm(dim=1)
    other = (y1 - y2.roll(1, dims=0)).flatten(1).norm(dim=1)
    assert same.min() > 0
    assert same.mean() < other.mean()
