"""Pure functions of the global step: the target EMA rate and the learning rate, as Python
floats (checkpoints load with ``weights_only=True``; logging needs no device sync)."""

from __future__ import annotations

import math

__all__ = ["cosine_tau", "warmup_cosine"]


def _check_step(step: int, total_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")


def cosine_tau(step: int, total_steps: int, tau: float = 0.996, final_tau: float = 1.0) -> float:
    """The target's EMA rate at ``step``: paper Sec. 3.2, "tau = 1 - (1 - tau_base)(cos(pi k / K)
    + 1) / 2", from ``tau`` at k = 0 to ``final_tau`` at k = K and after."""
    _check_step(step, total_steps)
    if not 0.0 <= tau <= 1.0 or not 0.0 <= final_tau <= 1.0:
        raise ValueError(f"tau and final_tau must lie in [0, 1], got {tau}, {final_tau}")
    progress = min(step, total_steps) / total_steps
    return final_tau - (final_tau - tau) * (math.cos(math.pi * progress) + 1) / 2


def warmup_cosine(step: int, total_steps: int, base: float, warmup_steps: int = 0,
                  final: float = 0.0) -> float:
    """The LR at ``step``: linear warm-up to ``base`` over ``warmup_steps``, then a cosine to
    ``final`` (and after; paper App. C: "linear warmup ..., then cosine decay without restarts")."""
    _check_step(step, total_steps)
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got "
                         f"{warmup_steps}")
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps == 0:
        return base
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return final + (base - final) * (math.cos(math.pi * progress) + 1) / 2
