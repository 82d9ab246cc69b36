"""byol_pytorch.augment: ops vs the official BYOL formulas or torchvision; crops; Normalize."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from kornia.color import hsv_to_rgb, rgb_to_hsv

from byol_pytorch.augment import (IMAGENET_MEAN, IMAGENET_STD, BYOLAugment, Normalize,
                                  default_views, ops, sample_crop_boxes, to_float_images)

# OFF: every op off, identity normalisation; tests switch on what they check.
OFF = dict(flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0, mean=(0,), std=(1,))
SINGLE = {op: {**OFF, **kw} for op, kw in {  # one op per image, p = 0.5; strength > 1: factor < 0
    "flip": dict(flip_p=0.5), "brightness": dict(jitter_p=0.5, jitter=(0.9, 0, 0, 0)),
    "contrast": dict(jitter_p=0.5, jitter=(0, 1.5, 0, 0)), "grayscale": dict(grayscale_p=0.5),
    "saturation": dict(jitter_p=0.5, jitter=(0, 0, 1.5, 0)), "solarize": dict(solarize_p=0.5),
    "hue": dict(jitter_p=0.5, jitter=(0, 0, 0, 0.5)),
    "blur": dict(blur_p=0.5, blur_kernel_size=7, blur_sigma=(0.5, 2.0))}.items()}
ALL = dict(jitter=(0.4, 0.4, 0.4, 0.2), grayscale_p=0.3, blur_p=0.5, blur_kernel_size=5,
           solarize_p=0.5)  # every op with p in (0, 1), the jitter's ops in each image's order
OFFICIAL = [lambda img, d: (img + d).clip(0, 1),  # TF's ops; contrast: around each channel's mean
            lambda img, f: (f * (img - (m := img.mean((1, 2), keepdim=True))) + m).clip(0, 1),
            lambda img, f: hsv_to_rgb(torch.cat([(hsv := rgb_to_hsv(img))[:1],  # s * f in HSV
                                                 (hsv[1:2] * f).clip(0, 1), hsv[2:]])).clip(0, 1),
            TF.adjust_hue]  # h + d mod 1 in HSV, as torchvision's
TORCHVISION = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
BAD = dict(crop_scale=[(0.5, 0.2), (0.0, 1.0), (0.5, 1.5)], crop_ratio=[(2.0, 1.0), "ab"],
           flip_p=[1.5], jitter_p=[-0.1], blur_kernel_size=[4, 31], blur_sigma=[(0.0, 1.0)],
           jitter=[(0.4, 0.4, 0.2, 0.6), (0.4, 0.4, 0.2), (-1, 0, 0, 0)], solarize_threshold=[1.5],
           jitter_style=["tf"], crop=["no"], image_size=[0, "32"],
           mean=[(0.5, 0.5), "abc"], std=[(0.0, 1.0, 1.0), (0.2, 0.2)])  # mean, std: Normalize's


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int, h: int = 16, w: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random images with black, white, grey and pure primary pixels (the ops' edge cases)."""
    x = torch.rand(b, 3, h, w or h, generator=gen(seed))
    x[:, :, 0, :3], x[:, :, 1, :3] = torch.tensor([0.0, 1.0, 0.5]), torch.eye(3)
    return x


def reference(aug: BYOLAugment, x: torch.Tensor, p: dict) -> torch.Tensor:
    """Image by image, drawn parameters (crop=False): jitter per style, official blur, TF's rest."""
    out, jitter = [], OFFICIAL if aug.jitter_style == "byol" else TORCHVISION
    k, r = aug.blur_kernel_size, aug.blur_kernel_size // 2
    for i, img in enumerate(x):
        img = img.flip(-1) if p["flip"][i] else img
        for op in p["order"][i].tolist() if p["jitter"][i] else []:
            img = jitter[op](img, float(p["factors"][i, op])) if aug.jitter[op] > 0 else img
        img = TF.rgb_to_grayscale(img, 3) if p["grayscale"][i] else img
        if p["blur"][i]:  # official: weights exp(-x^2 / 2 sigma^2) / sum, "SAME" zero padding
            img = TF.gaussian_blur(TF.pad(img, [r] * 4), [k, k], [float(p["sigma"][i])] * 2)
            img = img[:, r:-r, r:-r]  # only the cut border saw TF's reflect padding
        img = TF.solarize(img, aug.solarize_threshold) if p["solarize"][i] else img
        out.append(TF.normalize(img, aug.normalize.mean.tolist(), aug.normalize.std.tolist()))
    return torch.stack(out)


