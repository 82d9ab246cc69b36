"""BYOL pretraining on one CPU, one GPU, many GPUs or many nodes (torchrun).

    # laptop CPU, the embedded digits (no download)
    python examples/pretrain.py --dataset digits --epochs 10
    # one GPU, CIFAR-10
    python examples/pretrain.py --dataset cifar10 --data-path data/ --download --amp bf16
    # 8 GPUs, ImageNet (paper settings: LARS, batch 4096, 300 epochs)
    torchrun --nproc_per_node 8 examples/pretrain.py --dataset folder --data-path /imagenet \
        --amp bf16 --output-dir outputs/byol_r50
    # 2 nodes x 8 GPUs (run on each node with its --node_rank)
    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST --master_port 29500 \
        examples/pretrain.py --dataset folder --data-path /imagenet --amp bf16

CPU workers decode each image and cut both views' random resized crops from the full-resolution
image (uint8, as the official pipeline); flip, colour, blur and solarisation run on the device.
``--batch-size`` is the GLOBAL batch of one optimizer step (all processes x accumulation
micro-steps); the learning rate is ``base_lr * batch_size / 256``. See examples/README.md for the
recipes, the log fields and the checkpoint layout, and its "When things go wrong" for what a
run does on SIGTERM / SIGUSR1 (checkpoint and stop: rerun with ``--resume auto``), divergence,
collapse, unreadable images and a lost worker (examples/faults.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (CsvWriter, DistInfo, JsonlWriter, Timer, all_gather_varsize,  # noqa: E402
                    cleanup_distributed, env_world_size, fail, gather_rng_states, init_distributed,
                    parse_hidden_layer, print0, restore_rng_state, save_backbone, seed_everything,
                    truncate_log, unwrap)
from data import (DATASETS, DIGIT_VIEWS, PretrainViews, ReplaceUnreadable,  # noqa: E402
                  SeededSampler, SubstitutingViews, build_dataset, check_data_args,
                  default_workers, eval_transform, normalization, shard, to_device_images)
from faults import (Checkpoints, Decision, Guards, StopFlag,  # noqa: E402
                    checkpoint_to_resume, stop_signals)

from byol_pytorch import (BYOL, __version__, cifar_stem_, create_backbone,  # noqa: E402
                          default_views, warmup_cosine)
from byol_pytorch.eval import extract_features, knn_accuracy  # noqa: E402
from byol_pytorch.optim import LARS, param_groups  # noqa: E402

# Defaults per --preset; any flag given on the command line wins. "imagenet" is the official
# BYOL code (deepmind-research byol/configs/byol.py: LARS eta 1e-3, 10 warm-up epochs, batch 4096;
# LR, weight decay and tau by run length, see IMAGENET_BY_EPOCHS; output layers of the heads
# without bias, byol/utils/networks.py; zero-initialised last BN of each residual block);
# "small" is solo-learn's CIFAR recipe (scripts/pretrain/cifar/byol.yaml: LARS eta 0.02 with
# LARC clipping, LR 1.0, wd 1e-5, tau 0.99, batch 256, 1000 epochs, heads with biases) with the
# CIFAR ResNet stem. Both use the paper's head sizes (4096 -> 256). examples/README.md has the
# table of every setting with its reference.
PRESETS = {
    "imagenet": dict(backbone="resnet50", image_size=224, batch_size=4096, epochs=300,
                     warmup_epochs=10, lars_eta=0.001, lars_clip=False, cifar_stem=False,
                     crop_min_scale=0.08, flip_p=0.5, head_output_bias=False),
    "small": dict(backbone="resnet18", image_size=32, batch_size=256, epochs=1000,
                  base_lr=1.0, weight_decay=1e-5, warmup_epochs=10, ema_base=0.99,
                  lars_eta=0.02, lars_clip=True, cifar_stem=True, crop_min_scale=0.08, flip_p=0.5,
                  head_output_bias=True),
}
# The official presets by number of epochs (byol/configs/byol.py _LR_PRESETS, _WD_PRESETS,
# _EMA_PRESETS): (base LR, weight decay, tau). Other run lengths take the row of the nearest
# length on a log scale (e.g. 200 -> 300, 600 -> 1000, 60 -> 40).
IMAGENET_BY_EPOCHS = {40: (0.45, 1e-6, 0.97), 100: (0.45, 1e-6, 0.99), 300: (0.3, 1e-6, 0.99),
                      1000: (0.2, 1.5e-6, 0.996)}


def imagenet_settings(epochs: int) -> tuple[int, tuple[float, float, float]]:
    """(official run length whose settings apply, (base LR, weight decay, tau)) for ``epochs``."""
    nearest = min(IMAGENET_BY_EPOCHS, key=lambda e: abs(math.log(epochs / e)))
    return nearest, IMAGENET_BY_EPOCHS[nearest]


# The embedded digits are a laptop demo: small images and a short run unless told otherwise, and
# digit-safe views (data.DIGIT_VIEWS).
DATASET_DEFAULTS = {"digits": dict(image_size=16, batch_size=128, epochs=10, warmup_epochs=1,
                                   crop_min_scale=DIGIT_VIEWS["crop_scale"][0],
                                   flip_p=DIGIT_VIEWS["flip_p"]),
                    "stl10": dict(image_size=96)}
DEFAULT_PRESET = {"folder": "imagenet", "stl10": "imagenet", "cifar10": "small",
                  "cifar100": "small", "npz": "small", "digits": "small"}
STEP_FIELDS = ["step", "epoch", "loss", "lr", "tau", "projection_std"]
EPOCH_FIELDS = ["epoch", "step", "loss", "lr", "tau", "projection_std", "knn_top1",
                "images_per_s", "time"]
AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("BYOL pretraining", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits is bundled with scikit-learn, so the default runs offline")
    g.add_argument("--data-path", default=None, help="folder root (with train/ and optionally "
                   "val/), torchvision root, or .npz file")
    g.add_argument("--download", action="store_true", help="let torchvision download "
                   "CIFAR/STL-10 (off: never touch the network unless asked)")
    g.add_argument("--val-fraction", type=float, default=0.1, help="held out from pretraining "
                   "for kNN when the data set has no test split (npz, digits, folder w/o val/)")
    g.add_argument("--split-seed", type=int, default=0, help="seed of that held-out split; eval "
                   "scripts read it from the checkpoint so they use the same split")
    g.add_argument("--workers", type=int, default=None, help="CPU decoding workers per process "
                   "(default: 0 for the in-memory npz/digits, else min(8, CPUs per process))")
    g = p.add_argument_group("model")
    g.add_argument("--preset", default=None, choices=list(PRESETS), help="hyper-parameter and "
                   "augmentation family: imagenet (official BYOL code; LR, weight decay and tau "
                   "by --epochs) or small (solo-learn's CIFAR recipe: no blur, torchvision "
                   "colour jitter, CIFAR stem); default: by data set")
    g.add_argument("--backbone", default=None, help="torchvision name (resnet50) or timm:NAME")
    g.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None,
                   help="3x3 stride-1 stem without max-pool for 32-96 px images (ResNets)")
    g.add_argument("--hidden-layer", default="-2", help="layer whose output is the "
                   "representation: module name, child index, or 'none' for the model output")
    g.add_argument("--token-pool", default="cls", choices=["cls", "mean"],
                   help="how ViT token outputs are pooled into one vector")
    g.add_argument("--image-size", type=int, default=None, help="side of the augmented views")
    g.add_argument("--crop-min-scale", type=float, default=None, help="smallest area fraction "
                   "of a random resized crop (default: 0.08; 0.4 for digits)")
    g.add_argument("--flip-p", type=float, default=None, help="horizontal flip probability "
                   "(default 0.5; 0 for digits and other data whose mirror image differs)")
    g.add_argument("--proj-dim", type=int, default=256, help="projection size (paper: 256)")
    g.add_argument("--proj-hidden-dim", type=int, default=4096,
                   help="hidden size of projector and predictor (paper: 4096)")
    g.add_argument("--head-output-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="bias in the last Linear of projector and predictor (default: off for "
                   "imagenet, as the official code; on for small, as solo-learn)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="SyncBatchNorm across GPUs: BatchNorm statistics over the global batch, "
                   "as the official code (cross-replica BN); CUDA only. Default: on for the "
                   "imagenet preset with several GPU processes, else off")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch per optimizer "
                   "step, split over processes and --accum-steps")
    g.add_argument("--accum-steps", type=int, default=1, help="micro-steps per optimizer step, "
                   "to fit a large batch in memory (BatchNorm then sees micro-batches)")
    g.add_argument("--optimizer", default="lars", choices=["lars", "sgd", "adam", "adamw"],
                   help="LARS is what the paper uses for large batches")
    g.add_argument("--base-lr", type=float, default=None, help="LR for batch 256; scaled "
                   "linearly with the global batch (Goyal et al.); default: the preset's (imagenet: "
                   "by --epochs)")
    g.add_argument("--warmup-epochs", type=float, default=None,
                   help="linear LR warm-up, then cosine decay to 0 (default: the preset's 10, "
                   "at most 10%% of --epochs)")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="not applied to biases and norm parameters; default: the preset's "
                   "(imagenet: by --epochs)")
    g.add_argument("--lars-eta", type=float, default=None, help="LARS trust coefficient")
    g.add_argument("--lars-clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip each layer's LARS rate at the LR (LARC; default: on for small, "
                   "as solo-learn, off for imagenet, as the paper)")
    g.add_argument("--ema-base", type=float, default=None,
                   help="target EMA rate tau at step 0; it rises to 1 by a cosine over training; "
                   "default: the preset's (imagenet: by --epochs)")
    g.add_argument("--clip-grad", type=float, default=0.0, help="max grad norm; 0 = off")
    g.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer "
                   "steps (smoke tests); schedules still span --epochs")
    g = p.add_argument_group("performance")
    g.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    g.add_argument("--amp", default="off", choices=list(AMP_DTYPES),
                   help="autocast dtype; fp16 also uses a GradScaler")
    g.add_argument("--channels-last", action="store_true", help="NHWC: faster convs on GPUs")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--view-batching", default="separate", choices=["separate", "joint"],
                   help="separate: one pass per view, per-view BatchNorm statistics (the paper); "
                   "joint: one batch, statistics over both views (byol-pytorch 0.9.1's)")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--output-dir", default="outputs/pretrain")
    g.add_argument("--log-every", type=int, default=10, help="optimizer steps between log "
                   "records (each costs one device sync)")
    g.add_argument("--save-every", type=int, default=10, help="epochs between checkpoints "
                   "(one is always written at the end); 0 = only at the end")
    g.add_argument("--knn-every", type=int, default=0, help="epochs between kNN evaluations on "
                   "the held-out split (labelled data sets); 0 = off")
    g.add_argument("--knn-k", type=int, default=20, help="neighbours for the kNN monitor")
    g.add_argument("--save-every-steps", type=int, default=0, help="also checkpoint every N "
                   "optimizer steps, mid-epoch included; 0 = off")
    g.add_argument("--save-every-minutes", type=float, default=0.0, help="also checkpoint when "
                   "this many minutes have passed since the last one; 0 = off")
    g.add_argument("--keep-last", type=int, default=2, help="step-numbered checkpoints kept "
                   "(checkpoint-stepNNNNNNNN.pt; checkpoint.pt is the newest); 0 = all")
    g.add_argument("--resume", default=None, help="checkpoint to continue from, or 'auto' for "
                   "the newest one in OUTPUT_DIR that loads (after a torchrun restart: always)")
    g = p.add_argument_group("faults (examples/README.md: When things go wrong)")
    g.add_argument("--skip-bad-steps", type=int, default=0, help="skip up to K steps with a "
                   "non-finite loss or gradient norm (weights, optimizer and EMA unchanged) "
                   "instead of stopping; costs one device sync per step; 0 = stop at the first")
    g.add_argument("--collapse-ratio", type=float, default=0.1, help="collapse threshold of the "
                   "projection std, as a fraction of the healthy 1/sqrt(--proj-dim)")
    g.add_argument("--collapse-patience", type=int, default=5, help="log intervals in a row "
                   "below the threshold before the collapse warning")
    g.add_argument("--stop-on-collapse", action="store_true", help="stop (without saving, "
                   "non-zero exit) instead of only warning on a collapse")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="also write TensorBoard scalars (if tensorboard is installed)")
    g.add_argument("--seed", type=int, default=0)
    return p


# ----------------------------------------------------------------------------- arguments
def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill preset defaults and validate everything that can be checked before any work."""
    args.preset = args.preset or DEFAULT_PRESET[args.dataset]
    defaults = {**PRESETS[args.preset], **DATASET_DEFAULTS.get(args.dataset, {})}
    warmup_given = args.warmup_epochs is not None
    for key, value in defaults.items():
        if key != "cifar_stem" and getattr(args, key) is None:
            setattr(args, key, value)
    if args.preset == "imagenet":  # the official settings for the run length
        if args.epochs < 1:
            raise fail(f"--epochs must be >= 1, got {args.epochs}")
        _, by_length = imagenet_settings(args.epochs)
        for key, value in zip(("base_lr", "weight_decay", "ema_base"), by_length):
            if getattr(args, key) is None:
                setattr(args, key, value)
    if not warmup_given:  # a short run keeps a short warm-up: at most 10% of the epochs
        args.warmup_epochs = min(args.warmup_epochs, 0.1 * args.epochs)
    if args.workers is None:
        args.workers = default_workers(args.dataset, cap=8)
    args.hidden_layer = parse_hidden_layer(args.hidden_layer)
    checks = [
        (args.epochs >= 1, f"--epochs must be >= 1, got {args.epochs}"),
        (args.image_size >= 8, f"--image-size must be >= 8, got {args.image_size}"),
        (args.batch_size >= 1 and args.accum_steps >= 1, "--batch-size and --accum-steps must "
         "be >= 1"),
        (0 <= args.warmup_epochs <= args.epochs, "--warmup-epochs must lie in [0, --epochs]"),
        (args.base_lr > 0 and args.weight_decay >= 0, "--base-lr must be > 0 and "
         "--weight-decay >= 0"),
        (0.0 <= args.ema_base <= 1.0, f"--ema-base must lie in [0, 1], got {args.ema_base}"),
        (0.0 < args.crop_min_scale <= 1.0, f"--crop-min-scale must lie in (0, 1], got "
         f"{args.crop_min_scale}"),
        (0.0 <= args.flip_p <= 1.0, f"--flip-p must lie in [0, 1], got {args.flip_p}"),
        (0.0 < args.val_fraction < 1.0, "--val-fraction must lie in (0, 1)"),
        (min(args.log_every, args.knn_k) >= 1, "--log-every and --knn-k must be >= 1"),
        (min(args.save_every, args.knn_every, args.max_steps, args.workers) >= 0,
         "--save-every, --knn-every, --max-steps and --workers must be >= 0"),
        (min(args.save_every_steps, args.save_every_minutes, args.keep_last,
             args.skip_bad_steps) >= 0, ("--save-every-steps, --save-every-minutes, "
                                         "--keep-last and --skip-bad-steps must be >= 0")),
        (args.collapse_ratio > 0 and args.collapse_patience >= 1,
         "--collapse-ratio must be > 0 and --collapse-patience >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise fail(message)
    world = env_world_size()
    if args.batch_size < world:
        raise fail(f"--batch-size {args.batch_size} is smaller than the number of processes "
                   f"({world}); --batch-size is the global batch, use at least {2 * world}")
    if args.batch_size % (world * args.accum_steps):
        raise fail(f"--batch-size {args.batch_size} must be divisible by processes x "
                   f"--accum-steps = {world} x {args.accum_steps}")
    if args.batch_size // (world * args.accum_steps) < 2:
        raise fail("each process needs a micro-batch of >= 2 images (BatchNorm in the heads); "
                   f"raise --batch-size above {2 * world * args.accum_steps - 1}")
    on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    if args.sync_bn is None:  # the official run pools BN statistics over all devices
        args.sync_bn = args.preset == "imagenet" and world > 1 and not on_cpu
    if args.sync_bn and on_cpu:
        if world > 1:
            raise fail("--sync-bn needs CUDA (SyncBatchNorm under DDP only runs on GPUs); "
                       "drop --sync-bn for CPU runs")
        warnings.warn("--sync-bn is ignored on CPU with one process")
        args.sync_bn = False
    error = check_data_args(args.dataset, args.data_path, args.download)
    if error:
        raise fail(error)
    if args.resume and args.resume != "auto" and not Path(args.resume).is_file():
        raise fail(f"--resume {args.resume!r} does not exist")
    if args.cifar_stem is None:  # the preset's CIFAR stem, where it applies: ResNet-like stems
        args.cifar_stem = PRESETS[args.preset]["cifar_stem"] and _has_resnet_stem(args)
    return args


def _has_resnet_stem(args: argparse.Namespace) -> bool:
    """Whether the backbone has a ResNet stem (conv1 + maxpool); built on the meta device, so
    that no weights are allocated or initialised."""
    try:
        with torch.device("meta"):
            net = create_backbone(args.backbone, image_size=args.image_size)
    except ValueError as err:
        raise fail(str(err)) from None
    return isinstance(getattr(net, "conv1", None), nn.Conv2d) and hasattr(net, "maxpool")


def build_backbone(args: argparse.Namespace) -> nn.Module:
    """The backbone by name, residual blocks starting as identities (the last BN of each block
    zero-initialised, as the official ResNets), with the CIFAR stem if ``args.cifar_stem``."""
    try:
        net = create_backbone(args.backbone, image_size=args.image_size, zero_init_residual=True)
        return cifar_stem_(net) if args.cifar_stem else net
    except ValueError as err:
        raise fail(str(err)) from None


def build_optimizer(args: argparse.Namespace, learner: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(learner, args.weight_decay)  # biases/norms: no decay, no LARS
    if args.optimizer == "lars":
        return LARS(groups, lr=0.0, momentum=0.9, trust_coefficient=args.lars_eta,
                    clip_lr=args.lars_clip)
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=0.0)


# ----------------------------------------------------------------------------- logging
class RunLog:
    """Rank-0 logs: per-step and per-epoch JSONL, per-epoch CSV, TensorBoard; no-ops elsewhere."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, start_step: int) -> None:
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        for name in ("log_steps.jsonl", "log_epochs.jsonl", "log_epochs.csv"):
            truncate_log(out / name, "step", start_step)  # drop records past the checkpoint
        self.steps = JsonlWriter(out / "log_steps.jsonl")
        self.epochs = JsonlWriter(out / "log_epochs.jsonl")
        self.csv = CsvWriter(out / "log_epochs.csv", EPOCH_FIELDS)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step or None)

    def step(self, record: dict) -> None:
        if self.enabled:
            self.steps.write(record)
            if self.tb is not None:
                for key in STEP_FIELDS[2:]:
                    self.tb.add_scalar(f"train/{key}", record[key], record["step"])

    def epoch(self, record: dict) -> None:
        if self.enabled:
            self.epochs.write(record)
            self.csv.write(record)
            if self.tb is not None:
                for key in EPOCH_FIELDS[2:]:
                    if record.get(key) is not None:
                        self.tb.add_scalar(f"epoch/{key}", record[key], record["step"])

    def close(self) -> None:
        if self.enabled:
            for writer in (self.steps, self.epochs, self.csv):
                writer.close()
            if self.tb is not None:
                self.tb.close()


def mean_over_ranks(values: Tensor) -> list[float]:
    """Average a small tensor over processes (gloo has no AVG op: sum / world) -> floats."""
    if dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values.tolist()


# ----------------------------------------------------------------------------- training
@dataclass
class Schedule:
    """Global-step bookkeeping: LR per optimizer step from warmup_cosine; tau is the learner's."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    max_steps: int
    step: int = 0  # optimizer steps done

    def lr(self, step: int | None = None) -> float:
        """The LR of the step after ``step`` steps (default: the steps done)."""
        step = self.step if step is None else step
        return warmup_cosine(step, self.total_steps, self.peak_lr, self.warmup_steps)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps or 0 < self.max_steps <= self.step


def train_one_epoch(model: nn.Module, learner: BYOL, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    sched: Schedule, epoch: int, run: DistInfo, log: RunLog,
                    args: argparse.Namespace, guards: Guards, save: Callable[[], None]) -> dict:
    """Train to the end of the epoch, ``--max-steps``, or an agreed stop (``guards``); saves
    where ``guards`` decides; raises SystemExit on divergence or collapse."""
    model.train()
    inner = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    ddp = inner if isinstance(inner, DDP) else None
    amp_dtype = AMP_DTYPES[args.amp]
    steps = sched.steps_per_epoch - sched.step % sched.steps_per_epoch
    batch = loader.batch_size * args.accum_steps * run.world_size  # images per optimizer step
    loss_sum = torch.zeros((), device=run.device)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", disable=not run.is_main, dynamic_ncols=True)
    timer, log_timer, done, counted, logged_at = Timer(), Timer(), 0, 0, 0
    data = iter(loader)
    while done < steps and not sched.done:
        step = sched.step + 1  # this step's number, as logged
        lr = sched.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        tau = learner.tau  # the rate this step's EMA update uses
        buffers = guards.divergence.snapshot(learner)
        step_loss = torch.zeros((), device=run.device)
        for micro in range(args.accum_steps):
            # uint8 (B, 2, 3, S, S): both views' crops, cut by the workers; unreadable files
            crops, _, unreadable = next(data)
            guards.bad_images.report(unreadable)
            view1, view2 = (to_device_images(crops[:, k], run.device, args.channels_last)
                            for k in (0, 1))
            with torch.no_grad():  # the rest of each view's augmentation, on the device
                view1, view2 = learner.augment1(view1), learner.augment2(view2)
            sync = ddp is None or micro == args.accum_steps - 1  # all-reduce on the last one
            with nullcontext() if sync else ddp.no_sync():
                with torch.autocast(run.device.type, dtype=amp_dtype,
                                    enabled=amp_dtype is not None):
                    loss = model(view1, x2=view2) / args.accum_steps
                loss, backward_loss = guards.inject.loss(step, loss)
                scaler.scale(backward_loss).backward()
            step_loss += loss.detach()
        decision = optimizer_step(learner, optimizer, scaler, step_loss, step, buffers, guards,
                                  args)
        sched.step += 1
        done += 1
        if not decision.skip:
            loss_sum += step_loss
            counted += 1
        bar.update(1)
        if sched.step % args.log_every == 0 or done == steps or sched.done:
            std = learner.last_projection_std
            loss_v, std_v, bad_v = mean_over_ranks(
                torch.stack([step_loss, std.to(step_loss), guards.divergence.flag]))
            rate = (done - logged_at) * batch / max(log_timer.elapsed(), 1e-9)
            log_timer.reset()
            logged_at = done
            log.step(dict(step=sched.step, epoch=epoch, loss=loss_v, lr=lr, tau=tau,
                          projection_std=std_v))
            bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.3g}", tau=f"{tau:.4f}",
                            img_s=f"{rate:.0f}")
            guards.divergence.check(bad_v, sched.step)  # stops, the last checkpoint untouched
            guards.collapse.update(std_v, sched.step, lr)
        if decision.save:
            save()
        if decision.stop:
            break
    bar.close()
    elapsed = timer.elapsed()
    (epoch_loss,) = mean_over_ranks((loss_sum / max(counted, 1)).unsqueeze(0))
    guards.end_epoch(epoch, run.device)
    return dict(epoch=epoch, step=sched.step, loss=epoch_loss, lr=lr, tau=tau,
                projection_std=std_v, knn_top1=None,
                images_per_s=done * batch / max(elapsed, 1e-9), time=elapsed)


