"""Schedules against values worked out by hand from the paper's formulas."""

from __future__ import annotations

import pytest

from byol_pytorch.schedules import cosine_tau, warmup_cosine

# tau_k = final - (final - base) * (cos(pi k / K) + 1) / 2 with base 0.996, final 1, K = 300:
# cos(0) = 1, cos(pi/3) = 1/2, cos(pi/2) = 0, cos(2pi/3) = -1/2, cos(pi) = -1.
COSINE_TAU_TABLE = [
    (0, 300, 0.996),
    (100, 300, 1 - 0.004 * 0.75),
    (150, 300, 0.998),
    (200, 300, 1 - 0.004 * 0.25),
    (300, 300, 1.0),
    (301, 300, 1.0),
    (10_000, 300, 1.0),
]


@pytest.mark.parametrize("step,total,expected", COSINE_TAU_TABLE)
def test_cosine_tau_table(step: int, total: int, expected: float) -> None:
    assert cosine_tau(step, total) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step,expected", [(0, 0.9), (50, 0.945), (100, 0.99), (500, 0.99)])
def test_cosine_tau_custom_endpoints(step: int, expected: float) -> None:
    assert cosine_tau(step, 100, tau=0.9, final_tau=0.99) == pytest.approx(expected)


# total 100, warm-up 10, base 1: warm-up is base * (step + 1) / 10, then a cosine over 90 steps.
WARMUP_COSINE_TABLE = [
    (0, 0.0, 0.1),
    (4, 0.0, 0.5),
    (9, 0.0, 1.0),      # warm-up reaches the peak on its last step
    (10, 0.0, 1.0),     # decay starts at the peak
    (40, 0.0, 0.75),    # 30/90 of the decay: (cos(pi/3) + 1) / 2
    (55, 0.0, 0.5),     # half way
    (70, 0.0, 0.25),    # 60/90: (cos(2pi/3) + 1) / 2
    (100, 0.0, 0.0),
    (250, 0.0, 0.0),
    (55, 0.1, 0.55),    # final + (base - final) / 2
    (100, 0.1, 0.1),
    (400, 0.1, 0.1),
]


@pytest.mark.parametrize("step,final,expected", WARMUP_COSINE_TABLE)
def test_warmup_cosine_table(step: int, final: float, expected: float) -> None:
    assert warmup_cosine(step, 100, 1.0, warmup_steps=10, final=final) == pytest.approx(
        expected, abs=1e-12)


def test_warmup_cosine_scales_with_base() -> None:
    assert warmup_cosine(4, 100, 4.8, warmup_steps=10) == pytest.approx(2.4)
    assert warmup_cosine(55, 100, 4.8, warmup_steps=10) == pytest.approx(2.4)


def test_warmup_cosine_without_warmup_starts_at_base() -> None:
    assert warmup_cosine(0, 10, 0.3) == pytest.approx(0.3)
    assert warmup_cosine(5, 10, 0.3) == pytest.approx(0.15)


def test_warmup_only_schedule_holds_base() -> None:
    assert warmup_cosine(4, 10, 1.0, warmup_steps=10) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 1.0, warmup_steps=10) == pytest.approx(1.0)
    assert warmup_cosine(50, 10, 1.0, warmup_steps=10) == pytest.approx(1.0)


def test_cosine_tau_is_non_decreasing() -> None:
    values = [cosine_tau(s, 1000) for s in range(1101)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[0] == pytest.approx(0.996) and values[-1] == 1.0


def test_warmup_cosine_rises_then_falls() -> None:
    values = [warmup_cosine(s, 1000, 2.0, warmup_steps=100, final=0.01) for s in range(1101)]
    warm, decay = values[:100], values[100:]
    assert all(b > a for a, b in zip(warm, warm[1:]))
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    assert max(values) == pytest.approx(2.0)
    assert values[-1] == pytest.approx(0.01)


def test_schedules_return_python_floats() -> None:
    assert type(cosine_tau(3, 10)) is float
    assert type(warmup_cosine(3, 10, 1.0, warmup_steps=2)) is float


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: cosine_tau(0, 0), "total_steps must be positive"),
        (lambda: cosine_tau(0, -5), "total_steps must be positive"),
        (lambda: cosine_tau(-1, 10), "step must be non-negative"),
        (lambda: cosine_tau(0, 10, tau=1.5), "must lie in"),
        (lambda: cosine_tau(0, 10, tau=-0.1), "must lie in"),
        (lambda: cosine_tau(0, 10, final_tau=1.01), "must lie in"),
        (lambda: warmup_cosine(0, 0, 1.0), "total_steps must be positive"),
        (lambda: warmup_cosine(-1, 10, 1.0), "step must be non-negative"),
        (lambda: warmup_cosine(0, 10, 1.0, warmup_steps=11), "warmup_steps must be in"),
        (lambda: warmup_cosine(0, 10, 1.0, warmup_steps=-1), "warmup_steps must be in"),
    ],
)
def test_schedule_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