@pytest.mark.parametrize("style", ["byol", "torchvision"])
@pytest.mark.parametrize("op, b", [(op, 32) for op in SINGLE] + [("all", b) for b in (1, 7, 48)])
def test_ops_match_the_reference_and_undrawn_images_stay_exact(style, op: str, b: int) -> None:
    aug = BYOLAugment(16, **SINGLE.get(op, ALL), jitter_style=style, crop=False)
    x, p = images(b, seed=b), aug.sample_params(b, (16, 16), gen(b))
    y, atol = aug.apply(x, p), 2e-5 if op == "all" else 2e-6
    assert torch.equal(aug(x, gen(b)), y)  # forward is apply(x, sample_params(...))
    torch.testing.assert_close(y, reference(aug, x, p), atol=atol, rtol=0)
    if op != "all":
        drawn = p["jitter" if "jitter" in SINGLE[op] else op]
        assert 0 < int(drawn.sum()) < 32 and torch.equal(y[~drawn], x[~drawn])
        assert (y[drawn] - x[drawn]).flatten(1).abs().amax(1).min() > 1e-3


@pytest.mark.parametrize("style", ["byol", "torchvision"])
def test_per_image_parameters_ranges_rates_and_orders(style: str) -> None:
    p = BYOLAugment(8, jitter=(0.4, 0.3, 0.2, 0.1), blur_sigma=(0.5, 1.5), solarize_p=0.3,
                    jitter_style=style).sample_params(n := 24_000, (8, 8), gen())
    assert len(p["factors"].unique(dim=0)) == n and len(p["sigma"].unique()) > 0.99 * n
    ranges = [(-0.4, 0.4) if style == "byol" else (0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]
    for v, (a, b) in zip([*p["factors"].T, p["sigma"]], ranges + [(0.5, 1.5)]):  # sigma last
        assert a <= v.min() < a + 1e-3 and b - 1e-3 < v.max() <= b
        assert abs(float(v.mean()) - (a + b) / 2) < 0.01 * (b - a)  # uniform: centred
    for key, rate in dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=1.0, solarize=0.3).items():
        assert abs(float(p[key].float().mean()) - rate) < 0.02, key  # 4.9 sd at most
    orders, counts = p["order"].unique(dim=0, return_counts=True)  # ~1000 of each of the 24
    assert len(orders) == 24 and (orders.sort(1).values == torch.arange(4)).all()
    assert 800 < counts.min() and counts.max() < 1200
    f = BYOLAugment(8, jitter=(1.5,) * 3 + (0,), jitter_style=style).sample_params(  # < 0: byol
        4096, (8, 8), gen())["factors"][:, 1:3]
    assert (f.min() < 0) == (style == "byol") and f.min() >= -0.5 and f.max() > 2.4


def test_crops_official_sampler_torchvision_resampling_or_none(monkeypatch) -> None:
    # Fixed area and ratio: w = round(sqrt(area * r)), h = round(sqrt(area / r)), clipped.
    for (hh, ww), s, r in [((100, 80), 0.3, 1.2), ((64, 64), 1.0, 2.0), ((7, 300), 0.5, 0.75)]:
        top, left, h, w = sample_crop_boxes(512, hh, ww, (s, s), (r, r), generator=gen()).T
        w_, h_ = (min(round((s * hh * ww * r**e) ** 0.5), n) for e, n in ((1, ww), (-1, hh)))
        assert (w == w_).all() and (h == h_).all()
        assert top.min() == left.min() == 0 and top.max() == hh - h_ and left.max() == ww - w_
    top, left, h, w = (box := sample_crop_boxes(20_000, 64, 64, generator=gen())).T  # defaults
    assert box.dtype == torch.int64 and (box >= torch.tensor([0, 0, 1, 1])).all()
    assert (top + h).max() == (left + w).max() == 64
    area, log_r = (h * w).double() / 64**2, (w / h).log()  # scale (0.08, 1), ratio (3/4, 4/3)
    assert 0.07 < area.min() < 0.09 and area.max() == 1 and abs(area.mean() - 0.54) < 0.02
    assert log_r.min().exp() < 0.76 and log_r.max().exp() > 1.32 and abs(log_r.mean()) < 0.01
    a, b, c = (sample_crop_boxes(8, 50, 60, generator=gen(s)) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)  # the data workers' use: seeded
    with pytest.raises(ValueError, match="scale"):
        sample_crop_boxes(1, 8, 8, scale=(0.5, 0.2))
    aug, x = BYOLAugment(16, **{**OFF, "crop_scale": (0.25, 1.0), "flip_p": 0.5}), images(32, 64)
    p = aug.sample_params(32, (64, 64), gen(2))  # the device's use: crop, resample, flip
    expected = [TF.resized_crop(img, *box, [16, 16], antialias=False)  # bilinear
                for img, box in zip(x, p["boxes"].tolist())]
    expected = torch.stack([e.flip(-1) if f else e for e, f in zip(expected, p["flip"])])
    torch.testing.assert_close(aug.apply(x, p), expected, atol=1e-5, rtol=0)
    for size in (8, 24):  # a whole-image box is a plain bilinear resize, up or down
        y = BYOLAugment(size, **{**OFF, "crop_scale": (1, 1), "crop_ratio": (1, 1)})(x[:4])
        torch.testing.assert_close(y, TF.resize(x[:4], size, antialias=False), atol=1e-5, rtol=0)
    x, same = images(16, 24), dict(crop_scale=(1, 1), crop_ratio=(1, 1))
    for cropped, uncropped in zip(default_views(24, **same), default_views(24, crop=False)):
        torch.testing.assert_close(uncropped(x, gen(2)), cropped(x, gen(2)), atol=1e-5, rtol=0)
    monkeypatch.setattr(ops.F, "grid_sample", None)  # crop=False must not resample
    assert torch.equal(BYOLAugment(24, **{**OFF, "flip_p": 1.0}, crop=False)(x), x.flip(-1))
    with pytest.raises(ValueError, match=r"exactly image_size \(24, 24\)"):
        BYOLAugment(24, crop=False)(images(2, 20))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_gives_the_same_views_on_cuda() -> None:
    for view in default_views(32):
        cuda = view.cuda()(images(32, 40).cuda(), gen(9)).cpu()
        torch.testing.assert_close(cuda, view.cpu()(images(32, 40), gen(9)), atol=1e-4, rtol=0)