def optimizer_step(learner: BYOL, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, step_loss: Tensor, step: int,
                   buffers: list[Tensor] | None, guards: Guards,
                   args: argparse.Namespace) -> Decision:
    """Check the step (non-finite loss or gradient norm), agree with the other ranks on
    stopping, saving and skipping, then apply it (optimizer, GradScaler, EMA) or skip it."""
    fp16 = scaler.is_enabled()  # then non-finite gradients are the GradScaler's: it skips them
    checked = [step_loss]
    if not fp16 and args.clip_grad > 0:
        checked.append(nn.utils.clip_grad_norm_(learner.parameters(), args.clip_grad))
    elif not fp16 and guards.divergence.skip_limit:
        checked.append(nn.utils.get_total_norm(
            [p.grad for p in learner.parameters() if p.grad is not None]))
    bad = guards.divergence.track(step, checked)
    guards.inject.after_backward(step)
    decision = guards.control.decide(step, bad)
    if decision.skip:
        guards.divergence.skip(step, learner, buffers)
    else:
        if fp16 and args.clip_grad > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(learner.parameters(), args.clip_grad)
        if guards.scaler_skips.step(scaler, optimizer):  # False: the GradScaler skipped it
            learner.update_moving_average()
    optimizer.zero_grad(set_to_none=True)
    return decision


