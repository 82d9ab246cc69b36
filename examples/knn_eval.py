"""Weighted kNN evaluation of a pretrained backbone (DINO protocol: k = 20 and 200, T = 0.07).

    python examples/knn_eval.py --checkpoint outputs/pretrain/checkpoint.pt
    torchrun --nproc_per_node 8 examples/knn_eval.py --checkpoint outputs/byol_r50/checkpoint.pt \
        --data-path /imagenet

Each process embeds its shard of the training (bank) and validation (query) images with the
frozen backbone (centre crop, ImageNet normalisation, the hooked pretraining layer); features are
gathered to every process and rank 0 prints one line and writes the JSON result.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (Timer, cleanup_distributed, fail, init_distributed, print0,  # noqa: E402
                    seed_everything)
from evaluation import add_eval_args, embed_splits, setup_eval, write_result  # noqa: E402

from byol_pytorch.eval import knn_accuracy  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("BYOL kNN evaluation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_eval_args(p)
    g = p.add_argument_group("kNN")
    g.add_argument("--k", type=int, nargs="+", default=[20, 200],
                   help="neighbour counts (DINO reports 20; 200 is InstDisc's)")
    g.add_argument("--temperature", type=float, default=0.07,
                   help="vote weight exp(cos / T) (InstDisc / DINO)")
    return p


def main(args: argparse.Namespace) -> dict:
    if min(args.k) < 1 or args.temperature <= 0:
        raise fail("--k must be >= 1 and --temperature > 0")
    run = init_distributed(args.device)
    try:
        seed_everything(args.seed)
        setup = setup_eval(args)
        timer = Timer()
        bank, bank_y, query, query_y = embed_splits(
            setup.encoder.to(run.device), (setup.train_set, setup.val_set), run, args.batch_size,
            args.workers)
        ks = sorted({min(k, bank.shape[0]) for k in args.k})
        if ks != sorted(set(args.k)):
            warnings.warn(f"only {bank.shape[0]} training images: k clipped to {ks}")
        result = knn_accuracy(bank, bank_y, query, query_y, k=ks, temperature=args.temperature,
                              num_classes=setup.num_classes)
        result.update(setup.info, feature_dim=bank.shape[1], temperature=args.temperature,
                      time=timer.elapsed())
        if run.is_main:
            path = write_result(result, args.output, args.checkpoint, "knn_eval.json")
            accs = ", ".join(f"{result[f'knn_top1@{k}']:.2f}% (k={k})" for k in ks)
            print0(f"kNN top-1: {accs} | {setup.info['dataset']} {bank.shape[0]} train / "
                   f"{query.shape[0]} val, {bank.shape[1]}-d features | {path}")
        return result
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
