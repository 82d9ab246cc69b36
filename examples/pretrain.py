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
    # fine-tune from the paper's weights (python -m byol_pytorch.convert, README)
    python examples/pretrain.py --dataset folder --data-path /data --init-from r50.safetensors

Workers cut both views' crops from the full image (uint8); the rest of each view is made on the
device. ``--batch-size`` is the GLOBAL batch of one optimizer step; the LR is ``base_lr *
batch_size / 256``. examples/README.md: recipes, logs, checkpoints, when things go wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipes  # noqa: E402
from common import (DistInfo, RunLog, Timer, cleanup_distributed, env_world_size,  # noqa: E402
                    fail, init_distributed, mean_over_ranks,
                    parse_hidden_layer, print0, read_backbone, seed_everything)
from data import (DATASETS, check_data_args, default_workers, eval_transform,  # noqa: E402
                  labelled_splits, pretrain_loader, to_device_images)
from evaluation import knn_monitor  # noqa: E402
from faults import Guards, add_fault_args, checkpoint_to_resume, stop_signals  # noqa: E402

from byol_pytorch import (BYOL, LARS, __version__, default_views, param_groups,  # noqa: E402
                          warmup_cosine)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOGGED = ("loss", "lr", "tau", "projection_std", "knn_top1", "images_per_s")  # TensorBoard
