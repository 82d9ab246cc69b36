"""Target network: a frozen copy, the EMA formula, buffers copied, no gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from byol_pytorch.ema import ema_update_, make_target


def make_pair() -> tuple[nn.Module, nn.Module]:
    """(online, target): Linear + BatchNorm1d, the online side moved away from its copy."""
    target = make_target(online := nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    assert all(o.requires_grad and not t.requires_grad and torch.equal(o, t) and o is not t
               for o, t in zip(online.parameters(), target.parameters()))  # a frozen copy
    with torch.no_grad():
        for x in (*online.parameters(), online[1].running_mean, online[1].num_batches_tracked):
            x.add_(torch.randint_like(x, 1, 9))
    return online, target


def test_formula_buffers_and_tau_one_and_zero() -> None:
    online, target = make_pair()
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 1.0)  # tau 1 freezes the parameters
    assert all(torch.equal(a, b) for a, b in zip(before, target.parameters()))
    ema_update_(target, online, 0.9)
    for got, t, o in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(got, 0.9 * t + 0.1 * o, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(dict(target.named_buffers()), dict(online.named_buffers()),
                               rtol=0, atol=0)  # buffers (BatchNorm statistics) are copied
    ema_update_(target, online, 0.0)  # tau 0 copies
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))


def test_no_gradient_reaches_target_and_errors() -> None:
    online, target = make_pair()
    (online(x := torch.randn(4, 3, requires_grad=True)).sum() + target(x).sum()).backward()
    assert x.grad is not None and all(p.grad is not None for p in online.parameters())
    assert all(p.grad is None for p in target.parameters())
    with pytest.raises(ValueError, match=r"tau must lie in \[0, 1\]"):
        ema_update_(target, online, 1.5)
    with pytest.raises(ValueError, match="differ"):
        ema_update_(nn.Linear(3, 4), online, 0.5)
