"""Linear evaluation of a pretrained backbone: a linear classifier on frozen features.

    # precomputed features (fast; the CPU path)
    python examples/linear_eval.py --checkpoint outputs/pretrain/checkpoint.pt
    # the paper's protocol on ImageNet, 8 GPUs: frozen backbone, augmented images, 80 epochs
    torchrun --nproc_per_node 8 examples/linear_eval.py --protocol augment \
        --checkpoint outputs/byol_r50/checkpoint.pt --data-path /imagenet --amp bf16

BYOL (App. C.1): "SGD with Nesterov momentum over 80 epochs, using a batch size of 1024 and a
momentum of 0.9 ... no regularization methods such as weight decay"; cosine LR decay here. Two
protocols:

* ``features``: embed train and val once (centre crop) with the frozen backbone, each process its
  shard, gather the features, and fit the linear layer on them (identical on every process).
* ``augment``: every step embeds a fresh random-resized-crop + flip view with the frozen backbone
  (eval mode, no gradients) and trains the linear layer under DDP; validation on centre crops.

At the end the backbone is checked to be bit-identical to the checkpoint (MoCo v3's sanity check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (DistInfo, EvalSetup, Timer, add_eval_args,  # noqa: E402
                    cleanup_distributed, env_world_size, fail, init_distributed, print0,
                    seed_everything, setup_eval, write_result)
from data import shard, to_device_images, train_eval_transform  # noqa: E402
from knn_eval import embed_splits  # noqa: E402

from byol_pytorch import warmup_cosine  # noqa: E402
from byol_pytorch.eval import check_frozen, linear_probe_accuracy  # noqa: E402

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("BYOL linear evaluation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_args(p)
    g = p.add_argument_group("linear classifier")
    g.add_argument("--protocol", default="features", choices=["features", "augment"],
                   help="features: precomputed centre-crop features (fast); augment: the "
                   "paper's, random crops + flips through the frozen backbone every step")
    g.add_argument("--epochs", type=int, default=80, help="paper: 80")
    g.add_argument("--lr", type=float, default=0.1, help="peak LR (cosine decay to 0); the "
                   "paper sweeps it on a held-out split")
    g.add_argument("--weight-decay", type=float, default=0.0, help="paper: none")
    g.add_argument("--probe-batch-size", type=int, default=1024,
                   help="global batch of the classifier (paper: 1024)")
    g.add_argument("--amp", default="off", choices=list(AMP_DTYPES),
                   help="autocast dtype of the frozen backbone (augment protocol)")
    return p


def linear_on_features(setup: EvalSetup, run: DistInfo, args: argparse.Namespace) -> dict:
    """Fit the probe on gathered, precomputed features; every rank fits the same one."""
    train_f, train_y, val_f, val_y = embed_splits(setup, run, args, normalize=False)
    return linear_probe_accuracy(train_f, train_y, val_f, val_y, setup.num_classes,
                                 epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                 batch_size=args.probe_batch_size, optimizer="sgd",
                                 device=run.device, progress=run.is_main, seed=args.seed)


def linear_with_augmentation(setup: EvalSetup, run: DistInfo, args: argparse.Namespace) -> dict:
    """The paper's protocol: fresh augmented views through the frozen backbone, DDP head."""
    encoder = setup.encoder.to(run.device).eval().requires_grad_(False)
    amp_dtype = AMP_DTYPES[args.amp]
    with torch.no_grad():
        dim = encoder(setup.val_set[0][0].unsqueeze(0).to(run.device)).shape[1]
    gen = torch.Generator().manual_seed(args.seed)
    head = nn.Linear(dim, setup.num_classes)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=gen)
        head.bias.zero_()
    head.to(run.device)
    model = DDP(head, device_ids=[run.device.index] if run.device.type == "cuda" else None) \
        if run.distributed else head
    optimizer = torch.optim.SGD(head.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=args.weight_decay)
    sampler = DistributedSampler(setup.train_set, run.world_size, run.rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    loader = DataLoader(setup.train_set, batch_size=args.probe_batch_size // run.world_size,
                        sampler=sampler, num_workers=args.workers, drop_last=True,
                        pin_memory=run.device.type == "cuda", persistent_workers=args.workers > 0)
    total = args.epochs * len(loader)
    if total == 0:
        raise fail(f"{len(setup.train_set)} training images give no batch of "
                   f"{args.probe_batch_size}; lower --probe-batch-size")
    step = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for images, labels in tqdm(loader, desc=f"linear {epoch}", disable=not run.is_main,
                                   leave=False):
            with torch.no_grad(), torch.autocast(run.device.type, dtype=amp_dtype,
                                                 enabled=amp_dtype is not None):
                feats = encoder(to_device_images(images, run.device))
            loss = F.cross_entropy(model(feats.float()), labels.to(run.device))
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total, args.lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return evaluate(encoder, head, setup, run, args)


@torch.no_grad()
def evaluate(encoder: nn.Module, head: nn.Module, setup: EvalSetup, run: DistInfo,
             args: argparse.Namespace) -> dict:
    """Top-1/top-5 (%) on the centre-crop validation split; counts summed over ranks."""
    head.eval()
    top = 5 if setup.num_classes >= 5 else 1
    counts = torch.zeros(3, device=run.device)  # top-1 hits, top-5 hits, images
    loader = DataLoader(shard(setup.val_set, run.rank, run.world_size),
                        batch_size=args.batch_size, num_workers=args.workers)
    amp_dtype = AMP_DTYPES[args.amp]
    for images, labels in loader:
        with torch.autocast(run.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            feats = encoder(to_device_images(images, run.device))
        pred = head(feats.float()).topk(top, dim=1).indices
        hits = pred == labels.to(run.device).unsqueeze(1)
        counts += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(),
                               torch.tensor(len(labels), device=run.device)]).float()
    if run.distributed:
        dist.all_reduce(counts)
    top1, top5, n = counts.tolist()
    result = {"linear_top1": 100.0 * top1 / n}
    if top == 5:
        result["linear_top5"] = 100.0 * top5 / n
    return result


def main(args: argparse.Namespace) -> dict:
    if args.epochs < 1 or args.lr <= 0 or args.weight_decay < 0:
        raise fail("--epochs must be >= 1, --lr > 0 and --weight-decay >= 0")
    if args.probe_batch_size % env_world_size():
        raise fail(f"--probe-batch-size {args.probe_batch_size} must be divisible by the number "
                   f"of processes ({env_world_size()})")
    run = init_distributed(args.device)
    try:
        seed_everything(args.seed)
        augment = args.protocol == "augment"
        setup = setup_eval(args, train_eval_transform if augment else None)
        backbone = setup.encoder.encoder.net
        before = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
        timer = Timer()
        fit = linear_with_augmentation if augment else linear_on_features
        result = fit(setup, run, args)
        check_frozen(before, backbone.cpu())  # raises if the backbone changed
        result.update(setup.info, protocol=args.protocol, epochs=args.epochs, lr=args.lr,
                      time=timer.elapsed(), backbone_frozen=True)
        if run.is_main:
            path = write_result(result, args.output, args.checkpoint, "linear_eval.json")
            top5 = f", top-5 {result['linear_top5']:.2f}%" if "linear_top5" in result else ""
            print0(f"linear top-1: {result['linear_top1']:.2f}%{top5} | {args.protocol}, "
                   f"{args.epochs} epochs | {setup.info['dataset']} {setup.info['num_train']} "
                   f"train / {setup.info['num_val']} val | {path}")
        return result
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
