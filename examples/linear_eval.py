"""Linear evaluation of a pretrained backbone: linear classifiers on its frozen representation.

    # the paper's protocol (default for imagenet-preset checkpoints), 8 GPUs, with an LR sweep:
    # five heads on the same batches (one backbone pass), every accuracy and the best reported
    torchrun --nproc_per_node 8 examples/linear_eval.py \
        --checkpoint outputs/byol_r50/checkpoint.pt --data-path /data/imagenet \
        --lrs 0.05 0.1 0.2 0.4 0.8 --amp bf16 --workers 10
    # precomputed centre-crop features (default for small-preset checkpoints; the CPU path)
    python examples/linear_eval.py --checkpoint outputs/digits/checkpoint.pt

Protocols (``--protocol``; ``auto``, the default, picks ``augment`` for a checkpoint pretrained
with pretrain.py's ``imagenet`` preset -- its default for ``--dataset folder`` and ``stl10`` -- and
``features`` for the ``small`` preset -- cifar10/100, npz, digits -- or when the checkpoint does
not record one):

* ``augment``, the paper's (BYOL App. C.1): every step embeds a fresh random resized crop +
  horizontal flip of each training image with the frozen backbone (eval mode, no gradients) and
  trains the linear heads under DDP; validation on centre crops. Reference: DeepMind's
  ``byol/utils/dataset.py`` (``PreprocessMode.LINEAR_TRAIN`` / ``EVAL``).
* ``features``, the fast option for small data sets and CPU runs: embed train and val once (resize
  + centre crop, as knn_eval.py) with the frozen backbone, each process its shard, gather the
  features, and fit the heads on them (identically on every process).

Defaults, the same for both protocols except the data pipeline and the learning rate (references
are files of DeepMind's official code, github.com/deepmind/deepmind-research, ``byol/``):

  setting         value                                  reference
  epochs          80                                     configs/eval.py: max_steps =
                                                         80 * train_images_per_epoch // batch
  batch           1024 (--probe-batch-size, global)      BYOL App. C.1
  optimiser       SGD, Nesterov, momentum 0.9            configs/eval.py optimizer_config;
                                                         eval_experiment.py _optimizer (optax.sgd)
  weight decay    0                                      eval_experiment.py (no decay in optax.sgd)
  LR schedule     cosine to 0 per step, no warm-up       utils/schedules.py learning_schedule;
                                                         configs/eval.py warmup_steps=0
  LR              base x batch / 256                     utils/schedules.py (scaled_lr)
  base LR         augment: 0.2                           configs/eval.py base_learning_rate=0.2
                  features: 0.2 (the same value, so that a --lr means the same in both
                  protocols; on digits a sweep of 0.0125-1.6 also peaked at 0.2)
  train view      augment: random resized crop, scale    utils/dataset.py _decode_and_random_crop,
                  0.08-1, aspect 3/4-4/3, bicubic resize random_flip_left_right,
                  to the image size, horizontal flip     tf.image.resize(BICUBIC)
                  features: resize + centre crop (knn_eval.py's view)
  eval view       augment: centre crop of image/resize   utils/dataset.py _decode_and_center_crop
                  (224/256) of the short side, bicubic   (224 / (224 + 32)), then bicubic resize
                  resize to the image size
                  features: resize short side, centre crop
  backbone        frozen, eval mode (BN statistics kept) eval_experiment.py freeze_backbone,
                                                         is_training=False
  classifier      one linear layer on the raw (unnormalised) eval_experiment.py _classif_fn
                  representation, no BatchNorm           (hk.Linear)
  classifier init N(0, 0.01), bias 0 (MoCo v3 / DINO; the official hk.Linear default is a
                  truncated normal of std 1/sqrt(D))

LR sweep (``--lrs``): several heads, one per base LR, are trained at once on the same batches
(the backbone runs once per batch whatever the number of heads, as DINO's ``eval_linear.py``);
each head has its own parameter group, so it follows exactly the trajectory it would follow
alone. Every head is evaluated, and the best top-1 is reported with its LR (``linear_top1``,
``best_base_lr``, ``best_lr``) next to all of them (``linear_top1_per_lr``) in the printed line and
the JSON. The best head is picked on the evaluation split itself (as DINO does); the paper picks
the LR on 10k images held out of the training set (``utils/dataset.py`` Split.TRAIN / VALID): to
do the same, sweep on a train-only folder with ``--val-fraction``, then rerun with the chosen
``--lr``. One ``--lr`` is the sweep of one.

At the end the backbone is checked to be bit-identical to the checkpoint (MoCo v3's sanity check).
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DistInfo, Timer, cleanup_distributed, env_world_size, fail,  # noqa: E402
                    init_distributed, print0, seed_everything)
from evaluation import (EvalSetup, add_eval_args, embed_splits, setup_eval,  # noqa: E402
                        write_result)
from data import shard, train_eval_transform  # noqa: E402
from recipes import PAPER_LINEAR_EVAL  # noqa: E402

from byol_pytorch.eval import check_frozen, fit_linear_probe, linear_probe_accuracy  # noqa: E402

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PROTOCOLS = ("augment", "features")
# The protocol --protocol auto picks from the pretraining preset (pretrain.py --preset).
PRESET_PROTOCOL = {"imagenet": "augment", "small": "features"}
# Base LR (x batch / 256) per protocol when neither --lr nor --lrs is given.
DEFAULT_BASE_LR = {"augment": PAPER_LINEAR_EVAL["base_lr"],  # byol/configs/eval.py
                   "features": PAPER_LINEAR_EVAL["base_lr"]}


# ------------------------------------------------------------------------------ arguments
class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every flag's help; the epilog (protocols and the table of defaults) verbatim."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("BYOL linear evaluation", description=__doc__.split("\n\n")[0],
                                epilog=__doc__[__doc__.index("Protocols"):],
                                formatter_class=_Formatter)
    add_eval_args(p)
    g = p.add_argument_group("linear classifier (defaults: the BYOL paper's linear evaluation, "
                             "DeepMind's byol/configs/eval.py)")
    g.add_argument("--protocol", default="auto", choices=["auto", *PROTOCOLS],
                   help="augment: the paper's, random resized crop (0.08-1, bicubic) + flip "
                   "through the frozen backbone every step, centre-crop evaluation "
                   "(byol/utils/dataset.py); features: centre-crop features computed once (fast, "
                   "CPU). auto: augment for checkpoints of the imagenet preset (folder, stl10), "
                   "features for the small preset (cifar, npz, digits)")
    g.add_argument("--epochs", type=int, default=PAPER_LINEAR_EVAL["epochs"],
                   help="paper: 80 (byol/configs/eval.py max_steps = 80 * N // batch)")
    lr = g.add_mutually_exclusive_group()
    lr.add_argument("--lr", type=float, default=None, metavar="BASE_LR",
                    help="one base LR; the peak LR is BASE_LR x probe-batch-size / 256, then "
                    "cosine to 0 without warm-up (byol/utils/schedules.py). Default: 0.2 "
                    "(byol/configs/eval.py base_learning_rate) for both protocols")
    lr.add_argument("--lrs", type=float, nargs="+", default=None, metavar="BASE_LR",
                    help="LR sweep in one pass: one head per base LR (each scaled like --lr), "
                    "trained on the same batches with one backbone pass; all accuracies and the "
                    "best are reported. E.g. --lrs 0.05 0.1 0.2 0.4 0.8")
    g.add_argument("--weight-decay", type=float, default=PAPER_LINEAR_EVAL["weight_decay"],
                   help="paper: none (optax.sgd in byol/eval_experiment.py has no decay)")
    g.add_argument("--probe-batch-size", type=int, default=PAPER_LINEAR_EVAL["batch_size"],
                   help="GLOBAL batch of the classifier (paper: 1024, BYOL App. C.1); also the "
                   "batch of the LR scaling")
    g.add_argument("--amp", default="off", choices=list(AMP_DTYPES),
                   help="autocast dtype of the frozen backbone (augment protocol)")
    return p


def pretraining_preset(checkpoint: str | Path) -> str | None:
    """The ``--preset`` recorded with a pretrain.py checkpoint (None if unknown), read without
    loading the weights (memory-mapped); a bare backbone's comes from ``args.json`` next to it."""
    path = Path(checkpoint)
    if not path.is_file():
        return None
    pre: Any = None
    if path.suffix != ".safetensors":
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError):
            # unreadable here: setup_eval reports it properly
            return None
        if isinstance(ckpt, Mapping) and isinstance(ckpt.get("args"), Mapping):
            pre = ckpt["args"]
    if pre is None and (path.parent / "args.json").is_file():
        try:
            pre = json.loads((path.parent / "args.json").read_text())
        except ValueError:
            return None
    preset = pre.get("preset") if isinstance(pre, Mapping) else None
    return preset if isinstance(preset, str) else None


