"""PerViewBatchNorm: batch norm with per-view statistics inside one stacked batch."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from byol_pytorch.batchnorm import PerViewBatchNorm


@pytest.mark.parametrize("num_views", [2, 3])
def test_module_outputs_and_running_stats_match_one_call_per_view(num_views):
    bn = nn.BatchNorm2d(4)
    ref = copy.deepcopy(bn)
    x = torch.randn(num_views * 5, 4, 3, 3) * 3 + 1
    with PerViewBatchNorm(num_views):
        out = bn(x)
    expected = torch.cat([ref(chunk) for chunk in x.chunk(num_views)])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, ref.running_var, atol=1e-6)
    # not the statistics of the whole batch
    assert not torch.allclose(out, copy.deepcopy(ref)(x), atol=1e-3)


def test_gradients_match_and_direct_torch_batch_norm_is_split():
    w = torch.randn(4, requires_grad=True)
    x = torch.randn(6, 4, requires_grad=True)
    with PerViewBatchNorm(2):
        torch.batch_norm(x, w, None, None, None, True, 0.1, 1e-5, False).pow(2).sum().backward()
    grads = (x.grad.clone(), w.grad.clone())
    x.grad = w.grad = None
    for chunk in x.chunk(2):
        F.batch_norm(chunk, None, None, w, None, True).pow(2).sum().backward()
    assert torch.allclose(grads[0], x.grad, atol=1e-5) and torch.allclose(grads[1], w.grad, atol=1e-5)


def test_eval_mode_and_other_ops_are_untouched():
    bn = nn.BatchNorm1d(3).eval()
    x = torch.randn(4, 3)
    with PerViewBatchNorm(2):
        assert torch.equal(bn(x), nn.BatchNorm1d(3).eval()(x))
        assert torch.equal(torch.cat([x, x]).sum(0), 2 * x.sum(0))


def test_errors():
    with pytest.raises(RuntimeError, match="not a multiple of 2 views.*separate"):
        with PerViewBatchNorm(2):
            nn.BatchNorm1d(3)(torch.randn(5, 3))
    with pytest.raises(ValueError, match="num_views"):
        PerViewBatchNorm(0)
