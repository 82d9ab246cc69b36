#!/usr/bin/env python
"""EMA update time: our fused ``ema_update_`` against per-tensor Python loops.

For each model (torchvision resnet50; timm vit_base_patch16_224 or, without timm, torchvision
vit_b_16; random init) the target is a frozen deep copy and each variant does the same work
(parameters averaged with tau = 0.996, buffers copied), timed alternately in one process:

* ``ours: ema_update_``: ``torch._foreach_lerp_`` + ``torch._foreach_copy_`` over the tensors of
  both networks, paired by name at every call (byol_pytorch.ema);
* ``loop in place``: ``for t, o in zip(...): t.mul_(tau).add_(o, alpha=1 - tau)``;
* ``loop out of place``: ``t.data = t.data * tau + (1 - tau) * o.data`` (the pattern
  byol-pytorch 0.9.1 uses; it allocates a new tensor per parameter).

    python benchmarks/ema.py                        # CPU
    python benchmarks/ema.py --device cuda --repeat 20
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torchvision
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import env_lines, git_rev, interleaved, iqr, median, table  # noqa: E402

from byol_pytorch.ema import ema_update_, make_target  # noqa: E402

TAU = 0.996


def build(name: str) -> nn.Module:
    if name == "vit_base":
        try:
            import timm

            return timm.create_model("vit_base_patch16_224", pretrained=False)
        except ImportError:
            return torchvision.models.vit_b_16()
    return getattr(torchvision.models, name)()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default="resnet50,vit_base")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1, help="updates per timing")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print("## EMA update of the target network\n")
    for line in env_lines(device):
        print(line)
    print(f"- ours: git {git_rev()}; tau {TAU}; {args.rounds} rounds x {args.repeat} update(s), "
          "variants alternated\n")
    for name in args.models.split(","):
        torch.manual_seed(0)
        online = build(name).to(device)
        target = make_target(online)
        params_o, params_t = list(online.parameters()), list(target.parameters())
        bufs_o, bufs_t = list(online.buffers()), list(target.buffers())

        def fused() -> None:
            ema_update_(target, online, TAU)

        @torch.no_grad()
        def loop_in_place() -> None:
            for t, o in zip(params_t, params_o):
                t.mul_(TAU).add_(o, alpha=1 - TAU)
            for t, o in zip(bufs_t, bufs_o):
                t.copy_(o)

        @torch.no_grad()
        def loop_out_of_place() -> None:
            for t, o in zip(params_t, params_o):
                t.data = t.data * TAU + (1 - TAU) * o.data
            for t, o in zip(bufs_t, bufs_o):
                t.copy_(o)

        fns = {"ours: ema_update_ (fused)": fused,
               "per-tensor loop, in place (mul_/add_)": loop_in_place,
               "per-tensor loop, out of place (as byol-pytorch 0.9.1)": loop_out_of_place}
        times = interleaved(fns, device, args.rounds, warmup=2, repeat=args.repeat)
        ref = median(times["per-tensor loop, in place (mul_/add_)"])
        n_params = sum(t.numel() for t in params_o)
        print(f"### {name}: {n_params / 1e6:.1f} M parameters in {len(params_o)} tensors, "
              f"{len(bufs_o)} buffers, {device.type}\n")
        rows = []
        for k, v in times.items():
            lo, hi = iqr(v)
            rows.append([k, f"{median(v) * 1e3:.2f}", f"{lo * 1e3:.2f}-{hi * 1e3:.2f}",
                         f"{ref / median(v):.2f}x"])
        print(table(["variant", "median ms", "IQR ms", "speed vs in-place loop"], rows) + "\n",
              flush=True)
        del online, target, params_o, params_t, bufs_o, bufs_t


if __name__ == "__main__":
    main()
