"""The BYOL learner: wraps a backbone, owns the heads, the target network, augmentation and loss."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from byol_pytorch.augment import BYOLAugment, default_views
from byol_pytorch.batchnorm import PerViewBatchNorm
from byol_pytorch.ema import copy_weights_, ema_update_, make_target
from byol_pytorch.features import FeatureExtractor, HiddenLayer
from byol_pytorch.heads import MLP, SimplicialEmbedding
from byol_pytorch.losses import symmetric_byol_loss
from byol_pytorch.monitor import projection_std
from byol_pytorch.schedules import cosine_tau

__all__ = ["BYOL", "update_moving_average", "unwrap"]

AugmentFn = Callable[[Tensor], Tensor]
RANGE_CHECKS = 10  # batches whose value range is checked; later ones skip the device sync
VIEW_BATCHING = ("auto", "stacked", "separate", "joint")


class _Network(nn.Module):
    """Encoder f followed by projector g: the part shared by the online and target networks."""

    def __init__(self, encoder: FeatureExtractor, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, projection_size)."""
        return self.projector(self.encoder(x))


class BYOL(nn.Module):
    """Bootstrap Your Own Latent (Grill et al., 2020) around any image backbone.

    ``loss = learner(images)`` augments each image twice on the images' device (random parameters
    per image), runs the online network (encoder -> projector -> predictor) and the target network
    (an EMA of encoder -> projector) on both views, and returns the symmetric loss
    ``L(q1, z2) + L(q2, z1)`` with ``L = 2 - 2 cos``. Call ``update_moving_average()`` after each
    optimizer step. The backbone is trained in place: save ``net.state_dict()`` afterwards.

    Args:
        net: the backbone; it is not modified except for one forward hook on ``hidden_layer``.
        image_size: side (or (H, W)) of the augmented views and of the construction dry run.
        hidden_layer: module name, child index (default -2: the layer before the classifier), or
            None for the backbone's own output.
        projection_size: output size of projector and predictor (paper: 256).
        projection_hidden_size: hidden size of projector and predictor (paper: 4096).
        augment_fn: view-1 augmentation, (B, C, H, W) -> (B, C, H', W'); default: the paper's.
        augment_fn2: view-2 augmentation; default: ``augment_fn`` if given, else the paper's.
        moving_average_decay: base EMA rate tau (paper: 0.996).
        use_momentum: False gives the SimSiam variant (target = online with stop-gradient).
        sync_batchnorm: True/False: SyncBatchNorm or BatchNorm1d in the heads; None: BatchNorm1d
            (convert the whole model with ``nn.SyncBatchNorm.convert_sync_batchnorm`` in scripts).
        use_simplicial_embeddings: put a simplicial embedding before the projector (not BYOL;
            byol-pytorch 0.9.1 turned it on by default, here it is off).
        sem_num_simplices, sem_simplex_dim, sem_temperature: its settings.
        total_steps: if given, tau follows the paper's cosine schedule from
            ``moving_average_decay`` to ``final_tau`` over this many updates; else tau is constant.
        final_tau: end value of the tau schedule (paper: 1.0).
        token_pool: for ViT token outputs (B, N, D): "cls" (class token) or "mean" (patch tokens).
        view_batching: how the two views pass through the networks. ``"stacked"``: one batch of
            2B in which every BatchNorm normalises each view with its own statistics (same result
            as two passes; see :class:`~byol_pytorch.batchnorm.PerViewBatchNorm`).
            ``"separate"``: one pass per view. ``"joint"``: one batch of 2B whose BatchNorm
            statistics mix both views (as byol-pytorch 0.9.1; differs from the paper).
            ``"auto"``: ``"stacked"`` on CPU, where it measured faster, else ``"separate"``;
            ``"separate"`` also wherever ``SyncBatchNorm`` synchronises across processes.
        augment_preset: "imagenet" (paper) or "small" (CIFAR-size images: crop scale floor 0.2,
            no blur) for the default augmentations.
        in_channels: channels of the input images.
    """

    def __init__(
        self,
        net: nn.Module,
        image_size: int | Sequence[int],
        hidden_layer: HiddenLayer = -2,
        projection_size: int = 256,
        projection_hidden_size: int = 4096,
        augment_fn: AugmentFn | None = None,
        augment_fn2: AugmentFn | None = None,
        moving_average_decay: float = 0.996,
        use_momentum: bool = True,
        sync_batchnorm: bool | None = None,
        use_simplicial_embeddings: bool = False,
        sem_num_simplices: int = 32,
        sem_simplex_dim: int = 8,
        sem_temperature: float = 0.1,
        *,
        total_steps: int | None = None,
        final_tau: float = 1.0,
        token_pool: str = "cls",
        view_batching: str = "auto",
        augment_preset: str = "imagenet",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        if not 0.0 <= moving_average_decay <= 1.0:
            raise ValueError(f"moving_average_decay must lie in [0, 1], got {moving_average_decay}")
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int or None, got {total_steps}")
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        self.in_channels = in_channels
        self.moving_average_decay = moving_average_decay
        self.final_tau = final_tau
        self.total_steps = total_steps
        self.use_momentum = use_momentum
        if view_batching not in VIEW_BATCHING:
            raise ValueError(f"view_batching must be one of {VIEW_BATCHING}, got {view_batching!r}")
        self.view_batching = view_batching
        self._step = 0  # EMA updates done; saved through get_extra_state
        self._target_needs_copy = True  # copy online -> target on the first training forward
        self._range_checks_left = RANGE_CHECKS
        # () tensor set by each forward that computes the loss: the spread of the online
        # projections (see byol_pytorch.monitor); read it when logging, it costs no sync until then.
        self.last_projection_std: Tensor | None = None

        default1, default2 = default_views(self.image_size, preset=augment_preset)
        self.augment1 = augment_fn if augment_fn is not None else default1
        self.augment2 = augment_fn2 if augment_fn2 is not None else (augment_fn or default2)
        # With our augmentations (default or user-configured BYOLAugment) inputs are [0, 1] images
        # and the views are normalised; embeddings then get the same normalisation.
        self.expects_unit_range = isinstance(self.augment1, BYOLAugment)

        encoder = FeatureExtractor(net, hidden_layer, token_pool=token_pool)
        repr_dim, unused = self._dry_run(encoder)
        sync_bn = bool(sync_batchnorm)
        projector: nn.Module = MLP(repr_dim, projection_hidden_size, projection_size, sync_bn)
        if use_simplicial_embeddings:
            sem = SimplicialEmbedding(repr_dim, sem_num_simplices, sem_simplex_dim, sem_temperature)
            projector = nn.Sequential(sem, MLP(sem.out_dim, projection_hidden_size, projection_size,
                                               sync_bn))
        self.online = _Network(encoder, projector)
        self.predictor = MLP(projection_size, projection_hidden_size, projection_size, sync_bn)
        self.target = make_target(self.online) if use_momentum else None
        # Parameters after the hooked layer (e.g. the classifier) never get gradients; tell
        # DistributedDataParallel so that plain DDP (find_unused_parameters=False) works.
        self._ddp_params_and_buffers_to_ignore = [f"online.encoder.net.{n}" for n in sorted(unused)]

    # ------------------------------------------------------------------ construction helpers
    def _dry_run(self, encoder: FeatureExtractor) -> tuple[int, set[str]]:
        """Representation size and the backbone parameters the representation does not use.

        Runs in eval mode under no_grad on the backbone's device, so BatchNorm statistics stay
        untouched; every module's train/eval flag is restored afterwards.
        """
        net = encoder.net
        tensors = list(net.parameters()) + list(net.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
        sample = torch.rand(2, self.in_channels, *self.image_size, device=device, dtype=dtype)
        modes = {m: m.training for m in net.modules()}
        try:
            net.eval()
            with torch.no_grad():
                y, used = encoder.probe(sample)
        except (RuntimeError, TypeError) as err:
            raise type(err)(f"the dry run of the backbone on a (2, {self.in_channels}, "
                            f"{self.image_size[0]}, {self.image_size[1]}) input failed: {err}") from err
        finally:
            for module, mode in modes.items():
                module.train(mode)
        if y.dim() != 2:
            raise RuntimeError(f"representation must be (B, D) after pooling, got {tuple(y.shape)}")
        if y.shape[1] > 65536:
            warnings.warn(f"the hidden layer {encoder.hidden_layer!r} gives a {y.shape[1]}-dim "
                          "representation (a flattened feature map); hook a pooling layer instead "
                          "(e.g. 'avgpool' or 'head.global_pool') to keep the projector small",
                          stacklevel=3)
        unused = {n for n, _ in net.named_parameters()} - used
        return y.shape[1], unused

    # ------------------------------------------------------------------ public API
    @property
    def net(self) -> nn.Module:
        """The wrapped backbone (trained in place)."""
        return self.online.encoder.net

    @property
    def step(self) -> int:
        """Number of ``update_moving_average()`` calls so far (restored by ``load_state_dict``)."""
        return self._step

    @property
    def tau(self) -> float:
        """The EMA rate the next ``update_moving_average()`` will use."""
        if self.total_steps is None:
            return self.moving_average_decay
        return cosine_tau(self._step, self.total_steps, self.moving_average_decay, self.final_tau)

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True):
        """As ``nn.Module.named_parameters``, without the frozen target network."""
        for name, param in super().named_parameters(prefix, recurse, remove_duplicate):
            if not name[len(prefix):].lstrip(".").startswith("target."):
                yield name, param

    def get_extra_state(self) -> dict[str, Any]:
        return {"step": self._step, "target_needs_copy": self._target_needs_copy}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])
        self._target_needs_copy = bool(state["target_needs_copy"])

    @torch.no_grad()
    def update_moving_average(self) -> None:
        """``target = tau * target + (1 - tau) * online``, then advance the tau schedule."""
        if self.target is None:
            raise RuntimeError("update_moving_average() needs use_momentum=True; with "
                               "use_momentum=False the target is the online network itself")
        if self._target_needs_copy:
            self._sync_target()
        ema_update_(self.target, self.online, self.tau)
        self._step += 1

    @torch.no_grad()
    def reset_moving_average(self) -> None:
        """Make the target a fresh copy of the online network and restart the tau schedule."""
        self._step = 0
        if self.target is not None:
            self._sync_target()

    def _sync_target(self) -> None:
        # Deferred to the first training step so that the target starts from the weights the
        # online network has then: DDP's initial broadcast, or a checkpoint loaded into the backbone.
        copy_weights_(self.target, self.online)
        self._target_needs_copy = False

    def forward(
        self,
        x: Tensor,
        x2: Tensor | None = None,
        return_embedding: bool | None = None,
        return_projection: bool | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """BYOL loss of a batch, or its online embedding.

        Args:
            x: (B, C, H, W) float images in [0, 1] (augmented here), or view 1 if ``x2`` is given.
            x2: optional (B, C, H', W') view 2 made by the caller; both views are then used as
                they are (no augmentation, no normalisation).
            return_embedding: (default False) return the online network's output for ``x``
                without augmentation (normalised first, as the views are, when augment_fn is a
                BYOLAugment: the default).
            return_projection: (default True) with ``return_embedding``, return
                ``(projection, embedding)`` ((B, projection_size), (B, D)) instead of just the
                embedding (B, D).

        byol-pytorch 0.9.1's positional order ``learner(x, return_embedding, return_projection)``
        also works: a bool in second place is read as ``return_embedding``.

        Returns:
            () float32 loss, or the embedding as described above.
        """
        if isinstance(x2, bool):  # 0.9.1's order: the next positional is return_projection
            x2, return_embedding, return_projection = None, x2, (
                return_projection if return_embedding is None else return_embedding)
        return_projection = True if return_projection is None else return_projection
        if return_embedding:
            self._check_images(x, "x", check_range=self.expects_unit_range)
            y = self.online.encoder(self.augment1.normalize_(x.clone()) if self.expects_unit_range
                                    else x)
            return (self.online.projector(y), y) if return_projection else y

        if x2 is None:
            self._check_images(x, "x", check_range=self.expects_unit_range)
            view1, view2 = self._augment(self.augment1, x), self._augment(self.augment2, x)
        else:
            self._check_images(x, "x (view 1)", check_range=False)
            self._check_images(x2, "x2 (view 2)", check_range=False)
            if x.shape[0] != x2.shape[0]:
                raise ValueError(f"the two views must have the same batch size, got {x.shape[0]} "
                                 f"and {x2.shape[0]}")
            view1, view2 = x, x2
        if self.training and x.shape[0] < 2:
            raise ValueError("a batch of 1 cannot be trained: the projector's BatchNorm needs at "
                             "least 2 samples; use a larger batch (or call learner.eval())")
        if self.training and self.target is not None and self._target_needs_copy:
            self._sync_target()
        return self._loss(view1, view2)

    # ------------------------------------------------------------------ forward helpers
    def _loss(self, view1: Tensor, view2: Tensor) -> Tensor:
        batching = self._batching(view1, view2)
        if batching == "separate":
            z1, z2 = self.online(view1), self.online(view2)
            q1, q2 = self.predictor(z1), self.predictor(z2)
            with torch.no_grad():
                t1, t2 = (self.target(view1), self.target(view2)) if self.target is not None \
                    else (z1, z2)
        else:
            views = torch.cat([view1, view2])  # (2B, C, H, W)
            with PerViewBatchNorm(2) if batching == "stacked" else nullcontext():
                z = self.online(views)
                q = self.predictor(z)
                with torch.no_grad():
                    t = self.target(views) if self.target is not None else z
            (z1, z2), (q1, q2), (t1, t2) = z.chunk(2), q.chunk(2), t.chunk(2)  # 2 x (B, P)
        if z1.shape[0] > 1:
            self.last_projection_std = projection_std(z1.detach())
        # SimSiam (no target network): the online projections with stop-gradient.
        return symmetric_byol_loss(q1, q2, t1.detach(), t2.detach())

    def _batching(self, view1: Tensor, view2: Tensor) -> str:
        """The view batching this forward uses (see ``view_batching``)."""
        batching = self.view_batching
        if batching == "auto":
            batching = "stacked" if view1.device.type == "cpu" else "separate"
        if view1.shape != view2.shape:
            return "separate"  # views of different sizes cannot share a batch
        if batching == "stacked" and self.training and _syncs_batchnorm(self.online):
            batching = "separate"  # SyncBatchNorm's cross-process statistics cannot be split
        return batching

    def _augment(self, fn: AugmentFn, x: Tensor) -> Tensor:
        # Augmentation is preprocessing: keep it in the images' dtype, outside any autocast region.
        with torch.autocast(device_type=x.device.type, enabled=False):
            view = fn(x)
        if not isinstance(view, Tensor) or view.dim() != 4 or view.shape[0] != x.shape[0]:
            got = tuple(view.shape) if isinstance(view, Tensor) else type(view).__name__
            raise ValueError(f"augment_fn must map a (B, C, H, W) batch to a (B, C, H', W') batch "
                             f"of views, got {got} for input {tuple(x.shape)}")
        return view

    def _check_images(self, x: Tensor, name: str, check_range: bool) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be a (B, C, H, W) batch, got shape {tuple(x.shape)}"
                             + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""))
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got {x.dtype}; convert "
                            "uint8 images with x.float() / 255")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{name} has {x.shape[1]} channels, expected {self.in_channels} "
                             "(set in_channels=... or fix the channel order: (B, C, H, W))")
        device = self.predictor[0].weight.device
        if x.device != device:
            raise ValueError(f"{name} is on {x.device} but the learner is on {device}; move one "
                             f"of them, e.g. learner.to({str(x.device)!r})")
        if check_range and self._range_checks_left > 0 and not torch.compiler.is_compiling():
            self._range_checks_left -= 1
            lo, hi = torch.aminmax(x.detach())
            if lo < -0.01 or hi > 1.01:
                self._range_checks_left = 0  # warn once
                warnings.warn(f"{name} has values in [{lo.item():.3g}, {hi.item():.3g}], expected "
                              "[0, 1]: pass un-normalised images (x.float() / 255) since the "
                              "default augmentations normalise them themselves", stacklevel=3)


def _syncs_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has SyncBatchNorm layers that synchronise statistics across processes."""
    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()))


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel``/``DataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers, in any nesting."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def update_moving_average(model: nn.Module) -> None:
    """``model.update_moving_average()`` for a BYOL learner, also when wrapped by DDP or compile."""
    learner = unwrap(model)
    if not isinstance(learner, BYOL):
        raise TypeError(f"expected a BYOL learner (possibly wrapped), got {type(learner).__name__}")
    learner.update_moving_average()
