"""The recipes follow their references: the official BYOL code (deepmind-research ``byol/``) for
the ImageNet preset and solo-learn's CIFAR recipe for the small preset.

Each test compares with a port of the reference formula or with the reference's config value;
examples/README.md lists every setting with its source.
"""

from __future__ import annotations

import importlib
import math
import sys

import numpy as np
import pytest
import torch
import torchvision
from conftest import REPO_ROOT
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from byol_pytorch import BYOL

sys.path.insert(0, str(REPO_ROOT / "examples"))
data = importlib.import_module("data")
pretrain = importlib.import_module("pretrain")


def photos() -> dict[str, torch.Tensor]:
    """Real photos shipped with installed packages: name -> uint8 (3, H, W)."""
    from sklearn.datasets import load_sample_images

    out = {f"sklearn{i}": torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
           for i, img in enumerate(load_sample_images().images)}
    try:
        import matplotlib.cbook
        from PIL import Image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            out["grace_hopper"] = TF.pil_to_tensor(Image.open(f).convert("RGB"))
    except (ImportError, OSError, ValueError):
        pass
    return out


# --------------------------------------------------------------------------- 1. presets
@pytest.mark.parametrize("epochs, expected", [
    # byol/configs/byol.py: _LR_PRESETS, _WD_PRESETS, _EMA_PRESETS
    (40, (0.45, 1e-6, 0.97)), (100, (0.45, 1e-6, 0.99)), (300, (0.3, 1e-6, 0.99)),
    (1000, (0.2, 1.5e-6, 0.996)),
    # other lengths: the nearest official length on a log scale
    (200, (0.3, 1e-6, 0.99)), (600, (0.2, 1.5e-6, 0.996)), (60, (0.45, 1e-6, 0.97)),
    (10, (0.45, 1e-6, 0.97)), (5000, (0.2, 1.5e-6, 0.996)),
])
def test_imagenet_preset_takes_the_official_settings_for_its_length(epochs, expected, tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    argv = ["--dataset", "folder", "--data-path", str(tmp_path), "--epochs", str(epochs)]
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(argv))
    assert (args.base_lr, args.weight_decay, args.ema_base) == expected
    assert (args.lars_eta, args.warmup_epochs, args.batch_size) == (1e-3, min(10, epochs / 10),
                                                                   4096)
    given = pretrain.resolve_args(pretrain.get_args_parser().parse_args(
        argv + ["--base-lr", "0.1", "--ema-base", "0.9"]))
    assert (given.base_lr, given.weight_decay, given.ema_base) == (0.1, expected[1], 0.9)


def test_default_run_is_the_official_300_epoch_run(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(
        ["--dataset", "folder", "--data-path", str(tmp_path)]))
    assert (args.epochs, args.base_lr, args.weight_decay, args.ema_base) == (300, 0.3, 1e-6, 0.99)


@pytest.mark.parametrize("dataset, world, device, expected", [
    ("folder", 8, "cuda", True),  # official: BN statistics over the global batch
    ("folder", 1, "cuda", False),  # one process: nothing to synchronise
    ("cifar10", 8, "cuda", False),  # solo-learn's recipe is run on one GPU
    ("folder", 2, "cpu", False),  # SyncBatchNorm needs CUDA
])
def test_sync_batchnorm_default(dataset, world, device, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "cifar-10-batches-py").mkdir()
    argv = ["--dataset", dataset, "--data-path", str(tmp_path), "--device", device,
            "--batch-size", "64"]
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(argv))
    assert args.sync_bn is expected