class _Embedder(nn.Module):
    """uint8 batch -> the learner's representation (the hooked layer), for the kNN monitor."""

    def __init__(self, learner: BYOL) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().div_(255) if x.dtype == torch.uint8 else x
        return self.learner(x, return_embedding=True, return_projection=False)


def knn_monitor(learner: BYOL, loaders: tuple[DataLoader, DataLoader], run: DistInfo,
                k: int, num_classes: int) -> float:
    """kNN top-1 (%) of the online representation: each rank embeds its shard, then gather."""
    if dist.is_initialized():  # ranks' BN statistics drift after the last broadcast: use rank 0's
        for buffer in learner.buffers():
            dist.broadcast(buffer, 0)
    embed = _Embedder(learner)
    feats = []
    for loader in loaders:
        f, y = extract_features(embed, loader, run.device, progress=False)
        feats += [all_gather_varsize(f.to(run.device)), all_gather_varsize(y.to(run.device))]
    k = min(k, feats[0].shape[0])
    return knn_accuracy(*feats, k=k, num_classes=num_classes)[f"knn_top1@{k}"]


def save_all(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
             sched: Schedule, run: DistInfo, args: argparse.Namespace,
             checkpoints: Checkpoints) -> None:
    """Full checkpoint of this step + bare backbone; a collective (RNG states of every rank are
    gathered), rank 0 writes.

    ``unwrap`` strips DDP's ``module.`` and compile's ``_orig_mod.``: keys are the learner's own.
    """
    rng = gather_rng_states()
    if run.is_main:
        learner = unwrap(model)
        state = dict(model=learner.state_dict(), optimizer=optimizer.state_dict(),
                     scaler=scaler.state_dict(), epoch=sched.step // sched.steps_per_epoch,
                     step=sched.step, steps_per_epoch=sched.steps_per_epoch,
                     world_size=run.world_size, rng=rng, args=json_args(args),
                     version=__version__)
        checkpoints.write(state, sched.step)
        save_backbone(learner.net, checkpoints.out)
    checkpoints.last = (checkpoints.path(sched.step), sched.step)


