"""byol-pytorch 0.9.1's module path ``byol_pytorch.byol_pytorch``: every name with 0.9.1's contract.

Each helper is checked against a hand computation; where 0.9.1's interpreter is given
(``BYOL_PEER_PYTHON``) also against 0.9.1's own helpers on the same inputs.
"""

from __future__ import annotations

import random

import torch
from torch import nn

import byol_pytorch
from byol_pytorch.byol_pytorch import (EMA, MLP, SEM, BYOL, MaybeSyncBatchnorm, NetWrapper,
                                       RandomApply, SimSiamMLP, cosine_loss_fn, default, exists,
                                       get_module_device, loss_fn, set_requires_grad, singleton,
                                       update_moving_average)


def test_the_learner_and_its_pieces_are_this_librarys():
    assert BYOL is byol_pytorch.BYOL and NetWrapper is byol_pytorch.NetWrapper
    assert SEM is byol_pytorch.SEM and EMA is byol_pytorch.EMA


def test_small_helpers():
    assert default(None, 3) == 3 and default(0, 3) == 0
    assert exists(0) and not exists(None)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert get_module_device(net) == torch.device("cpu")
    set_requires_grad(net, False)
    assert not any(p.requires_grad for p in net.parameters())
    set_requires_grad(net, True)
    assert all(p.requires_grad for p in net.parameters())


def test_singleton_caches_until_reset():
    class Holder:
        def __init__(self):
            self.built, self.calls = None, 0

        @singleton("built")
        def build(self):
            self.calls += 1
            return object()

    h = Holder()
    first = h.build()
    assert h.build() is first and h.calls == 1
    h.built = None  # 0.9.1's reset_moving_average() pattern
    assert h.build() is not first and h.calls == 2


def test_mlp_heads_take_0_9_1_argument_order():
    mlp = MLP(12, 4, 8)  # (dim, projection_size, hidden_size)
    assert (mlp[0].in_features, mlp[0].out_features, mlp[3].out_features) == (12, 8, 4)
    assert type(mlp[1]) is nn.BatchNorm1d  # no process group: plain BatchNorm
    assert isinstance(MLP(12, 4, 8, sync_batchnorm=True)[1], nn.SyncBatchNorm)
    simsiam = SimSiamMLP(12, 4, 8)
    assert (simsiam[0].in_features, simsiam[3].out_features, simsiam[6].out_features) == (12, 8, 4)
    assert MaybeSyncBatchnorm() is nn.BatchNorm1d and MaybeSyncBatchnorm(True) is nn.SyncBatchNorm


def test_loss_fn_is_per_sample_2_minus_2_cos():
    x, y = torch.randn(5, 7), torch.randn(5, 7)
    expected = 2 - 2 * torch.nn.functional.cosine_similarity(x, y, dim=-1)
    assert torch.allclose(cosine_loss_fn(x, y), expected, atol=1e-6)
    assert loss_fn is cosine_loss_fn
    assert torch.allclose(loss_fn(x, 3 * x), torch.zeros(5), atol=1e-6)


def test_ema_and_three_argument_update_moving_average():
    ema = EMA(0.75)
    old, new = torch.randn(4), torch.randn(4)
    assert torch.allclose(ema.update_average(old, new), 0.75 * old + 0.25 * new)
    assert ema.update_average(None, new) is new
    ma, current = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in ma.parameters()]
    update_moving_average(ema, ma, current)
    for b, m, c in zip(before, ma.parameters(), current.parameters()):
        assert torch.allclose(m, 0.75 * b + 0.25 * c)
    assert all(p.requires_grad for p in ma.parameters())


def test_random_apply_draws_once_per_call_from_pythons_random():
    double = RandomApply(lambda x: 2 * x, p=0.3)
    x = torch.ones(2)
    random.seed(0)
    outcomes = [double(x)[0].item() for _ in range(2000)]
    random.seed(0)
    expected = [2.0 if random.random() <= 0.3 else 1.0 for _ in range(2000)]
    assert outcomes == expected and 0.25 < outcomes.count(2.0) / 2000 < 0.35


def test_helpers_match_0_9_1(peer_runs):
    h = peer_runs["helpers"]
    x, y = h["x"], h["y"]
    assert torch.allclose(cosine_loss_fn(x, y), h["loss"], atol=1e-6)
    assert torch.allclose(SEM(12, 0.5, 3)(x), h["sem"], atol=1e-6)
    assert torch.allclose(EMA(0.75).update_average(x, y), h["ema"], atol=1e-6)
    ma, current = nn.Linear(3, 2), nn.Linear(3, 2)
    ma.load_state_dict(h["ma_before"])
    current.load_state_dict(h["current"])
    update_moving_average(EMA(0.75), ma, current)
    for key, value in ma.state_dict().items():
        assert torch.allclose(value, h["ma"][key], atol=1e-6), key
    for name, fn in (("MLP", MLP), ("SimSiamMLP", SimSiamMLP)):
        state = fn(12, 4, 8).state_dict()
        assert list(state) == h["mlp_keys"][name]
        assert [tuple(t.shape) for t in state.values()] == h["mlp_shapes"][name]