def resolve_args(args: argparse.Namespace, preset: str | None = None) -> argparse.Namespace:
    """Validate; pick the protocol (``auto``: from the pretraining ``preset``), the base LRs
    (``args.base_lrs``: --lrs, --lr or the protocol's default) and the peak LRs
    (``args.peak_lrs``: base x probe-batch-size / 256)."""
    if args.epochs < 1 or not args.weight_decay >= 0 or args.probe_batch_size < 1:
        raise fail("--epochs and --probe-batch-size must be >= 1 and --weight-decay >= 0")
    if args.probe_batch_size % env_world_size():
        raise fail(f"--probe-batch-size {args.probe_batch_size} must be divisible by the number "
                   f"of processes ({env_world_size()})")
    if args.protocol == "auto":
        args.protocol = PRESET_PROTOCOL.get(preset, "features")
    if args.lrs is not None:
        base = args.lrs
    else:
        base = [DEFAULT_BASE_LR[args.protocol] if args.lr is None else args.lr]
    if not all(b > 0 and math.isfinite(b) for b in base):
        raise fail(f"learning rates must be > 0 and finite, got {base}")
    args.base_lrs = [float(b) for b in base]
    # the linear scaling rule (byol/utils/schedules.py: scaled_lr = base * batch_size / 256)
    args.peak_lrs = [b * args.probe_batch_size / PAPER_LINEAR_EVAL["lr_reference_batch"]
                     for b in args.base_lrs]
    return args


