"""byol_pytorch.augment: each op vs a port of DeepMind's official BYOL code (byol/utils/) or
torchvision's op, with the per-image parameters of the public ``sample_params`` (``forward`` is
``apply(x, sample_params(...))``); exact identity where an op is not drawn; Normalize."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from kornia.color import hsv_to_rgb, rgb_to_hsv

from byol_pytorch.augment import (IMAGENET_MEAN, IMAGENET_STD, BYOLAugment, Normalize,
                                  default_views, ops, sample_crop_boxes, to_float_images)

OFF = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, mean=(0.0,),
           std=(1.0,))  # every op off, identity normalisation: tests switch on what they check


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int, h: int = 16, w: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random images with black, white, grey and pure primary pixels (the ops' edge cases)."""
    x = torch.rand(b, 3, h, w or h, generator=gen(seed))
    x[:, :, 0, :3], x[:, :, 1, :3] = torch.tensor([0.0, 1.0, 0.5]), torch.eye(3)
    return x


def hsv_op(img: torch.Tensor, hue: float = 0.0, sat: float = 1.0) -> torch.Tensor:
    """TF's adjust_hue / adjust_saturation (official): HSV, h + delta mod 1, clip(s * f, 0, 1)."""
    h, s, v = rgb_to_hsv(img).unbind(0)  # kornia's conversion, hue in radians
    h = torch.remainder(h + 2 * math.pi * hue, 2 * math.pi)
    return hsv_to_rgb(torch.stack([h, (s * sat).clip(0, 1), v])).clip(0, 1)


OFFICIAL = [lambda img, d: (img + d).clip(0, 1),  # contrast: around each channel's own mean
            lambda img, f: (f * (img - (m := img.mean((1, 2), keepdim=True))) + m).clip(0, 1),
            lambda img, f: hsv_op(img, sat=f), lambda img, d: hsv_op(img, hue=d)]
TORCHVISION = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]


def byol_blur(img: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    """Official gaussian_blur: separable, "SAME" zero padding."""
    r, (h, w) = k // 2, img.shape[1:]
    f = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma**2))
    f, y = f / f.sum(), F.pad(img, (r, r, r, r))
    y = sum(f[t] * y[:, :, t:t + w] for t in range(k))
    return sum(f[t] * y[:, t:t + h] for t in range(k))


def reference(aug: BYOLAugment, x: torch.Tensor, p: dict) -> torch.Tensor:
    """Image by image with the drawn parameters (crop=False views): the official ops or
    torchvision's (per ``jitter_style``), official blur, torchvision's grayscale and solarize."""
    out, jitter = [], OFFICIAL if aug.jitter_style == "byol" else TORCHVISION
    for i, img in enumerate(x):
        img = img.flip(-1) if p["flip"][i] else img
        for op in p["order"][i].tolist() if p["jitter"][i] else []:
            img = jitter[op](img, float(p["factors"][i, op])) if aug.jitter[op] > 0 else img
        img = TF.rgb_to_grayscale(img, 3) if p["grayscale"][i] else img
        img = byol_blur(img, float(p["sigma"][i]), aug.blur_kernel_size) if p["blur"][i] else img
        img = TF.solarize(img, aug.solarize_threshold) if p["solarize"][i] else img
        out.append(TF.normalize(img, aug.normalize.mean.tolist(), aug.normalize.std.tolist()))
    return torch.stack(out)


SINGLE = {  # one op per image with p = 0.5; jitter strengths above 1 give negative factors
    "flip": dict(flip_p=0.5), "brightness": dict(jitter_p=0.5, jitter=(0.9, 0, 0, 0)),
    "contrast": dict(jitter_p=0.5, jitter=(0, 1.5, 0, 0)), "grayscale": dict(grayscale_p=0.5),
    "saturation": dict(jitter_p=0.5, jitter=(0, 0, 1.5, 0)), "solarize": dict(solarize_p=0.5),
    "hue": dict(jitter_p=0.5, jitter=(0, 0, 0, 0.5)),
    "blur": dict(blur_p=0.5, blur_kernel_size=7, blur_sigma=(0.5, 2.0))}


