"""LARS and the parameter groups it expects: BYOL App. C, "LARS optimizer ... excluding the biases
and batch normalization parameters from both LARS adaptation and weight decay";
``LARS(param_groups(model, weight_decay=1.5e-6), lr=...)``."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["LARS", "param_groups"]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., 2017), heavy-ball or Nesterov momentum.

    Per parameter ``p`` with gradient ``g`` (groups with ``lars_exclude=True``, see
    :func:`param_groups`, skip the first three lines: plain SGD with momentum)::

        g     = g + weight_decay * p
        trust = trust_coefficient * ||p|| / (||g|| + eps)     (1 if ||p|| or ||g|| is 0)
        trust = min(trust / lr, 1)                             (clip_lr=True: LARC's clipping)
        v     = momentum * v + trust * g
        p     = p - lr * v          (Nesterov: p = p - lr * (trust * g + momentum * v))

    ``clip_lr`` (apex's ``LARC(clip=True)``, solo-learn) keeps each layer's rate at most ``lr``,
    which small-batch recipes with a large ``trust_coefficient`` (paper: 0.001) need. Norms
    accumulate in float32 or better (bf16/fp16 parameters work); one multi-tensor
    (``torch._foreach_*``) update per (device, dtype).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float, momentum: float = 0.9,
                 weight_decay: float = 0.0, trust_coefficient: float = 0.001, eps: float = 1e-8,
                 nesterov: bool = False, clip_lr: bool = False) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps,
                        trust_coefficient=trust_coefficient, nesterov=nesterov, clip_lr=clip_lr,
                        lars_exclude=False)
        super().__init__(params, defaults)
        for group in self.param_groups:  # groups may override the defaults with bad values
            _check_hparams(group)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # checkpoints from before a key existed
            group.update({k: group.get(k, False) for k in ("lars_exclude", "nesterov", "clip_lr")})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets: dict[tuple, list[Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise RuntimeError("LARS does not support sparse gradients")
                    buckets[(p.device, p.dtype)].append(p)
            for params in buckets.values():
                self._update(params, group)
        return loss

    def _update(self, ps: list[Tensor], group: dict) -> None:
        lr, momentum = group["lr"], group["momentum"]
        if group["lars_exclude"]:
            gs = [p.grad for p in ps]
        else:
            gs = ([p.grad.clone() for p in ps] if group["weight_decay"] == 0 else
                  list(torch._foreach_add([p.grad for p in ps], ps, alpha=group["weight_decay"])))
            ratio = _trust_ratio(_norms(ps), _norms(gs), group)
            torch._foreach_mul_(gs, list(ratio.unbind()))
        if momentum != 0:
            for p, g in zip(ps, gs):
                if "momentum_buffer" not in self.state[p]:
                    self.state[p]["momentum_buffer"] = torch.zeros_like(g)
            bufs = [self.state[p]["momentum_buffer"] for p in ps]
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, gs)
            gs = list(torch._foreach_add(gs, bufs, alpha=momentum)) if group["nesterov"] else bufs
        torch._foreach_add_(ps, gs, alpha=-lr)


def _check_hparams(group: dict) -> None:
    for ok, message in [(group["lr"] >= 0.0, "lr must be >= 0"),  # also rejects NaN
                        (0.0 <= group["momentum"] < 1.0, "momentum must lie in [0, 1)"),
                        (group["weight_decay"] >= 0.0, "weight_decay must be >= 0"),
                        (group["trust_coefficient"] > 0.0, "trust_coefficient must be > 0"),
                        (group["eps"] >= 0.0, "eps must be >= 0"),
                        (not group["nesterov"] or group["momentum"] > 0,
                         "nesterov=True needs momentum > 0")]:
        if not ok:
            settings = {k: v for k, v in group.items() if k != "params"}
            raise ValueError(f"LARS {message}; got {settings}")


def _trust_ratio(p_norm: Tensor, g_norm: Tensor, group: dict) -> Tensor:
    # torch.where rather than Python branching: no host-device sync per parameter
    ratio = group["trust_coefficient"] * p_norm / (g_norm + group["eps"])
    if group["clip_lr"] and group["lr"] > 0:  # LARC: the layer's rate lr * ratio <= lr
        ratio = torch.clamp(ratio / group["lr"], max=1.0)
    return torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))


def _norms(tensors: list[Tensor]) -> Tensor:
    """(N,) norms; bf16/fp16 accumulate in float32, float64 in its own precision."""
    if tensors[0].dtype in (torch.float32, torch.float64):
        return torch.stack(torch._foreach_norm(tensors))
    return torch.stack([torch.linalg.vector_norm(t, dtype=torch.float32) for t in tensors])


def param_groups(model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = True
                 ) -> list[dict]:
    """Optimizer groups of ``model``'s trainable parameters, each listed once, empty ones dropped.

    Weights (dim >= 2) get ``weight_decay``; biases and norm parameters (dim < 2) get none and
    ``lars_exclude=True`` (other optimizers ignore the key). ``exclude_bias_and_norm=False``: one
    decayed, adapted group. TypeError/ValueError: not a module, weight_decay < 0, nothing to train.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"param_groups expects an nn.Module, got {type(model).__name__}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    if not params:
        raise ValueError("model has no parameter with requires_grad=True; nothing to optimize")
    excluded = [p.ndim < 2 and exclude_bias_and_norm for p in params]
    groups = [dict(params=[p for p, x in zip(params, excluded) if not x],
                   weight_decay=float(weight_decay), lars_exclude=False),
              dict(params=[p for p, x in zip(params, excluded) if x], weight_decay=0.0,
                   lars_exclude=True)]
    return [g for g in groups if g["params"]]
