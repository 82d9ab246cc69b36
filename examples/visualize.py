"""Plots for BYOL runs: training curves, kNN accuracy per epoch, and what the augmentations do.

Needs matplotlib (``pip install -e ".[examples]"``). Three plots, each written as a PNG:

1. ``training_curves.png`` from pretrain.py's per-step JSONL log: loss, learning rate, target EMA
   rate tau and the projection std with the collapse threshold (``ratio / sqrt(dim)``, see
   :func:`byol_pytorch.monitor.is_collapsed`) and the healthy level ``1 / sqrt(dim)``.
2. ``knn_accuracy.png`` from pretrain.py's per-epoch log (JSONL or CSV): every ``knn*`` column,
   with the accuracy at initialisation (``knn_init.json`` beside the log) as a dashed line.
3. ``augmentations.png``: a few of YOUR images (an ImageFolder tree, an npz file with
   ``train_images``, or scikit-learn's bundled digits) next to the two BYOL views that
   :func:`byol_pytorch.default_views` makes of them.

Usage::

    python examples/visualize.py --step-log runs/x/log_steps.jsonl --epoch-log runs/x/log_epochs.jsonl \
        --out-dir runs/x/plots
    python examples/visualize.py --images path/to/data.npz --preset small --out-dir plots
    python examples/visualize.py --images path/to/imagefolder --image-size 224 --out-dir plots
    python examples/visualize.py --images digits --out-dir plots

Every plotting function is importable: :func:`plot_training_curves`, :func:`plot_knn`,
:func:`plot_augmentations`, plus the readers :func:`read_log` and :func:`load_images`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["read_log", "load_images", "plot_training_curves", "plot_knn", "plot_augmentations",
           "make_views", "init_knn_baseline", "main"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:  # an optional extra
        raise ImportError("plots need matplotlib: pip install matplotlib "
                          "(or pip install -e '.[examples]')") from err
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------ logs
def _number(value: str) -> Any:
    if value in ("", "None", "null", "nan"):
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL (one object per line) or CSV (header row) log, in file order.

    Blank or truncated lines (a run killed mid-write) are skipped. CSV values become numbers
    where they parse as such, empty cells ``None``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log {str(path)!r} does not exist")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partially written last line
            if isinstance(rec, dict):
                records.append(rec)
    return records


def _series(records: Sequence[dict[str, Any]], key: str, x_key: str
            ) -> tuple[list[float], list[float]]:
    """(x, y) of the records that have a finite numeric ``key``; x falls back to the row index."""
    xs, ys = [], []
    for i, r in enumerate(records):
        y = r.get(key)
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not math.isfinite(y):
            continue
        x = r.get(x_key, i)
        xs.append(float(x if isinstance(x, (int, float)) else i))
        ys.append(float(y))
    return xs, ys


def _moving_average(y: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(y):
        total += v
        if i >= window:
            total -= y[i - window]
        out.append(total / min(i + 1, window))
    return out


# ------------------------------------------------------------------------------ plots 1 and 2
def plot_training_curves(
    records: Sequence[dict[str, Any]] | str | Path,
    out_path: str | Path,
    *,
    projection_size: int | None = None,
    collapse_ratio: float = 0.1,
    smooth: int | None = None,
    title: str | None = None,
) -> Path:
    """Loss, learning rate, tau and projection std per step, as a 2x2 figure.

    Args:
        records: per-step records (or a log path) with ``step`` and any of ``loss``, ``lr``,
            ``tau``, ``projection_std``; missing series leave their panel with a note.
        out_path: the PNG to write (parent folders are created).
        projection_size: the projector's output size D, for the collapse threshold
            ``collapse_ratio / sqrt(D)`` and the healthy level ``1 / sqrt(D)``; defaults to the
            log's ``projection_size`` field if present, else no threshold line.
        smooth: moving-average window drawn over the raw loss (default: ~2% of the steps).

    Returns:
        ``out_path`` as a Path.
    """
    if not isinstance(records, (list, tuple)):
        records = read_log(records)
    if not records:
        raise ValueError("the step log has no records")
    plt = _pyplot()
    if projection_size is None:
        projection_size = next((r["projection_size"] for r in records
                                if isinstance(r.get("projection_size"), int)), None)
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    panels = [("loss", "loss"), ("lr", "learning rate"), ("tau", "target EMA rate tau"),
              ("projection_std", "projection std")]
    for ax, (key, label) in zip(axes.flat, panels):
        x, y = _series(records, key, "step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if not y:
            ax.text(0.5, 0.5, f"no '{key}' in the log", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
            continue
        if key == "loss":
            window = smooth or max(1, len(y) // 50)
            ax.plot(x, y, color="tab:blue", alpha=0.3 if window > 1 else 1.0, lw=0.8,
                    label="per step")
            if window > 1:
                ax.plot(x, _moving_average(y, window), color="tab:blue", lw=1.5,
                        label=f"moving average ({window})")
                ax.legend(fontsize=8)
        else:
            ax.plot(x, y, color={"lr": "tab:orange", "tau": "tab:green"}.get(key, "tab:purple"),
                    lw=1.2)
        if key == "tau":
            ax.ticklabel_format(axis="y", useOffset=False)
        if key == "projection_std" and projection_size:
            threshold = collapse_ratio / math.sqrt(projection_size)
            ax.axhline(1 / math.sqrt(projection_size), color="grey", ls=":", lw=1,
                       label=f"1/sqrt({projection_size}) (spread out)")
            ax.axhline(threshold, color="tab:red", ls="--", lw=1,
                       label=f"collapse threshold {threshold:.3g}")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, out_path, plt)


def plot_knn(
    records: Sequence[dict[str, Any]] | str | Path,
    out_path: str | Path,
    *,
    keys: Iterable[str] | None = None,
    baseline: dict[str, float] | None = None,
    title: str | None = None,
) -> Path:
    """kNN accuracy (%) per epoch from the epoch log.

    Args:
        records: per-epoch records (or a log path); x is ``epoch`` (else the row index).
        keys: the columns to draw; default every numeric column whose name starts with ``knn``.
        baseline: optional horizontal reference lines, e.g. ``{"random init kNN@20": 31.5}``.

    Returns:
        ``out_path`` as a Path.
    """
    if not isinstance(records, (list, tuple)):
        records = read_log(records)
    if keys is None:
        keys = sorted({k for r in records for k, v in r.items()
                       if k.lower().startswith("knn") and isinstance(v, (int, float))
                       and not isinstance(v, bool)})
    keys = list(keys)
    series = {k: _series(records, k, "epoch") for k in keys}
    series = {k: xy for k, xy in series.items() if xy[1]}
    if not series:
        raise ValueError("no kNN accuracy in the epoch log (run pretrain.py with --knn-every N)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, lw=1.5, label=k)
    for i, (name, value) in enumerate((baseline or {}).items()):
        ax.axhline(value, ls="--", lw=1, color=f"C{len(series) + i}", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "kNN accuracy on the held-out split", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path, plt)


def _save(fig, out_path: str | Path, plt, dpi: int = 100) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------ plot 3
def _resize_square(x: Tensor, size: int) -> Tensor:
    """(C, H, W) float -> (C, size, size): short side to ``size``, centre crop."""
    _, h, w = x.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True,
                          align_corners=False)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top:top + size, left:left + size].clamp(0, 1)


def _pick(n_total: int, n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_total, generator=g)[:min(n, n_total)].tolist())


def load_images(source: str | Path, n: int = 8, *, size: int | None = None,
                seed: int = 0) -> Tensor:
    """``n`` images picked with ``seed`` from ``source``, as (n, 3, S, S) float in [0, 1].

    Args:
        source: ``"digits"`` (scikit-learn's bundled digits), a ``.npz`` with ``train_images``
            uint8 (N, C, H, W) (or (N, H, W, C)), or a folder of images, searched recursively
            (an ImageFolder tree works).
        size: side S; default the images' own size (npz, digits: 32) or 224 for folders.
    """
    if str(source) == "digits":
        from data import load_digits

        digits = load_digits()[0]  # (N, 3, 8, 8) uint8
        picked = digits[_pick(len(digits), n, seed)].float() / 255
        return torch.stack([_resize_square(x, size or 32) for x in picked])
    path = Path(source)
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path) as f:
            if "train_images" not in f.files:
                raise ValueError(f"{path} has no 'train_images' array (found {f.files})")
            arr = f["train_images"]
            idx = _pick(len(arr), n, seed)
            arr = np.ascontiguousarray(arr[idx])
        x = torch.from_numpy(arr)
        if x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return torch.stack([_resize_square(img, size or min(img.shape[1:])) for img in x])
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
        out = []
        for i in _pick(len(files), n, seed):
            with Image.open(files[i]) as im:
                arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
                x = arr.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255
            out.append(_resize_square(x, size or 224))
        return torch.stack(out)
    raise FileNotFoundError(f"image source {str(source)!r} is neither 'digits', an .npz file nor "
                            "a folder")


@torch.no_grad()
def make_views(images: Tensor, image_size: int | None = None, preset: str = "imagenet",
               seed: int = 0) -> tuple[Tensor, Tensor]:
    """The two BYOL views of ``images`` from :func:`byol_pytorch.default_views`, un-normalised
    back to [0, 1] for display: two (B, 3, S, S) tensors."""
    from byol_pytorch import default_views

    size = image_size or images.shape[-1]
    views = []
    g = torch.Generator().manual_seed(seed)
    for aug in default_views(size, preset=preset):
        y = aug(images, generator=g)
        mean, std = aug.normalize.mean.view(1, -1, 1, 1), aug.normalize.std.view(1, -1, 1, 1)
        views.append((y * std + mean).clamp(0, 1))
    return views[0], views[1]


def plot_augmentations(
    images: Tensor,
    out_path: str | Path,
    *,
    image_size: int | None = None,
    preset: str = "imagenet",
    seed: int = 0,
    title: str | None = None,
    cell_inches: float = 1.1,
) -> Path:
    """A grid: the original images (top row) and their two BYOL views (rows 2 and 3).

    Args:
        images: (B, 3, H, W) float in [0, 1], e.g. from :func:`load_images`.
        image_size: side of the views (default: the images' side).
        preset: ``default_views`` preset, ``"imagenet"`` or ``"small"``.
        seed: seed of the augmentation draws.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    v1, v2 = make_views(images.float(), image_size, preset, seed)
    plt = _pyplot()
    b = images.shape[0]
    rows = [("original", images), ("view 1", v1), ("view 2", v2)]
    fig, axes = plt.subplots(3, b, figsize=(cell_inches * b + 0.6, cell_inches * 3 + 0.4),
                             squeeze=False)
    for r, (label, batch) in enumerate(rows):
        for c in range(b):
            ax = axes[r][c]
            ax.imshow(batch[c].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title or f"BYOL views (default_views, preset={preset!r})", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path, plt)


# ------------------------------------------------------------------------------ CLI
def projection_size_from_args(step_log: str | Path) -> int | None:
    """``proj_dim`` from the ``args.json`` that pretrain.py writes next to its logs, if any."""
    path = Path(step_log).parent / "args.json"
    try:
        value = json.loads(path.read_text()).get("proj_dim")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step-log", type=Path, help="pretrain.py's per-step JSONL log")
    p.add_argument("--epoch-log", type=Path, help="pretrain.py's per-epoch JSONL or CSV log")
    p.add_argument("--images", help="'digits', an .npz file or an image folder for the "
                                    "augmentation grid")
    p.add_argument("--out-dir", type=Path, default=Path("plots"))
    p.add_argument("--projection-size", type=int, default=None,
                   help="projector output size for the collapse threshold (default: from the log, "
                        "else 256)")
    p.add_argument("--collapse-ratio", type=float, default=0.1)
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--image-size", type=int, default=None, help="side of the views")
    p.add_argument("--preset", choices=("imagenet", "small"), default="imagenet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default=None)
    return p


def init_knn_baseline(epoch_log: str | Path) -> dict[str, float] | None:
    """{label: accuracy} from the ``knn_init.json`` pretrain.py writes beside its logs, if any."""
    path = Path(epoch_log).parent / "knn_init.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return {f"initialisation (kNN@{record.get('knn_k', '?')})": float(record["knn_top1"])}


def main(argv: list[str] | None = None) -> list[Path]:
    args = get_args_parser().parse_args(argv)
    if not (args.step_log or args.epoch_log or args.images):
        raise SystemExit("nothing to plot: give --step-log, --epoch-log and/or --images")
    written = []
    if args.step_log:
        records = read_log(args.step_log)
        size = args.projection_size
        if size is None and not any(isinstance(r.get("projection_size"), int) for r in records):
            size = projection_size_from_args(args.step_log) or 256  # 256: the library default
        written.append(plot_training_curves(records, args.out_dir / "training_curves.png",
                                            projection_size=size,
                                            collapse_ratio=args.collapse_ratio, title=args.title))
    if args.epoch_log:
        written.append(plot_knn(args.epoch_log, args.out_dir / "knn_accuracy.png",
                                baseline=init_knn_baseline(args.epoch_log), title=args.title))
    if args.images:
        imgs = load_images(args.images, args.num_images, size=args.image_size, seed=args.seed)
        written.append(plot_augmentations(imgs, args.out_dir / "augmentations.png",
                                          image_size=args.image_size, preset=args.preset,
                                          seed=args.seed, title=args.title))
    for path in written:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    return written


if __name__ == "__main__":
    main()
