"""The BYOL loss against a reference computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from byol_pytorch.losses import byol_loss, symmetric_byol_loss


def reference_loss(q, z):
    """Paper eq. 2 written out: || q/|q| - z/|z| ||^2, averaged over the batch."""
    qn = q / q.norm(dim=1, keepdim=True)
    zn = z / z.norm(dim=1, keepdim=True)
    return ((qn - zn) ** 2).sum(dim=1).mean()


def test_matches_reference():
    q, z = torch.randn(7, 5), torch.randn(7, 5)
    assert torch.allclose(byol_loss(q, z), reference_loss(q, z), atol=1e-6)


def test_bounds_and_scale_invariance():
    q = torch.randn(4, 3)
    assert byol_loss(q, 3 * q).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(q, -q).item() == pytest.approx(4.0, abs=1e-6)


def test_symmetric_is_sum_of_both_directions():
    q1, q2, z1, z2 = (torch.randn(6, 4) for _ in range(4))
    expected = reference_loss(q1, z2) + reference_loss(q2, z1)
    assert torch.allclose(symmetric_byol_loss(q1, q2, z1, z2), expected, atol=1e-6)
    # swapping the two views gives the same loss
    assert torch.allclose(symmetric_byol_loss(q2, q1, z2, z1), expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float32_under_autocast(dtype):
    q, z = torch.randn(8, 16), torch.randn(8, 16)
    with torch.autocast("cpu", dtype=dtype):
        loss = byol_loss(q.to(dtype), z.to(dtype))
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, reference_loss(q.to(dtype).float(), z.to(dtype).float()), atol=1e-5)


def test_gradient_wrt_q_matches_closed_form():
    # d/dq mean_b(2 - 2 cos(q_b, z_b)) = -2/B (z^ - (q^ . z^) q^) / |q|, with x^ = x / |x|
    q = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 3, dtype=torch.float64)
    byol_loss(q, z).backward()
    qn, zn = F.normalize(q.detach(), dim=-1), F.normalize(z, dim=-1)
    cos = (qn * zn).sum(-1, keepdim=True)
    expected = -2 / q.shape[0] * (zn - cos * qn) / q.detach().norm(dim=-1, keepdim=True)
    torch.testing.assert_close(q.grad, expected.float().double(), atol=1e-6, rtol=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"two \(B, D\) tensors"):
        byol_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"two \(B, D\) tensors"):
        byol_loss(torch.randn(4), torch.randn(4))
