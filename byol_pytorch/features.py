"""Hidden-layer resolution and feature extraction from any backbone."""

from __future__ import annotations

import difflib
from typing import Union

import torch
from torch import Tensor, nn

__all__ = ["resolve_layer", "FeatureExtractor", "HiddenLayer"]

HiddenLayer = Union[str, int, None]
TOKEN_POOLS = ("cls", "mean")


def resolve_layer(model: nn.Module, hidden_layer: HiddenLayer) -> nn.Module | None:
    """The module whose output is the representation; ``None`` means the model's own output.

    Args:
        hidden_layer: a name from ``model.named_modules()`` (e.g. ``"avgpool"``,
            ``"head.global_pool"``), an index into ``list(model.children())`` (negative allowed;
            ``-2`` is the layer before a final classifier), or ``None``.

    Raises:
        ValueError: unknown name (the message lists the closest names) or index out of range.
    """
    if hidden_layer is None:
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
    if hidden_layer in modules and hidden_layer != "":
        return modules[hidden_layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(hidden_layer, names, n=5, cutoff=0.4)
    hint = f"closest names: {close}" if close else f"available names start with: {names[:10]}"
    raise ValueError(f"hidden layer {hidden_layer!r} not found in {type(model).__name__}; {hint}. "
                     "Pass a name from model.named_modules(), a child index, or None.")


def _prefix_tokens(model: nn.Module) -> int:
    """How many leading non-patch tokens (class / register tokens) a ViT puts in its sequence."""
    if hasattr(model, "num_prefix_tokens"):  # timm
        return int(model.num_prefix_tokens)
    return 1 if hasattr(model, "class_token") else 0  # torchvision VisionTransformer


class FeatureExtractor(nn.Module):
    """Runs ``net`` and returns the output of ``hidden_layer`` as a (B, D) representation.

    The forward hook is registered once, here; ``copy.deepcopy`` rebinds it to the copy (the hook
    is a bound method of this module), so the target network made by deep copy hooks its own layer.
    Token outputs (B, N, D) from ViTs are pooled with ``token_pool``: ``"cls"`` takes the first
    token, ``"mean"`` averages the patch tokens (prefix tokens excluded). Other outputs are
    flattened from dim 1.
    """

    def __init__(self, net: nn.Module, hidden_layer: HiddenLayer = -2, token_pool: str = "cls"):
        super().__init__()
        if token_pool not in TOKEN_POOLS:
            raise ValueError(f"token_pool must be one of {TOKEN_POOLS}, got {token_pool!r}")
        self.net = net
        self.hidden_layer = hidden_layer
        self.token_pool = token_pool
        self.num_prefix_tokens = _prefix_tokens(net)
        layer = resolve_layer(net, hidden_layer)
        self._captured: list[Tensor] = []
        if layer is not None:
            layer.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self._captured.append(output)

    def _pool(self, h: Tensor) -> Tensor:
        if h.dim() == 3:  # (B, N, D) tokens
            if self.token_pool == "cls":
                return h[:, 0]
            return h[:, self.num_prefix_tokens:].mean(dim=1)
        return h.flatten(1)  # (B, C, 1, 1) -> (B, C); (B, D) unchanged

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D)."""
        self._captured.clear()
        out = self.net(x)
        if self.hidden_layer is None:
            h = out
        elif not self._captured:
            raise RuntimeError(f"hidden layer {self.hidden_layer!r} never ran in the forward pass of "
                               f"{type(self.net).__name__}; pick a layer that the forward uses "
                               "(see print(model)) or hidden_layer=None for the model's output")
        else:
            # A layer called several times (e.g. a shared activation) reports its last call.
            h = self._captured[-1]
            self._captured.clear()  # drop the reference so activations are freed with the graph
        if not isinstance(h, Tensor):
            where = "the backbone" if self.hidden_layer is None else f"layer {self.hidden_layer!r}"
            raise TypeError(f"{where} returned {type(h).__name__}, expected a Tensor; pick a layer "
                            "that outputs a single tensor (e.g. the pooling layer) or wrap the "
                            "backbone so that it returns one")
        return self._pool(h)

    @torch.no_grad()
    def probe(self, sample: Tensor) -> tuple[Tensor, set[str]]:
        """Representation of ``sample`` (B, D) and the names of the parameters it depends on.

        Names are as in ``self.net.named_parameters()``. Parameters of modules that run only after
        the hooked layer (a classifier head) cannot influence the representation;
        DistributedDataParallel must be told to ignore them.
        """
        if self.hidden_layer is None:
            return self.forward(sample), {n for n, _ in self.net.named_parameters()}
        ran: set[int] = set()
        done = [False]
        layer = resolve_layer(self.net, self.hidden_layer)

        def pre_hook(module: nn.Module, inputs: tuple) -> None:
            if not done[0]:
                ran.add(id(module))

        def mark_done(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            done[0] = True

        handles = [m.register_forward_pre_hook(pre_hook) for m in self.net.modules()]
        handles.append(layer.register_forward_hook(mark_done))
        try:
            y = self.forward(sample)
        finally:
            for handle in handles:
                handle.remove()
        used = set()
        for mod_name, module in self.net.named_modules():
            if id(module) in ran or module is self.net:
                for p_name, _ in module.named_parameters(recurse=False):
                    used.add(f"{mod_name}.{p_name}" if mod_name else p_name)
        # A parameter shared between a used and an unused module counts as used.
        used_ids = {id(p) for n, p in self.net.named_parameters(remove_duplicate=False) if n in used}
        return y, {n for n, p in self.net.named_parameters() if id(p) in used_ids}
