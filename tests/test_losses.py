"""The BYOL loss against a reference computation and its closed-form gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from byol_pytorch.losses import byol_loss, symmetric_byol_loss


def reference_loss(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Paper eq. 2 written out: || q/|q| - z/|z| ||^2, averaged over the batch."""
    return ((q / q.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()


def test_reference_bounds_scale_invariance_and_float32_under_autocast() -> None:
    q, z = torch.randn(7, 5), torch.randn(7, 5)
    torch.testing.assert_close(byol_loss(q, z), reference_loss(q, z), rtol=0, atol=1e-6)
    assert [byol_loss(q, 3 * q).item(), byol_loss(q, -q).item()] == pytest.approx([0, 4], abs=1e-6)
    for q, z in ((q.to(dtype), z.to(dtype)) for dtype in (torch.bfloat16, torch.float16)):
        with torch.autocast("cpu", dtype=q.dtype):  # float32 all the same (assert_close checks)
            loss = byol_loss(q, z)
        torch.testing.assert_close(loss, reference_loss(q.float(), z.float()), rtol=0, atol=1e-5)


def test_symmetric_sum_gradient_closed_form_and_shape_errors() -> None:
    q1, q2, z1, z2 = (torch.randn(6, 4) for _ in range(4))
    expected = reference_loss(q1, z2) + reference_loss(q2, z1)
    for args in ((q1, q2, z1, z2), (q2, q1, z2, z1)):  # swapping the two views: the same loss
        torch.testing.assert_close(symmetric_byol_loss(*args), expected, rtol=0, atol=1e-6)
    # d/dq mean_b(2 - 2 cos(q_b, z_b)) = -2/B (z^ - (q^ . z^) q^) / |q|, with x^ = x / |x|
    q = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    byol_loss(q, z := torch.randn(4, 3, dtype=torch.float64)).backward()
    qn, zn = F.normalize(q, dim=1), F.normalize(z, dim=1)
    expected = -2 / 4 * (zn - (qn * zn).sum(1, keepdim=True) * qn) / q.norm(dim=1, keepdim=True)
    torch.testing.assert_close(q.grad, expected, atol=1e-6, rtol=1e-5)
    for a, b in [(torch.randn(4, 3), torch.randn(4, 2)), (torch.randn(4), torch.randn(4))]:
        with pytest.raises(ValueError, match=r"two \(B, D\) tensors"):
            byol_loss(a, b)
