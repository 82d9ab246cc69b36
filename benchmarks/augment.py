"""Throughput of BYOL's two-view augmentation: ours vs kornia vs torchvision.

Prints markdown tables:

1. images/s (each image -> the paper's two views) per image size for
   * ``byol_pytorch`` (per-image parameters, vectorised) with the preset's colour jitter
     (``--preset imagenet``: the official BYOL code's, ``jitter_style="byol"``),
   * the same with torchvision's colour jitter (``jitter_style="torchvision"``),
   * kornia's stock ``AugmentationSequential`` with the same ops (per-image parameters; kornia's
     ColorJitter has torchvision's definitions), built here; skipped if kornia is not installed,
   * torchvision.transforms.v2 on the whole batch (ONE random draw shared by the batch, so not
     the same augmentation; shown as a speed reference only),
   * torchvision.transforms.v2 in a Python loop over images (per-image, the semantic reference).
2. per-op time of our augmentation for each size, to show what dominates.

Usage::

    python benchmarks/augment.py --device cpu --sizes 32 96 224 --batch 64 --iters 10
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from _common import sync
from torch import Tensor

from byol_pytorch.augment import IMAGENET_MEAN, IMAGENET_STD, BYOLAugment, default_views, ops


def median_seconds(fn: Callable[[], object], device: torch.device, iters: int,
                   warmup: int) -> float:
    """Median wall time of ``fn`` over ``iters`` runs after ``warmup`` runs, synced on CUDA."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kornia_available() -> bool:
    try:
        import kornia  # noqa: F401
    except ImportError:
        return False
    return True


def kornia_stock(view: BYOLAugment) -> torch.nn.Module:
    """kornia's own container with the ops of ``view`` (what a kornia user would write): the
    same per-image draws, zero-padded blur and solarisation threshold 0.5 as ours; the colour
    jitter has torchvision's definitions and ONE random order of its ops per call."""
    import kornia.augmentation as K

    k = view.blur_kernel_size
    ops = [
        K.RandomResizedCrop(view.image_size, scale=view.crop_scale, ratio=view.crop_ratio),
        K.RandomHorizontalFlip(p=view.flip_p),
        K.ColorJitter(*view.jitter, p=view.jitter_p),
        K.RandomGrayscale(p=view.grayscale_p),
    ]
    if view.blur_p > 0 and k > 1:
        ops.append(K.RandomGaussianBlur((k, k), view.blur_sigma, border_type="constant",
                                        p=view.blur_p))
    if view.solarize_p > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=view.solarize_p))
    ops.append(K.Normalize(mean=torch.tensor(IMAGENET_MEAN), std=torch.tensor(IMAGENET_STD)))
    return K.AugmentationSequential(*ops)


def torchvision_v2(view: BYOLAugment) -> torch.nn.Module:
    """torchvision.transforms.v2 pipeline with the ops of ``view``."""
    from torchvision.transforms import v2

    k = view.blur_kernel_size
    ops = [
        v2.RandomResizedCrop(view.image_size, scale=view.crop_scale, ratio=view.crop_ratio,
                             antialias=True),
        v2.RandomHorizontalFlip(p=view.flip_p),
        v2.RandomApply([v2.ColorJitter(*view.jitter)], p=view.jitter_p),
        v2.RandomGrayscale(p=view.grayscale_p),
    ]
    if view.blur_p > 0 and k > 1:
        ops.append(v2.RandomApply([v2.GaussianBlur(k, sigma=view.blur_sigma)], p=view.blur_p))
    if view.solarize_p > 0:
        ops.append(v2.RandomSolarize(view.solarize_threshold, p=view.solarize_p))
    ops.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(ops)


