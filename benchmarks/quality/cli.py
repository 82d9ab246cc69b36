"""The command line and the run: load and split the data, then per seed and model train (not
``random``), evaluate, and save the results after each model (an interrupted run keeps them)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

import byol_pytorch
from byol_pytorch.augment import to_float_images

from . import __doc__ as PROTOCOL
from .budgets import BUDGETS, OVERRIDES, RANDOM_NOTE, VARIANTS, lr_schedule, make_config
from .evaluate import curve, evaluate
from .peers import build_lightly, lightly_available, run_peer
from .report import hardware_info, markdown_table, print_report, summarize, verdict
from .train import BACKBONE_DESCRIPTIONS, BACKBONES, build_ours, seed_everything, state_checksum
from .train import train_model

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "examples"))
from data import load_npz, split_indices  # noqa: E402  (examples/data.py: pretrain.py's split)
from recipes import create_backbone  # noqa: E402  (examples/recipes.py: backbones by name)

DEFAULT_DATA = "../shared/data/cifar10_mini_train.npz"  # relative to the repo root
Snapshots = list[tuple[dict[str, Any], dict[str, Tensor]]]


def resolve_data_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists, else relative to the repo root (how the default is meant)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return (REPO_ROOT / p).resolve()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=PROTOCOL.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="npz with train_images (N,3,H,W) uint8 and train_labels; relative paths "
                        "that do not exist from the cwd are taken from the repo root")
    p.add_argument("--models", nargs="+", default=["random", "ours", "peer", "lightly"],
                   help=f"any of: random {' '.join(VARIANTS)}")
    p.add_argument("--peer-python", default=None,
                   help="interpreter with byol-pytorch 0.9.1 installed; peer models are skipped "
                        "without it")
    p.add_argument("--output", type=Path, default=None, help="JSON results file")
    p.add_argument("--plot", type=Path, default=None,
                   help="PNG of kNN@20 against pretraining time (needs matplotlib)")
    p.add_argument("--from-json", type=Path, default=None,
                   help="no training: re-print the table (and --plot) of this results file")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="write a per-step JSONL log per trained model of ours here")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (init, data order, augmentation); default: the budget's")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--knn-k", type=int, nargs="+", default=[20, 200])
    types = dict(backbone=str, optimizer=str, device=str, precision=str, base_lr=float,
                 weight_decay=float, tau=float, predictor_lr_mult=float)
    for name in OVERRIDES:
        p.add_argument(f"--{name.replace('_', '-')}", type=types.get(name, int), default=None,
                       help="overrides the budget's value")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    """Run the benchmark (or re-print ``--from-json``); the results dict, None when skipped."""
    args = get_args_parser().parse_args(argv)
    if args.from_json is not None:
        result = json.loads(args.from_json.read_text())
        print_report(result, list(result["runs"]), args.plot)
        return result
    unknown = [m for m in args.models if m != "random" and m not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from random {' '.join(VARIANTS)}")
    data = resolve_data_path(args.data)
    if not data.exists():
        print(f"SKIP: data file {data} not found (pass --data)")
        return None
    torch.set_num_threads(args.threads)
    images, labels = load_npz(data)
    if labels is None:
        raise SystemExit(f"{data} has no train_labels: the evaluation needs labels")
    try:
        cfg = make_config(args.budget, images.shape[-1], {k: getattr(args, k) for k in OVERRIDES},
                          seeds=args.seeds, threads=args.threads, knn_k=args.knn_k,
                          split_seed=args.split_seed)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if cfg["device"].startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--budget gpu / --device cuda needs a CUDA device; none is available")
    if not 0 < args.n_test < len(images):
        raise SystemExit(f"--n-test must lie in (0, {len(images)}), got {args.n_test}")
    train_list, test_list = split_indices(len(images), args.n_test / len(images), args.split_seed)
    train_idx, test_idx = np.asarray(train_list), np.asarray(test_list)
    # every library trains on the same floats, converted once (the peer gets them in a file)
    train_images = to_float_images(images[torch.from_numpy(train_idx)])
    try:  # the same LR at each step for every library (random init trains no step)
        lrs = lr_schedule(cfg, len(train_idx)) if set(args.models) - {"random"} else []
    except ValueError as err:
        raise SystemExit(str(err)) from None
    make_plain = BACKBONES[cfg["backbone"]]
    make_ours: Callable[[], nn.Module] = make_plain
    if cfg["backbone"] == "resnet18":  # ours builds it by name, as the examples do; the same
        # weights as the peer's plain-torchvision copy under the same seed (recorded as same_init)
        make_ours = lambda: create_backbone("resnet18", cifar_stem=True)  # noqa: E731
    checksums = []
    for make in (make_ours, make_plain):
        torch.manual_seed(cfg["seeds"][0])
        checksums.append(state_checksum(make().state_dict()))
    has_lightly = lightly_available()
    versions: dict[str, Any] = dict(ours=byol_pytorch.__version__)
    if has_lightly:
        versions["lightly"] = metadata.version("lightly")
    result: dict[str, Any] = dict(
        config=cfg, hardware=hardware_info(cfg["device"]), versions=versions,
        data=dict(path=str(data), n_total=len(images), n_train=len(train_idx),
                  n_test=len(test_idx), source_size=int(images.shape[-1]),
                  image_size=cfg["image_size"],
                  test_idx_sha=hashlib.sha256(test_idx.tobytes()).hexdigest()[:16]),
        backbone=BACKBONE_DESCRIPTIONS[cfg["backbone"]], same_init=checksums[0] == checksums[1],
        runs={name: [] for name in args.models}, notes={})
    print(f"data {data}: {len(train_idx)} train / {len(test_idx)} held-out, "
          f"{images.shape[-1]}px -> {cfg['image_size']}px; budget {args.budget}: {cfg}",
          flush=True)
    print(f"hardware: {result['hardware']}", flush=True)
    run_start = time.perf_counter()

    def finish() -> None:
        result["summary"] = summarize(result["runs"], cfg["knn_k"])
        result["table"] = markdown_table(result["summary"], cfg["knn_k"])
        result["verdict"] = verdict(result["summary"], cfg["knn_k"])
        result["total_wall_s"] = time.perf_counter() - run_start
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=1) + "\n")

    # Seeds outermost: an interrupted run still holds every model for the first seeds.
    for seed in cfg["seeds"]:
        scfg = dict(cfg, seed=seed)
        for name in args.models:
            t0 = time.perf_counter()
            snaps: Snapshots = []
            tag = f"{name} seed {seed}"
            if name == "random":
                seed_everything(seed)
                net = make_ours()
                record: dict[str, Any] = dict(init_checksum=state_checksum(net.state_dict()),
                                              steps=0)
                result["notes"][name] = RANDOM_NOTE
            else:
                library, kwargs, result["notes"][name] = VARIANTS[name]
                skip = None
                if library == "peer" and not args.peer_python:
                    skip = "no --peer-python given"
                elif library == "lightly" and not has_lightly:
                    skip = "lightly is not installed (pip install lightly)"
                if skip:
                    print(f"[{name}] skipped: {skip}", flush=True)
                    result["runs"][name].append(dict(seed=seed, skipped=skip))
                    continue
                if library == "peer":
                    net, record, snaps = run_peer(args.peer_python, name, kwargs, train_images,
                                                  scfg, lrs)
                    result["versions"]["peer"] = record.get("library_version")
                else:
                    log = None
                    if args.log_dir is not None:
                        args.log_dir.mkdir(parents=True, exist_ok=True)
                        log = args.log_dir / f"{name}_seed{seed}_steps.jsonl"
                    build, make = ((build_ours, make_ours) if library == "ours" else
                                   (build_lightly, make_plain))
                    net, record = train_model(build, kwargs, train_images, scfg, lrs, make, tag,
                                              log, on_snapshot=lambda m, s: snaps.append((m, s)))
            record["seed"] = seed
            record.update(evaluate(net, images, labels, train_idx, test_idx, scfg))
            if snaps:
                record["curve"] = curve(snaps, make_plain, images, labels, train_idx, test_idx,
                                        scfg)
            record["total_wall_s"] = time.perf_counter() - t0
            result["runs"][name].append(record)
            knn = ", ".join(f"kNN@{k} {record[f'knn_top1@{k}']:.1f}" for k in cfg["knn_k"])
            print(f"[{tag}] {knn}, linear {record['linear_top1']:.1f} "
                  f"(pretrain {record.get('pretrain_wall_s', 0):.0f}s, "
                  f"total {record['total_wall_s']:.0f}s)", flush=True)
            finish()  # partial results survive an interrupted run

    finish()
    print_report(result, args.models, args.plot)
    print(f"total wall time {result['total_wall_s']:.0f}s")
    return result