def test_default_views_presets_overrides_dtypes_memory_format_seeds_one_graph() -> None:
    for preset, style, blur in (("imagenet", "byol", (1.0, 0.1)), ("small", "torchvision", (0, 0))):
        (v1, v2), (o1, o2) = default_views(224, preset), default_views(32, preset, flip_p=0.0)
        assert (v1.blur_p, v2.blur_p) == blur and (v1.solarize_p, v2.solarize_p) == (0.0, 0.2)
        assert (v1.jitter_style, v1.crop_scale, v1.crop) == (style, (0.08, 1.0), True)
        assert v2.jitter == (0.4, 0.4, 0.2, 0.1) and (v2.jitter_p, v2.grayscale_p) == (0.8, 0.2)
        assert (v2.blur_kernel_size, v2.blur_sigma, v2.flip_p) == (23, (0.1, 2.0), 0.5)
        assert o1.flip_p == o2.flip_p == 0.0 and (o1.blur_p, o2.solarize_p) == (blur[0], 0.2)
        state = torch.get_rng_state()
        for dtype, view in [(d, v) for d in (torch.float32, torch.float16, torch.bfloat16)
                            for v in default_views((24, 20), preset)]:
            x = images(6, 40, 48).to(dtype)
            y, y_cl = view(x, gen(3)), view(x.contiguous(memory_format=torch.channels_last), gen(3))
            assert y.shape == (6, 3, 24, 20) and y.dtype == dtype and torch.isfinite(y).all()
            assert y_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(y_cl, y)
            assert (view(x, gen(4)) - y).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every image
        assert torch.equal(torch.get_rng_state(), state)  # only the generators drew
        view = torch.compile(default_views(32, preset)[1], fullgraph=True, backend="eager")
        assert view(images(8, 40)).shape[-1] == 32  # fullgraph=True raises on a graph break
    assert all(BYOLAugment(s).blur_kernel_size == 2 * int(s / 10.0 / 2) + 1 for s in range(1, 400))
    for kwargs, error in [(dict(preset="cifar"), ValueError), (dict(crop_min=0.4), TypeError)]:
        with pytest.raises(error, match="preset|crop_min"):  # misspelt: not silently dropped
            default_views(32, **kwargs)


@pytest.mark.parametrize("name, value", [(name, v) for name, vs in BAD.items() for v in vs])
def test_bad_arguments_raise_clear_errors(name: str, value) -> None:
    with pytest.raises((ValueError, TypeError), match="must|need"):
        BYOLAugment(**{"image_size": 8, name: value})


def test_inputs_to_float_images_normalize_and_clear_errors() -> None:
    x = to_float_images(u8 := torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8))
    expected = TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    for images_in in (u8, x):  # not in place by default
        torch.testing.assert_close(Normalize()(images_in), expected, atol=1e-6, rtol=0)
    assert x.dtype == torch.float32 and torch.equal(x, u8.float() / 255) and to_float_images(x) is x
    out = Normalize((0.5,), (0.25,))(x64 := x.double(), inplace=True)  # one value for all channels
    assert out is x64 and torch.allclose(out, (x.double() - 0.5) / 0.25)
    norm = Normalize().to(torch.float64)
    assert norm.state_dict() == {} and norm.mean.dtype == torch.float64 and norm.channels == 3
    for bad in (torch.rand(2, 4, 3, 3), torch.rand(3, 3, 3), torch.ones(2, 3, 3, 3).int()):
        with pytest.raises((ValueError, TypeError), match=r"\(B, C, H, W\)|uint8"):
            Normalize()(bad)
    for bad, error, match in [(torch.rand(3, 8, 8), ValueError, r"\(B, C, H, W\)"),
                              (u8, TypeError, "to_float"), ([0], TypeError, "float"),
                              (torch.rand(2, 1, 8, 8), ValueError, "RGB")]:
        with pytest.raises(error, match=match):
            BYOLAugment(8)(bad)
    grey = BYOLAugment(8, jitter_p=0.0, grayscale_p=0.0, mean=(0.5,), std=(0.5,))
    assert grey(torch.rand(4, 1, 12, 12)).shape == (4, 1, 8, 8)  # non-RGB: no colour ops
