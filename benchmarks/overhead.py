#!/usr/bin/env python
"""What the BYOL wrapper costs on top of the compute it cannot avoid.

Times, alternating in one process (each round runs every item once, the order rotating):

* ``full``: our training step, ``loss = learner(x)`` (augmentation included), backward, Adam,
  ``update_moving_average()``;
* ``bare``: the unavoidable compute of that step: the same backbone (classifier replaced by
  ``nn.Identity``, no hooks) + projector + predictor, forward/backward on two pre-made views,
  a frozen copy (the target) forward on both views under ``no_grad``, the loss, Adam. No
  augmentation, no hooks, no checks, no EMA. One pass per view;
* ``wrapper, no aug/EMA``: ``learner(view1, x2=view2)`` on the same pre-made views + backward + Adam:
  the wrapper's forward without augmentation and EMA (hooks, heads, classifier, checks, loss);
* ``augmentation``: both default views of the batch;
* ``EMA update``: ``learner.update_moving_average()``;
* ``loss``: ``symmetric_byol_loss`` + ``projection_std`` forward and backward on (B, 256) tensors;
* ``supervised``: a plain supervised step of the backbone (cross-entropy, Adam) on the batch,
  for reference (BYOL does about 8/3 of its work: two views forward+backward, two forward only).

    python benchmarks/overhead.py                      # CPU: resnet18, 64 px, batch 32
    python benchmarks/overhead.py --device cuda --arch resnet50 --image-size 224 --batch 128
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import env_lines, git_rev, interleaved, iqr, median, table  # noqa: E402

from byol_pytorch import BYOL, symmetric_byol_loss  # noqa: E402
from byol_pytorch.heads import MLP  # noqa: E402
from byol_pytorch.monitor import projection_std  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--view-batching", default="separate", help="ours with this view_batching")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--repeat", type=int, default=1, help="calls per timing (use >1 on GPU)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    b, s = args.batch, args.image_size
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def backbone() -> nn.Module:
        return getattr(torchvision.models, args.arch)().to(device, memory_format=fmt)

    # ---- ours
    learner = BYOL(backbone(), s, use_simplicial_embeddings=False,
                   view_batching=args.view_batching).to(device)
    opt = torch.optim.Adam(learner.parameters(), lr=3e-4)
    x = torch.rand(b, 3, s, s, device=device).contiguous(memory_format=fmt)
    with torch.no_grad():
        view1, view2 = learner.augment1(x), learner.augment2(x)

    def full() -> None:
        with amp:
            loss = learner(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        learner.update_moving_average()

    def wrapper_no_aug() -> None:
        with amp:
            loss = learner(view1, x2=view2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def augmentation() -> None:
        with torch.no_grad():
            learner.augment1(x)
            learner.augment2(x)

    def ema() -> None:
        learner.update_moving_average()

    q = torch.randn(4, b, 256, device=device, requires_grad=True)

    def loss_only() -> None:
        q1, q2, z1, z2 = q.unbind(0)
        projection_std(z1.detach())
        symmetric_byol_loss(q1, q2, z1.detach(), z2.detach()).backward()

    # ---- bare compute: no augmentation, hooks, checks or EMA
    trunk = backbone()
    trunk.fc = nn.Identity()  # torchvision ResNets: avgpool -> flatten -> fc
    with torch.no_grad():
        dim = trunk(x[:2]).shape[1]
    online = nn.Sequential(trunk, MLP(dim, 4096, 256)).to(device)
    predictor = MLP(256, 4096, 256).to(device)
    target = copy.deepcopy(online).requires_grad_(False)
    bare_opt = torch.optim.Adam(list(online.parameters()) + list(predictor.parameters()), lr=3e-4)

    def cos_loss(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (2 - 2 * (F.normalize(a.float(), dim=-1) * F.normalize(c.float(), dim=-1)).sum(-1)).mean()

    def bare() -> None:
        with amp:
            q1, q2 = predictor(online(view1)), predictor(online(view2))
            with torch.no_grad():
                t1, t2 = target(view1), target(view2)
            loss = cos_loss(q1, t2) + cos_loss(q2, t1)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    # ---- supervised reference
    sup = backbone()
    sup_opt = torch.optim.Adam(sup.parameters(), lr=3e-4)
    labels = torch.randint(0, 1000, (b,), device=device)

    def supervised() -> None:
        with amp:
            loss = F.cross_entropy(sup(view1), labels)
        sup_opt.zero_grad(set_to_none=True)
        loss.backward()
        sup_opt.step()

    fns = {"full": full, "bare": bare, "wrapper, no aug/EMA": wrapper_no_aug,
           "augmentation": augmentation, "EMA update": ema, "loss": loss_only,
           "supervised": supervised}
    times = interleaved(fns, device, args.rounds, warmup=args.warmup, repeat=args.repeat)
    med = {k: median(v) for k, v in times.items()}

    print(f"## Wrapper overhead: {args.arch} {s}px, batch {b}, {args.dtype}, "
          f"channels_last {'on' if args.channels_last else 'off'}, "
          f"view_batching {args.view_batching!r}, {device.type}\n")
    for line in env_lines(device):
        print(line)
    print(f"- ours: git {git_rev()}; {args.rounds} rounds, items alternated, after "
          f"{args.warmup} warm-up calls each\n")
    rows = []
    for k, v in times.items():
        lo, hi = iqr(v)
        rows.append([k, f"{med[k] * 1e3:.1f}", f"{lo * 1e3:.1f}-{hi * 1e3:.1f}",
                     f"{100 * med[k] / med['full']:.1f}%"])
    print(table(["item", "median ms", "IQR ms", "% of full step"], rows))

    hooks_heads = med["wrapper, no aug/EMA"] - med['bare']
    print("\n### Ratios and breakdown of the wrapper's cost\n")
    rows = [
        ["full step / bare compute (one pass per view)", f"{med['full'] / med['bare']:.3f}x",
         "target <= 1.25x (CPU), <= 1.10x (GPU)"],
        ["(full - augmentation) / bare",
         f"{(med['full'] - med['augmentation']) / med['bare']:.3f}x",
         "the wrapper without the augmentation it must do"],
        ["wrapper without aug/EMA / bare", f"{med['wrapper, no aug/EMA'] / med['bare']:.3f}x",
         "hooks, classifier head, checks, loss"],
        ["full step / supervised step", f"{med['full'] / med['supervised']:.2f}x",
         "~2.7x expected from the work alone"],
        ["bare / supervised step", f"{med['bare'] / med['supervised']:.2f}x", ""],
    ]
    print(table(["ratio", "value", "note"], rows))
    extra = med["full"] - med['bare']
    print()
    rows = [
        ["augmentation (both views)", f"{med['augmentation'] * 1e3:.1f}",
         f"{100 * med['augmentation'] / med['full']:.1f}%"],
        ["EMA update", f"{med['EMA update'] * 1e3:.1f}", f"{100 * med['EMA update'] / med['full']:.1f}%"],
        ["hooks + classifier head + checks + loss (wrapper no aug/EMA - bare)",
         f"{hooks_heads * 1e3:.1f}", f"{100 * hooks_heads / med['full']:.1f}%"],
        ["  of which loss + projection_std (timed alone)", f"{med['loss'] * 1e3:.2f}",
         f"{100 * med['loss'] / med['full']:.2f}%"],
        ["total wrapper cost (full - bare)", f"{extra * 1e3:.1f}", f"{100 * extra / med['full']:.1f}%"],
    ]
    print(table(["component", "median ms", "% of full step"], rows))
    print("\n(differences of medians of noisy timings: small components can come out slightly "
          "negative or not add up exactly)")


if __name__ == "__main__":
    main()
