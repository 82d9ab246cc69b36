"""The target network: a frozen copy of the online network moved by an exponential average."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["make_target", "ema_update_"]


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` that never receives gradients."""
    return copy.deepcopy(online).requires_grad_(False)


def _pairs(target: nn.Module, online: nn.Module, kind: str) -> tuple[list, list]:
    t, o = dict(getattr(target, f"named_{kind}")()), dict(getattr(online, f"named_{kind}")())
    if t.keys() != o.keys():
        raise ValueError(f"target and online {kind} differ (e.g. {sorted(set(t) ^ set(o))[:5]}); "
                         "rebuild the target with reset_moving_average()")
    return [t[k] for k in o], [o[k].detach() for k in o]


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place: ``target = tau * target + (1 - tau) * online`` for parameters, one fused
    ``torch._foreach_lerp_``; buffers (BatchNorm statistics) are copied, as the official code does.
    ``tau=0`` makes the target a copy of the online network."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    t_params, o_params = _pairs(target, online, "parameters")
    if t_params and tau < 1.0:
        torch._foreach_lerp_(t_params, o_params, 1.0 - tau)  # t + (1 - tau) (o - t)
    t_bufs, o_bufs = _pairs(target, online, "buffers")
    if t_bufs:
        torch._foreach_copy_(t_bufs, o_bufs)
