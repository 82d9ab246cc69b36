"""Plots for BYOL runs: training curves, kNN accuracy per epoch, and what the augmentations do.

Needs matplotlib (``pip install -e ".[examples]"``). Three plots, each written as a PNG:

1. ``training_curves.png`` from the ``step`` records of pretrain.py's ``log.jsonl``: loss,
   learning rate, target EMA rate tau and the projection std with the collapse threshold
   (``ratio / sqrt(D)``, see :func:`byol_pytorch.monitor.is_collapsed`) and the healthy level
   ``1 / sqrt(D)``; D is ``--projection-size``, else ``proj_dim`` of the ``args.json`` beside
   the log.
2. ``knn_accuracy.png`` from its ``epoch`` records (``knn_top1``, pretrain.py ``--knn-every N``),
   with the ``knn_init`` record (the accuracy at initialisation) as a dashed line.
3. ``augmentations.png``: a few of YOUR images (an ImageFolder tree, an npz file with
   ``train_images``, or scikit-learn's bundled digits) next to the two BYOL views that
   :func:`byol_pytorch.default_views` makes of them (the digits get ``recipes.DIGIT_VIEWS``).

Usage::

    python examples/visualize.py --log runs/x/log.jsonl --out-dir runs/x/plots
    python examples/visualize.py --images path/to/data.npz --preset small --out-dir plots
    python examples/visualize.py --images path/to/imagefolder --image-size 224 --out-dir plots
    python examples/visualize.py --images digits --out-dir plots
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fail, read_log  # noqa: E402
from data import load_digits, load_npz, read_image  # noqa: E402
from recipes import DIGIT_VIEWS  # noqa: E402

from byol_pytorch import default_views  # noqa: E402
from byol_pytorch.augment import to_float_images  # noqa: E402

__all__ = ["load_images", "make_views", "plot_training_curves", "plot_knn", "plot_augmentations",
           "main"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:  # an optional extra
        raise ImportError("plots need matplotlib: pip install matplotlib "
                          "(or pip install -e '.[examples]')") from err
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out_path: str | Path) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    _pyplot().close(fig)
    return out


def _series(records: Sequence[dict[str, Any]], key: str, x_key: str
            ) -> tuple[list[float], list[float]]:
    """(x, y) of the records whose ``key`` is a finite number (null: not measured that time)."""
    points = [(r[x_key], r[key]) for r in records if isinstance(r.get(key), (int, float))
              and not isinstance(r[key], bool) and math.isfinite(r[key])]
    return [float(x) for x, _ in points], [float(y) for _, y in points]


def _moving_average(y: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(y):
        total += v - (y[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


# ------------------------------------------------------------------------------ plots 1 and 2
def plot_training_curves(steps: Sequence[dict[str, Any]], out_path: str | Path, *,
                         projection_size: int | None = None, collapse_ratio: float = 0.1,
                         smooth: int | None = None, title: str | None = None) -> Path:
    """Loss, learning rate, tau and projection std per step as a 2x2 figure; returns the PNG.

    ``steps``: the log's ``step`` records (``step`` and any of ``loss``, ``lr``, ``tau``,
    ``projection_std``; a missing series leaves its panel with a note). ``projection_size`` D
    draws the collapse threshold ``collapse_ratio / sqrt(D)`` and the level ``1 / sqrt(D)``.
    ``smooth``: moving-average window over the loss (default: ~2% of the steps).
    """
    if not steps:
        raise ValueError("the log has no 'step' records: give the log.jsonl of a pretrain.py run "
                         "that trained at least --log-every steps")
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    panels = [("loss", "loss", "tab:blue"), ("lr", "learning rate", "tab:orange"),
              ("tau", "target EMA rate tau", "tab:green"),
              ("projection_std", "projection std", "tab:purple")]
    for ax, (key, label, colour) in zip(axes.flat, panels):
        x, y = _series(steps, key, "step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if not y:
            ax.text(0.5, 0.5, f"no '{key}' in the log", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
            continue
        window = (smooth or max(1, len(y) // 50)) if key == "loss" else 1
        ax.plot(x, y, color=colour, lw=0.8 if window > 1 else 1.2, alpha=0.3 if window > 1 else 1)
        if window > 1:
            ax.plot(x, _moving_average(y, window), color=colour, lw=1.5,
                    label=f"moving average ({window})")
        if key == "tau":
            ax.ticklabel_format(axis="y", useOffset=False)
        if key == "projection_std" and projection_size:
            threshold = collapse_ratio / math.sqrt(projection_size)
            ax.axhline(1 / math.sqrt(projection_size), color="grey", ls=":", lw=1,
                       label=f"1/sqrt({projection_size}) (spread out)")
            ax.axhline(threshold, color="tab:red", ls="--", lw=1,
                       label=f"collapse threshold {threshold:.3g}")
            ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_knn(epochs: Sequence[dict[str, Any]], out_path: str | Path, *,
             init: dict[str, Any] | None = None, title: str | None = None) -> Path:
    """kNN top-1 accuracy (%) per epoch; returns the PNG.

    ``epochs``: the log's ``epoch`` records (``knn_top1`` null where not evaluated); ``init``:
    its ``knn_init`` record (``knn_top1``, ``knn_k``), drawn as a dashed line.
    """
    x, y = _series(epochs, "knn_top1", "epoch")
    if not y:
        raise ValueError("no kNN accuracy in the log's epoch records: run pretrain.py with "
                         "--knn-every N")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, marker="o", ms=3, lw=1.5, label=f"kNN@{init['knn_k']}" if init else "kNN")
    if init:
        ax.axhline(init["knn_top1"], ls="--", lw=1, color="grey",
                   label=f"initialisation (kNN@{init['knn_k']})")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "kNN accuracy on the held-out split", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


# ------------------------------------------------------------------------------ plot 3
def _resize_square(x: Tensor, size: int) -> Tensor:
    """(C, H, W) float -> (C, size, size): short side to ``size``, centre crop."""
    _, h, w = x.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top:top + size, left:left + size].clamp(0, 1)


def load_images(source: str | Path, n: int = 8, *, size: int | None = None,
                seed: int = 0) -> Tensor:
    """``n`` images picked with ``seed`` from ``source`` -> (n, 3, S, S) float in [0, 1].

    ``source``: ``"digits"`` (scikit-learn's bundled digits), an ``.npz`` with ``train_images``
    uint8 (N, C, H, W), or a folder of images searched recursively (an ImageFolder tree works).
    ``size`` S: default the images' own (short) side, 32 for the 8 px digits, 224 for folders.
    """
    from torchvision.transforms.functional import pil_to_tensor

    path = Path(source)
    if str(source) == "digits":
        items, default = load_digits()[0], 32
    elif path.suffix == ".npz" and path.is_file():
        items = load_npz(path)[0]
        default = min(items.shape[-2:])
    elif path.is_dir():
        items = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        default = 224
        if not items:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    else:
        raise FileNotFoundError(f"image source {str(source)!r} is neither 'digits', an .npz file "
                                "nor a folder")
    g = torch.Generator().manual_seed(seed)
    picked = sorted(torch.randperm(len(items), generator=g)[:n].tolist())
    images = [pil_to_tensor(read_image(str(items[i]))) if isinstance(items, list) else items[i]
              for i in picked]
    return torch.stack([_resize_square(to_float_images(x), size or default) for x in images])


@torch.no_grad()
def make_views(images: Tensor, image_size: int | None = None, preset: str = "imagenet",
               seed: int = 0, **overrides: Any) -> tuple[Tensor, Tensor]:
    """The two views of :func:`byol_pytorch.default_views` (``preset``, BYOLAugment
    ``overrides``): (B, 3, H, W) float in [0, 1] -> two (B, 3, S, S) in [0, 1], seeded."""
    # mean 0, std 1: the views stay in [0, 1], displayable as they are
    views = default_views(image_size or images.shape[-1], preset, mean=(0.0, 0.0, 0.0),
                          std=(1.0, 1.0, 1.0), **overrides)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        v1, v2 = (aug(images).clamp(0, 1) for aug in views)
    return v1, v2


def plot_augmentations(images: Tensor, out_path: str | Path, *, image_size: int | None = None,
                       preset: str = "imagenet", seed: int = 0, title: str | None = None,
                       **overrides: Any) -> Path:
    """A grid: the images (B, 3, H, W) float in [0, 1] (top row) and their two BYOL views from
    :func:`make_views` (rows 2 and 3); returns the PNG."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    v1, v2 = make_views(images.float(), image_size, preset, seed, **overrides)
    rows = [("original", images), ("view 1", v1), ("view 2", v2)]
    plt = _pyplot()
    b = images.shape[0]
    fig, axes = plt.subplots(3, b, figsize=(1.1 * b + 0.6, 3.7), squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.imshow(batch[c].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title or f"BYOL views (default_views, preset={preset!r})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)


# ------------------------------------------------------------------------------ CLI
def _proj_dim(log: Path) -> int | None:
    """``proj_dim`` of the ``args.json`` pretrain.py writes beside its log, if there is one."""
    try:
        value = json.loads((log.parent / "args.json").read_text()).get("proj_dim")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log", type=Path, help="pretrain.py's OUTPUT_DIR/log.jsonl")
    p.add_argument("--images", help="'digits', an .npz file or an image folder for the "
                                    "augmentation grid")
    p.add_argument("--out-dir", type=Path, default=Path("plots"))
    p.add_argument("--projection-size", type=int, default=None,
                   help="projector output size for the collapse threshold (default: proj_dim "
                        "of the args.json beside the log)")
    p.add_argument("--collapse-ratio", type=float, default=0.1)
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--image-size", type=int, default=None, help="side of the views")
    p.add_argument("--preset", choices=("imagenet", "small"), default="imagenet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default=None)
    return p


def main(argv: list[str] | None = None) -> list[Path]:
    """Write the plots asked for; returns their paths (a mistake exits with its message)."""
    p = get_args_parser()
    args = p.parse_args(argv)
    if not (args.log or args.images):
        p.error("nothing to plot: give --log and/or --images")
    try:
        written = _plot(args)
    except (ValueError, FileNotFoundError) as err:  # a wrong input: its message, no traceback
        raise fail(str(err)) from err
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return written


def _plot(args: argparse.Namespace) -> list[Path]:
    written = []
    if args.log:
        if not args.log.is_file():
            raise FileNotFoundError(f"--log {str(args.log)!r} does not exist: give pretrain.py's "
                                    "OUTPUT_DIR/log.jsonl")
        epochs = read_log(args.log, "epoch")
        written.append(plot_training_curves(
            read_log(args.log, "step"), args.out_dir / "training_curves.png",
            projection_size=args.projection_size or _proj_dim(args.log),
            collapse_ratio=args.collapse_ratio, title=args.title))
        if any(r.get("knn_top1") is not None for r in epochs):
            init = read_log(args.log, "knn_init")
            written.append(plot_knn(epochs, args.out_dir / "knn_accuracy.png",
                                    init=init[-1] if init else None, title=args.title))
        else:
            print("no kNN accuracy in the log (pretrain.py --knn-every N): no knn_accuracy.png")
    if args.images:
        imgs = load_images(args.images, args.num_images, size=args.image_size, seed=args.seed)
        written.append(plot_augmentations(
            imgs, args.out_dir / "augmentations.png", image_size=args.image_size,
            preset=args.preset, seed=args.seed, title=args.title,
            **(DIGIT_VIEWS if args.images == "digits" else {})))
    return written


if __name__ == "__main__":
    main()