def throughput_row(size: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    in_size = max(size, round(size * args.input_factor))
    x = torch.rand(args.batch, 3, in_size, in_size, device=device)
    ours = default_views(size, args.preset)
    ours_tv = default_views(size, args.preset, jitter_style="torchvision")
    tv = [torchvision_v2(v) for v in ours]

    def two(views) -> Callable[[], object]:
        return lambda: [v(x) for v in views]

    def tv_loop() -> list[Tensor]:
        return [torch.stack([t(img) for img in x]) for t in tv]

    runs: dict[str, Callable[[], object]] = {
        "ours": two(ours),
        "ours, torchvision jitter": two(ours_tv),
        "torchvision v2, batch (1 draw/batch!)": two(tv),
        "torchvision v2, loop over images": tv_loop,
    }
    if kornia_available():
        runs["kornia stock"] = two([kornia_stock(v).to(device) for v in ours])
    row = {}
    with torch.no_grad():
        for name, fn in runs.items():
            iters = args.iters
            if name.endswith("loop over images"):
                iters = max(3, args.iters // 3)  # slow; fewer runs
            row[name] = args.batch / median_seconds(fn, device, iters, args.warmup)
    return row


def view_op_times(view: BYOLAugment, x: Tensor, args: argparse.Namespace,
                  device: torch.device) -> dict[str, float]:
    """Median ms of each op of one view on the batch ``x`` (the ops ``view.apply`` runs)."""
    in_size = (x.shape[2], x.shape[3])
    p = view.sample_params(args.batch, in_size, device=device)
    y = ops.resized_crop(x, p["boxes"], p["flip"], view.image_size).float().clamp_(0, 1)

    def select(key: str, new: Tensor) -> Tensor:
        return torch.where(p[key].view(-1, 1, 1, 1), new, y)

    steps: dict[str, Callable[[], object]] = {
        "sample params": lambda: view.sample_params(args.batch, in_size, device=device),
        "crop+flip (grid_sample)": lambda: ops.resized_crop(x, p["boxes"], p["flip"],
                                                            view.image_size),
        f"colour jitter ({view.jitter_style}, random order)": lambda: ops.colour_jitter(
            y, p["jitter"], p["factors"], p["order"], p["pos"], view.jitter_style),
        f"grayscale p={view.grayscale_p} (kornia)":
            lambda: select("grayscale", ops.rgb_to_grayscale(y).expand_as(y)),
    }
    if view.blur_p > 0:
        steps[f"blur p={view.blur_p} (k={view.blur_kernel_size})"] = lambda: select(
            "blur", ops.gaussian_blur(y, p["sigma"], view.blur_kernel_size).clamp_(0, 1))
    if view.solarize_p > 0:
        steps[f"solarize p={view.solarize_p} (kornia)"] = \
            lambda: ops.solarize(y, p["solarize"], view.solarize_threshold)
    steps["normalize"] = lambda: view.normalize(y.clone(), inplace=True)
    steps["whole view"] = lambda: view(x)
    with torch.no_grad():
        return {k: median_seconds(fn, device, args.iters, args.warmup) * 1e3
                for k, fn in steps.items()}


def per_op_rows(size: int, args: argparse.Namespace, device: torch.device) -> list[tuple]:
    """(view, op, ms, % of view) rows for the two views."""
    in_size = max(size, round(size * args.input_factor))
    x = torch.rand(args.batch, 3, in_size, in_size, device=device)
    rows = []
    for i, view in enumerate(default_views(size, args.preset), start=1):
        times = view_op_times(view, x, args, device)
        total = times["whole view"]
        rows += [(f"view {i}", k, ms, 100 * ms / total) for k, ms in times.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96, 224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--preset", default="imagenet", choices=["imagenet", "small"])
    parser.add_argument("--input-factor", type=float, default=8 / 7,
                        help="input side = output side * this (8/7: 256 px inputs for 224)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")

    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"# BYOL augmentation benchmark: device={device} ({name or platform.machine()}), "
          f"threads={torch.get_num_threads()}, batch={args.batch}, preset={args.preset}, "
          f"input side = {args.input_factor:.3f} x output side")
    kornia_version = "not installed (column skipped)"
    if kornia_available():
        import kornia
        kornia_version = kornia.__version__
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"kornia {kornia_version}; medians of {args.iters} runs after {args.warmup} warm-up")
    print()
    print("## Throughput, images/s (each image -> the paper's two views; higher is better)")
    print()
    rows = {s: throughput_row(s, args, device) for s in args.sizes}
    names = list(next(iter(rows.values())))
    ratio = "kornia stock" in names
    print("| size | " + " | ".join(names) + (" | ours, torchvision jitter / kornia |" if ratio
                                             else " |"))
    print("|---:|" + "---:|" * (len(names) + ratio))
    for s, row in rows.items():
        cells = " | ".join(f"{row[n]:,.0f}" for n in names)
        if ratio:
            cells += f" | {row['ours, torchvision jitter'] / row['kornia stock']:.2f}x"
        print(f"| {s} | {cells} |")
    print()
    jitter = {v.jitter_style for v in default_views(args.sizes[0], args.preset)}.pop()
    print(f"'ours' runs the preset's colour jitter (jitter_style={jitter!r}); kornia and "
          "torchvision run torchvision's definitions (kornia's ColorJitter cannot express the "
          "official BYOL jitter), so the ratio compares 'ours, torchvision jitter' with kornia's "
          "pipeline of the same definitions. torchvision v2 on a batch tensor draws ONE set of "
          "random parameters for the whole batch (same crop, flip, jitter for every image): not "
          "BYOL's augmentation, shown for speed only. The per-image loop is the per-image "
          "torchvision equivalent. Blur: zero padding (torchvision v2: reflect).")
    print()
    print("## Per-op time of ours (ms per call on the batch; % of the whole view)")
    for s in args.sizes:
        print()
        print(f"### {s} px")
        print()
        print("| view | op | ms | % of view |")
        print("|---|---|---:|---:|")
        for view, op, ms, pct in per_op_rows(s, args, device):
            print(f"| {view} | {op} | {ms:.2f} | {pct:.0f}% |")
    print()
    print("Ops with p < 1 (grayscale, blur in view 2, solarize) are timed as the view runs them: "
          "the whole batch and a per-image select. "
          "Ops do not add up to the whole view, which also clamps, casts and copies.")


if __name__ == "__main__":
    main()
