"""Target network: EMA formula, buffers, no gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byol_pytorch.ema import ema_update_, make_target


def make_pair():
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    target = make_target(online)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online[1].running_mean.add_(5.0)
        online[1].num_batches_tracked.add_(3)
    return online, target


def test_make_target_is_frozen_copy():
    online = nn.Linear(3, 2)
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    assert torch.equal(target.weight, online.weight) and target.weight is not online.weight


def test_formula_matches_hand_computation():
    online, target = make_pair()
    tau = 0.9
    expected = [tau * t + (1 - tau) * o for t, o in zip(target.parameters(), online.parameters())]
    ema_update_(target, online, tau)
    for got, want in zip(target.parameters(), expected):
        assert torch.allclose(got, want, atol=1e-7)


def test_buffers_are_copied_including_bn_stats():
    online, target = make_pair()
    ema_update_(target, online, 0.99)
    assert torch.equal(target[1].running_mean, online[1].running_mean)
    assert target[1].num_batches_tracked.item() == online[1].num_batches_tracked.item()


def test_tau_one_freezes_and_zero_copies():
    online, target = make_pair()
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))
    ema_update_(target, online, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))
    assert torch.equal(target[1].running_mean, online[1].running_mean)


def test_no_gradient_reaches_target():
    online, target = make_pair()
    x = torch.randn(4, 3, requires_grad=True)
    (online(x).sum() + target(x).sum()).backward()
    assert x.grad is not None and all(p.grad is not None for p in online.parameters())
    assert all(p.grad is None for p in target.parameters())


def test_errors():
    online, target = make_pair()
    with pytest.raises(ValueError, match=r"tau must lie in \[0, 1\]"):
        ema_update_(target, online, 1.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update_(nn.Linear(3, 4), online, 0.5)