@pytest.mark.parametrize("style", ["byol", "torchvision"])
@pytest.mark.parametrize("name", list(SINGLE))
def test_each_op_matches_reference_and_undrawn_images_stay_exact(style: str, name: str) -> None:
    aug = BYOLAugment(16, **{**OFF, **SINGLE[name]}, jitter_style=style, crop=False)
    x, p = images(32), aug.sample_params(32, (16, 16), gen(1))
    drawn, y = p["jitter" if "jitter" in SINGLE[name] else name], aug.apply(x, p)
    assert 0 < int(drawn.sum()) < 32 and torch.equal(y[~drawn], x[~drawn])
    assert (y[drawn] - x[drawn]).flatten(1).abs().amax(1).min() > 1e-3
    torch.testing.assert_close(y, reference(aug, x, p), atol=2e-6, rtol=0)


@pytest.mark.parametrize("style", ["byol", "torchvision"])
@pytest.mark.parametrize("batch", [1, 7, 48])
def test_whole_pipeline_matches_reference(style: str, batch: int) -> None:
    # All ops with p in (0, 1), the jitter's ops in each image's drawn order.
    aug = BYOLAugment(16, jitter=(0.4, 0.4, 0.4, 0.2), grayscale_p=0.3, blur_p=0.5,
                      blur_kernel_size=5, solarize_p=0.5, jitter_style=style, crop=False)
    x, p = images(batch, seed=batch), aug.sample_params(batch, (16, 16), gen(batch))
    assert torch.equal(aug(x, gen(batch)), aug.apply(x, p))
    torch.testing.assert_close(aug.apply(x, p), reference(aug, x, p), atol=2e-5, rtol=0)


@pytest.mark.parametrize("style", ["byol", "torchvision"])
def test_per_image_parameters_ranges_rates_and_orders(style: str) -> None:
    aug = BYOLAugment(8, jitter=(0.4, 0.3, 0.2, 0.1), blur_sigma=(0.5, 1.5), solarize_p=0.3,
                      jitter_style=style)
    p, n = aug.sample_params(24_000, (8, 8), gen()), 24_000
    assert len(p["factors"].unique(dim=0)) == n and len(p["sigma"].unique()) > 0.99 * n
    brightness = (-0.4, 0.4) if style == "byol" else (0.6, 1.4)  # delta vs factor
    for v, (a, b) in zip([*p["factors"].T, p["sigma"]], [brightness, (0.7, 1.3), (0.8, 1.2),
                                                        (-0.1, 0.1), (0.5, 1.5)]):
        assert a <= v.min() < a + 1e-3 and b - 1e-3 < v.max() <= b
        assert abs(float(v.mean()) - (a + b) / 2) < 0.01 * (b - a)  # uniform: centred
    for key, rate in dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=1.0, solarize=0.3).items():
        assert abs(float(p[key].float().mean()) - rate) < 0.02, key  # 4.9 sd at most
    counts = torch.stack([(p["order"] == torch.tensor(o)).all(1).sum()  # ~1000 of each order
                          for o in itertools.permutations(range(4))])
    assert counts.sum() == n and 800 < counts.min() and counts.max() < 1200
    # Official factors may be < 0 (strength > 1); torchvision's stop at 0.
    f = BYOLAugment(8, jitter=(1.5,) * 3 + (0,), jitter_style=style).sample_params(
        4096, (8, 8), gen())["factors"][:, 1:3]
    assert (f.min() < 0) == (style == "byol") and f.min() >= -0.5 and f.max() > 2.4


