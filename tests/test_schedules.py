"""Schedules against values worked out by hand from the paper's formulas."""

from __future__ import annotations

from functools import partial

import pytest

from byol_pytorch.schedules import cosine_tau, warmup_cosine

# cosine_tau: final - (final - base) (cos(pi k / K) + 1) / 2, base 0.996 to final 1 over K = 300:
# cos(0, pi/3, pi/2, 2pi/3, pi) = 1, 1/2, 0, -1/2, -1. warmup_cosine: warm-up base (step + 1) /
# warmup_steps (the peak on its last step), then a cosine to final (10 of 100 steps: 30/90 -> 0.75).
VALUES = [  # (a schedule of the step, [(step, expected), ...])
    (partial(cosine_tau, total_steps=300), [(0, 0.996), (100, 0.997), (150, 0.998), (200, 0.999),
                                            (300, 1.0), (301, 1.0), (10_000, 1.0)]),
    (partial(cosine_tau, total_steps=100, tau=0.9, final_tau=0.99),
     [(0, 0.9), (50, 0.945), (100, 0.99), (500, 0.99)]),
    (partial(warmup_cosine, total_steps=100, base=1.0, warmup_steps=10), [(0, 0.1), (4, 0.5),
     (9, 1.0), (10, 1.0), (40, 0.75), (55, 0.5), (70, 0.25), (100, 0.0), (250, 0.0)]),
    (partial(warmup_cosine, total_steps=100, base=1.0, warmup_steps=10, final=0.1),
     [(55, 0.55), (100, 0.1), (400, 0.1)]),
    (partial(warmup_cosine, total_steps=100, base=4.8, warmup_steps=10), [(4, 2.4), (55, 2.4)]),
    (partial(warmup_cosine, total_steps=10, base=0.3), [(0, 0.3), (5, 0.15)]),  # no warm-up
    (partial(warmup_cosine, total_steps=10, base=1.0, warmup_steps=10),  # warm-up only: holds base
     [(4, 0.5), (10, 1.0), (50, 1.0)])]


@pytest.mark.parametrize("schedule,step,expected", [(f, *r) for f, rows in VALUES for r in rows])
def test_values_by_hand_as_python_floats(schedule, step: int, expected: float) -> None:
    assert type(value := schedule(step)) is float and value == pytest.approx(expected, abs=1e-12)


def test_cosine_tau_rises_and_warmup_cosine_rises_then_falls() -> None:
    taus = [cosine_tau(s, 1000) for s in range(1101)]
    assert taus == sorted(taus) and taus[0] == pytest.approx(0.996) and taus[-1] == 1.0
    lrs = [warmup_cosine(s, 1000, 2.0, warmup_steps=100, final=0.01) for s in range(1101)]
    assert all(b > a for a, b in zip(lrs[:99], lrs[1:100])) and max(lrs) == pytest.approx(2.0)
    assert lrs[100:] == sorted(lrs[100:], reverse=True) and lrs[-1] == pytest.approx(0.01)


ERRORS = {  # match: calls
    "total_steps must be positive": [partial(cosine_tau, 0, 0), partial(cosine_tau, 0, -5),
                                     partial(warmup_cosine, 0, 0, 1.0)],
    "step must be non-negative": [partial(cosine_tau, -1, 10), partial(warmup_cosine, -1, 10, 1.0)],
    "must lie in": [partial(cosine_tau, 0, 10, **kw) for kw in [{"tau": 1.5}, {"tau": -0.1},
                                                                {"final_tau": 1.01}]],
    "warmup_steps must be in": [partial(warmup_cosine, 0, 10, 1, warmup_steps=w) for w in (11, -1)]}


@pytest.mark.parametrize("match,call", [(m, c) for m, calls in ERRORS.items() for c in calls])
def test_schedule_errors(match: str, call) -> None:
    with pytest.raises(ValueError, match=match):
        call()
