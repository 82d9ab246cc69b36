"""torch.compile: the learner, and a user's whole training step, compile once and then never again.

Dynamo is counted with ``CompileCounter`` (it runs the captured graphs eagerly, so these tests take
seconds); ``test_inductor_matches_eager`` compiles for real.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TinyNet, small_byol_kwargs
from torch._dynamo.testing import CompileCounter

from byol_pytorch import BYOL

STEPS = 6


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()  # no compiled code or counts carried over from another test
    yield
    torch._dynamo.reset()


def make_learner() -> BYOL:
    # The default augmentation (BYOLAugment, per-image parameters, ops applied with p < 1).
    return BYOL(TinyNet(), **small_byol_kwargs(total_steps=100))


def train(learner: BYOL, step_fn, seed: int = 1) -> tuple[list[float], list[int]]:
    """STEPS steps on fixed images; (losses, frames compiled after each step)."""
    images = torch.rand(8, 3, 20, 20, generator=torch.Generator().manual_seed(seed))
    losses, frames = [], []
    torch.manual_seed(seed)
    for _ in range(STEPS):
        losses.append(float(step_fn(images)))
        frames.append(step_fn.counter.frame_count if hasattr(step_fn, "counter") else 0)
    return losses, frames


def eager_step(learner: BYOL, opt: torch.optim.Optimizer):
    def step(images: torch.Tensor) -> torch.Tensor:
        loss = learner(images)
        loss.backward()
        opt.step()
        opt.zero_grad()
        learner.update_moving_average()
        return loss.detach()
    return step


def test_compiled_learner_compiles_once_and_trains_as_eager():
    eager = make_learner()
    compiled = copy.deepcopy(eager)
    counter = CompileCounter()
    model = torch.compile(compiled, backend=counter)
    opt_c = torch.optim.SGD(compiled.parameters(), lr=0.1)

    def step(images):
        loss = model(images)
        loss.backward()
        opt_c.step()
        opt_c.zero_grad()
        compiled.update_moving_average()
        return loss.detach()
    step.counter = counter

    ref, _ = train(eager, eager_step(eager, torch.optim.SGD(eager.parameters(), lr=0.1)))
    got, frames = train(compiled, step)
    # One graph for the whole forward (augmentation, both networks, loss), compiled on the first
    # step; the first step's one-time target copy runs outside it and causes no second compilation.
    assert frames == [1] * STEPS
    # Same augmentation draws and updates as eager: the compiled augmentation (masks instead of
    # the eager CPU path's subsets) makes the same views.
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    for p, q in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_compiled_training_step_compiles_once():
    """``torch.compile`` of the user's whole step, as examples and many projects do."""
    eager = make_learner()
    compiled = copy.deepcopy(eager)
    opt = torch.optim.SGD(compiled.parameters(), lr=0.1)
    counter = CompileCounter()
    # Graph breaks (listed): loss.backward() and optimizer.zero_grad() (dynamo does not trace
    # them) and update_moving_average() (runs eagerly on purpose: its tau comes from a host-side
    # step counter that a compiled copy would be specialised on).
    step = torch.compile(eager_step(compiled, opt), backend=counter)
    step.counter = counter

    ref, _ = train(eager, eager_step(eager, torch.optim.SGD(eager.parameters(), lr=0.1)))
    got, frames = train(compiled, step)
    assert frames[1:] == [frames[1]] * (STEPS - 1)  # nothing new is compiled after step 2
    assert compiled.step == STEPS and compiled.tau == pytest.approx(eager.tau)
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    for p, q in zip(compiled.target_encoder.parameters(), eager.target_encoder.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_inductor_matches_eager():
    learner = BYOL(TinyNet(), **small_byol_kwargs())
    compiled = torch.compile(learner)
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    eager_loss = learner(v1, x2=v2)
    compiled_loss = compiled(v1, x2=v2)
    torch.testing.assert_close(compiled_loss, eager_loss, atol=1e-5, rtol=1e-5)
    compiled_loss.backward()
    assert learner.net.conv.weight.grad.abs().sum() > 0
    assert torch.isfinite(compiled(torch.rand(4, 3, 16, 16)))  # with the augmentations too