def json_args(args: argparse.Namespace) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


# Arguments that must match the checkpoint for an exact continuation.
RESUME_ARGS = ("dataset", "backbone", "cifar_stem", "hidden_layer", "image_size", "proj_dim",
               "proj_hidden_dim", "head_output_bias", "preset", "epochs", "batch_size",
               "accum_steps", "optimizer", "base_lr", "warmup_epochs", "weight_decay", "ema_base",
               "seed")


def resume(path: Path, ckpt: dict, learner: BYOL, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler, sched: Schedule, run: DistInfo,
           args: argparse.Namespace) -> list | None:
    """Load checkpoint ``ckpt`` (read from ``path``) in place; returns the per-rank RNG states
    to restore before training."""
    old = ckpt.get("args", {})
    changed = [f"--{k.replace('_', '-')} {old[k]} -> {getattr(args, k)}" for k in RESUME_ARGS
               if k in old and old[k] != getattr(args, k)]
    if changed:
        warnings.warn(f"resuming {path} with different arguments ({'; '.join(changed)}): the "
                      "run will not continue exactly as the original one")
    try:
        learner.load_state_dict(ckpt["model"])
    except RuntimeError as err:
        raise fail(f"{path} does not fit this model (pass the pretraining flags again: "
                   f"{', '.join(changed) or 'see its args'}): {str(err)[:500]}") from None
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"] and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    sched.step = int(ckpt["step"])
    if ckpt["steps_per_epoch"] != sched.steps_per_epoch or ckpt["world_size"] != run.world_size:
        warnings.warn("the batch size, data set or number of processes changed since the "
                      "checkpoint: training continues, but not on the same data order/RNG stream")
        return None
    print0(f"resumed from {path} at step {sched.step} "
           f"(epoch {sched.step // sched.steps_per_epoch})")
    return ckpt["rng"]


