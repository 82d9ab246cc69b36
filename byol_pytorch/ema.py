"""The target network: a frozen copy of the online network, updated by an exponential moving average."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "make_target", "ema_update_", "copy_weights_"]


class EMA:
    """An EMA rate: ``update_average(old, new) = beta * old + (1 - beta) * new``.

    byol-pytorch 0.9.1's helper, kept with its semantics: ``BYOL.target_ema_updater`` is one, and
    its ``beta`` is the learner's base rate (setting it changes the rate of later updates).
    """

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update_average(self, old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        """``beta * old + (1 - beta) * new`` (``new`` if ``old`` is None)."""
        if old is None:
            return new
        return old * self.beta + (1 - self.beta) * new

    def __repr__(self) -> str:
        return f"EMA(beta={self.beta})"


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` that never receives gradients."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


def _tensor_pairs(target: nn.Module, online: nn.Module, kind: str) -> tuple[list, list]:
    named_t = dict(getattr(target, f"named_{kind}")())
    named_o = dict(getattr(online, f"named_{kind}")())
    if named_t.keys() != named_o.keys():
        missing = sorted(set(named_o) ^ set(named_t))[:5]
        raise ValueError(f"target and online {kind} differ (e.g. {missing}); "
                         "rebuild the target with reset_moving_average()")
    return [named_t[k] for k in named_o], [named_o[k].detach() for k in named_o]


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """In place: ``target = tau * target + (1 - tau) * online`` for parameters; buffers are copied.

    Uses fused ``torch._foreach_lerp_`` (one kernel launch per group of tensors, not per tensor).
    Buffers (BatchNorm running statistics) are copied rather than averaged, as in the paper's code.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1], got {tau}")
    t_params, o_params = _tensor_pairs(target, online, "parameters")
    if t_params and tau < 1.0:
        # lerp_(t, o, w) = t + w * (o - t) = tau * t + (1 - tau) * o with w = 1 - tau
        torch._foreach_lerp_(t_params, o_params, 1.0 - tau)
    t_bufs, o_bufs = _tensor_pairs(target, online, "buffers")
    if t_bufs:
        torch._foreach_copy_(t_bufs, o_bufs)


@torch.no_grad()
def copy_weights_(target: nn.Module, online: nn.Module) -> None:
    """In place: make ``target`` equal to ``online`` (parameters and buffers)."""
    ema_update_(target, online, 0.0)