# ------------------------------------------------------------------------------ data views
class CentreCropFraction(nn.Module):
    """Centre square of side ``int(fraction x short side)`` (official: 224 / (224 + 32))."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def forward(self, img: Any) -> Any:
        h, w = TF.get_size(img)
        side = max(1, min(h, w, int(self.fraction * min(h, w))))
        # offsets as _decode_and_center_crop: ((size - crop) + 1) // 2
        return TF.crop(img, (h - side + 1) // 2, (w - side + 1) // 2, side, side)


def paper_eval_transform(image_size: int, resize_size: int | None = None
                         ) -> Callable[[Any], torch.Tensor]:
    """The official evaluation view (``byol/utils/dataset.py`` ``_decode_and_center_crop``):
    centre crop of ``image_size / resize_size`` (224/256) of the short side, bicubic resize to
    ``image_size``; PIL or uint8 image -> uint8 (3, S, S). Deterministic."""
    fraction = image_size / (resize_size or image_size)
    return v2.Compose([v2.ToImage(), v2.RGB(), CentreCropFraction(fraction),
                       v2.Resize((image_size, image_size), InterpolationMode.BICUBIC,
                                 antialias=True), v2.ToPureTensor()])


def protocol_views(protocol: str) -> tuple[Callable | None, Callable | None]:
    """``(train_view(image_size), val_view(image_size, resize_size))`` factories of a protocol,
    for :func:`evaluation.setup_eval` (None: its centre crop). ``augment``: random resized crop +
    flip (``data.train_eval_transform``, the official LINEAR_TRAIN view) and the official centre
    crop; ``features``: knn_eval.py's resize + centre crop for both splits."""
    if protocol == "augment":
        return train_eval_transform, paper_eval_transform
    if protocol == "features":
        return None, None
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


# ------------------------------------------------------------------------------ protocols
def linear_on_features(setup: EvalSetup, run: DistInfo, args: argparse.Namespace) -> dict:
    """Fit every head on precomputed features gathered from all ranks (each rank fits the same
    heads on the same features), then score them on the validation features."""
    train_f, train_y, val_f, val_y = embed_splits(
        setup.encoder.to(run.device), [setup.train_set, setup.val_set], run, args.batch_size,
        args.workers, normalize=False)
    probe = fit_linear_probe(train_f, train_y, num_classes=setup.num_classes, lrs=args.peak_lrs,
                             epochs=args.epochs, batch_size=args.probe_batch_size,
                             weight_decay=args.weight_decay, device=run.device,
                             progress=run.is_main, seed=args.seed)
    return linear_probe_accuracy(probe, val_f, val_y)


