"""The BYOL learner: wraps a backbone, owns the heads, the target network, augmentation and loss."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol_pytorch.augment import BYOLAugment, default_views
from byol_pytorch.ema import EMA, copy_weights_, ema_update_, make_target
from byol_pytorch.features import HiddenLayer, NetWrapper
from byol_pytorch.heads import MLP
from byol_pytorch.losses import symmetric_byol_loss
from byol_pytorch.monitor import projection_std
from byol_pytorch.schedules import cosine_tau

__all__ = ["BYOL", "update_moving_average", "unwrap"]

AugmentFn = Callable[[Tensor], Tensor]
RANGE_CHECKS = 10  # batches whose value range is checked; later ones skip the device sync
VIEW_BATCHING = ("separate", "joint")
# Normalisation of images that are not RGB: ImageNet's mean and std averaged over the channels.
GRAY_MEAN, GRAY_STD = (0.449,), (0.226,)


class BYOL(nn.Module):
    """Bootstrap Your Own Latent (Grill et al., 2020) around any image backbone.

    ``loss = learner(images)`` augments each image twice on the images' device (random parameters
    per image), runs the online network (encoder -> projector -> predictor) and the target network
    (an EMA of encoder -> projector) on both views, and returns the symmetric loss
    ``L(q1, z2) + L(q2, z1)`` with ``L = 2 - 2 cos``. Call ``update_moving_average()`` after each
    optimizer step. The backbone is trained in place: save ``net.state_dict()`` afterwards.

    Every part (projector, predictor, target, augmentation buffers) is created on the device and
    in the dtype of the backbone's representation, so ``BYOL(resnet.cuda(), ...)`` needs no
    ``.to()``. The parts keep byol-pytorch 0.9.1's names: ``online_encoder`` (``.net`` the
    backbone, ``.projector``; ``online_encoder(x)`` -> (projection, representation)),
    ``online_predictor``, ``target_encoder`` (None when ``use_momentum=False``),
    ``target_ema_updater`` (its ``beta`` is the base EMA rate), ``augment1``/``augment2``.

    Args:
        net: the backbone; it is not modified except for one forward hook on ``hidden_layer``.
        image_size: side (or (H, W)) of the augmented views, of the construction dry run and of
            the images embeddings are computed at.
        hidden_layer: module name, child index (default -2: the layer before the classifier),
            or None / -1 for the backbone's own output.
        projection_size: output size of projector and predictor (paper: 256).
        projection_hidden_size: hidden size of projector and predictor (paper: 4096).
        augment_fn: view-1 augmentation, (B, C, H, W) -> (B, C, H', W'); default: the paper's.
        augment_fn2: view-2 augmentation; default: ``augment_fn`` if given, else the paper's.
        moving_average_decay: base EMA rate tau (paper: 0.996).
        use_momentum: False gives the SimSiam variant (target = online with stop-gradient, and
            SimSiam's 3-layer projector).
        sync_batchnorm: True/False: SyncBatchNorm or BatchNorm1d in the heads; None: BatchNorm1d
            (convert the whole model with ``nn.SyncBatchNorm.convert_sync_batchnorm`` in scripts).
        use_simplicial_embeddings: put byol-pytorch 0.9.1's simplicial embedding before the
            projector (not BYOL; 0.9.1 turned it on by default, here it is off).
        sem_num_simplices, sem_simplex_dim, sem_temperature: its settings.
        total_steps: if given, tau follows the paper's cosine schedule from
            ``moving_average_decay`` to ``final_tau`` over this many updates; else tau is constant.
        final_tau: end value of the tau schedule (paper: 1.0).
        token_pool: for ViT token outputs (B, N, D): "cls" (class token), "mean" (patch tokens)
            or "flatten" (all tokens as one vector, as byol-pytorch 0.9.1).
        view_batching: how the two views pass through the networks. ``"separate"`` (default):
            one pass per view, so every BatchNorm normalises each view with its own statistics
            (the paper). ``"joint"``: one batch of 2B whose BatchNorm statistics mix both views
            (as byol-pytorch 0.9.1; differs from the paper).
        augment_preset: "imagenet" (paper) or "small" (CIFAR-size images: no blur, solo-learn's
            CIFAR views) for the default augmentations.
        head_output_bias: bias in the last Linear of projector and predictor: True (default) as
            byol-pytorch 0.9.1, whose checkpoints then load; False as the official code.
        in_channels: channels of the input images; default: those of the backbone's first
            ``Conv2d`` (3 if it has none). With other than 3, the default augmentations skip the
            RGB-only colour jitter and grayscale and normalise with mean 0.449, std 0.226.
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
        if not 0.0 <= moving_average_decay <= 1.0:
            raise ValueError(f"moving_average_decay must lie in [0, 1], got {moving_average_decay}")
        if total_steps is not None and total_steps <= 0:
            raise ValueError(f"total_steps must be a positive int or None, got {total_steps}")
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        if view_batching not in VIEW_BATCHING:
            raise ValueError(f"view_batching must be one of {VIEW_BATCHING}, got {view_batching!r}")
        self.in_channels = first_conv_channels(net) if in_channels is None else in_channels
        self.target_ema_updater = EMA(moving_average_decay)
        self.final_tau = final_tau
        self.total_steps = total_steps
        self.use_momentum = use_momentum
        self.view_batching = view_batching
        self._step = 0  # host copy of the ema_step buffer: tau needs it without a device sync
        self._target_needs_copy = True  # copy online -> target on the first training forward
        self._range_checks_left = RANGE_CHECKS
        self._warned: set[str] = set()
        # () tensor set by each forward that computes the loss: the spread of the online
        # projections (see byol_pytorch.monitor); read it when logging, it costs no sync until then.
        self.last_projection_std: Tensor | None = None

        rgb = {} if self.in_channels == 3 else dict(jitter_p=0.0, grayscale_p=0.0,
                                                     mean=GRAY_MEAN, std=GRAY_STD)
        default1, default2 = default_views(self.image_size, preset=augment_preset, **rgb)
        self.augment1 = augment_fn if augment_fn is not None else default1
        self.augment2 = augment_fn2 if augment_fn2 is not None else (augment_fn or default2)
        # With our augmentations (default or user-configured BYOLAugment) inputs are [0, 1] images
        # and the views are normalised; embeddings then get the same normalisation.
        self.expects_unit_range = isinstance(self.augment1, BYOLAugment)

        sync_bn = bool(sync_batchnorm)
        self.online_encoder = NetWrapper(
            net, projection_size, projection_hidden_size, hidden_layer,
            use_simsiam_mlp=not use_momentum, sync_batchnorm=sync_bn,
            use_simplicial_embeddings=use_simplicial_embeddings,
            sem_num_simplices=sem_num_simplices, sem_simplex_dim=sem_simplex_dim,
            sem_temperature=sem_temperature, token_pool=token_pool, output_bias=head_output_bias)
        representation, unused = self._dry_run()
        device, dtype = representation.device, representation.dtype
        self.online_encoder.build_projector(representation.shape[1], device, dtype)
        self.online_predictor = MLP(projection_size, projection_hidden_size, projection_size,
                                    sync_bn, head_output_bias).to(device=device, dtype=dtype)
        self.target_encoder = make_target(self.online_encoder) if use_momentum else None
        for augment in (self.augment1, self.augment2):
            if isinstance(augment, nn.Module):
                augment.to(device)  # its buffers (normalisation constants), as 0.9.1's self.to()
        # EMA updates done and whether the target was synced: tensors, so that state_dict() holds
        # tensors only (safetensors, .cpu() maps) and checkpoints resume the tau schedule.
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("target_synced", torch.zeros((), dtype=torch.bool, device=device))
        # Parameters after the hooked layer (e.g. the classifier) never get gradients; tell
        # DistributedDataParallel so that plain DDP (find_unused_parameters=False) works.
        self._ddp_params_and_buffers_to_ignore = [f"online_encoder.net.{n}" for n in sorted(unused)]

    # ------------------------------------------------------------------ construction helpers
    def _dry_run(self) -> tuple[Tensor, set[str]]:
        """Representation of a random batch (2, D) and the backbone parameters it does not use.

        Runs in eval mode under no_grad on the backbone's device, so BatchNorm statistics stay
        untouched; every module's train/eval flag is restored afterwards.
        """
        encoder = self.online_encoder
        net = encoder.net
        tensors = list(net.parameters()) + list(net.buffers())
        device = tensors[0].device if tensors else torch.device("cpu")
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
        shape = (2, self.in_channels, *self.image_size)
        sample = torch.rand(shape, device=device, dtype=dtype)
        modes = {m: m.training for m in net.modules()}
        try:
            net.eval()
            with torch.no_grad():
                y, used = encoder.probe(sample)
        except Exception as err:  # noqa: BLE001 - any failure gets the same explanation
            raise RuntimeError(
                f"the dry run of the backbone on a {shape} {dtype} input failed with "
                f"{type(err).__name__}: {err}\nCheck that image_size={self.image_size} suits the "
                f"backbone (a timm ViT needs timm.create_model(name, img_size={self.image_size[0]})"
                f"), that in_channels={self.in_channels} matches its first layer, and that "
                f"hidden_layer={encoder.hidden_layer!r} outputs a tensor.") from err
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
        return y, unused

    # ------------------------------------------------------------------ public API
    @property
    def net(self) -> nn.Module:
        """The wrapped backbone (trained in place)."""
        return self.online_encoder.net

    @property
    def moving_average_decay(self) -> float:
        """The base EMA rate: ``target_ema_updater.beta``."""
        return self.target_ema_updater.beta

    @property
    def step(self) -> int:
        """Number of ``update_moving_average()`` calls so far (restored by ``load_state_dict``)."""
        return self._step

    @property
    def tau(self) -> float:
        """The EMA rate the next ``update_moving_average()`` will use."""
        base = self.target_ema_updater.beta
        if self.total_steps is None:
            return base
        return cosine_tau(self._step, self.total_steps, base, self.final_tau)

    @torch.compiler.disable  # runs eagerly inside a compiled training step: see below
    @torch.no_grad()
    def update_moving_average(self) -> None:
        """``target = tau * target + (1 - tau) * online``, then advance the tau schedule.

        Not traced by ``torch.compile``: tau is a Python float from the host-side step counter (so
        that the update is one fused kernel with no device sync), and a compiled copy would be
        specialised on that counter and recompiled at every step. A compiled training step that
        calls this method therefore has a graph break here, on purpose.
        """
        if self.target_encoder is None:
            raise RuntimeError("update_moving_average() needs use_momentum=True; with "
                               "use_momentum=False the target is the online network itself")
        if self._target_needs_copy:
            self._sync_target()
        ema_update_(self.target_encoder, self.online_encoder, self.tau)
        self._step += 1
        self.ema_step.fill_(self._step)

    @torch.no_grad()
    def reset_moving_average(self) -> None:
        """Make the target a fresh copy of the online network and restart the tau schedule."""
        self._step = 0
        self.ema_step.zero_()
        if self.target_encoder is not None:
            self._sync_target()

    # Not traced: a compiled forward would guard on the Python flag and compile a second time once
    # it flips after the first step (a graph break here costs less than a second compilation).
    @torch.compiler.disable
    def _sync_target_once(self) -> None:
        if self._target_needs_copy:
            self._sync_target()

    def _sync_target(self) -> None:
        # Deferred to the first training step so that the target starts from the weights the
        # online network has then: DDP's initial broadcast, or a checkpoint loaded into the backbone.
        copy_weights_(self.target_encoder, self.online_encoder)
        self._target_needs_copy = False
        self.target_synced.fill_(True)

    def forward(
        self,
        x: Tensor,
        return_embedding: bool = False,
        return_projection: bool = True,
        *,
        x2: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """BYOL loss of a batch, or its online embedding.

        Args:
            x: (B, C, H, W) float images in [0, 1] (augmented here), or view 1 if ``x2`` is given.
                Other float dtypes are converted to the learner's.
            return_embedding: return the online network's output for ``x`` without augmentation:
                ``x`` is resized to ``image_size`` (bilinear, antialiased) if it has another size,
                and normalised as the views are when augment_fn is a BYOLAugment (the default).
                Take embeddings after ``learner.eval()`` under ``torch.no_grad()``: in train mode
                BatchNorm makes them depend on the rest of the batch (this warns once).
            return_projection: with ``return_embedding``, return ``(projection, embedding)``
                ((B, projection_size), (B, D)) instead of just the embedding (B, D).
            x2: optional (B, C, H', W') view 2 made by the caller; ``x`` and ``x2`` are then used
                as they are (no augmentation, no normalisation).

        Returns:
            () float32 loss, or the embedding as described above.
        """
        if isinstance(return_embedding, Tensor):
            raise TypeError("the second positional argument of learner(...) is return_embedding "
                            "(as in byol-pytorch 0.9.1); pass views you made yourself as "
                            "learner(view1, x2=view2)")
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
            raise ValueError("a batch of 1 cannot be trained: the projector's BatchNorm needs at "
                             "least 2 samples; use a larger batch (or call learner.eval())")
        sizes = {tuple(view1.shape[-2:]), tuple(view2.shape[-2:])}
        if sizes == {self.image_size}:
            return self._loss(view1, view2)
        self._warn_once("size", f"the views are {' and '.join(map(str, sorted(sizes)))} but "
                        f"image_size is {self.image_size}: the representation was sized and "
                        "embeddings are taken at image_size; pass image_size=<the views' size>",
                        stacklevel=4)  # user -> Module.__call__ -> _call_impl -> forward
        try:
            return self._loss(view1, view2)
        except (RuntimeError, AssertionError, ValueError) as err:
            raise ValueError(f"the backbone failed on views of size {sorted(sizes)} (image_size "
                             f"is {self.image_size}): {type(err).__name__}: {err}\nMake the "
                             "augmentations output image_size, or pass the views' size as "
                             "image_size") from err

    # ------------------------------------------------------------------ forward helpers
    def _embed(self, x: Tensor, return_projection: bool) -> Tensor | tuple[Tensor, Tensor]:
        if self.training:
            if x.shape[0] < 2:
                raise ValueError("a single image cannot be embedded in train mode (BatchNorm "
                                 "needs 2+ samples); call learner.eval() first, and take "
                                 "embeddings under torch.no_grad()")
            self._warn_once("train", "embeddings taken in train mode depend on the rest of the "
                            "batch and update the BatchNorm running statistics; call "
                            "learner.eval() first (and learner.train() before training again)",
                            stacklevel=5)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False,
                              antialias=True)
        if self.expects_unit_range:
            x = self.augment1.normalize(x)  # the views' normalisation
        return self.online_encoder(x, return_projection=return_projection)

    def _loss(self, view1: Tensor, view2: Tensor) -> Tensor:
        online, target = self.online_encoder, self.target_encoder
        # Views of different sizes cannot share a batch: they always take one pass each.
        if self.view_batching == "separate" or view1.shape != view2.shape:
            z1, z2 = online(view1)[0], online(view2)[0]
            q1, q2 = self.online_predictor(z1), self.online_predictor(z2)
            with torch.no_grad():
                t1, t2 = (target(view1)[0], target(view2)[0]) if target is not None else (z1, z2)
        else:
            views = torch.cat([view1, view2])  # (2B, C, H, W)
            z = online(views)[0]
            q = self.online_predictor(z)
            with torch.no_grad():
                t = target(views)[0] if target is not None else z
            (z1, z2), (q1, q2), (t1, t2) = z.chunk(2), q.chunk(2), t.chunk(2)  # 2 x (B, P)
        if z1.shape[0] > 1:
            self.last_projection_std = projection_std(z1.detach())
        # SimSiam (no target network): the online projections with stop-gradient.
        return symmetric_byol_loss(q1, q2, t1.detach(), t2.detach())

    def _augment(self, fn: AugmentFn, x: Tensor) -> Tensor:
        # Augmentation is preprocessing: keep it in the images' dtype, outside any autocast region.
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
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be a (B, C, H, W) batch, got shape {tuple(x.shape)}"
                             + ("; add a batch dimension with x.unsqueeze(0)" if x.dim() == 3 else ""))
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a float tensor in [0, 1], got {x.dtype}; convert "
                            "uint8 images with x.float() / 255")
        if x.shape[1] != self.in_channels:
            hint = ("; for grayscale images and an RGB backbone use x.expand(-1, 3, -1, -1), or "
                    "build the backbone for 1 channel (e.g. timm.create_model(..., in_chans=1))"
                    if x.shape[1] == 1 else "; fix the channel order: (B, C, H, W)")
            raise ValueError(f"{name} has {x.shape[1]} channels but the backbone takes "
                             f"{self.in_channels} (in_channels, from its first convolution){hint}")
        reference = self.online_predictor[0].weight
        if x.device != reference.device:
            raise ValueError(f"{name} is on {x.device} but the learner is on {reference.device}; "
                             f"move one of them, e.g. learner.to({str(x.device)!r})")
        if check_range and self._range_checks_left > 0 and not torch.compiler.is_compiling():
            self._range_checks_left -= 1
            lo, hi = torch.aminmax(x.detach())
            if lo < -0.01 or hi > 1.01:
                self._range_checks_left = 0  # warn once
                warnings.warn(f"{name} has values in [{lo.item():.3g}, {hi.item():.3g}], expected "
                              "[0, 1]: pass un-normalised images (x.float() / 255) since the "
                              "default augmentations normalise them themselves", stacklevel=5)
        return x.to(reference.dtype)

    def _warn_once(self, key: str, message: str, stacklevel: int) -> None:
        if key not in self._warned and not torch.compiler.is_compiling():
            self._warned.add(key)
            warnings.warn(message, stacklevel=stacklevel + 1)

    # ------------------------------------------------------------------ state dict
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict,
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # Runs for this module's own entries before its children load, also when the learner is
        # nested (a LightningModule): a byol-pytorch 0.9.1 state dict is converted here.
        if _looks_like_0_9_1(state_dict, prefix, strict):
            self._adopt_0_9_1_state_dict(state_dict, prefix, strict, error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if self.ema_step.device.type != "meta" and prefix + "ema_step" in state_dict:
            self._step = int(self.ema_step)
            self._target_needs_copy = not bool(self.target_synced)

    def _adopt_0_9_1_state_dict(self, state_dict: dict[str, Any], prefix: str, strict: bool,
                                error_msgs: list[str]) -> None:
        """Map a byol-pytorch 0.9.1 learner's state dict onto this learner's keys, in place."""
        done = []
        aliases = [k for k in state_dict if k.startswith(prefix + "net.")]
        for key in aliases:  # 0.9.1 registered the backbone twice: as net and online_encoder.net
            value = state_dict.pop(key)
            state_dict.setdefault(prefix + "online_encoder." + key[len(prefix):], value)
        if aliases:
            done.append(f"dropped its {len(aliases)} 'net.*' keys (the backbone, also stored "
                        "under 'online_encoder.net.*')")
        has_target = any(k.startswith(prefix + "target_encoder.") for k in state_dict)
        state_dict[prefix + "ema_step"] = torch.zeros_like(self.ema_step)
        state_dict[prefix + "target_synced"] = torch.full_like(self.target_synced, has_target)
        done.append("set the EMA step count to 0 (0.9.1 did not save it; with total_steps the "
                    "tau schedule starts over)")
        if has_target:
            done.append("kept its target network")
        if strict:
            saved_sem = any(k.startswith(prefix + "online_encoder.projector.0.0.")
                            for k in state_dict)
            if saved_sem != self.online_encoder.use_simplicial_embeddings:
                error_msgs.append(
                    f"the state dict was saved {'with' if saved_sem else 'without'} simplicial "
                    f"embeddings: build BYOL(..., use_simplicial_embeddings={saved_sem}) to load "
                    "it (byol-pytorch 0.9.1's default was True)")
            if has_target != (self.target_encoder is not None):
                error_msgs.append(
                    f"the state dict was saved with use_momentum={has_target}: build "
                    f"BYOL(..., use_momentum={has_target}) to load it")
        warnings.warn("loading a byol-pytorch 0.9.1 state dict: " + "; ".join(done),
                      stacklevel=4)


def _looks_like_0_9_1(state_dict: dict[str, Any], prefix: str, strict: bool) -> bool:
    """A whole 0.9.1 learner's state dict: duplicate 'net.*' keys, or (strict loads) no ema_step."""
    if prefix + "ema_step" in state_dict:
        return False
    if any(k.startswith(prefix + "net.") for k in state_dict):
        return True
    return strict and any(k.startswith(prefix + "online_encoder.") for k in state_dict)


def first_conv_channels(net: nn.Module, default: int = 3) -> int:
    """Input channels of the first ``Conv2d`` in ``net.modules()`` (``default`` if it has none)."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and module.in_channels > 0:
            return module.in_channels
    return default


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
