"""Quickstart: BYOL on scikit-learn's bundled digits, on a laptop CPU, in a few minutes.

Pretrains a small ResNet with BYOL on the unlabelled training digits, then compares a kNN
classifier on its features with the same classifier on a randomly initialised network.
Nothing is downloaded (the digits ship with scikit-learn).

    pip install -e ".[examples]"
    python examples/quickstart.py            # ~3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from timm.models.resnet import BasicBlock, ResNet
from tqdm import tqdm

from data import load_digits  # examples/data.py: scikit-learn's digits as uint8 images
from recipes import DIGIT_VIEWS, cifar_stem_  # digit-safe views, the CIFAR stem

from byol_pytorch import BYOL, BYOLAugment
from byol_pytorch.augment import to_float_images
from byol_pytorch.eval import knn_accuracy


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--image-size", type=int, default=16,
                        help="digits are 8x8; they are upsampled to this size")
    parser.add_argument("--test-size", type=int, default=500, help="held-out digits for kNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/quickstart"))
    return parser


def load_digits_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as (N, 3, S, S) float images in [0, 1] and (N,) labels."""
    images, labels = load_digits()  # (N, 3, 8, 8) uint8
    images = F.interpolate(to_float_images(images), size=image_size, mode="bilinear",
                           align_corners=False)
    return images.clamp(0, 1), labels


def small_resnet() -> nn.Module:
    """A half-width ResNet-10 (timm; one BasicBlock per stage) with the CIFAR stem: 1.2M params."""
    net = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, stem_width=32,
                 channels=(32, 64, 128, 256))
    return cifar_stem_(net)


def digit_views(image_size: int) -> tuple[BYOLAugment, BYOLAugment]:
    """The paper's two views, adapted to digits (recipes.DIGIT_VIEWS: no flips, milder crops)."""
    common = dict(DIGIT_VIEWS, blur_p=0.0)
    return BYOLAugment(image_size, **common), BYOLAugment(image_size, solarize_p=0.2, **common)


@torch.no_grad()
def knn_top1(learner: BYOL, train_x, train_y, test_x, test_y) -> float:
    """kNN (k=20) top-1 accuracy of the learner's representation, in percent."""
    was_training = learner.training
    learner.eval()
    def embed(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([learner(b, return_embedding=True, return_projection=False)
                          for b in x.split(256)])

    acc = knn_accuracy(embed(train_x), train_y, embed(test_x), test_y, k=20)["knn_top1@20"]
    learner.train(was_training)
    return acc


def main(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    images, labels = load_digits_images(args.image_size)
    order = torch.randperm(len(images))
    test_idx, train_idx = order[: args.test_size], order[args.test_size:]
    train_x, train_y = images[train_idx], labels[train_idx]
    test_x, test_y = images[test_idx], labels[test_idx]

    backbone = small_resnet()
    steps_per_epoch = len(train_x) // args.batch_size
    view1, view2 = digit_views(args.image_size)
    learner = BYOL(backbone, image_size=args.image_size, hidden_layer="global_pool",
                   projection_size=128, projection_hidden_size=512, augment_fn=view1,
                   augment_fn2=view2, total_steps=args.epochs * steps_per_epoch)
    optimizer = torch.optim.Adam(learner.parameters(), lr=args.lr)
    print(f"BYOL on {len(train_x)} unlabelled digits ({args.image_size}px), "
          f"{args.epochs} epochs of {steps_per_epoch} steps; kNN on {len(test_x)} held-out digits")

    random_init_acc = knn_top1(learner, train_x, train_y, test_x, test_y)
    print(f"kNN top-1 with random init: {random_init_acc:.1f}%")

    start = time.time()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(train_x))[: steps_per_epoch * args.batch_size]
        bar = tqdm(perm.view(steps_per_epoch, args.batch_size),
                   desc=f"epoch {epoch + 1}/{args.epochs}")
        for batch_idx in bar:
            loss = learner(train_x[batch_idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
            bar.set_postfix(loss=f"{loss.item():.3f}", tau=f"{learner.tau:.4f}")

    learned_acc = knn_top1(learner, train_x, train_y, test_x, test_y)
    print(f"kNN top-1 after BYOL:       {learned_acc:.1f}%  (random init: {random_init_acc:.1f}%, "
          f"{time.time() - start:.0f}s of training)")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "backbone.pt"
    torch.save(backbone.state_dict(), path)  # the user's own network, trained in place
    print(f"saved the improved backbone to {path}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
