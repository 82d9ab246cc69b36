#!/usr/bin/env python
"""Peak memory per image of a training step: ours against byol-pytorch 0.9.1.

Each implementation runs in a FRESH worker process (``step.py``'s worker; the peer in its own
interpreter), one after the other: build, warm up (the peer's target and both optimizers'
state exist by then), then measure a few steps:

* CUDA: ``torch.cuda.max_memory_allocated`` over the steps, after ``reset_peak_memory_stats``;
  "resident" = ``memory_allocated`` before them (weights, target, Adam state);
* CPU: the process's peak RSS (VmHWM, reset through /proc/self/clear_refs before the steps);
  "resident" = VmRSS before them. glibc is told to serve every allocation of 64 KiB or more
  with mmap (MALLOC_MMAP_THRESHOLD_=65536) so that freed activations leave the RSS and the
  high-water mark measures the step, not the allocator's cache.

"per image" = (peak - resident) / batch: the activation memory one more image costs.

    python benchmarks/memory.py                            # CPU: resnet18, 64 px, batch 32
    python benchmarks/memory.py --device cuda --arch resnet50 --image-size 224 --batch 128 --dtype bf16
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import env_lines, git_rev, table  # noqa: E402
from step import PEER_PYTHON, Worker, python_for  # noqa: E402

MIB = 2 ** 20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--peer-python", default=PEER_PYTHON)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", choices=["off", "on"], default="off")
    p.add_argument("--impls", default="ours,ours-joint,peer,peer-default",
                   help="rows, from step.py's IMPLS (e.g. ours-compiled for torch.compile)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    cfg = dict(device=args.device, arch=args.arch, image_size=args.image_size, batch=args.batch,
               dtype=args.dtype, channels_last=args.channels_last, warmup=args.warmup)
    env = {} if args.device.startswith("cuda") else {"MALLOC_MMAP_THRESHOLD_": "65536"}
    rows = []
    kind = ""
    for name in args.impls.split(","):
        w = Worker(name, python_for(name, args), args, cfg, env_extra=env)
        try:
            info = w.ready()
            rep = w.ask(cmd="mem", steps=args.steps)
        finally:
            w.close()
        kind = rep["kind"]
        act = rep["peak"] - rep["resident"]
        rows.append([name, f"{info['impl']} {info['version']}", f"{rep['resident'] / MIB:.0f}",
                     f"{rep['peak'] / MIB:.0f}", f"{act / MIB:.0f}",
                     f"{act / args.batch / MIB:.2f}", f"{rep['peak'] / args.batch / MIB:.1f}"])

    print(f"## Peak memory of a training step: {args.arch} {args.image_size}px, batch "
          f"{args.batch}, {args.dtype}, channels_last {args.channels_last}, {args.device}\n")
    for line in env_lines(args.device):
        print(line)
    print(f"- ours: git {git_rev()}; measure: {kind}; fresh process per row; "
          f"{args.warmup} warm-up steps, then {args.steps} measured\n")
    print(table(["impl", "library", "resident before MiB", "peak MiB", "peak - resident MiB",
                 "per image MiB (peak - resident)", "per image MiB (peak, total)"], rows))


if __name__ == "__main__":
    main()