# Arguments that must match the checkpoint for an exact continuation.
RESUME_ARGS = ("dataset", "backbone", "cifar_stem", "hidden_layer", "image_size", "proj_dim",
               "proj_hidden_dim", "head_output_bias", "preset", "epochs", "batch_size",
               "accum_steps", "optimizer", "base_lr", "warmup_epochs", "weight_decay", "tau",
               "seed")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("BYOL pretraining", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits", choices=DATASETS,
                   help="digits is bundled with scikit-learn, so the default runs offline")
    g.add_argument("--data-path", default=None,
                   help="folder root (train/ and optionally val/), torchvision root, or .npz file")
    g.add_argument("--download", action="store_true",
                   help="let torchvision download CIFAR/STL-10 (never, unless asked)")
    g.add_argument("--val-fraction", type=float, default=0.1, help="held out from pretraining "
                   "for kNN when the data set has no test split (npz, digits, folder w/o val/)")
    g.add_argument("--split-seed", type=int, default=0,
                   help="seed of that split (the eval scripts read it from the checkpoint)")
    g.add_argument("--workers", type=int, default=None, help="CPU decoding workers per process "
                   "(default: 0 for the in-memory npz/digits, else min(8, CPUs per process))")
    g = p.add_argument_group("model")
    g.add_argument("--preset", default=None, choices=list(recipes.PRESETS), help="imagenet: the "
                   "official BYOL code (LR, weight decay, tau by --epochs); small: solo-learn's "
                   "CIFAR recipe (no blur, torchvision colour jitter, CIFAR stem); default: by "
                   "data set (examples/recipes.py)")
    g.add_argument("--backbone", default=None, help="torchvision name (resnet50) or timm:NAME")
    g.add_argument("--init-from", default=None, help="start the backbone from these weights: a "
                   "file of python -m byol_pytorch.convert, a torchvision/timm state dict, or a "
                   "checkpoint or backbone of this script")
    g.add_argument("--cifar-stem", action=argparse.BooleanOptionalAction, default=None,
                   help="3x3 stride-1 stem without max-pool for 32-96 px images (ResNets)")
    g.add_argument("--hidden-layer", default="-2", help="the representation's layer: module "
                   "name, child index, or 'none' for the model's output")
    g.add_argument("--token-pool", default="cls", choices=["cls", "mean"],
                   help="how ViT token outputs are pooled into one vector")
    g.add_argument("--image-size", type=int, default=None, help="side of the augmented views")
    g.add_argument("--crop-min-scale", type=float, default=None,
                   help="smallest area fraction of a crop (default 0.08; digits 0.4)")
    g.add_argument("--flip-p", type=float, default=None, help="horizontal flip probability "
                   "(default 0.5; digits 0: data whose mirror image differs)")
    g.add_argument("--proj-dim", type=int, default=256, help="projection size (paper: 256)")
    g.add_argument("--proj-hidden-dim", type=int, default=4096,
                   help="hidden size of projector and predictor (paper: 4096)")
    g.add_argument("--head-output-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="bias in the heads' last Linear (default: the preset's)")
    g.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm statistics over the global batch, as the official code; CUDA "
                   "only. Default: on for the imagenet preset with several GPU processes")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--batch-size", type=int, default=None, help="GLOBAL batch per optimizer "
                   "step, split over processes and --accum-steps")
    g.add_argument("--accum-steps", type=int, default=1, help="micro-steps per optimizer step, "
                   "to fit a large batch in memory (BatchNorm then sees micro-batches)")
    g.add_argument("--optimizer", default="lars", choices=["lars", "sgd", "adam", "adamw"],
                   help="LARS is what the paper uses for large batches")
    g.add_argument("--base-lr", type=float, default=None,
                   help="LR for batch 256, scaled linearly with the global batch")
    g.add_argument("--warmup-epochs", type=float, default=None, help="linear LR warm-up, then "
                   "cosine decay to 0 (default: the preset's 10, at most 10%% of --epochs)")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="not applied to biases and norm parameters")
    g.add_argument("--lars-eta", type=float, default=None, help="LARS trust coefficient")
    g.add_argument("--lars-clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip each layer's LARS rate at the LR (LARC, as solo-learn)")
    g.add_argument("--tau", type=float, default=None,
                   help="the target's EMA rate at step 0; a cosine takes it to 1 by the end")
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
                   help="separate: BatchNorm statistics per view (the paper); joint: over both "
                   "views in one batch (byol-pytorch 0.9.1's)")
    g = p.add_argument_group("logging")
    g.add_argument("--output-dir", default="outputs/pretrain")
    g.add_argument("--log-every", type=int, default=10,
                   help="optimizer steps between log records (each costs one device sync)")
    g.add_argument("--save-every", type=int, default=10, help="epochs between checkpoints "
                   "(one is always written at the end); 0 = only at the end")
    g.add_argument("--knn-every", type=int, default=0, help="epochs between kNN evaluations on "
                   "the held-out split (labelled data sets); 0 = off")
    g.add_argument("--knn-k", type=int, default=20, help="neighbours for the kNN monitor")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="also write TensorBoard scalars (if tensorboard is installed)")
    g.add_argument("--seed", type=int, default=0)
    add_fault_args(p)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the recipe's defaults (examples/recipes.py) and validate everything that can be
    checked before any work."""
    world = env_world_size()
    on_cpu = args.device == "cpu" or (args.device == "auto" and not torch.cuda.is_available())
    try:
        recipes.fill_pretrain_defaults(args, world, on_cpu)
    except ValueError as err:
        raise fail(str(err)) from None
    args.workers = default_workers(args.dataset, cap=8) if args.workers is None else args.workers
    args.hidden_layer = parse_hidden_layer(args.hidden_layer)
    per_rank = args.batch_size // (world * args.accum_steps)
    data_error = check_data_args(args.dataset, args.data_path, args.download)
    for ok, message in [
        (args.image_size >= 8, f"--image-size must be >= 8, got {args.image_size}"),
        (0 <= args.warmup_epochs <= args.epochs, "--warmup-epochs must lie in [0, --epochs]"),
        (args.base_lr > 0 and args.weight_decay >= 0, "--base-lr must be > 0, --weight-decay >= 0"),
        (0.0 <= args.tau <= 1.0, f"--tau must lie in [0, 1], got {args.tau}"),
        (0.0 < args.crop_min_scale <= 1.0, "--crop-min-scale must lie in (0, 1]"),
        (0.0 <= args.flip_p <= 1.0, f"--flip-p must lie in [0, 1], got {args.flip_p}"),
        (0.0 < args.val_fraction < 1.0, "--val-fraction must lie in (0, 1)"),
        (min(args.log_every, args.knn_k, args.accum_steps) >= 1,
         "--log-every, --knn-k and --accum-steps must be >= 1"),
        (min(args.save_every, args.knn_every, args.max_steps, args.workers) >= 0,
         "--save-every, --knn-every, --max-steps and --workers must be >= 0"),
        (args.batch_size >= world, f"--batch-size {args.batch_size} is smaller than the number "
         f"of processes ({world}); --batch-size is the global batch, use at least {2 * world}"),
        (args.batch_size % (world * args.accum_steps) == 0, f"--batch-size {args.batch_size} must "
         f"be divisible by processes x --accum-steps = {world} x {args.accum_steps}"),
        (per_rank >= 2, "each process needs a micro-batch of >= 2 images (BatchNorm); raise "
         f"--batch-size above {2 * world * args.accum_steps - 1}"),
        (not args.sync_bn or not on_cpu or world == 1, "--sync-bn needs CUDA (SyncBatchNorm "
         "under DDP only runs on GPUs); drop --sync-bn for CPU runs"),
        (not args.resume or args.resume == "auto" or Path(args.resume).is_file(),
         f"--resume {args.resume!r} does not exist"),
        (not data_error, data_error)]:
        if not ok:
            raise fail(message)
    Guards.check_args(args)
    args.sync_bn = args.sync_bn and not on_cpu  # one CPU process: nothing to synchronise
    return args


def build_backbone(args: argparse.Namespace) -> nn.Module:
    """The backbone by name, residual blocks starting as identities (the last BN of each block
    zero-initialised, as the official ResNets), with the CIFAR stem if asked; then the weights of
    ``--init-from`` (with the paper's "SAME" padding for its converted weights)."""
    try:
        return recipes.rebuild_backbone(
            args.backbone, read_backbone(args.init_from)[0] if args.init_from else None,
            args.init_from, same_padding=args.same_padding, image_size=args.image_size,
            cifar_stem=args.cifar_stem, zero_init_residual=True)
    except (ValueError, RuntimeError, OSError) as err:
        raise fail(str(err)) from None


def build_optimizer(args: argparse.Namespace, learner: nn.Module) -> torch.optim.Optimizer:
    groups = param_groups(learner, args.weight_decay)  # biases/norms: no decay, no LARS
    if args.optimizer == "lars":
        return LARS(groups, 0.0, 0.9, trust_coefficient=args.lars_eta, clip_lr=args.lars_clip)
    if args.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=0.0, momentum=0.9)
    return (torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW)(groups, lr=0.0)


