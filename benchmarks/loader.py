"""Pretraining loader throughput per CPU worker: images/s of the worker-side transform.

Compares, on real JPEG photos decoded from disk (the photos scikit-learn and matplotlib ship,
written to a temporary folder and read through torchvision's ``ImageFolder`` as pretrain.py
does):

* ``before``: the former pipeline: decode, resize the short side to 256, centre crop 256 x 256
  (the device then cut both views' crops inside that centre);
* ``after``: :class:`examples/data.PretrainViews`: decode, then cut both views' random
  resized crops from the full-resolution image and resize each to 224 (bicubic), as the
  official BYOL input pipeline.

Each round reads every image once through each pipeline, in process (one worker's work);
rounds alternate the two and the table gives medians and the ratio of one run.

    python benchmarks/loader.py --rounds 8 > benchmarks/results/loader_cpu.txt
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from _common import REPO_ROOT, env_lines, git_rev, interleaved, iqr, median, table
from torchvision.transforms import v2

sys.path.insert(0, str(REPO_ROOT / "examples"))
from data import PretrainViews, SeededViews  # noqa: E402


def write_photos(root: Path, copies: int) -> int:
    """``copies`` JPEG copies of every bundled photo under root/photos/; returns the count."""
    from matplotlib import cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images

    images = [Image.fromarray(img) for img in load_sample_images().images]
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        images.append(Image.open(f).convert("RGB"))
    folder = root / "photos"
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        for k in range(copies):
            img.save(folder / f"{i}_{k}.jpg", quality=90)
    return len(images) * copies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--copies", type=int, default=10, help="copies of each photo on disk")
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs one thread

    import torchvision.datasets as tvd

    with tempfile.TemporaryDirectory() as tmp:
        n = write_photos(Path(tmp), args.copies)
        before = tvd.ImageFolder(tmp, v2.Compose([
            v2.ToImage(), v2.RGB(), v2.Resize(int(args.image_size * 256 / 224), antialias=True),
            v2.CenterCrop(int(args.image_size * 256 / 224))]))
        crops = PretrainViews(args.image_size)
        after = SeededViews(tvd.ImageFolder(tmp, crops), crops)

        def read_before() -> None:
            for i in range(n):
                before[i]

        def read_after() -> None:
            for i in range(n):
                after[(i, i)]

        times = interleaved({"before": read_before, "after": read_after}, "cpu", args.rounds,
                            warmup=1)
    print(f"## Pretraining loader, one worker: {n} JPEG photos (427x640 and 600x512) per round\n")
    print("\n".join(env_lines("cpu")))
    print(f"- ours: git {git_rev()}; {args.rounds} rounds, alternated\n")
    rows = []
    for name, what in (("before", "decode, short side -> 256, centre crop 256 (one image)"),
                       ("after", "decode, 2 crops of the full image -> 224 bicubic (two views)")):
        med = median(times[name])
        lo, hi = iqr(times[name])
        rows.append([name, what, f"{n / med:.1f}", f"{n / hi:.1f}-{n / lo:.1f}"])
    print(table(["pipeline", "work per image", "images/s per worker (median)", "IQR"], rows))
    ratio = median([b / a for a, b in zip(times["after"], times["before"])])
    print(f"\nafter / before throughput (median of per-round ratios): {ratio:.2f}x")


if __name__ == "__main__":
    main()