# ----------------------------------------------------------------------------- main
def main(args: argparse.Namespace) -> None:
    # ======================= setup =======================
    args = resolve_args(args)
    seed_everything(args.seed)  # same initial weights on every rank
    backbone = build_backbone(args)
    run = init_distributed(args.device)
    try:
        with stop_signals() as signals:  # SIGTERM/SIGUSR1: checkpoint after the current step
            _train(args, backbone, run, signals)
    finally:
        cleanup_distributed()


def _train(args: argparse.Namespace, backbone: nn.Module, run: DistInfo,
           signals: StopFlag) -> None:
    amp_dtype = AMP_DTYPES[args.amp]
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if amp_dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise fail("this GPU has no bf16 support; use --amp fp16")
    out = Path(args.output_dir)
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(json_args(args), indent=2))
    if args.preset == "imagenet":
        length, _ = imagenet_settings(args.epochs)
        print0(f"imagenet preset, {args.epochs} epochs: the official {length}-epoch settings "
               "(byol/configs/byol.py) for flags not given: base LR, weight decay, tau")
    print0(f"byol-torch {__version__} | {run.world_size} process(es) on {run.device.type}\n"
           + "\n".join(f"  {k}: {v}" for k, v in sorted(vars(args).items())))

    # ======================= data =======================
    crops = PretrainViews(args.image_size, (args.crop_min_scale, 1.0))
    try:
        images, num_classes = build_dataset(
            args.dataset, args.data_path, "pretrain", crops, download=args.download,
            val_fraction=args.val_fraction, split_seed=args.split_seed)
        # unreadable images are replaced by readable ones; none at all fails now, not hours in
        dataset = SubstitutingViews(images, crops)
        _ = dataset[(0, 0)]
    except (OSError, ValueError) as err:
        raise fail(str(err)) from None
    micro_batch = args.batch_size // (run.world_size * args.accum_steps)
    sampler = SeededSampler(dataset, num_replicas=run.world_size, rank=run.rank, shuffle=True,
                            seed=args.seed, drop_last=True)
    loader = DataLoader(dataset, batch_size=micro_batch, sampler=sampler, drop_last=True,
                        num_workers=args.workers, pin_memory=run.device.type == "cuda",
                        persistent_workers=args.workers > 0,
                        generator=torch.Generator().manual_seed(args.seed))
    steps_per_epoch = len(loader) // args.accum_steps
    if steps_per_epoch == 0:
        raise fail(f"{len(dataset)} images give no full batch of {args.batch_size}; lower "
                   "--batch-size")
    knn_loaders = None
    if args.knn_every:
        if num_classes is None:
            raise fail("--knn-every needs a labelled data set")
        resize = args.image_size if args.preset == "small" else int(args.image_size * 256 / 224)
        knn_loaders = tuple(
            DataLoader(shard(ReplaceUnreadable(build_dataset(
                args.dataset, args.data_path, split, eval_transform(args.image_size, resize),
                val_fraction=args.val_fraction, split_seed=args.split_seed)[0]),
                run.rank, run.world_size),
                       batch_size=max(micro_batch, 64), num_workers=args.workers,
                       generator=torch.Generator())  # not the global RNG: training's stream
            for split in ("train", "val"))
    total_steps = args.epochs * steps_per_epoch
    sched = Schedule(steps_per_epoch, total_steps, int(args.warmup_epochs * steps_per_epoch),
                     args.base_lr * args.batch_size / 256, args.max_steps)
    print0(f"data: {len(dataset)} images, {micro_batch} per process x {args.accum_steps} "
           f"micro-steps x {run.world_size} processes = batch {args.batch_size}; "
           f"{steps_per_epoch} steps/epoch, {total_steps} steps, peak LR {sched.peak_lr:.4g}")

    # ======================= model =======================
    try:
        mean, std = normalization(args.dataset)
        # The workers cut the crops; these do the rest of each view on the device.
        view1, view2 = default_views(args.image_size, args.preset, flip_p=args.flip_p,
                                     crop=False, mean=mean, std=std)
        learner = BYOL(backbone, args.image_size, hidden_layer=args.hidden_layer,
                       projection_size=args.proj_dim, projection_hidden_size=args.proj_hidden_dim,
                       augment_fn=view1, augment_fn2=view2, moving_average_decay=args.ema_base,
                       total_steps=total_steps, token_pool=args.token_pool,
                       view_batching=args.view_batching, head_output_bias=args.head_output_bias)
    except (ValueError, TypeError, RuntimeError) as err:
        raise fail(f"cannot build the learner: {err}") from None
    if args.sync_bn:
        learner = nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    learner.to(run.device, memory_format=torch.channels_last if args.channels_last
               else torch.contiguous_format)
    optimizer = build_optimizer(args, learner)
    scaler = torch.amp.GradScaler(run.device.type, enabled=amp_dtype == torch.float16)
    print0(f"model: {args.backbone} ({sum(p.numel() for p in learner.net.parameters()) / 1e6:.1f}M"
           f" params), representation {learner.online_encoder.projector[0].in_features}-d, "
           f"optimizer {args.optimizer}")

    # ======================= resume =======================
    guards = Guards.create(args, out, signals, optimizer, run.device, run.rank,
                           lr_at=lambda step: sched.lr(step - 1))
    rng_states = None
    found = checkpoint_to_resume(args.resume, guards.checkpoints)
    if found is not None:
        rng_states = resume(*found, learner, optimizer, scaler, sched, run, args)
        guards.checkpoints.last = (found[0], sched.step)
    if knn_loaders and sched.step == 0:  # the level the kNN curve is read against
        init_knn = knn_monitor(learner, knn_loaders, run, args.knn_k, num_classes)
        print0(f"kNN top-1 at initialisation: {init_knn:.2f}%")
        if run.is_main:
            (out / "knn_init.json").write_text(json.dumps({"knn_top1": init_knn,
                                                           "knn_k": args.knn_k}))
    seed_everything(args.seed + run.rank + 1000 * sched.step)  # per-rank augmentation stream
    if rng_states is not None:
        restore_rng_state(rng_states[run.rank])

    model: nn.Module = learner
    if run.distributed:
        model = DDP(learner, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)

    def save() -> None:
        """Checkpoint this step (once), never with non-finite weights; a collective."""
        if guards.checkpoints.last is None or guards.checkpoints.last[1] != sched.step:
            guards.divergence.ensure_finite(learner, sched.step)
            save_all(model, optimizer, scaler, sched, run, args, guards.checkpoints)
        guards.control.saved()

    # ======================= train =======================
    log = RunLog(out, run.is_main, args.tensorboard, sched.step)
    timer = Timer()
    start_epoch = sched.step // steps_per_epoch
    for epoch in range(start_epoch, args.epochs):
        if sched.done:
            break
        sampler.set_epoch(epoch)
        sampler.set_start(sched.step % steps_per_epoch * args.accum_steps * micro_batch)
        loader.generator.manual_seed(args.seed + epoch)  # worker seeds: deterministic per epoch
        stats = train_one_epoch(model, learner, loader, optimizer, scaler, sched, epoch, run,
                                log, args, guards, save)
        if guards.control.stopped_by:  # preempted: the checkpoint of this step is written
            break
        finished = sched.step % steps_per_epoch == 0
        last = sched.done or epoch == args.epochs - 1
        if knn_loaders and finished and ((epoch + 1) % args.knn_every == 0 or last):
            stats["knn_top1"] = knn_monitor(learner, knn_loaders, run, args.knn_k, num_classes)
            print0(f"epoch {epoch}: kNN top-1 {stats['knn_top1']:.2f}%")
        log.epoch(stats)
        print0(f"epoch {epoch}: loss {stats['loss']:.4f}  lr {stats['lr']:.4g}  "
               f"tau {stats['tau']:.5f}  proj std {stats['projection_std']:.4f}  "
               f"{stats['images_per_s']:.0f} img/s")
        if last or (args.save_every and finished and (epoch + 1) % args.save_every == 0):
            save()

    # ======================= finish =======================
    log.close()
    if guards.control.stopped_by:
        print0(f"{guards.control.stopped_by} received: stopped after step {sched.step} and saved "
               f"{guards.checkpoints.last[0]}; to continue, run the same command with "
               "--resume auto")
        return
    print0(f"done: {sched.step} steps in {timer.elapsed() / 60:.1f} min{guards.skipped()}; "
           f"checkpoint {out / 'checkpoint.pt'}, backbone {out / 'backbone.pt'}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
