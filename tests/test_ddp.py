"""DistributedDataParallel on CPU: 2 processes, gloo, plain DDP (no find_unused_parameters)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from byol_pytorch import BYOL, update_moving_average

WORLD_SIZE = 2
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, sync_bn: bool, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
    net = torchvision.models.resnet18(num_classes=10)
    learner = BYOL(net, image_size=32, projection_size=16, projection_hidden_size=32)  # hidden -2
    if sync_bn:
        learner = nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    model = DDP(learner)  # plain DDP: the unused classifier must not break the reducer
    target_start = [p.clone() for p in learner.target_encoder.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(STEPS):
        images = torch.rand(4, 3, 32, 32)  # different data on each rank
        loss = model(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_moving_average(model)
    ignored = set(learner._ddp_params_and_buffers_to_ignore)
    assert ignored == {"online_encoder.net.fc.weight", "online_encoder.net.fc.bias"}
    # The classifier after the hooked layer is outside the representation: DDP ignores it and it
    # is never trained (it keeps each rank's initial values); every other weight must agree.
    trained = [p for n, p in learner.named_parameters() if n not in ignored and p.requires_grad]
    assert all(p.grad is not None for p in trained)
    online = torch.cat([p.detach().flatten() for p in trained])
    target = torch.cat([p.detach().flatten() for n, p in learner.target_encoder.named_parameters()
                        if f"online_encoder.{n}" not in ignored])
    moved = max((a - b).abs().max().item() for a, b in zip(target_start, learner.target_encoder.parameters()))
    torch.save({"online": online, "target": target, "moved": moved, "step": learner.step},
               os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


# SyncBatchNorm under DDP needs CUDA ("SyncBatchNorm layers only work with GPU modules").
@pytest.mark.parametrize("sync_bn", [False, pytest.param(True, marks=pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 GPUs"))])
def test_ddp_two_processes_gloo(tmp_path, sync_bn):
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    mp.spawn(_worker, args=(_free_port(), sync_bn, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE))
    assert torch.equal(r0["online"], r1["online"]), "online weights diverged across ranks"
    assert torch.equal(r0["target"], r1["target"]), "target weights diverged across ranks"
    assert r0["moved"] > 0 and r1["moved"] > 0, "the target was not updated"
    assert r0["step"] == r1["step"] == STEPS