def test_crop_sampler_is_the_official_one() -> None:
    # Fixed area and ratio: w = round(sqrt(area * r)), h = round(sqrt(area / r)), clipped.
    for (hh, ww), s, r in [((100, 80), 0.3, 1.2), ((64, 64), 1.0, 2.0), ((7, 300), 0.5, 0.75)]:
        top, left, h, w = sample_crop_boxes(512, hh, ww, (s, s), (r, r), generator=gen()).T
        w_, h_ = (min(round(math.sqrt(s * hh * ww * r**e)), n) for e, n in ((1, ww), (-1, hh)))
        assert (w == w_).all() and (h == h_).all()
        assert top.min() == left.min() == 0 and top.max() == hh - h_ and left.max() == ww - w_
    box = sample_crop_boxes(20_000, 64, 64, generator=gen())  # defaults: (0.08, 1), (3/4, 4/3)
    top, left, h, w = box.T
    assert box.dtype == torch.int64 and (h >= 1).all() and (w >= 1).all()
    assert (top >= 0).all() and (left >= 0).all() and (top + h).max() == (left + w).max() == 64
    area, log_r = (h * w).double() / 64**2, (w / h).log()
    assert 0.07 < area.min() < 0.09 and area.max() == 1 and abs(area.mean() - 0.54) < 0.02
    assert log_r.min().exp() < 0.76 and log_r.max().exp() > 1.32 and abs(log_r.mean()) < 0.01
    # The data workers' use: the same seed gives the same boxes, another seed others.
    boxes = [sample_crop_boxes(8, 50, 60, generator=gen(s)) for s in (3, 3, 4)]
    assert torch.equal(boxes[0], boxes[1]) and not torch.equal(boxes[0], boxes[2])
    with pytest.raises(ValueError, match="scale"):
        sample_crop_boxes(1, 8, 8, scale=(0.5, 0.2))


def test_crop_resamples_like_torchvision_resized_crop() -> None:
    aug, x = BYOLAugment(16, **{**OFF, "crop_scale": (0.25, 1.0), "flip_p": 0.5}), images(32, 64)
    p = aug.sample_params(32, (64, 64), gen(2))
    expected = [TF.resized_crop(img, *box, [16, 16], antialias=False)  # bilinear
                for img, box in zip(x, p["boxes"].tolist())]
    expected = torch.stack([e.flip(-1) if f else e for e, f in zip(expected, p["flip"])])
    torch.testing.assert_close(aug.apply(x, p), expected, atol=1e-5, rtol=0)
    for size in (8, 24):  # a whole-image box is a plain bilinear resize, up or down
        y = BYOLAugment(size, **{**OFF, "crop_scale": (1, 1), "crop_ratio": (1, 1)})(x[:4])
        ref = F.interpolate(x[:4], size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtype_shape_and_memory_format_kept(dtype: torch.dtype) -> None:
    x = images(6, 40, 48).to(dtype)
    for view in default_views((24, 20)):
        y, y_cl = view(x, gen(3)), view(x.contiguous(memory_format=torch.channels_last), gen(3))
        assert y.shape == (6, 3, 24, 20) and y.dtype == dtype and torch.isfinite(y).all()
        assert y_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(y_cl, y)


def test_deterministic_with_a_generator_and_global_rng_untouched() -> None:
    x, state = images(8, 20), torch.get_rng_state()
    for view in default_views(16) + default_views(16, "small"):
        a, b, c = view(x, gen(7)), view(x, gen(7)), view(x, gen(8))
        assert torch.equal(a, b) and (a - c).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_gives_the_same_views_on_cuda() -> None:
    for view in default_views(32):
        cuda = view.cuda()(images(32, 40).cuda(), gen(9)).cpu()
        torch.testing.assert_close(cuda, view.cpu()(images(32, 40), gen(9)), atol=1e-4, rtol=0)


def test_no_crop_flips_only_and_draws_as_an_identity_crop(monkeypatch) -> None:
    x, same = images(16, 24), dict(crop_scale=(1, 1), crop_ratio=(1, 1))
    for cropped, uncropped in zip(default_views(24, **same), default_views(24, crop=False)):
        torch.testing.assert_close(uncropped(x, gen(2)), cropped(x, gen(2)), atol=1e-5, rtol=0)
    monkeypatch.setattr(ops.F, "grid_sample", None)  # crop=False must not resample
    assert torch.equal(BYOLAugment(24, **{**OFF, "flip_p": 1.0}, crop=False)(x), x.flip(-1))
    with pytest.raises(ValueError, match=r"exactly image_size \(24, 24\)"):
        BYOLAugment(24, crop=False)(images(2, 20))


def test_default_views_presets_and_overrides() -> None:
    for preset, style, blur in (("imagenet", "byol", (1.0, 0.1)), ("small", "torchvision", (0, 0))):
        (v1, v2), (o1, o2) = default_views(224, preset), default_views(32, preset, flip_p=0.0)
        assert (v1.blur_p, v2.blur_p) == blur and (v1.solarize_p, v2.solarize_p) == (0.0, 0.2)
        assert (v1.jitter_style, v1.crop_scale, v1.crop) == (style, (0.08, 1.0), True)
        assert v2.jitter == (0.4, 0.4, 0.2, 0.1) and (v2.jitter_p, v2.grayscale_p) == (0.8, 0.2)
        assert (v2.blur_kernel_size, v2.blur_sigma, v2.flip_p) == (23, (0.1, 2.0), 0.5)
        assert o1.flip_p == o2.flip_p == 0.0 and (o1.blur_p, o2.solarize_p) == (blur[0], 0.2)
    assert all(BYOLAugment(s).blur_kernel_size == 2 * int(s / 10.0 / 2) + 1 for s in range(1, 400))
    with pytest.raises(ValueError, match="preset"):
        default_views(32, preset="cifar")
    with pytest.raises(TypeError):
        default_views(32, crop_min=0.4)  # a misspelt argument is not silently dropped


@pytest.mark.parametrize("kwargs", [
    dict(crop_scale=(0.5, 0.2)), dict(crop_scale=(0.0, 1.0)), dict(crop_scale=(0.5, 1.5)),
    dict(crop_ratio=(2.0, 1.0)), dict(crop_ratio="ab"), dict(flip_p=1.5), dict(jitter_p=-0.1),
    dict(blur_kernel_size=4), dict(blur_kernel_size=31), dict(blur_sigma=(0.0, 1.0)),
    dict(jitter=(0.4, 0.4, 0.2, 0.6)), dict(jitter=(0.4, 0.4, 0.2)), dict(jitter=(-1, 0, 0, 0)),
    dict(solarize_threshold=1.5), dict(std=(0.0, 1.0, 1.0)), dict(mean=(0.5, 0.5)),
    dict(jitter_style="tf"), dict(crop="no"), dict(image_size=0), dict(image_size="32"),
    dict(mean="abc"), dict(std=(0.2, 0.2))])  # the last four reach Normalize
def test_bad_arguments_raise_clear_errors(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError), match="must|need"):
        BYOLAugment(**{"image_size": 8, **kwargs})


