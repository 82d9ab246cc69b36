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
    """Layer-wise Adaptive Rate Scaling (You et al., 2017), heavy-ball or Nesterov momentum.

    Per parameter ``p`` with gradient ``g`` (groups with ``lars_exclude=True``, see
    :func:`param_groups`, skip the first three lines: plain SGD with momentum)::

        g     = g + weight_decay * p
        trust = trust_coefficient * ||p|| / (||g|| + eps)     (1 if ||p|| or ||g|| is 0)
        trust = min(trust / lr, 1)                             (clip_lr=True: LARC's clipping)
        v     = momentum * v + trust * g
        p     = p - lr * v          (Nesterov: p = p - lr * (trust * g + momentum * v))

    ``clip_lr`` (NVIDIA apex ``LARC(clip=True)``, solo-learn) keeps each layer's rate
    ``lr * trust`` at most ``lr``: small-batch recipes with a large coefficient need it. Norms
    accumulate in float32 or better, so bf16/fp16 parameters work. The update runs as multi-tensor
    (``torch._foreach_*``) kernels, one launch per (device, dtype).

    Args:
        lr: learning rate (set each step from :func:`byol_pytorch.warmup_cosine`).
        momentum: in [0, 1). weight_decay: L2 added to the gradient before adaptation.
        trust_coefficient: eta (paper: 0.001). eps: added to ``||g||``.
        nesterov: Nesterov momentum (needs momentum > 0). clip_lr: see above.
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
            for key, value in (("lars_exclude", False), ("nesterov", False), ("clip_lr", False)):
                group.setdefault(key, value)

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
            bufs = []
            for p, g in zip(ps, gs):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, gs)
            gs = list(torch._foreach_add(gs, bufs, alpha=momentum)) if group["nesterov"] else bufs
        torch._foreach_add_(ps, gs, alpha=-lr)


def _check_hparams(group: dict) -> None:
    checks = [(group["lr"] >= 0.0, "lr must be >= 0"),  # also rejects NaN
              (0.0 <= group["momentum"] < 1.0, "momentum must lie in [0, 1)"),
              (group["weight_decay"] >= 0.0, "weight_decay must be >= 0"),
              (group["trust_coefficient"] > 0.0, "trust_coefficient must be > 0 (paper: 0.001)"),
              (group["eps"] >= 0.0, "eps must be >= 0"),
              (not group["nesterov"] or group["momentum"] > 0, "nesterov=True needs momentum > 0")]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"LARS {message}, got lr={group['lr']}, momentum={group['momentum']}, "
                             f"weight_decay={group['weight_decay']}, trust_coefficient="
                             f"{group['trust_coefficient']}, eps={group['eps']}, "
                             f"nesterov={group['nesterov']}")


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
