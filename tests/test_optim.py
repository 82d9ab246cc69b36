"""LARS against hand computations and a reference, and the bias/norm parameter split."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torchvision
from torch import nn

from byol_pytorch.optim import LARS, param_groups

f64, close = partial(torch.tensor, dtype=torch.float64), torch.testing.assert_close


def _run(opt: torch.optim.Optimizer, params: list[torch.Tensor], *steps: list[torch.Tensor]):
    """Steps ``opt`` with closures backpropagating ``sum(p . g)`` (the gradients: each entry)."""
    def closure(grads: list[torch.Tensor]) -> torch.Tensor:
        opt.zero_grad()  # step() runs the closure with gradients enabled
        (loss := sum((p * g).sum() for p, g in zip(params, grads))).backward()
        return loss
    return [opt.step(partial(closure, grads)).item() for grads in steps]  # the closures' losses


# p = (3, 4), g = (0.3, 0.4): ||p|| = 5, ||g|| = 0.5, trust = eta * 10; loss p . g = 2.5. eta
# 0.001 (momentum 0.9): v_1 = 0.01 g, p_1 = p - v_1; ||p_1|| = 4.995, v_2 = 0.9 v_1 + 0.00999 g,
# p_2 = p_1 - v_2. eta 0.02: trust 0.2; clip_lr at lr 0.1: min(0.2 / 0.1, 1) = 1 (SGD, v = g).
@pytest.mark.parametrize("lr,eta,clip,steps,buf", [
    (1.0, 0.001, False, [[2.997, 3.996], [2.991303, 3.988404]], [0.005697, 0.007596]),
    (0.1, 0.02, True, [[2.97, 3.96]], [0.3, 0.4]),
    (0.1, 0.02, False, [[2.994, 3.992]], [0.06, 0.08]),
    *[(1.0, 0.02, clip, [[2.94, 3.92]], [0.06, 0.08]) for clip in (True, False)]])
def test_steps_match_hand_computation(lr, eta, clip, steps, buf) -> None:
    opt = LARS([p := f64([3.0, 4.0], requires_grad=True)], lr=lr, momentum=0.9, eps=0.0,
               trust_coefficient=eta, clip_lr=clip)
    for expected, loss in zip(steps, [2.5, 2.997 * 0.3 + 3.996 * 0.4]):
        assert _run(opt, [p], [f64([0.3, 0.4])]) == [pytest.approx(loss)]  # the closure's loss
        close(p.detach(), f64(expected))
    close(opt.state[p]["momentum_buffer"], f64(buf))


@pytest.mark.parametrize("nesterov", [False, True])
def test_groups_match_reference_and_sgd_across_a_state_dict_round_trip(nesterov: bool) -> None:
    w, b = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    ref, b_sgd = w.clone(), b.clone().requires_grad_(True)
    hp = dict(lr=0.5, momentum=0.9, nesterov=nesterov)
    grads = [[torch.randn_like(w), torch.randn_like(b)] for _ in range(3)]
    groups = [dict(params=[w.requires_grad_(True)], weight_decay=0.1),  # the excluded group's
              dict(params=[b.requires_grad_(True)], weight_decay=0.1, lars_exclude=True)]  # ignored
    _run(opt := LARS(groups, eps=1e-8, trust_coefficient=0.02, **hp), [w, b], grads[0])
    (fresh := LARS([dict(params=[w]), dict(params=[b])], lr=0.0)).load_state_dict(opt.state_dict())
    _run(fresh, [w, b], *grads[1:])  # with the settings and momentum buffers of the state dict
    _run(torch.optim.SGD([b_sgd], **hp), [b_sgd], *[[g] for _, g in grads])
    close(b.detach(), b_sgd.detach(), rtol=0, atol=1e-12)  # decay ignored: exactly SGD
    v = 0.0  # the reference: the LARS rule written out, one step at a time
    for g, _ in grads:
        g = g + 0.1 * ref
        v = 0.9 * v + (g := g * 0.02 * ref.norm() / (g.norm() + 1e-8))
        ref = ref - 0.5 * (g + 0.9 * v if nesterov else v)
    close(w.detach(), ref)


def test_zero_norms_bf16_and_sparse_gradients() -> None:
    zero_p, zero_g = torch.zeros(4, requires_grad=True), torch.ones(4, requires_grad=True)
    zero_p.grad, zero_g.grad = (g := torch.tensor([1.0, -2.0, 3.0, 0.5])), torch.zeros(4)
    assert LARS([zero_p, zero_g], lr=0.1, momentum=0.0).step() is None  # a step without closure
    close((zero_p, zero_g), (-0.1 * g, torch.ones(4)))  # ||p||, ||g|| = 0: trust 1, no NaN
    p32, g = torch.randn(64, 32, requires_grad=True), torch.randn(64, 32)
    for p in (p32, p16 := p32.detach().to(torch.bfloat16).requires_grad_(True)):
        _run(opt := LARS([p], lr=1.0, weight_decay=1e-3), [p], *[[g.to(p.dtype)]] * 2)
    assert p16.dtype == opt.state[p16]["momentum_buffer"].dtype == torch.bfloat16
    close(p16.float(), p32.detach(), rtol=2e-2, atol=2e-2)
    (p := torch.zeros(5, 3, requires_grad=True)).grad = torch.ones(5, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        LARS([p], lr=0.1).step()


@pytest.mark.parametrize("kw,match", [
    (dict(lr=-0.1), "lr must be >= 0"), (dict(lr=float("nan")), "lr must be >= 0"),
    (dict(momentum=1.0), "momentum must lie in"), (dict(momentum=-0.5), "momentum must lie in"),
    (dict(weight_decay=-1e-6), "weight_decay must be >= 0"), (dict(eps=-1.0), "eps must be >= 0"),
    (dict(trust_coefficient=0.0), "trust_coefficient must be > 0"),
    (dict(momentum=0.0, nesterov=True), "nesterov=True needs momentum")])
def test_lars_rejects_bad_arguments_as_defaults_and_group_overrides(kw: dict, match: str) -> None:
    p = torch.zeros(2, requires_grad=True)
    for params, defaults in (([p], {"lr": 0.1, **kw}), ([dict(params=[p], **kw)], dict(lr=0.1))):
        with pytest.raises(ValueError, match=match):
            LARS(params, **defaults)


def test_param_groups() -> None:
    groups = param_groups(model := torchvision.models.resnet18(num_classes=10), 1.5e-6)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, excluded = ([names[id(p)] for p in g["params"]] for g in groups)
    assert [(g["weight_decay"], g["lars_exclude"]) for g in groups] == [(1.5e-6, False), (0, True)]
    norm = [n for n in names.values() if n.endswith("bias") or "bn" in n or "downsample.1" in n]
    assert excluded == norm and len(norm) == 41  # fc.bias, 20 BNs; decay: 20 convs, fc.weight
    assert decay == [n for n in names.values() if n not in norm] and all(
        p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim < 2 for p in groups[1]["params"])
    shared, frozen = nn.Linear(8, 8), nn.Linear(8, 4).requires_grad_(False)
    model = nn.Sequential(shared, nn.LayerNorm(8), nn.ReLU(), shared, frozen)
    assert [list(map(id, g["params"])) for g in param_groups(model, 0.01)] == [  # frozen: never
        [id(shared.weight)], [id(shared.bias), id(model[1].weight), id(model[1].bias)]]
    (single,) = param_groups(model, 0.01, exclude_bias_and_norm=False)
    assert len(single["params"]) == 4 and single["lars_exclude"] is False
    LARS(groups, lr=0.1)  # accepted as-is; the empty group of a bias-free layer is dropped:
    assert [g["weight_decay"] for g in param_groups(nn.Linear(3, 2, bias=False), 0.05)] == [0.05]
    torch.optim.AdamW(param_groups(nn.Linear(3, 2), 0.05), lr=1e-3)  # extra key tolerated
    with pytest.raises(TypeError, match="nn.Module"):
        param_groups([torch.zeros(2)], 0.0)
    for module, wd, match in [(nn.Linear(2, 2), -1.0, "weight_decay must be >= 0"),
                              (nn.Linear(2, 2).requires_grad_(False), 0.0, "requires_grad=True")]:
        with pytest.raises(ValueError, match=match):
            param_groups(module, wd)
