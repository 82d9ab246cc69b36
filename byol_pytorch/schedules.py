"""Pure schedule functions of the global step: the target EMA rate and the learning rate.

Both return plain Python floats so they can be stored in checkpoints (``weights_only=True``)
and logged without device syncs.
"""

from __future__ import annotations

import math

__all__ = ["cosine_tau", "warmup_cosine"]


def _check_step(step: int, total_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")


def cosine_tau(step: int, total_steps: int, tau: float = 0.996, final_tau: float = 1.0) -> float:
    """EMA rate of the target network at ``step``.

    Paper (Sec. 3.2): "tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2", rising from ``tau``
    (the base rate) at k = 0 to ``final_tau`` at k = K. Steps past ``total_steps`` stay at ``final_tau``.
    """
    _check_step(step, total_steps)
    if not 0.0 <= tau <= 1.0 or not 0.0 <= final_tau <= 1.0:
        raise ValueError(f"tau and final_tau must lie in [0, 1], got {tau}, {final_tau}")
    progress = min(step, total_steps) / total_steps
    return final_tau - (final_tau - tau) * (math.cos(math.pi * progress) + 1) / 2


def warmup_cosine(
    step: int, total_steps: int, base: float, warmup_steps: int = 0, final: float = 0.0
) -> float:
    """Linear warm-up from 0 to ``base`` over ``warmup_steps``, then cosine decay to ``final``.

    Paper (Sec. 3.2 / App. C): "linear warmup for the first 10 epochs, then cosine decay ... without
    restarts". Steps past ``total_steps`` stay at ``final``.
    """
    _check_step(step, total_steps)
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps == 0:
        return base
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return final + (base - final) * (math.cos(math.pi * progress) + 1) / 2
