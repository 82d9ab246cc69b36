"""DistributedDataParallel on CPU: 2 processes, gloo, plain DDP (no find_unused_parameters)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from torch.nn.parallel import DistributedDataParallel as DDP

from byol_pytorch import BYOL, update_moving_average

WORLD_SIZE = 2
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CLASSIFIER = ("online_encoder.net.fc.weight", "online_encoder.net.fc.bias")


def _worker(rank: int, port: int, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
    net = torchvision.models.resnet18(num_classes=10)
    learner = BYOL(net, image_size=32, projection_size=16, projection_hidden_size=32)  # hidden -2
    model = DDP(learner)  # plain DDP: the unused classifier must not break the reducer
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(STEPS):
        images = torch.rand(4, 3, 32, 32)  # different data on each rank
        loss = model(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        # The last update, checked against the formula: target = tau * target + (1 - tau) * online
        tau = learner.tau
        before = [p.detach().clone() for p in learner.target_encoder.parameters()]
        update_moving_average(model)
    online = dict(learner.online_encoder.named_parameters())
    expected = [torch.lerp(b, online[n].detach(), 1 - tau)
                for b, (n, _) in zip(before, learner.target_encoder.named_parameters())]
    ema_ok = all(torch.allclose(p, e, atol=1e-7) for p, e in
                 zip(learner.target_encoder.parameters(), expected))
    moved = max((a - b).abs().max().item()
                for a, b in zip(before, learner.target_encoder.parameters()))
    params = dict(learner.named_parameters())
    torch.save({
        "online": torch.cat([p.detach().flatten() for n, p in params.items()
                             if n not in CLASSIFIER and p.requires_grad]),
        "target": torch.cat([p.detach().flatten() for n, p in
                             learner.target_encoder.named_parameters()
                             if f"online_encoder.{n}" not in CLASSIFIER]),
        "classifier": torch.cat([params[n].detach().flatten() for n in CLASSIFIER]),
        "classifier_grad": [params[n].grad for n in CLASSIFIER],
        "trained_have_grads": all(p.grad is not None for n, p in params.items()
                                  if n not in CLASSIFIER and p.requires_grad),
        "ema_ok": ema_ok, "moved": moved, "step": learner.step,
    }, os.path.join(result_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed unavailable")
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE))
    assert torch.equal(r0["online"], r1["online"]), "online weights diverged across ranks"
    assert torch.equal(r0["target"], r1["target"]), "target weights diverged across ranks"
    assert r0["trained_have_grads"] and r1["trained_have_grads"]
    # The classifier after the hooked layer is outside the representation: plain DDP runs without
    # find_unused_parameters, never trains it, and each rank keeps its own initial values.
    assert r0["classifier_grad"] == [None, None] == r1["classifier_grad"]
    assert not torch.equal(r0["classifier"], r1["classifier"])
    # The last EMA update followed the formula and moved the target (not only the first sync).
    assert r0["ema_ok"] and r1["ema_ok"] and r0["moved"] > 0 and r1["moved"] > 0
    assert r0["step"] == r1["step"] == STEPS