# --------------------------------------------------------------------------- 2. crop geometry
def official_crop_boxes(height: int, width: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Port of ``_decode_and_random_crop`` (byol/utils/dataset.py): (n, 4) top, left, h, w."""
    area = height * width * rng.uniform(0.08, 1.0, n)
    ratio = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), n))
    w = np.minimum(np.round(np.sqrt(area * ratio)), width).astype(int)
    h = np.minimum(np.round(np.sqrt(area / ratio)), height).astype(int)
    top = rng.integers(0, height - h + 1)
    left = rng.integers(0, width - w + 1)
    return np.stack([top, left, h, w], axis=1)


def crop_statistics(boxes: np.ndarray, height: int, width: int, view: int = 224) -> np.ndarray:
    """Mean, standard deviation and median of covered area fraction, aspect ratio and
    magnification (view side / crop side)."""
    h, w = boxes[:, 2].astype(float), boxes[:, 3].astype(float)
    stats = [h * w / (height * width), w / h, view / np.sqrt(h * w)]
    return np.array([[s.mean(), s.std(), np.median(s)] for s in stats])


@pytest.mark.parametrize("size", [(375, 500), (427, 640), (600, 512), (32, 32)])
def test_crop_boxes_follow_the_official_sampler(size):
    height, width = size
    n = 20000
    gen = torch.Generator().manual_seed(0)
    ours = np.array([data.sample_crop_box(height, width, generator=gen) for _ in range(n)])
    reference = official_crop_boxes(height, width, n, np.random.default_rng(0))
    assert (ours[:, 0] + ours[:, 2] <= height).all() and (ours[:, 1] + ours[:, 3] <= width).all()
    assert (ours >= 0).all() and (ours[:, 2:] >= 1).all()
    np.testing.assert_allclose(crop_statistics(ours, height, width),
                               crop_statistics(reference, height, width), rtol=0.02, atol=0.005)
    # offsets are uniform: the crop centres cover the image, not only its middle
    centre_y = (ours[:, 0] + ours[:, 2] / 2) / height
    assert centre_y.min() < 0.2 and centre_y.max() > 0.8


def test_views_are_bicubic_crops_of_the_full_photo():
    """Both views of a real photo are cut from the full-resolution image (not a centre crop):
    each equals torchvision's bicubic resized_crop of the box the sampler drew."""
    for name, photo in photos().items():
        crops = data.PretrainViews(64)
        crops.generator.manual_seed(7)
        views = crops(photo)
        gen = torch.Generator().manual_seed(7)
        for view in views:
            box = data.sample_crop_box(*photo.shape[-2:], generator=gen)
            expected = TF.resized_crop(photo, *box, [64, 64], InterpolationMode.BICUBIC,
                                       antialias=True)
            assert torch.equal(view, expected), name
        assert views.dtype == torch.uint8 and views.shape == (2, 3, 64, 64)
        assert not torch.equal(views[0], views[1])


def test_crops_depend_only_on_seed_epoch_and_index():
    images = torch.randint(0, 256, (10, 3, 24, 24), dtype=torch.uint8)
    crops = data.PretrainViews(16)
    dataset = data.SeededViews(data.TensorImageDataset(images, None, crops), crops)

    def epoch_items(epoch, replicas=1, rank=0, start=0):
        sampler = data.SeededSampler(dataset, num_replicas=replicas, rank=rank, seed=3)
        sampler.set_epoch(epoch)
        sampler.set_start(start)
        return {i: dataset[(i, s)][0] for i, s in sampler}

    full = epoch_items(0)
    assert len(full) == 10
    resumed = epoch_items(0, start=4)  # a run resumed mid-epoch
    assert len(resumed) == 6 and all(torch.equal(v, full[i]) for i, v in resumed.items())
    for rank in (0, 1):  # two processes see the crops one process would have seen
        assert all(torch.equal(v, full[i]) for i, v in epoch_items(0, 2, rank).items())
    other = epoch_items(1)
    assert not all(torch.equal(other[i], full[i]) for i in full)  # new crops every epoch


def test_device_views_do_not_crop_again():
    """pretrain.py hands worker crops to views built with crop=False: the geometry stays."""
    mean, std = data.normalization("cifar10")
    view1, _ = pretrain.default_views(16, "small", crop=False, flip_p=0.0, jitter_p=0.0,
                                      grayscale_p=0.0, mean=mean, std=std)
    x = torch.rand(2, 3, 16, 16)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(view1(x), expected, atol=1e-6)


# --------------------------------------------------------------------------- 4. backbone init
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "timm:resnet18"])
def test_recipe_resnets_start_with_identity_residual_blocks(name):
    """Official ResNets zero-initialise the last BN scale of every block, so that each block
    starts as its shortcut; the recipe builds them so."""
    args = pretrain.get_args_parser().parse_args(["--backbone", name])
    args.preset, args.cifar_stem, args.image_size = "imagenet", None, 32
    net = pretrain.build_backbone(args).eval()
    blocks = [m for m in net.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck")]
    assert len(blocks) in (8, 16)
    checked = 0
    for block in blocks:
        if block.downsample is None:  # identity shortcut: the block starts as relu(x)
            x = torch.randn(2, block.conv1.in_channels, 4, 4)
            assert torch.equal(block(x), torch.relu(x))
            checked += 1
    assert checked >= len(blocks) - 4  # at most one block per stage has a projection shortcut


# --------------------------------------------------------------------------- 5. heads
def test_heads_output_layer_bias_follows_the_preset():
    """The official projector/predictor end in a Linear without bias (byol/utils/networks.py);
    solo-learn's (and byol-pytorch 0.9.1's) have one."""
    for dataset, bias in (("folder", False), ("cifar10", True)):
        assert pretrain.PRESETS[pretrain.DEFAULT_PRESET[dataset]]["head_output_bias"] is bias
    official = BYOL(torchvision.models.resnet18(), 32, "avgpool", 8, 16, head_output_bias=False)
    for head in (official.online_encoder.projector, official.online_predictor,
                 official.target_encoder.projector):
        assert head[3].bias is None and head[0].bias is not None
    default = BYOL(torchvision.models.resnet18(), 32, "avgpool", 8, 16)  # 0.9.1's layout
    assert default.online_predictor[3].bias is not None


# --------------------------------------------------------------------------- 8. CIFAR preset
def test_small_preset_follows_solo_learn():
    """solo-learn scripts/pretrain/cifar/byol.yaml + augmentations/asymmetric.yaml."""
    small = pretrain.PRESETS["small"]
    assert (small["base_lr"], small["weight_decay"], small["ema_base"], small["lars_eta"],
            small["lars_clip"], small["batch_size"], small["epochs"]) == (
        1.0, 1e-5, 0.99, 0.02, True, 256, 1000)
    assert small["crop_min_scale"] == 0.08 and small["flip_p"] == 0.5
    # CIFAR's own statistics (solo/data/pretrain_dataloader.py MEANS_N_STD)
    assert data.normalization("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert data.normalization("cifar100") == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    assert data.normalization("folder") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    view1, view2 = pretrain.default_views(32, "small")
    assert (view1.blur_p, view2.blur_p, view1.solarize_p, view2.solarize_p) == (0, 0, 0, 0.2)
    assert view1.crop_scale == (0.08, 1.0) and view1.jitter == (0.4, 0.4, 0.2, 0.1)
    assert (view1.jitter_p, view1.grayscale_p) == (0.8, 0.2)