@dataclass
class Schedule:
    """Global-step bookkeeping: the LR of each optimizer step (tau is the learner's)."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    max_steps: int
    step: int = 0  # optimizer steps done

    def lr(self, step: int | None = None) -> float:
        """The LR of the step after ``step`` steps (default: the steps done)."""
        return warmup_cosine(self.step if step is None else step, self.total_steps, self.peak_lr,
                             self.warmup_steps)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps or 0 < self.max_steps <= self.step


def forward_backward(model: nn.Module, learner: BYOL, data, scaler: torch.amp.GradScaler,
                     args: argparse.Namespace, run: DistInfo, guards: Guards) -> Tensor:
    """Forward and backward of one optimizer step's micro-steps -> the summed loss (). Batches
    are uint8 (B, 2, 3, S, S) crops of both views (the workers'); the rest is made here."""
    inner = getattr(model, "_orig_mod", model)  # torch.compile wraps the DDP module
    step_loss = torch.zeros((), device=run.device)
    for micro in range(args.accum_steps):
        crops, _, unreadable = next(data)
        guards.bad_images.report(unreadable)
        view1, view2 = (to_device_images(crops[:, k], run.device, args.channels_last)
                        for k in (0, 1))
        with torch.no_grad():
            view1, view2 = learner.augment1(view1), learner.augment2(view2)
        last = micro == args.accum_steps - 1  # DDP all-reduces on the last micro-step only
        with nullcontext() if last or not isinstance(inner, DDP) else inner.no_sync():
            with torch.autocast(run.device.type, dtype=AMP_DTYPES[args.amp],
                                enabled=args.amp != "off"):
                loss = model(view1, x2=view2) / args.accum_steps
            scaler.scale(loss).backward()
        step_loss += loss.detach()
    return step_loss


def train_one_epoch(model: nn.Module, learner: BYOL, loader: DataLoader,
                    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                    sched: Schedule, epoch: int, run: DistInfo, log: RunLog,
                    args: argparse.Namespace, guards: Guards) -> dict:
    """Train to the end of the epoch, ``--max-steps``, or an agreed stop; saves where the guards
    decide (examples/faults.py); raises SystemExit on divergence or collapse."""
    model.train()
    steps = sched.steps_per_epoch - sched.step % sched.steps_per_epoch
    batch = loader.batch_size * args.accum_steps * run.world_size  # images per optimizer step
    loss_sum, counted, done, logged_at = torch.zeros((), device=run.device), 0, 0, 0
    timer, log_timer = Timer(), Timer()
    bar = tqdm(total=steps, desc=f"epoch {epoch}", disable=not run.is_main, dynamic_ncols=True)
    data = iter(loader)
    while done < steps and not sched.done:
        step, lr, tau = sched.step + 1, sched.lr(), learner.tau  # this step's number and rates
        for group in optimizer.param_groups:
            group["lr"] = lr
        # ---- forward, backward, optimizer step, EMA of the target
        buffers = guards.snapshot(learner)
        step_loss = forward_backward(model, learner, data, scaler, args, run, guards)
        decision = guards.check(step, step_loss, learner, scaler, buffers)  # agreed by all ranks
        if not decision.skip:
            if scaler.is_enabled() and args.clip_grad > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            if args.clip_grad > 0:
                nn.utils.clip_grad_norm_(learner.parameters(), args.clip_grad)
            if guards.scaler_step(scaler, optimizer):  # False: the fp16 GradScaler skipped it
                learner.update_moving_average()
            loss_sum, counted = loss_sum + step_loss, counted + 1
        optimizer.zero_grad(set_to_none=True)
        sched.step, done = sched.step + 1, done + 1
        bar.update(1)
        # ---- log (one device sync), then the fault guards' verdict on it
        if sched.step % args.log_every == 0 or done == steps or sched.done:
            loss_v, std_v, bad_v = mean_over_ranks(torch.stack(
                [step_loss, learner.last_projection_std.to(step_loss), guards.divergence.flag]))
            rate = (done - logged_at) * batch / max(log_timer.elapsed(), 1e-9)
            log_timer.reset()
            logged_at = done
            log.write("step", dict(step=sched.step, epoch=epoch, loss=loss_v, lr=lr, tau=tau,
                                   projection_std=std_v))
            bar.set_postfix(loss=f"{loss_v:.4f}", lr=f"{lr:.3g}", tau=f"{tau:.4f}",
                            img_s=f"{rate:.0f}")
            guards.logged(bad_v, std_v, sched.step, lr)  # divergence stops; collapse warns
        if decision.save:
            guards.save()
        if decision.stop:
            break
    bar.close()
    guards.end_epoch(epoch, run.device)
    (epoch_loss,) = mean_over_ranks((loss_sum / max(counted, 1)).unsqueeze(0))
    return dict(epoch=epoch, step=sched.step, loss=epoch_loss, lr=lr, tau=tau,
                projection_std=std_v, knn_top1=None,
                images_per_s=done * batch / max(timer.elapsed(), 1e-9), time=timer.elapsed())


def main(args: argparse.Namespace) -> None:
    args = resolve_args(args)
    seed_everything(args.seed)  # same initial weights on every rank
    backbone = build_backbone(args)
    run = init_distributed(args.device)
    try:
        with stop_signals() as signals:  # SIGTERM/SIGUSR1: checkpoint after the current step
            _train(args, backbone, run, signals)
    finally:
        cleanup_distributed()


def _train(args: argparse.Namespace, backbone: nn.Module, run: DistInfo, signals) -> None:
    # ======================= setup =======================
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if args.amp == "bf16" and not torch.cuda.is_bf16_supported():
            raise fail("this GPU has no bf16 support; use --amp fp16")
    out = Path(args.output_dir)
    json_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(json_args, indent=2))
    official = f", the official {recipes.imagenet_settings(args.epochs)[0]}-epoch settings " \
        "(byol/configs/byol.py) where not given" if args.preset == "imagenet" else ""
    print0(f"byol-torch {__version__} | {run.world_size} process(es) on {run.device.type} | "
           f"preset {args.preset}{official}\n"
           + "\n".join(f"  {k}: {v}" for k, v in sorted(vars(args).items())))

    # ======================= data =======================
    try:
        loader, sampler, num_classes = pretrain_loader(args, run.rank, run.world_size,
                                                       pin_memory=run.device.type == "cuda")
    except (OSError, ValueError) as err:
        raise fail(str(err)) from None
    micro_batch, steps_per_epoch = loader.batch_size, len(loader) // args.accum_steps
    if steps_per_epoch == 0:
        raise fail(f"{len(loader.dataset)} images give no batch of {args.batch_size}: lower it")
    if args.knn_every and num_classes is None:
        raise fail("--knn-every needs a labelled data set")
    knn_sets = labelled_splits(args, eval_transform(*recipes.eval_sizes(
        args.preset, args.image_size))) if args.knn_every else None
    total_steps = args.epochs * steps_per_epoch
    sched = Schedule(steps_per_epoch, total_steps, int(args.warmup_epochs * steps_per_epoch),
                     args.base_lr * args.batch_size / 256, args.max_steps)
    print0(f"data: {len(loader.dataset)} images, {micro_batch} per process x {args.accum_steps} "
           f"micro-steps x {run.world_size} processes = batch {args.batch_size}; "
           f"{steps_per_epoch} steps/epoch, {total_steps} steps, peak LR {sched.peak_lr:.4g}")

    # ======================= model =======================
    try:
        mean, std = recipes.normalization(args.dataset)
        # the workers cut the crops; these do the rest of each view on the device
        view1, view2 = default_views(args.image_size, args.preset, flip_p=args.flip_p,
                                     crop=False, mean=mean, std=std)
        learner = BYOL(backbone, args.image_size, hidden_layer=args.hidden_layer,
                       projection_size=args.proj_dim, projection_hidden_size=args.proj_hidden_dim,
                       augment_fn=view1, augment_fn2=view2, moving_average_decay=args.tau,
                       total_steps=total_steps, token_pool=args.token_pool,
                       view_batching=args.view_batching, head_output_bias=args.head_output_bias)
    except (ValueError, TypeError, RuntimeError) as err:
        raise fail(f"cannot build the learner: {err}") from None
    if args.sync_bn:
        learner = nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    learner.to(run.device, memory_format=torch.channels_last if args.channels_last
               else torch.contiguous_format)
    optimizer = build_optimizer(args, learner)
    scaler = torch.amp.GradScaler(run.device.type, enabled=args.amp == "fp16")
    print0(f"model: {args.backbone} ({sum(p.numel() for p in learner.net.parameters()) / 1e6:.1f}M"
           f" params), optimizer {args.optimizer}")

    # ======================= resume =======================
    model: nn.Module = learner
    if run.distributed:
        model = DDP(learner, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    guards = Guards.create(args, out, signals, run, learner, optimizer, scaler, sched, json_args)
    found = checkpoint_to_resume(args.resume, guards.checkpoints)
    rng_states = guards.resume(*found, RESUME_ARGS) if found else None
    log = RunLog(out / "log.jsonl", run.is_main, LOGGED, args.tensorboard, sched.step)

    def knn() -> float:
        return knn_monitor(learner, knn_sets, run, args.knn_k, max(micro_batch, 64), args.workers)

    if knn_sets and sched.step == 0:  # the level the kNN curve is read against
        init_knn = knn()
        print0(f"kNN top-1 at initialisation: {init_knn:.2f}%")
        log.write("knn_init", dict(step=0, knn_top1=init_knn, knn_k=args.knn_k))
    seed_everything(args.seed + run.rank + 1000 * sched.step)  # per-rank augmentation stream
    guards.restore_rng(rng_states)

    # ======================= train =======================
    timer = Timer()
    for epoch in range(sched.step // steps_per_epoch, args.epochs):
        if sched.done:
            break
        sampler.set_epoch(epoch)
        sampler.set_start(sched.step % steps_per_epoch * args.accum_steps * micro_batch)
        loader.generator.manual_seed(args.seed + epoch)  # worker seeds: deterministic per epoch
        stats = train_one_epoch(model, learner, loader, optimizer, scaler, sched, epoch, run, log,
                                args, guards)
        if guards.control.stopped_by:  # preempted: the checkpoint of this step is written
            break
        finished = sched.step % steps_per_epoch == 0
        last = sched.done or epoch == args.epochs - 1
        if knn_sets and finished and ((epoch + 1) % args.knn_every == 0 or last):
            stats["knn_top1"] = knn()
            print0(f"epoch {epoch}: kNN top-1 {stats['knn_top1']:.2f}%")
        log.write("epoch", stats)
        print0(f"epoch {epoch}: loss {stats['loss']:.4f}  lr {stats['lr']:.4g}  "
               f"tau {stats['tau']:.5f}  proj std {stats['projection_std']:.4f}  "
               f"{stats['images_per_s']:.0f} img/s")
        if last or (args.save_every and finished and (epoch + 1) % args.save_every == 0):
            guards.save()

    # ======================= finish =======================
    log.close()
    if guards.control.stopped_by:
        print0(f"{guards.control.stopped_by} received: stopped after step {sched.step} and saved "
               f"{guards.checkpoints.last[0]}; to continue, run the same command with "
               "--resume auto")
    else:
        print0(f"done: {sched.step} steps in {timer.elapsed() / 60:.1f} min{guards.skipped()}; "
               f"checkpoint {out / 'checkpoint.pt'}, backbone {out / 'backbone.pt'}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