def test_bad_inputs_raise_clear_errors_and_non_rgb_works_without_colour_ops() -> None:
    for x, error, match in [(torch.rand(3, 8, 8), ValueError, r"\(B, C, H, W\)"),
                            (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), TypeError, "to_float"),
                            (torch.rand(2, 1, 8, 8), ValueError, "RGB"), ([0], TypeError, "float")]:
        with pytest.raises(error, match=match):
            BYOLAugment(8)(x)
    grey = BYOLAugment(8, jitter_p=0.0, grayscale_p=0.0, mean=(0.5,), std=(0.5,))
    assert grey(torch.rand(4, 1, 12, 12)).shape == (4, 1, 8, 8)


def test_compiles_to_one_graph() -> None:  # fullgraph=True raises on a graph break
    for view in (default_views(32)[1], default_views(32, "small")[1]):
        assert torch.compile(view, fullgraph=True, backend="eager")(images(8, 40)).shape[-1] == 32


def test_normalize_and_to_float_images() -> None:
    u8 = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    x = to_float_images(u8)
    assert x.dtype == torch.float32 and torch.equal(x, u8.float() / 255) and to_float_images(x) is x
    expected = TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    for images_in in (u8, x):  # not in place by default
        torch.testing.assert_close(Normalize()(images_in), expected, atol=1e-6, rtol=0)
    x64, expected = x.double(), (x.double() - 0.5) / 0.25
    out = Normalize((0.5,), (0.25,))(x64, inplace=True)  # one value for every channel
    assert out is x64 and torch.allclose(out, expected) and torch.equal(x, u8.float() / 255)
    norm = Normalize().to(torch.float64)
    assert norm.state_dict() == {} and norm.mean.dtype == torch.float64 and norm.channels == 3
    for bad in (torch.rand(2, 4, 3, 3), torch.rand(3, 3, 3), torch.ones(2, 3, 3, 3).int()):
        with pytest.raises((ValueError, TypeError), match=r"\(B, C, H, W\)|uint8"):
            Normalize()(bad)
