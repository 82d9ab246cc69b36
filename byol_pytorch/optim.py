"""LARS, the optimizer of the BYOL paper, and the parameter grouping it expects.

BYOL (App. C): "LARS optimizer ... excluding the biases and batch normalization parameters from both
LARS adaptation and weight decay". Build the optimizer as
``LARS(param_groups(model, weight_decay=1.5e-6), lr=...)``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

__all__ = ["LARS", "param_groups"]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., 2017) with heavy-ball or Nesterov momentum.

    For every parameter ``p`` with gradient ``g`` in a group that is not excluded::

        g     = g + weight_decay * p
        trust = trust_coefficient * ||p|| / (||g|| + eps)     (1.0 if ||p|| == 0 or ||g|| == 0)
        trust = min(trust / lr, 1)                             (only with clip_lr=True)
        v     = momentum * v + trust * g
        p     = p - lr * v          (Nesterov: p = p - lr * (trust * g + momentum * v))

    Groups with ``lars_exclude=True`` (see :func:`param_groups`) get neither weight decay nor the
    trust ratio, i.e. plain SGD with momentum, whatever their ``weight_decay``. The flag is explicit
    (default ``False``) rather than inferred from ``weight_decay == 0`` so that decay-free training
    still adapts every layer. Norms accumulate in (at least) float32, so bf16/fp16 parameters are
    supported; the momentum buffer has the parameter's dtype, as in ``torch.optim.SGD``.

    ``clip_lr=True`` is LARC's clipping (NVIDIA apex ``LARC(clip=True)``, solo-learn's
    ``clip_lr``): a layer's rate ``lr * trust`` becomes ``min(trust_coefficient * ||p|| / ||g||, lr)``,
    so no layer moves faster than plain SGD at ``lr``. Without it, every layer moves by about
    ``lr * trust_coefficient`` of its norm per step, which is large for the big coefficients of
    small-batch recipes (solo-learn's CIFAR BYOL: 0.02, always with clipping).

    Args:
        params: parameters or parameter groups (dicts); group keys override the defaults below.
        lr: learning rate (usually set each step from :func:`byol_pytorch.warmup_cosine`).
        momentum: momentum factor in [0, 1).
        weight_decay: L2 penalty added to the gradient before adaptation.
        trust_coefficient: LARS coefficient ``eta`` (0.001 in the paper).
        eps: added to ``||g||`` to avoid division by tiny norms.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        clip_lr: clip each layer's adaptive rate at ``lr`` (LARC), see above.
        foreach: fused multi-tensor kernels; ``None`` uses them when every parameter is on CUDA.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        nesterov: bool = False,
        clip_lr: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        _check_hparams(lr, momentum, weight_decay, trust_coefficient, eps, nesterov)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov,
                        clip_lr=clip_lr, lars_exclude=False, foreach=foreach)
        super().__init__(params, defaults)
        for group in self.param_groups:  # groups may override the defaults with bad values
            _check_hparams(group["lr"], group["momentum"], group["weight_decay"],
                           group["trust_coefficient"], group["eps"], group["nesterov"])

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # checkpoints from before a key existed
            group.setdefault("lars_exclude", False)
            group.setdefault("foreach", None)
            group.setdefault("nesterov", False)
            group.setdefault("clip_lr", False)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter with a gradient; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients; use dense embeddings")
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            update = _step_foreach if foreach else _step_single
            bufs = [self.state[p].get("momentum_buffer") for p in params]
            new_bufs = update(params, bufs, group)
            if group["momentum"] != 0:
                for p, buf in zip(params, new_bufs):
                    self.state[p]["momentum_buffer"] = buf
        return loss


def _check_hparams(
    lr: float, momentum: float, weight_decay: float, trust: float, eps: float, nesterov: bool
) -> None:
    if not lr >= 0.0:  # also rejects NaN
        raise ValueError(f"LARS lr must be >= 0, got {lr}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"LARS momentum must lie in [0, 1), got {momentum}")
    if not weight_decay >= 0.0:
        raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}")
    if not trust > 0.0:
        raise ValueError(f"LARS trust_coefficient must be > 0 (paper: 0.001), got {trust}")
    if not eps >= 0.0:
        raise ValueError(f"LARS eps must be >= 0, got {eps}")
    if nesterov and momentum == 0:
        raise ValueError("LARS nesterov=True needs momentum > 0; set momentum or nesterov=False")


def _trust_ratio(p_norm: Tensor, g_norm: Tensor, group: dict) -> Tensor:
    # torch.where rather than Python branching: no host-device sync per parameter.
    ratio = group["trust_coefficient"] * p_norm / (g_norm + group["eps"])
    if group["clip_lr"] and group["lr"] > 0:  # LARC: the layer's rate lr * ratio <= lr
        ratio = torch.clamp(ratio / group["lr"], max=1.0)
    return torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))


def _norm(t: Tensor) -> Tensor:
    # bf16/fp16 norms accumulate in fp32; fp64 keeps its own precision.
    return torch.linalg.vector_norm(t, dtype=None if t.dtype == torch.float64 else torch.float32)


def _norms(tensors: list[Tensor]) -> list[Tensor]:
    if tensors[0].dtype in (torch.float32, torch.float64):
        return list(torch._foreach_norm(tensors))
    return [_norm(t) for t in tensors]


def _step_single(params: list[Tensor], bufs: list[Tensor | None], group: dict) -> list[Tensor]:
    """Reference implementation, one parameter at a time."""
    lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
    new_bufs = []
    for p, buf in zip(params, bufs):
        g = p.grad
        if not group["lars_exclude"]:
            if group["weight_decay"] != 0:
                g = g.add(p, alpha=group["weight_decay"])
            ratio = _trust_ratio(_norm(p), _norm(g), group)
            g = g.mul(ratio)
        if momentum != 0:
            buf = g.clone() if buf is None else buf.mul_(momentum).add_(g)
            g = g.add(buf, alpha=momentum) if nesterov else buf
        new_bufs.append(buf)
        p.add_(g, alpha=-lr)
    return new_bufs


def _step_foreach(params: list[Tensor], bufs: list[Tensor | None], group: dict) -> list[Tensor]:
    """Same update with multi-tensor kernels, one launch per (device, dtype) bucket."""
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(p.device, p.dtype)].append(i)
    new_bufs: list[Tensor | None] = list(bufs)
    lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
    for idx in buckets.values():
        ps = [params[i] for i in idx]
        if group["lars_exclude"]:
            gs = [p.grad for p in ps]
        else:
            if group["weight_decay"] != 0:
                gs = list(torch._foreach_add([p.grad for p in ps], ps, alpha=group["weight_decay"]))
            else:
                gs = [p.grad.clone() for p in ps]  # scaled in place below
            ratio = _trust_ratio(torch.stack(_norms(ps)), torch.stack(_norms(gs)), group)
            torch._foreach_mul_(gs, list(ratio.unbind()))
        if momentum != 0:
            for j, i in enumerate(idx):
                if new_bufs[i] is None:
                    new_bufs[i] = torch.zeros_like(gs[j])
            bs = [new_bufs[i] for i in idx]
            torch._foreach_mul_(bs, momentum)
            torch._foreach_add_(bs, gs)
            gs = list(torch._foreach_add(gs, bs, alpha=momentum)) if nesterov else bs
        torch._foreach_add_(ps, gs, alpha=-lr)
    return new_bufs


def param_groups(
    model: nn.Module, weight_decay: float, exclude_bias_and_norm: bool = True
) -> list[dict]:
    """Optimizer groups: weights (dim >= 2) decayed; biases and norm params excluded from LARS.

    The excluded group (every parameter with ``dim < 2``: biases, BatchNorm/LayerNorm affine
    parameters) gets ``weight_decay=0.0, lars_exclude=True``; the other group gets
    ``weight_decay=weight_decay, lars_exclude=False``. The extra key is ignored by other optimizers,
    so the groups also work with SGD/AdamW. Frozen parameters (``requires_grad=False``) are
    skipped, shared parameters are listed once, and empty groups are dropped. With
    ``exclude_bias_and_norm=False`` every parameter is in one decayed, adapted group.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: negative ``weight_decay`` or no trainable parameter.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"param_groups expects an nn.Module, got {type(model).__name__}")
    if not weight_decay >= 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    decay: list[nn.Parameter] = []
    exclude: list[nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():  # already de-duplicated; the set also guards custom modules
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (exclude if exclude_bias_and_norm and p.ndim < 2 else decay).append(p)
    if not seen:
        raise ValueError("model has no parameter with requires_grad=True; nothing to optimize")
    groups = [
        dict(params=decay, weight_decay=float(weight_decay), lars_exclude=False),
        dict(params=exclude, weight_decay=0.0, lars_exclude=True),
    ]
    return [g for g in groups if g["params"]]