def linear_with_augmentation(setup: EvalSetup, run: DistInfo, args: argparse.Namespace) -> dict:
    """The paper's protocol: one augmented view per image and step through the frozen backbone
    (once per batch for all heads), the heads trained under DDP on each rank's share of every
    global batch; then every head scored on the rank-sharded centre crops, counts summed."""
    encoder = setup.encoder.to(run.device).requires_grad_(False)
    sampler = DistributedSampler(setup.train_set, run.world_size, run.rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    train = DataLoader(setup.train_set, batch_size=args.probe_batch_size // run.world_size,
                       sampler=sampler, num_workers=args.workers, drop_last=True,
                       pin_memory=run.device.type == "cuda", persistent_workers=args.workers > 0)
    if len(train) == 0:
        raise fail(f"{len(setup.train_set)} training images give no batch of "
                   f"{args.probe_batch_size}; lower --probe-batch-size")
    amp_dtype = AMP_DTYPES[args.amp]
    probe = fit_linear_probe(train, encoder=encoder, num_classes=setup.num_classes,
                             lrs=args.peak_lrs, epochs=args.epochs,
                             weight_decay=args.weight_decay, amp_dtype=amp_dtype,
                             device=run.device, progress=run.is_main, seed=args.seed)
    val = DataLoader(shard(setup.val_set, run.rank, run.world_size), batch_size=args.batch_size,
                     num_workers=args.workers)
    return linear_probe_accuracy(probe, val, encoder=encoder, amp_dtype=amp_dtype)


# ------------------------------------------------------------------------------ main
def _report(result: Mapping[str, Any], args: argparse.Namespace, path: Path) -> str:
    """The printed summary: the best head, then one line per LR when there are several."""
    n = len(args.peak_lrs)
    top5 = f", top-5 {result['linear_top5']:.2f}%" if "linear_top5" in result else ""
    best = (f"best of {n} LRs: " if n > 1 else "") + \
        f"base LR {result['best_base_lr']:g} -> lr {result['best_lr']:g}"
    lines = [(f"linear top-1: {result['linear_top1']:.2f}%{top5} ({best}) | {args.protocol}, "
              f"{args.epochs} epochs, batch {args.probe_batch_size} | {result['dataset']} "
              f"{result['num_train']} train / {result['num_val']} val | {path}")]
    if n > 1:
        top5s = result.get("linear_top5_per_lr", [None] * n)
        for i, (base, lr, t1, t5) in enumerate(zip(args.base_lrs, args.peak_lrs,
                                                   result["linear_top1_per_lr"], top5s)):
            t5_text = "" if t5 is None else f", top-5 {t5:6.2f}%"
            mark = "  <- best" if i == result["best_index"] else ""
            lines.append(f"  base LR {base:<8g} lr {lr:<8g} top-1 {t1:6.2f}%{t5_text}{mark}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    preset = pretraining_preset(args.checkpoint) if args.protocol == "auto" else None
    resolve_args(args, preset)
    run = init_distributed(args.device)
    try:
        seed_everything(args.seed)
        augment = args.protocol == "augment"
        setup = setup_eval(args, *protocol_views(args.protocol))
        backbone = setup.encoder.encoder.net
        before = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
        timer = Timer()
        fit = linear_with_augmentation if augment else linear_on_features
        sweep = fit(setup, run, args)
        check_frozen(before, backbone.cpu())  # raises if the backbone changed
        # the best head first, then every head (base LRs, peak LRs, accuracies), then the setup
        result = {k: sweep[k] for k in ("linear_top1", "linear_top5") if k in sweep}
        result.update(best_base_lr=args.base_lrs[sweep["best_index"]], best_lr=sweep["best_lr"],
                      best_index=sweep["best_index"], base_lrs=args.base_lrs, lrs=sweep["lrs"])
        result.update({k: sweep[k] for k in ("linear_top1_per_lr", "linear_top5_per_lr")
                       if k in sweep})
        result.update(setup.info, protocol=args.protocol, epochs=args.epochs,
                      probe_batch_size=args.probe_batch_size, weight_decay=args.weight_decay,
                      optimizer="sgd", momentum=PAPER_LINEAR_EVAL["momentum"],
                      nesterov=PAPER_LINEAR_EVAL["nesterov"], time=timer.elapsed(),
                      backbone_frozen=True)
        if run.is_main:
            path = write_result(result, args.output, args.checkpoint, "linear_eval.json")
            print0(_report(result, args, path))
        return result
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
