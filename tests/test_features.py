"""Hidden-layer resolution and feature extraction across backbone families."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from torch import nn

from byol_pytorch.features import Encoder, FeatureExtractor, resolve_layer


def rep(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyNet's representation written out: (B, 3, H, W) -> (B, width) pooled features."""
    return net.pool(net.relu(net.bn(net.conv(x)))).flatten(1)


def test_resolve_layer_by_name_index_and_none_and_its_errors(tiny_net) -> None:
    assert [resolve_layer(tiny_net, layer) for layer in ("pool", -2, 0, None, -1)] == [
        tiny_net.pool, tiny_net.pool, tiny_net.conv, None, None]  # -1: the output (0.9.1), not fc
    for layer, error, match in [
            ("pooll", ValueError, r"'pooll' not found.*closest names: \['pool'"),
            (5, ValueError, "out of range"), (1.5, TypeError, "hidden_layer must be"),
            (True, TypeError, "hidden_layer must be")]:
        with pytest.raises(error, match=match):
            resolve_layer(tiny_net, layer)


def test_extractor_encoder_and_dry_run_on_tiny_net(tiny_net) -> None:
    x, extractor = torch.rand(3, 3, 8, 8), FeatureExtractor(tiny_net, "pool").eval()
    clone = copy.deepcopy(extractor)  # the hook survives and hooks the copy's own layer
    with torch.no_grad():
        clone.net.conv.weight.add_(1.0)
    torch.testing.assert_close((extractor(x), clone(x)), (rep(tiny_net, x), rep(clone.net, x)))
    assert not torch.allclose(clone(x), extractor(x))
    (other := FeatureExtractor(type(tiny_net)(), "pool").eval()).load_state_dict(clone.state_dict())
    torch.testing.assert_close(other(x), clone(x))  # the hook survives a state-dict load
    for layer in (None, -1):
        torch.testing.assert_close(FeatureExtractor(tiny_net, layer)(x), tiny_net(x))
    y, used = extractor.dry_run((2, 3, 8, 8))  # the classifier after the hooked layer is unused
    assert used == {"conv.weight", "conv.bias", "bn.weight", "bn.bias"} and y.shape == (2, 8)
    assert {"fc.weight", "fc.bias"} <= FeatureExtractor(tiny_net, None).dry_run((2, 3, 8, 8))[1]
    z, y = (encoder := Encoder(tiny_net, "pool", projector=nn.Linear(8, 3)).eval())(x)
    torch.testing.assert_close((y, z, encoder(x, False)), (extractor(x), encoder.projector(y), y),
                               rtol=0, atol=0)


class Odd(nn.Module):
    """A backbone with a layer its forward skips, returning a tensor, a tuple or a dict."""

    def __init__(self, output: str) -> None:
        super().__init__()
        self.used, self.unused, self.output = nn.Linear(4, 4), nn.Linear(4, 4), output

    def forward(self, x: torch.Tensor):
        return {"tensor": (f := self.used(x)), "tuple": (f, f), "dict": {"f": f}}[self.output]


@pytest.mark.parametrize("layer,output,error,match", [
    ("unused", "tensor", RuntimeError, "'unused' never ran"),
    (None, "tuple", TypeError, "returned tuple"), (None, "dict", TypeError, "returned dict")])
def test_a_layer_that_never_runs_and_non_tensor_outputs_are_reported(layer, output, error, match):
    with pytest.raises(error, match=match):
        FeatureExtractor(Odd(output), layer)(torch.rand(2, 4))


def test_token_pooling_cls_mean_and_flatten() -> None:
    vit, tokens, x = torchvision.models.vit_b_16(image_size=32).eval(), [], torch.rand(2, 3, 32, 32)
    vit.encoder.register_forward_hook(lambda module, inputs, output: tokens.append(output))
    out = [FeatureExtractor(vit, "encoder", token_pool=p)(x) for p in ("cls", "mean", "flatten")]
    assert (t := tokens[0]).shape == (2, 5, 768)  # 4 patches + class (not in mean); flatten: 0.9.1
    torch.testing.assert_close(out, [t[:, 0], t[:, 1:].mean(1), t.flatten(1)], rtol=0, atol=0)
    with pytest.raises(ValueError, match="token_pool"):
        FeatureExtractor(vit, "encoder", token_pool="max")


BACKBONES = {  # name: (constructor, hidden_layer, image size, representation size)
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
def test_backbone_families(name: str) -> None:
    make, layer, size, dim = BACKBONES[name]
    with torch.no_grad():
        y = FeatureExtractor(make(), layer).eval()(torch.rand(2, 3, size, size))
    assert y.shape == (2, dim) and torch.isfinite(y).all()
