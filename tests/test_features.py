"""Hidden-layer resolution and feature extraction across backbone families."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

from byol_pytorch.features import Encoder, FeatureExtractor, resolve_layer


def test_resolve_by_name_index_and_none(tiny_net):
    assert resolve_layer(tiny_net, "pool") is tiny_net.pool
    assert resolve_layer(tiny_net, -2) is tiny_net.pool
    assert resolve_layer(tiny_net, 0) is tiny_net.conv
    assert resolve_layer(tiny_net, None) is None
    assert resolve_layer(tiny_net, -1) is None  # the output, as byol-pytorch 0.9.1 (not fc)


def test_unknown_name_lists_close_matches(tiny_net):
    with pytest.raises(ValueError, match=r"'pooll' not found.*closest names: \['pool'"):
        resolve_layer(tiny_net, "pooll")


def test_bad_index_and_type(tiny_net):
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer(tiny_net, 5)
    with pytest.raises(TypeError, match="hidden_layer must be"):
        resolve_layer(tiny_net, 1.5)
    with pytest.raises(TypeError, match="hidden_layer must be"):
        resolve_layer(tiny_net, True)


def test_extractor_matches_manual_forward(tiny_net):
    x = torch.rand(3, 3, 8, 8)
    tiny_net.eval()
    expected = tiny_net.pool(tiny_net.relu(tiny_net.bn(tiny_net.conv(x)))).flatten(1)
    assert torch.allclose(FeatureExtractor(tiny_net, "pool")(x), expected)
    assert torch.allclose(FeatureExtractor(tiny_net, None)(x), tiny_net(x))
    assert torch.allclose(FeatureExtractor(tiny_net, -1)(x), tiny_net(x))


def test_hook_survives_deepcopy_and_hooks_the_copy(tiny_net):
    extractor = FeatureExtractor(tiny_net, "pool").eval()
    clone = copy.deepcopy(extractor)
    with torch.no_grad():
        clone.net.conv.weight.add_(1.0)  # the copy's output must now differ from the original's
    x = torch.rand(2, 3, 8, 8)
    out, out_clone = extractor(x), clone(x)
    assert out.shape == out_clone.shape == (2, 8)
    assert not torch.allclose(out, out_clone)
    net = clone.net  # each extractor reads its own network's layer, not the original's
    expected = net.pool(net.relu(net.bn(net.conv(x)))).flatten(1)
    assert torch.allclose(out_clone, expected) and torch.allclose(extractor(x), out)


def test_state_dict_round_trip_keeps_hook(tiny_net):
    extractor = FeatureExtractor(tiny_net, "pool").eval()
    other = FeatureExtractor(type(tiny_net)(), "pool").eval()
    other.load_state_dict(extractor.state_dict())
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(extractor(x), other(x))


def test_layer_that_never_runs_is_reported():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(4, 4)
            self.unused = nn.Linear(4, 4)

        def forward(self, x):
            return self.used(x.flatten(1)[:, :4])

    with pytest.raises(RuntimeError, match="'unused' never ran"):
        FeatureExtractor(Skips(), "unused")(torch.rand(2, 3, 2, 2))


@pytest.mark.parametrize("output", ["tuple", "dict"])
def test_non_tensor_output_is_rejected(output):
    class Multi(nn.Module):
        def forward(self, x):
            f = x.mean((2, 3))
            return (f, f) if output == "tuple" else {"f": f}

    with pytest.raises(TypeError, match=f"returned {output}"):
        FeatureExtractor(Multi(), None)(torch.rand(2, 3, 4, 4))


def test_token_pooling_cls_and_mean():
    vit = torchvision.models.vit_b_16(image_size=32)  # 2x2 patches + class token
    vit.eval()
    tokens = {}
    vit.encoder.register_forward_hook(lambda m, i, o: tokens.setdefault("t", o))
    x = torch.rand(2, 3, 32, 32)
    cls = FeatureExtractor(vit, "encoder", token_pool="cls")(x)
    mean = FeatureExtractor(vit, "encoder", token_pool="mean")(x)
    flat = FeatureExtractor(vit, "encoder", token_pool="flatten")(x)
    t = tokens["t"]
    assert t.shape == (2, 5, 768)
    assert torch.allclose(cls, t[:, 0])
    assert torch.allclose(mean, t[:, 1:].mean(1))  # the class token is excluded
    assert torch.equal(flat, t.flatten(1))  # byol-pytorch 0.9.1's: every token
    with pytest.raises(ValueError, match="token_pool"):
        FeatureExtractor(vit, "encoder", token_pool="max")


def test_used_parameters_leave_out_the_classifier(tiny_net):
    y, used = FeatureExtractor(tiny_net, "pool").used_parameters(torch.rand(2, 3, 8, 8))
    assert used == {"conv.weight", "conv.bias", "bn.weight", "bn.bias"} and y.shape == (2, 8)
    _, used_all = FeatureExtractor(tiny_net, None).used_parameters(torch.rand(2, 3, 8, 8))
    assert {"fc.weight", "fc.bias"} <= used_all


def test_encoder_adds_the_projector(tiny_net):
    encoder = Encoder(tiny_net, "pool", projector=nn.Linear(8, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    z, y = encoder(x)
    assert torch.equal(y, FeatureExtractor(tiny_net, "pool")(x)) and z.shape == (2, 3)
    assert torch.allclose(z, encoder.projector(y)) and torch.equal(encoder(x, False), y)


BACKBONES = {
    # name: (constructor, hidden_layer, image_size, expected representation size)
    "tv_resnet18": (lambda: torchvision.models.resnet18(), "avgpool", 32, 512),
    "tv_convnext_tiny": (lambda: torchvision.models.convnext_tiny(), -2, 32, 768),
    "tv_efficientnet_b0": (lambda: torchvision.models.efficientnet_b0(), -2, 32, 1280),
    "tv_vit_b_16": (lambda: torchvision.models.vit_b_16(image_size=32), -2, 32, 768),
    "timm_resnet18": (lambda: timm.create_model("resnet18"), "global_pool", 32, 512),
    "timm_convnext_atto": (lambda: timm.create_model("convnext_atto"), "head.global_pool", 32, 320),
    "timm_vit_tiny": (lambda: timm.create_model("vit_tiny_patch16_224", img_size=32), -2, 32, 192),
    "timm_vit_tiny_none": (lambda: timm.create_model("vit_tiny_patch16_224", img_size=32,
                                                     num_classes=0), None, 32, 192),
}


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_families(name):
    make, layer, size, dim = BACKBONES[name]
    extractor = FeatureExtractor(make(), layer).eval()
    with torch.no_grad():
        y = extractor(torch.rand(2, 3, size, size))
    assert y.shape == (2, dim)
    assert torch.isfinite(y).all()
