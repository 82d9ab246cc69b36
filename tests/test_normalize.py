"""byol_pytorch.Normalize: the one normalisation of views, embeddings and evaluation encoders."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from byol_pytorch import BYOL, Normalize, default_views
from byol_pytorch.normalize import IMAGENET_MEAN, IMAGENET_STD


def test_matches_torchvision_and_takes_uint8():
    u8 = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    x = u8.float() / 255
    expected = TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    norm = Normalize()
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert torch.allclose(norm(u8), expected, atol=1e-6)  # uint8 is scaled to [0, 1] first
    assert torch.equal(x, u8.float() / 255)  # not in place by default


def test_inplace_overwrites_its_input_and_dtype_is_kept():
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    expected = (x - 0.5) / 0.25
    out = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(x, inplace=True)
    assert out is x and out.dtype == torch.float64
    assert torch.allclose(out, expected)


def test_one_value_applies_to_every_channel():
    x = torch.rand(2, 5, 3, 3)
    assert torch.allclose(Normalize((0.2,), (0.5,))(x), (x - 0.2) / 0.5, atol=1e-6)


def test_adds_no_state_dict_keys_and_follows_to():
    norm = Normalize().to(torch.float64)
    assert norm.state_dict() == {}
    assert norm.mean.dtype == torch.float64


@pytest.mark.parametrize("mean, std, match", [
    ((0.5, 0.5), (0.2, 0.2, 0.2), "same"),
    ((0.5, 0.5, 0.5), (0.2, 0.0, 0.2), "positive"),
    ("abc", (0.2,), "sequences of floats"),
])
def test_bad_statistics_are_rejected(mean, std, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Normalize(mean, std)


def test_bad_images_are_rejected():
    norm = Normalize()
    with pytest.raises(ValueError, match="channels"):
        norm(torch.rand(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        norm(torch.rand(3, 3, 3))
    with pytest.raises(TypeError, match="uint8 or float"):
        norm(torch.ones(2, 3, 3, 3, dtype=torch.int32))


def test_learner_embeds_with_the_views_normalisation():
    """An embedding of a view-sized image equals the backbone's output on the image normalised
    with the statistics the augmentations use (here non-ImageNet ones)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.3, 0.4)
    view1, view2 = default_views(8, preset="small", mean=mean, std=std)
    learner = BYOL(net, 8, hidden_layer=-2, projection_size=4, projection_hidden_size=8,
                   augment_fn=view1, augment_fn2=view2).eval()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        emb = learner(x, return_embedding=True, return_projection=False)
        expected = net[:3](Normalize(mean, std)(x))
    assert torch.allclose(emb, expected, atol=1e-6)
