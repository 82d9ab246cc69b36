"""The BYOL learner: wraps a backbone, owns the heads, the target network, augmentation and loss."""

from __future__ import annotations

import warnings
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol_pytorch.augment import BYOLAugment, default_views
from byol_pytorch.ema import ema_update_, make_target
from byol_pytorch.features import Encoder, HiddenLayer
from byol_pytorch.heads import MLP, projection_head
from byol_pytorch.losses import symmetric_byol_loss
from byol_pytorch.monitor import projection_std
from byol_pytorch.schedules import cosine_tau

__all__ = ["BYOL", "update_moving_average", "unwrap"]

AugmentFn = Callable[[Tensor], Tensor]
RANGE_CHECKS = 10  # batches whose value range is checked; later ones skip the device sync
VIEW_BATCHING = ("separate", "joint")
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)  # ImageNet's mean and std averaged over the channels


class BYOL(nn.Module):
    """Bootstrap Your Own Latent (Grill et al., 2020) around any image backbone.

    ``loss = learner(images)`` augments each image twice on its device (parameters per image), runs
    the online network (encoder -> projector -> predictor) and the target (an EMA copy of encoder
    -> projector) on both views: ``L(q1, z2) + L(q2, z1)``, ``L = 2 - 2 cos``. Call
    ``update_moving_average()`` after each optimizer step; the backbone trains in place. Parts
    (on the backbone's device and dtype): ``online_encoder`` (an Encoder), ``online_predictor``,
    ``target_encoder`` (None with ``use_momentum=False``: SimSiam), ``augment1``/``augment2``.
    The README's table explains each argument (0.9.1's keep their positions;
    :mod:`byol_pytorch.byol_pytorch` adds its other names).
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
        view_batching: str = "separate",
        augment_preset: str = "imagenet",
        head_output_bias: bool = True,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        if not 0.0 <= moving_average_decay <= 1.0 or (total_steps is not None and total_steps <= 0):
            raise ValueError("moving_average_decay must lie in [0, 1] and total_steps be a positive"
                             f" int or None, got {moving_average_decay}, {total_steps}")
        if view_batching not in VIEW_BATCHING:
            raise ValueError(f"view_batching must be one of {VIEW_BATCHING}, got {view_batching!r}")
        self.image_size, self.view_batching, self.use_momentum = size, view_batching, use_momentum
        self.moving_average_decay, self.final_tau, self.total_steps = (
            moving_average_decay, final_tau, total_steps)
        self.in_channels = in_channels if in_channels is not None else next(
            (m.in_channels for m in net.modules() if isinstance(m, nn.Conv2d)), 3)
        self._step = 0  # host copy of the ema_step buffer: tau without a device sync
        self._target_needs_copy = True  # the target copies the online network at the 1st step
        self._range_checks_left, self._warned = RANGE_CHECKS, set()
        # () tensor set by each loss forward: spread of the online projections (monitor.py)
        self.last_projection_std: Tensor | None = None

        rgb = {} if self.in_channels == 3 else dict(jitter_p=0.0, grayscale_p=0.0,
                                                     mean=GRAY_MEAN, std=GRAY_STD)
        default1, default2 = default_views(size, preset=augment_preset, **rgb)
        self.augment1 = augment_fn if augment_fn is not None else default1
        self.augment2 = augment_fn2 if augment_fn2 is not None else (augment_fn or default2)
        # our augmentations take [0, 1] images and normalise: embeddings get the same
        self.expects_unit_range = isinstance(self.augment1, BYOLAugment)

        self.online_encoder = Encoder(net, hidden_layer, token_pool)
        y, used = self.online_encoder.dry_run((2, self.in_channels, *size))
        device, dtype = y.device, y.dtype
        if y.shape[1] > 65536:
            warnings.warn(f"the hidden layer {hidden_layer!r} gives a {y.shape[1]}-dim "
                          "representation (a flattened feature map); hook a pooling layer instead "
                          "(e.g. 'avgpool' or 'head.global_pool')", stacklevel=2)

        head = partial(projection_head, hidden_dim=projection_hidden_size, out_dim=projection_size,
                       simsiam=not use_momentum, sync_batchnorm=sync_batchnorm,
                       output_bias=head_output_bias)
        from byol_pytorch.byol_pytorch import adopt_0_9_1_state_dict, simplicial_projector
        self.online_encoder.projector = (simplicial_projector(
            y.shape[1], head, sem_num_simplices, sem_simplex_dim, sem_temperature, sync_batchnorm)
            if use_simplicial_embeddings else head(y.shape[1])).to(device, dtype)
        self.online_predictor = MLP(projection_size, projection_hidden_size, projection_size,
                                    sync_batchnorm, head_output_bias).to(device, dtype)
        self.target_encoder = make_target(self.online_encoder) if use_momentum else None
        for augment in (a for a in (self.augment1, self.augment2) if isinstance(a, nn.Module)):
            augment.to(device)  # normalisation constants
        # tensors, so that state_dict() holds tensors only and resumes the tau schedule
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("target_synced", torch.zeros((), dtype=torch.bool, device=device))
        # a classifier after the hooked layer gets no gradient: plain DDP must not wait for it
        self._ddp_params_and_buffers_to_ignore = [
            f"online_encoder.net.{n}" for n, _ in net.named_parameters() if n not in used]
        self.register_load_state_dict_pre_hook(adopt_0_9_1_state_dict)  # 0.9.1's state dicts

    @property
    def net(self) -> nn.Module:
        """The wrapped backbone (trained in place)."""
        return self.online_encoder.net

    @property
    def step(self) -> int:
        """``update_moving_average()`` calls so far (restored by ``load_state_dict``)."""
        return self._step

    @property
    def tau(self) -> float:
        """The EMA rate the next ``update_moving_average()`` uses."""
        return self.moving_average_decay if self.total_steps is None else cosine_tau(
            self._step, self.total_steps, self.moving_average_decay, self.final_tau)

    # not traced (a graph break on purpose): tau comes from a host-side counter, no recompiles
    @torch.compiler.disable
    @torch.no_grad()
    def update_moving_average(self) -> None:
        """``target = tau * target + (1 - tau) * online``, then advance the tau schedule."""
        if self.target_encoder is None:
            raise RuntimeError("update_moving_average() needs use_momentum=True; with "
                               "use_momentum=False the target is the online network itself")
        self._sync_target_once()
        ema_update_(self.target_encoder, self.online_encoder, self.tau)
        self._step += 1
        self.ema_step.fill_(self._step)

    # Not traced: a compiled forward would guard on the flag and compile again once it flips.
    @torch.compiler.disable
    def _sync_target_once(self) -> None:
        # at the first step: the target starts from the weights then (DDP's broadcast, a checkpoint)
        if self._target_needs_copy:
            ema_update_(self.target_encoder, self.online_encoder, 0.0)
            self._target_needs_copy = False
            self.target_synced.fill_(True)

    def forward(self, x: Tensor, return_embedding: bool = False, return_projection: bool = True,
                *, x2: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, C, H, W) float images in [0, 1] -> () float32 loss in [0, 8]; ``x2``: view 2
        made by the caller (``x`` is view 1; both used as given). ``return_embedding``: (projection
        (B, P), representation (B, D)) of ``x`` resized to ``image_size``, normalised as the views
        (in eval mode, under no_grad); ``return_projection=False``: the representation alone."""
        if isinstance(return_embedding, Tensor):
            raise TypeError("the second positional argument of learner(...) is return_embedding "
                            "(0.9.1's); pass views you made as learner(view1, x2=view2)")
        if return_embedding:
            return self._embed(self._prepare(x, "x", self.expects_unit_range), return_projection)
        if self.training and self.target_encoder is not None:
            self._sync_target_once()  # first, so that a compiled forward is one graph after it
        if x2 is None:
            x = self._prepare(x, "x", self.expects_unit_range)
            view1, view2 = self._augment(self.augment1, x), self._augment(self.augment2, x)
        else:
            view1, view2 = self._prepare(x, "x (view 1)", False), self._prepare(x2, "x2", False)
            if view1.shape[0] != view2.shape[0]:
                raise ValueError(f"the two views must have the same batch size, got "
                                 f"{view1.shape[0]} and {view2.shape[0]}")
        if self.training and view1.shape[0] < 2:
            raise ValueError("a batch of 1 cannot be trained (BatchNorm needs 2+ samples); use a "
                             "larger batch, or learner.eval()")
        sizes = {tuple(view1.shape[-2:]), tuple(view2.shape[-2:])}
        if sizes == {self.image_size}:
            return self._loss(view1, view2)
        self._warn_once("size", f"the views are {' and '.join(map(str, sorted(sizes)))} but "
                        f"image_size is {self.image_size}: pass image_size=<their size>", 5)
        try:
            return self._loss(view1, view2)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise ValueError(f"the backbone failed on views of size {sorted(sizes)} (image_size is"
                             f" {self.image_size}): {type(err).__name__}: {err}\nMake the views "
                             "image_size, or pass their size as image_size") from err

    def _embed(self, x: Tensor, return_projection: bool) -> Tensor | tuple[Tensor, Tensor]:
        if self.training:
            if x.shape[0] < 2:
                raise ValueError("a single image cannot be embedded in train mode (BatchNorm needs "
                                 "2+ samples); call learner.eval() first, under torch.no_grad()")
            self._warn_once("train", "embeddings taken in train mode depend on the rest of the "
                            "batch and update the BatchNorm running statistics; call "
                            "learner.eval() first (and learner.train() before training again)", 6)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False,
                              antialias=True)
        if self.expects_unit_range:
            x = self.augment1.normalize(x)  # the views' normalisation
        return self.online_encoder(x, return_projection=return_projection)

    def _loss(self, view1: Tensor, view2: Tensor) -> Tensor:
        online, target, predictor = self.online_encoder, self.target_encoder, self.online_predictor
        if self.view_batching == "separate" or view1.shape != view2.shape:  # one pass per view
            z1, z2 = online(view1)[0], online(view2)[0]
            q1, q2 = predictor(z1), predictor(z2)
            with torch.no_grad():
                t1, t2 = (target(view1)[0], target(view2)[0]) if target is not None else (z1, z2)
        else:
            views = torch.cat([view1, view2])  # (2B, C, H, W)
            z = online(views)[0]
            q = predictor(z)
            with torch.no_grad():
                t = target(views)[0] if target is not None else z
            (z1, _), (q1, q2), (t1, t2) = z.chunk(2), q.chunk(2), t.chunk(2)  # 2 x (B, P)
        if z1.shape[0] > 1:
            self.last_projection_std = projection_std(z1.detach())
        # SimSiam (no target network): the online projections with stop-gradient
        return symmetric_byol_loss(q1, q2, t1.detach(), t2.detach())

    def _augment(self, fn: AugmentFn, x: Tensor) -> Tensor:
        # Augmentation is preprocessing: in the images' dtype, outside any autocast region.
        with torch.autocast(device_type=x.device.type, enabled=False):
            view = fn(x)
        if not isinstance(view, Tensor) or view.dim() != 4 or view.shape[0] != x.shape[0]:
            got = tuple(view.shape) if isinstance(view, Tensor) else type(view).__name__
            raise ValueError(f"augment_fn must map a (B, C, H, W) batch to a (B, C, H', W') batch "
                             f"of views, got {got} for input {tuple(x.shape)}")
        if view.shape[1] != self.in_channels:
            raise ValueError(f"augment_fn returned views with {view.shape[1]} channels but the "
                             f"backbone takes {self.in_channels} (in_channels); keep the channels "
                             "of the input")
        return view.to(x.dtype)

    def _prepare(self, x: Tensor, name: str, check_range: bool) -> Tensor:
        """Check a batch of images and convert it to the learner's dtype."""
        weight = self.online_predictor[0].weight
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be a (B, C, H, W) batch, got shape {tuple(x.shape)}"
                             + ("; add a batch dimension with x.unsqueeze(0)" * (x.dim() == 3)))
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got {x.dtype}; convert "
                            "uint8 images with x.float() / 255")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{name} has {x.shape[1]} channels but the backbone takes {self.in_channels} "
                "(in_channels, from its first convolution); " + (
                    "for grayscale images and an RGB backbone use x.expand(-1, 3, -1, -1), or "
                    "build the backbone for 1 channel (timm.create_model(..., in_chans=1))"
                    if x.shape[1] == 1 else "fix the channel order: (B, C, H, W)"))
        if x.device != weight.device:
            raise ValueError(f"{name} is on {x.device} but the learner is on {weight.device}; "
                             f"move one of them, e.g. learner.to({str(x.device)!r})")
        if check_range and self._range_checks_left > 0 and not torch.compiler.is_compiling():
            self._range_checks_left -= 1
            lo, hi = torch.aminmax(x.detach())
            if lo < -0.01 or hi > 1.01:
                self._range_checks_left = 0  # warn once
                warnings.warn(f"{name} has values in [{lo.item():.3g}, {hi.item():.3g}], expected "
                              "[0, 1]: pass un-normalised images (x.float() / 255) since the "
                              "default augmentations normalise them themselves", stacklevel=5)
        return x.to(weight.dtype)

    def _warn_once(self, key: str, message: str, stacklevel: int) -> None:
        if key not in self._warned and not torch.compiler.is_compiling():
            self._warned.add(key)
            warnings.warn(message, stacklevel=stacklevel)  # the user's line: through __call__

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args)
        if self.ema_step.device.type != "meta" and prefix + "ema_step" in state_dict:
            self._step = int(self.ema_step)  # the host copies of the loaded buffers
            self._target_needs_copy = not bool(self.target_synced)


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``DistributedDataParallel``/``DataParallel`` (``.module``) and ``torch.compile``
    (``._orig_mod``) wrappers, in any nesting."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers) or isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model.module if isinstance(model, wrappers) else model._orig_mod
    return model


def update_moving_average(model: nn.Module) -> None:
    """``model.update_moving_average()`` for a BYOL learner, also when wrapped by DDP or compile."""
    learner = unwrap(model)
    if not isinstance(learner, BYOL):
        raise TypeError(f"expected a BYOL learner (possibly wrapped), got {type(learner).__name__}")
    learner.update_moving_average()
