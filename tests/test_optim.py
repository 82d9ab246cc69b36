"""LARS against hand-computed updates, and the bias/norm parameter split."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from byol_pytorch.optim import LARS, param_groups

def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def _reference(p, grads, lr, momentum, wd, eta, eps, nesterov, exclude=False):
    """The LARS rule written out with Python floats, one element at a time."""
    p, v = [float(x) for x in p], None
    for g in grads:
        g = [float(x) for x in g]
        if not exclude:
            g = [gi + wd * pi for gi, pi in zip(g, p)]
            p_norm, g_norm = math.sqrt(sum(x * x for x in p)), math.sqrt(sum(x * x for x in g))
            trust = eta * p_norm / (g_norm + eps) if p_norm > 0 and g_norm > 0 else 1.0
            g = [trust * gi for gi in g]
        v = g if v is None else [momentum * vi + gi for vi, gi in zip(v, g)]
        d = [gi + momentum * vi for gi, vi in zip(g, v)] if nesterov else v
        p = [pi - lr * di for pi, di in zip(p, d)]
    return torch.tensor(p, dtype=torch.float64)


def test_two_steps_match_hand_computation() -> None:
    # ||p|| = 5, ||g|| = 0.5 -> trust 0.01, g' = (0.003, 0.004) = v_1, p_1 = (2.997, 3.996).
    # ||p_1|| = 4.995 -> trust 0.00999, g' = (0.002997, 0.003996),
    # v_2 = 0.9 v_1 + g' = (0.005697, 0.007596), p_2 = p_1 - v_2.
    p = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    opt = LARS([p], lr=1.0, momentum=0.9, eps=0.0)
    g = torch.tensor([0.3, 0.4], dtype=torch.float64)
    _run(opt, [p], [[g]])
    torch.testing.assert_close(p.detach(), torch.tensor([2.997, 3.996], dtype=torch.float64))
    _run(opt, [p], [[g]])
    torch.testing.assert_close(p.detach(), torch.tensor([2.991303, 3.988404], dtype=torch.float64))
    torch.testing.assert_close(opt.state[p]["momentum_buffer"],
                               torch.tensor([0.005697, 0.007596], dtype=torch.float64))


def test_clip_lr_caps_each_layer_rate_at_lr() -> None:
    # ||p|| = 5, ||g|| = 0.5, eta 0.02 -> trust 0.2. lr 0.1: lr * trust = 0.02 < 0.1, so the
    # clipped ratio is min(0.2 / 0.1, 1) = 1: a plain SGD step p - 0.1 g = (2.97, 3.96).
    # lr 1.0: trust 0.2 < 1 is kept, p - 1.0 * 0.2 g = (2.94, 3.92) with or without clipping.
    g = torch.tensor([0.3, 0.4], dtype=torch.float64)
    for lr, clip, expected in [(0.1, True, [2.97, 3.96]), (0.1, False, [2.994, 3.992]),
                               (1.0, True, [2.94, 3.92]), (1.0, False, [2.94, 3.92])]:
        p = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
        opt = LARS([p], lr=lr, momentum=0.9, trust_coefficient=0.02, eps=0.0, clip_lr=clip)
        _run(opt, [p], [[g]])
        torch.testing.assert_close(p.detach(), torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("nesterov", [False, True])
def test_decayed_and_excluded_groups_match_reference(nesterov: bool) -> None:
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    w0, b0 = w.detach().clone(), b.detach().clone()
    grads = [[torch.randn(3, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)]
             for _ in range(2)]
    hp = dict(lr=0.5, momentum=0.9, eps=1e-8, nesterov=nesterov)
    groups = [dict(params=[w], weight_decay=0.1),
              dict(params=[b], weight_decay=0.1, lars_exclude=True)]  # decay must be ignored
    opt = LARS(groups, trust_coefficient=0.02, **hp)
    _run(opt, [w, b], grads)
    ref_kw = dict(lr=0.5, momentum=0.9, wd=0.1, eta=0.02, eps=1e-8, nesterov=nesterov)
    expected_w = _reference(w0.flatten(), [g[0].flatten() for g in grads], **ref_kw)
    expected_b = _reference(b0, [g[1] for g in grads], exclude=True, **ref_kw)
    torch.testing.assert_close(w.detach().flatten(), expected_w)
    torch.testing.assert_close(b.detach(), expected_b)

    # The excluded group is exactly SGD with momentum and no weight decay.
    b_sgd = b0.clone().requires_grad_(True)
    sgd = torch.optim.SGD([b_sgd], lr=0.5, momentum=0.9, nesterov=nesterov)
    _run(sgd, [b_sgd], [[g[1]] for g in grads])
    torch.testing.assert_close(b.detach(), b_sgd.detach(), rtol=0, atol=1e-12)


def test_zero_norms_give_trust_one() -> None:
    zero_p = torch.zeros(4, requires_grad=True)  # ||p|| = 0 -> plain SGD step
    zero_g = torch.ones(4, requires_grad=True)  # ||g|| = 0 -> no change
    opt = LARS([zero_p, zero_g], lr=0.1, momentum=0.0)
    g = torch.tensor([1.0, -2.0, 3.0, 0.5])
    _run(opt, [zero_p, zero_g], [[g, torch.zeros(4)]])
    torch.testing.assert_close(zero_p.detach(), -0.1 * g)
    torch.testing.assert_close(zero_g.detach(), torch.ones(4))
    assert not torch.isnan(zero_p).any()


def test_bf16_parameters() -> None:
    p32 = torch.randn(64, 32, requires_grad=True)
    p16 = p32.detach().to(torch.bfloat16).requires_grad_(True)
    g = torch.randn(64, 32)
    for p, opt in ((p32, LARS([p32], lr=1.0, weight_decay=1e-3)),
                   (p16, LARS([p16], lr=1.0, weight_decay=1e-3))):
        _run(opt, [p], [[g.to(p.dtype)]] * 2)
    assert p16.dtype == torch.bfloat16
    assert opt.state[p16]["momentum_buffer"].dtype == torch.bfloat16
    torch.testing.assert_close(p16.float(), p32.detach(), rtol=2e-2, atol=2e-2)


def test_closure_and_state_dict_round_trip() -> None:
    torch.manual_seed(2)
    model = nn.Linear(4, 2)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    opt = LARS(param_groups(model, 1e-3), lr=0.5)

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure)
    assert isinstance(first, torch.Tensor) and first.ndim == 0
    clone = nn.Linear(4, 2)
    clone.load_state_dict(model.state_dict())
    opt2 = LARS(param_groups(clone, 1e-3), lr=0.5)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # buffers are shared
    opt.step(closure)
    opt2.zero_grad()
    nn.functional.mse_loss(clone(x), y).backward()
    opt2.step()
    for a, b in zip(model.parameters(), clone.parameters()):
        torch.testing.assert_close(a, b)
    assert opt.step(closure) < first


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lr=-0.1), "lr must be >= 0"),
        (dict(lr=float("nan")), "lr must be >= 0"),
        (dict(lr=0.1, momentum=1.0), "momentum must lie in"),
        (dict(lr=0.1, momentum=-0.5), "momentum must lie in"),
        (dict(lr=0.1, weight_decay=-1e-6), "weight_decay must be >= 0"),
        (dict(lr=0.1, trust_coefficient=0.0), "trust_coefficient must be > 0"),
        (dict(lr=0.1, eps=-1.0), "eps must be >= 0"),
        (dict(lr=0.1, momentum=0.0, nesterov=True), "nesterov=True needs momentum"),
    ],
)
def test_lars_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LARS([torch.zeros(2, requires_grad=True)], **kwargs)


def test_lars_rejects_bad_group_override() -> None:
    with pytest.raises(ValueError, match="momentum must lie in"):
        LARS([dict(params=[torch.zeros(2, requires_grad=True)], momentum=2.0)], lr=0.1)


def test_lars_rejects_sparse_gradients() -> None:
    emb = nn.Embedding(5, 3, sparse=True)
    opt = LARS(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups_resnet18() -> None:
    model = torchvision.models.resnet18(num_classes=10)
    decay, excluded = param_groups(model, weight_decay=1.5e-6)
    assert decay == {**decay, "weight_decay": 1.5e-6, "lars_exclude": False}
    assert excluded["weight_decay"] == 0.0 and excluded["lars_exclude"] is True
    assert all(p.ndim >= 2 for p in decay["params"])
    assert all(p.ndim < 2 for p in excluded["params"])
    decay_names, excluded_names = _names(model, decay), _names(model, excluded)
    assert decay_names.isdisjoint(excluded_names)
    assert decay_names | excluded_names == {n for n, _ in model.named_parameters()}
    assert "fc.weight" in decay_names and "conv1.weight" in decay_names
    assert {"fc.bias", "bn1.weight", "bn1.bias", "layer4.1.bn2.weight"} <= excluded_names
    assert all(n.endswith("bias") or ".bn" in n or n.startswith("bn") or "downsample.1" in n
               for n in excluded_names)
    assert len(decay["params"]) == 21 and len(excluded["params"]) == 41  # 20 convs + fc; 20 BNs
    LARS(param_groups(model, 1e-6), lr=0.1)  # accepted as-is


def test_param_groups_mlp_shared_and_frozen() -> None:
    shared = nn.Linear(8, 8)
    frozen = nn.Linear(8, 4)
    frozen.requires_grad_(False)
    model = nn.Sequential(shared, nn.LayerNorm(8), nn.ReLU(), shared, frozen)
    groups = param_groups(model, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == 4  # shared weight/bias once, LN weight/bias, frozen none
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert all(id(p) not in ids for p in frozen.parameters())
    single = param_groups(model, 0.01, exclude_bias_and_norm=False)
    assert len(single) == 1 and len(single[0]["params"]) == 4
    assert single[0]["lars_exclude"] is False


def test_param_groups_drop_empty_group_and_work_with_adamw() -> None:
    groups = param_groups(nn.Linear(3, 2, bias=False), 0.05)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05
    torch.optim.AdamW(param_groups(nn.Linear(3, 2), 0.05), lr=1e-3)  # extra key tolerated


def test_param_groups_errors() -> None:
    with pytest.raises(TypeError, match="nn.Module"):
        param_groups([torch.zeros(2)], 0.0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        param_groups(nn.Linear(2, 2), -1.0)
    with pytest.raises(ValueError, match="requires_grad=True"):
        param_groups(nn.Linear(2, 2).requires_grad_(False), 0.0)
