#!/usr/bin/env python
"""Where a training step's time goes: torch.profiler self time grouped by kind of op.

One step as in ``step.py`` (ours: ``loss = learner(x)``, backward, Adam, EMA update), eager or
under ``torch.compile``; prints each group's share of the profiled self CPU time per step.

    python benchmarks/profile_step.py                    # CPU: resnet18, 64 px, batch 32
    python benchmarks/profile_step.py --compile --threads 1
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import env_lines, git_rev, table  # noqa: E402

from byol_pytorch import BYOL  # noqa: E402

# (group, substrings of the profiler's op names), first match wins
GROUPS = [
    # first: the compiled graphs' names hold hashes, which may contain "mm" or "conv"
    ("compiled fused kernels (inductor)", ("CompiledFxGraph", "Torch-Compiled Region", "cpp_fused",
                                           "triton")),
    ("convolution (oneDNN / cuDNN), forward and backward", ("conv", "mkldnn", "cudnn")),
    ("batch norm", ("batch_norm",)),
    ("max pool", ("max_pool",)),
    ("linear layers (heads, predictor)", ("mm", "linear", "matmul")),
    ("optimizer (Adam) and EMA", ("_foreach", "lerp", "addcdiv", "sqrt", "Adam")),
]


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="profiled steps (after 3 warm-up steps)")
    p.add_argument("--compile", action="store_true", help="torch.compile(learner)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--top", type=int, default=8, help="also list this many single ops")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = getattr(torchvision.models, args.arch)().to(memory_format=fmt)
    learner = BYOL(net, args.image_size, hidden_layer=-2)
    opt = torch.optim.Adam(learner.parameters(), lr=3e-4)
    model = torch.compile(learner) if args.compile else learner
    x = torch.rand(args.batch, 3, args.image_size, args.image_size).contiguous(memory_format=fmt)

    def step() -> None:
        loss = model(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        learner.update_moving_average()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total

    print(f"## Profile of one training step: {args.arch} {args.image_size}px, batch {args.batch}, "
          f"{'compiled' if args.compile else 'eager'}, channels_last "
          f"{'on' if args.channels_last else 'off'}, cpu\n")
    for line in env_lines("cpu"):
        print(line)
    print(f"- ours: git {git_rev()}; {args.steps} profiled steps after 3 warm-up steps; "
          f"profiled self CPU time {total / args.steps / 1e3:.1f} ms per step\n")
    rows = [[g, f"{v / args.steps / 1e3:.1f}", f"{100 * v / total:.1f}%"]
            for g, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    print(table(["group", "ms per step", "share"], rows))
    print()
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]
    print(table(["op", "ms per step", "share"],
                [[e.key, f"{e.self_cpu_time_total / args.steps / 1e3:.1f}",
                  f"{100 * e.self_cpu_time_total / total:.1f}%"] for e in top]))


if __name__ == "__main__":
    main()
