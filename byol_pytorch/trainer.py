"""A minimal training loop with byol-pytorch 0.9.1's ``BYOLTrainer`` interface.

For full recipes (LARS, warm-up, AMP, resume, evaluation) use ``examples/pretrain.py``; this class
exists so that code written against 0.9.1 keeps running. It needs no ``accelerate``: it trains on
CUDA when available, and under DistributedDataParallel when a process group is initialised.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from byol_pytorch.byol import BYOL, unwrap, update_moving_average

__all__ = ["BYOLTrainer", "MockDataset"]


class MockDataset(Dataset):
    """``length`` random images (3, image_size, image_size) in [0, 1], for smoke tests."""

    def __init__(self, image_size: int, length: int) -> None:
        self.image_size, self.length = image_size, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.rand(3, self.image_size, self.image_size)


class BYOLTrainer(nn.Module):
    """Trains ``net`` with BYOL for ``num_train_steps`` and saves its weights periodically.

    Checkpoints are ``checkpoint_folder/checkpoint.{k}.pt`` holding ``net.state_dict()`` every
    ``checkpoint_every`` steps (rank 0 only). Call the trainer (``trainer()``) to run.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        image_size: int,
        hidden_layer: str | int,
        learning_rate: float,
        dataset: Dataset,
        num_train_steps: int,
        batch_size: int = 16,
        optimizer_klass: type[torch.optim.Optimizer] = torch.optim.Adam,
        checkpoint_every: int = 1000,
        checkpoint_folder: str = "./checkpoints",
        byol_kwargs: dict[str, Any] | None = None,
        optimizer_kwargs: dict[str, Any] | None = None,
        accelerator_kwargs: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if num_train_steps <= 0 or batch_size < 2 or checkpoint_every <= 0:
            raise ValueError("num_train_steps and checkpoint_every must be positive and "
                             f"batch_size >= 2, got {num_train_steps}, {checkpoint_every}, "
                             f"{batch_size}")
        if accelerator_kwargs:
            warnings.warn("accelerator_kwargs are ignored: this trainer does not use accelerate",
                          stacklevel=2)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.distributed and self.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        self.net = net.to(self.device)
        learner = BYOL(self.net, image_size=image_size, hidden_layer=hidden_layer,
                       **(byol_kwargs or {})).to(self.device)
        self.byol = nn.parallel.DistributedDataParallel(learner) if self.distributed else learner
        self.optimizer = optimizer_klass(learner.parameters(), lr=learning_rate,
                                         **(optimizer_kwargs or {}))
        sampler = DistributedSampler(dataset) if self.distributed else None
        self.dataloader = DataLoader(dataset, batch_size=batch_size, shuffle=sampler is None,
                                     sampler=sampler, drop_last=True)
        if len(self.dataloader) == 0:
            raise ValueError(f"the dataset has fewer than batch_size={batch_size} images per "
                             "process")
        self.num_train_steps = num_train_steps
        self.checkpoint_every = checkpoint_every
        self.checkpoint_folder = Path(checkpoint_folder)
        self.is_main = not self.distributed or dist.get_rank() == 0
        self.progress = progress and self.is_main
        self.step = 0

    def forward(self) -> list[float]:
        """Run the training loop; returns the loss of every step."""
        learner = unwrap(self.byol)
        learner.train()
        self.checkpoint_folder.mkdir(parents=True, exist_ok=True)
        losses, epoch = [], 0
        bar = tqdm(total=self.num_train_steps, disable=not self.progress, desc="BYOL")
        while self.step < self.num_train_steps:
            if isinstance(self.dataloader.sampler, DistributedSampler):
                self.dataloader.sampler.set_epoch(epoch)
            for images in self.dataloader:
                loss = self.byol(images.to(self.device, non_blocking=True))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if learner.target_encoder is not None:
                    update_moving_average(self.byol)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if self.is_main and self.step % self.checkpoint_every == 0:
                    k = self.step // self.checkpoint_every
                    path = self.checkpoint_folder / f"checkpoint.{k}.pt"
                    torch.save(self.net.state_dict(), path)
                self.step += 1
                if self.step >= self.num_train_steps:
                    break
            epoch += 1
        bar.close()
        return losses
