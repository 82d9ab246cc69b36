"""The representation of any backbone: hidden-layer lookup, a hooked extractor, its projector."""

from __future__ import annotations

import difflib
from typing import Union

import torch
from torch import Tensor, nn

__all__ = ["HiddenLayer", "resolve_layer", "FeatureExtractor", "Encoder"]

HiddenLayer = Union[str, int, None]
TOKEN_POOLS = ("cls", "mean", "flatten")


def resolve_layer(model: nn.Module, hidden_layer: HiddenLayer) -> nn.Module | None:
    """The module whose output is the representation (None: the model's own output).

    ``hidden_layer``: a name from ``model.named_modules()`` (``"avgpool"``), an index into
    ``list(model.children())`` (-2: the layer before a classifier), or None; -1 is the model's
    output too (the last child need not run last). ValueError: unknown name (with the closest
    names) or index out of range.
    """
    if hidden_layer is None or (isinstance(hidden_layer, int) and hidden_layer == -1):
        return None
    if isinstance(hidden_layer, bool) or not isinstance(hidden_layer, (str, int)):
        raise TypeError(f"hidden_layer must be a module name (str), a child index (int) or None, "
                        f"got {type(hidden_layer).__name__}")
    if isinstance(hidden_layer, int):
        children = list(model.children())
        if not -len(children) <= hidden_layer < len(children):
            raise ValueError(f"hidden_layer={hidden_layer} is out of range: "
                             f"{type(model).__name__} has {len(children)} children")
        return children[hidden_layer]
    modules = dict(model.named_modules())
    if hidden_layer in modules and hidden_layer:
        return modules[hidden_layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(hidden_layer, names, n=5, cutoff=0.4)
    hint = f"closest names: {close}" if close else f"available names start with: {names[:10]}"
    raise ValueError(f"hidden layer {hidden_layer!r} not found in {type(model).__name__}; {hint}. "
                     "Pass a name from model.named_modules(), a child index, or None.")


class FeatureExtractor(nn.Module):
    """``net`` with a forward hook on ``hidden_layer``: (B, C, H, W) -> (B, D) representation.

    The hook is a bound method registered once: ``copy.deepcopy`` rebinds it, so a deep copy (the
    target) hooks its own layer. ViT tokens (B, N, D) are pooled by ``token_pool``: "cls", "mean"
    (patch tokens only) or "flatten" (N*D); other outputs are flattened from dim 1.
    """

    def __init__(self, net: nn.Module, hidden_layer: HiddenLayer = -2, token_pool: str = "cls"):
        super().__init__()
        if token_pool not in TOKEN_POOLS:
            raise ValueError(f"token_pool must be one of {TOKEN_POOLS}, got {token_pool!r}")
        self.net, self.hidden_layer, self.token_pool = net, hidden_layer, token_pool
        # leading non-patch tokens: timm's num_prefix_tokens, torchvision ViT's class token
        self.num_prefix_tokens = int(getattr(net, "num_prefix_tokens", hasattr(net, "class_token")))
        layer = resolve_layer(net, hidden_layer)
        self.uses_output = layer is None  # the representation is the backbone's own output
        self._captured, self._capturing = [], False  # only in forward: no activations kept
        if layer is not None:
            layer.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if self._capturing:
            self._captured.append(output)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D): the pooled output of the hidden layer."""
        self._captured.clear()
        self._capturing = True
        try:
            h = self.net(x)
        finally:
            self._capturing = False
        if not self.uses_output:
            if not self._captured:
                raise RuntimeError(f"hidden layer {self.hidden_layer!r} never ran in the forward "
                                   f"pass of {type(self.net).__name__}; pick a layer the forward "
                                   "uses (see print(model)) or hidden_layer=None for its output")
            h = self._captured[-1]  # a layer called several times reports its last call
            self._captured.clear()  # no reference kept: activations are freed with the graph
        if not isinstance(h, Tensor):
            where = "the backbone" if self.uses_output else f"layer {self.hidden_layer!r}"
            raise TypeError(f"{where} returned {type(h).__name__}, expected a Tensor; pick a layer "
                            "that outputs one tensor (e.g. the pooling layer) or wrap the backbone")
        if h.dim() == 3 and self.token_pool != "flatten":  # (B, N, D) tokens
            return h[:, 0] if self.token_pool == "cls" else h[:, self.num_prefix_tokens:].mean(1)
        return h.flatten(1)

    def dry_run(self, shape: tuple[int, ...]) -> tuple[Tensor, set[str]]:
        """Representation (B, D) of random images of ``shape`` and the names of ``net``'s
        parameters it uses (not a classifier after the hooked layer: DDP must ignore it); on the
        backbone's device and dtype, eval mode, no_grad: BatchNorm statistics and modes stay."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
        modes, ran, done = {m: m.training for m in self.net.modules()}, {id(self.net)}, [False]
        handles = [m.register_forward_pre_hook(lambda m, i: None if done[0] else ran.add(id(m)))
                   for m in self.net.modules()]
        if not self.uses_output:  # modules that run after the hooked layer are not used
            handles.append(resolve_layer(self.net, self.hidden_layer).register_forward_hook(
                lambda *_: done.__setitem__(0, True)))
        try:
            self.net.eval()
            with torch.no_grad():  # without a projector (not built yet)
                y = FeatureExtractor.forward(self, torch.rand(shape, device=device, dtype=dtype))
        except Exception as err:  # noqa: BLE001 - any failure gets the same explanation
            raise RuntimeError(f"the dry run of the backbone on a {shape} {dtype} input failed "
                               f"with {type(err).__name__}: {err}\nCheck that the image size suits"
                               " the backbone (a timm ViT needs timm.create_model(name, img_size="
                               f"{shape[-2]})), that its {shape[1]} input channels match its first"
                               f" layer, and that hidden_layer={self.hidden_layer!r} outputs a "
                               "tensor.") from err
        finally:
            for handle in handles:
                handle.remove()
            for module, mode in modes.items():
                module.train(mode)
        used = {id(p) for m in self.net.modules() if id(m) in ran
                for p in m.parameters(recurse=False)}  # shared with a used module counts as used
        return y, {n for n, p in self.net.named_parameters() if id(p) in used}


class Encoder(FeatureExtractor):
    """Backbone + projector (the paper's f and g; a learner's online and target encoders):
    ``encoder(x)`` -> (projection (B, P), representation (B, D)); without projection: (B, D)."""

    def __init__(self, net: nn.Module, hidden_layer: HiddenLayer = -2, token_pool: str = "cls",
                 projector: nn.Module | None = None) -> None:
        super().__init__(net, hidden_layer, token_pool)
        self.projector = projector

    def forward(self, x: Tensor, return_projection: bool = True) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C, H, W) -> ((B, P), (B, D)), or (B, D) without the projection."""
        y = super().forward(x)
        return (self.projector(y), y) if return_projection else y
