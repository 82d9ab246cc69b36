"""Hidden-layer resolution, feature extraction from any backbone, backbone + projector pairs."""

from __future__ import annotations

import difflib
from typing import Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from byol_pytorch.heads import MLP, SimSiamMLP, simplicial_projector

__all__ = ["resolve_layer", "FeatureExtractor", "NetWrapper", "HiddenLayer"]

HiddenLayer = Union[str, int, None]
TOKEN_POOLS = ("cls", "mean", "flatten")


def resolve_layer(model: nn.Module, hidden_layer: HiddenLayer) -> nn.Module | None:
    """The module whose output is the representation; ``None`` means the model's own output.

    Args:
        hidden_layer: a name from ``model.named_modules()`` (e.g. ``"avgpool"``,
            ``"head.global_pool"``), an index into ``list(model.children())`` (``-2`` is the layer
            before a final classifier), or ``None``. ``-1`` means the model's own output, as in
            byol-pytorch 0.9.1 (not the last child, which need not run last).

    Raises:
        ValueError: unknown name (the message lists the closest names) or index out of range.
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
    token, ``"mean"`` averages the patch tokens (prefix tokens excluded), ``"flatten"`` keeps them
    all as one (B, N * D) vector (byol-pytorch 0.9.1's). Other outputs are flattened from dim 1.
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
        self.uses_output = layer is None  # the representation is the backbone's own output
        self._captured: list[Tensor] = []
        if layer is not None:
            layer.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self._captured.append(output)

    def _pool(self, h: Tensor) -> Tensor:
        if h.dim() == 3 and self.token_pool != "flatten":  # (B, N, D) tokens
            if self.token_pool == "cls":
                return h[:, 0]
            return h[:, self.num_prefix_tokens:].mean(dim=1)
        return h.flatten(1)  # (B, C, 1, 1) -> (B, C); (B, D) unchanged

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D)."""
        return self.get_representation(x)

    def get_representation(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D): the pooled output of the hidden layer."""
        self._captured.clear()
        out = self.net(x)
        if self.uses_output:
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
            where = "the backbone" if self.uses_output else f"layer {self.hidden_layer!r}"
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
        if self.uses_output:
            return self.get_representation(sample), {n for n, _ in self.net.named_parameters()}
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
            y = self.get_representation(sample)
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


class NetWrapper(FeatureExtractor):
    """A backbone and its projector: ``(projection, representation) = wrapper(x)``.

    BYOL's online network (``learner.online_encoder``) and, as a copy, its target
    (``learner.target_encoder``), with byol-pytorch 0.9.1's name, arguments and outputs:
    ``wrapper(x)`` -> ((B, projection_size), (B, D)); ``wrapper(x, return_projection=False)`` ->
    (B, D). The backbone is ``wrapper.net``, the projector ``wrapper.projector``. Built on its own,
    the projector is created at the first call, on the representation's device and dtype (as in
    0.9.1); :class:`~byol_pytorch.BYOL` builds it at construction.

    Args:
        net: the backbone.
        projection_size, projection_hidden_size: output and hidden size of the projector.
        layer: hidden layer, as ``hidden_layer`` of :func:`resolve_layer`.
        use_simsiam_mlp: the 3-layer :class:`~byol_pytorch.heads.SimSiamMLP` projector.
        sync_batchnorm: SyncBatchNorm in the projector; None: when a process group of more than one
            process is initialised when the projector is built (0.9.1's rule).
        use_simplicial_embeddings, sem_num_simplices, sem_simplex_dim, sem_temperature: put
            :func:`~byol_pytorch.heads.simplicial_projector`'s embedding before the projector.
        token_pool: pooling of ViT token outputs, see :class:`FeatureExtractor`.
        output_bias: bias in the projector's last Linear (see :class:`~byol_pytorch.MLP`).
    """

    def __init__(
        self,
        net: nn.Module,
        projection_size: int,
        projection_hidden_size: int,
        layer: HiddenLayer = -2,
        use_simsiam_mlp: bool = False,
        sync_batchnorm: bool | None = None,
        use_simplicial_embeddings: bool = False,
        sem_num_simplices: int = 32,
        sem_simplex_dim: int = 8,
        sem_temperature: float = 0.1,
        *,
        token_pool: str = "cls",
        output_bias: bool = True,
    ) -> None:
        super().__init__(net, layer, token_pool=token_pool)
        self.output_bias = output_bias
        self.projector: nn.Module | None = None
        self.projection_size = projection_size
        self.projection_hidden_size = projection_hidden_size
        self.use_simsiam_mlp = use_simsiam_mlp
        self.sync_batchnorm = sync_batchnorm
        self.use_simplicial_embeddings = use_simplicial_embeddings
        self.sem = dict(num_simplices=sem_num_simplices, simplex_dim=sem_simplex_dim,
                        temperature=sem_temperature)

    def build_projector(self, dim: int, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> nn.Module:
        """Create ``self.projector`` for ``dim``-wide representations, on ``device`` in ``dtype``.
        """
        sync = self.sync_batchnorm
        if sync is None:
            sync = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        def head(in_dim: int) -> nn.Module:
            if self.use_simsiam_mlp:  # no biases at all: BN follows every layer
                return SimSiamMLP(in_dim, self.projection_hidden_size, self.projection_size, sync)
            return MLP(in_dim, self.projection_hidden_size, self.projection_size, sync,
                       self.output_bias)

        if self.use_simplicial_embeddings:
            sem_dim = self.sem["num_simplices"] * self.sem["simplex_dim"]
            projector = simplicial_projector(dim, head(sem_dim), sync_batchnorm=sync, **self.sem)
        else:
            projector = head(dim)
        self.projector = projector.to(device=device, dtype=dtype)
        return self.projector

    def forward(self, x: Tensor, return_projection: bool = True) -> Tensor | tuple[Tensor, Tensor]:
        """(B, C, H, W) -> ((B, projection_size), (B, D)), or (B, D) without the projection."""
        representation = self.get_representation(x)
        if not return_projection:
            return representation
        if self.projector is None:
            self.build_projector(representation.shape[1], representation.device,
                                 representation.dtype)
        return self.projector(representation), representation
