"""Everything that exists for byol-pytorch 0.9.1, and nothing else: its module path and names.

Code written for 0.9.1 imports ``from byol_pytorch.byol_pytorch import BYOL, NetWrapper, ...``;
each name keeps 0.9.1's signature and meaning. This module also gives the core classes 0.9.1's
extra attributes (``learner.target_ema_updater``, ``encoder.get_representation``), builds 0.9.1's
simplicial projector for ``BYOL(use_simplicial_embeddings=True)``, and converts 0.9.1 state dicts
(the load pre-hook :class:`BYOL` registers). New code should import from ``byol_pytorch``.
"""

from __future__ import annotations

import random
import warnings
from functools import partial, wraps
from importlib import metadata
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from byol_pytorch import heads
from byol_pytorch.byol import BYOL
from byol_pytorch.features import Encoder, FeatureExtractor, HiddenLayer

__all__ = [
    "BYOL", "EMA", "MLP", "MaybeSyncBatchnorm", "NetWrapper", "RandomApply", "SEM", "SimSiamMLP",
    "cosine_loss_fn", "default", "exists", "get_module_device", "loss_fn", "set_requires_grad",
    "singleton", "update_moving_average",
]

T = TypeVar("T")

try:  # byol-pytorch (0.9.1 and earlier) writes the same byol_pytorch/ folder: either may win
    warnings.warn(f"both byol-torch and byol-pytorch {metadata.version('byol-pytorch')} are "
                  "installed and both provide the module byol_pytorch, so the files of one may "
                  "shadow the other's; keep one: pip uninstall -y byol-pytorch byol-torch && "
                  "pip install byol-torch", stacklevel=2)
except metadata.PackageNotFoundError:
    pass


def exists(v: Any) -> bool:
    """``v is not None``."""
    return v is not None


def default(val: T | None, def_val: T) -> T:
    """``val``, or ``def_val`` when ``val`` is None."""
    return def_val if val is None else val


def singleton(cache_key: str) -> Callable:
    """Method decorator: the first result stays in ``self.<cache_key>`` until it is set to None."""
    def decorate(fn: Callable) -> Callable:
        @wraps(fn)
        def cached(self: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(self, cache_key) is None:
                setattr(self, cache_key, fn(self, *args, **kwargs))
            return getattr(self, cache_key)
        return cached
    return decorate


def get_module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter."""
    return next(module.parameters()).device


def set_requires_grad(model: nn.Module, val: bool) -> None:
    """Set ``requires_grad`` of every parameter of ``model``."""
    model.requires_grad_(val)


def MaybeSyncBatchnorm(is_distributed: bool | None = None) -> type[nn.Module]:  # noqa: N802
    """``nn.SyncBatchNorm`` if ``is_distributed`` else ``nn.BatchNorm1d``.

    None gives BatchNorm1d, the library's one rule (:func:`byol_pytorch.heads.batch_norm`); 0.9.1
    looked at ``torch.distributed`` instead. Convert models with ``convert_sync_batchnorm``.
    """
    return heads.batch_norm(is_distributed)


def MLP(dim: int, projection_size: int, hidden_size: int = 4096,  # noqa: N802
        sync_batchnorm: bool | None = None) -> nn.Sequential:
    """0.9.1's argument order of :class:`byol_pytorch.MLP`: (B, dim) -> (B, projection_size)."""
    return heads.MLP(dim, hidden_size, projection_size, sync_batchnorm)


def SimSiamMLP(dim: int, projection_size: int, hidden_size: int = 4096,  # noqa: N802
               sync_batchnorm: bool | None = None) -> nn.Sequential:
    """0.9.1's argument order of :class:`byol_pytorch.SimSiamMLP`: (B, dim) -> (B, projection)."""
    return heads.SimSiamMLP(dim, hidden_size, projection_size, sync_batchnorm)


def cosine_loss_fn(x: Tensor, y: Tensor) -> Tensor:
    """Per-sample ``2 - 2 cos(x, y)`` over the last dim: (..., D), (..., D) -> (...), no mean."""
    return 2 - 2 * (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(dim=-1)


loss_fn = cosine_loss_fn  # its name before 0.9


class RandomApply(nn.Module):
    """Apply ``fn`` with probability ``p``: one draw of Python's ``random`` per call (per batch)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], p: float) -> None:
        super().__init__()
        self.fn, self.p = fn, p

    def forward(self, x: Tensor) -> Tensor:
        return x if random.random() > self.p else self.fn(x)


class SEM(nn.Module):
    """Simplicial embedding (Lavoie et al., 2022): a softmax over each group of ``dim_simplex``.

    (..., dim) -> (..., dim), each consecutive group of ``dim_simplex`` values summing to 1.
    """

    def __init__(self, dim: int, temperature: float = 0.1, dim_simplex: int = 8) -> None:
        super().__init__()
        if dim <= 0 or dim_simplex <= 0 or dim % dim_simplex:
            raise ValueError(f"SEM dim {dim} must be a positive multiple of dim_simplex "
                             f"{dim_simplex}")
        if not temperature > 0:
            raise ValueError(f"SEM temperature must be positive, got {temperature}")
        self.dim, self.dim_simplex, self.temperature = dim, dim_simplex, temperature

    def forward(self, t: Tensor) -> Tensor:
        groups = t.unflatten(-1, (-1, self.dim_simplex))  # (..., L, V)
        return (groups / self.temperature).softmax(dim=-1).flatten(-2)


def simplicial_projector(in_dim: int, make_head: Callable[[int], nn.Module],
                         num_simplices: int = 32, simplex_dim: int = 8, temperature: float = 0.1,
                         sync_batchnorm: bool | None = None) -> nn.Sequential:
    """0.9.1's projector with simplicial embeddings: (Linear -> BN) -> SEM -> ``make_head(L*V)``.

    (B, in_dim) -> the head's output; the layout (and state-dict keys) are 0.9.1's.
    """
    sem_dim = num_simplices * simplex_dim
    embed = nn.Sequential(nn.Linear(in_dim, sem_dim), heads.batch_norm(sync_batchnorm)(sem_dim))
    return nn.Sequential(embed, SEM(sem_dim, temperature, simplex_dim), make_head(sem_dim))


class EMA:
    """``update_average(old, new) = beta * old + (1 - beta) * new`` (``new`` if old is None)."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def update_average(self, old: Tensor | None, new: Tensor) -> Tensor:
        return new if old is None else old * self.beta + (1 - self.beta) * new

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta={self.beta})"


class _LearnerEMA(EMA):
    """``learner.target_ema_updater``: its ``beta`` is the learner's ``moving_average_decay``, so
    setting it changes the rate of later updates, as in 0.9.1."""

    def __init__(self, learner: BYOL) -> None:
        self.learner = learner

    @property
    def beta(self) -> float:
        return self.learner.moving_average_decay

    @beta.setter
    def beta(self, value: float) -> None:
        self.learner.moving_average_decay = value


def _set_ema(learner: BYOL, ema: EMA) -> None:
    learner.moving_average_decay = ema.beta


@torch.no_grad()
def reset_moving_average(learner: BYOL) -> None:
    """``learner.reset_moving_average()``: the target becomes a copy of the online network now
    (0.9.1 dropped it until the next step) and the tau schedule restarts."""
    learner._step = 0
    learner.ema_step.zero_()
    if learner.target_encoder is not None:
        learner._target_needs_copy = True
        learner._sync_target_once()


BYOL.target_ema_updater = property(_LearnerEMA, _set_ema, doc=_LearnerEMA.__doc__)
BYOL.reset_moving_average = reset_moving_average
Encoder.get_representation = FeatureExtractor.forward  # (B, C, H, W) -> (B, D), 0.9.1's name


class NetWrapper(Encoder):
    """0.9.1's backbone + projector: ``wrapper(x)`` -> ((B, projection_size), (B, D)).

    As in 0.9.1 the projector is built at the first projection, on the representation's device
    and in its dtype; ``wrapper(x, return_projection=False)`` -> (B, D).
    """

    def __init__(self, net: nn.Module, projection_size: int, projection_hidden_size: int,
                 layer: HiddenLayer = -2, use_simsiam_mlp: bool = False,
                 sync_batchnorm: bool | None = None, use_simplicial_embeddings: bool = False,
                 sem_num_simplices: int = 32, sem_simplex_dim: int = 8,
                 sem_temperature: float = 0.1) -> None:
        super().__init__(net, layer)
        self.make_head = partial(heads.projection_head, hidden_dim=projection_hidden_size,
                                 out_dim=projection_size, simsiam=use_simsiam_mlp,
                                 sync_batchnorm=sync_batchnorm)
        self.sem = (sem_num_simplices, sem_simplex_dim, sem_temperature, sync_batchnorm
                    ) if use_simplicial_embeddings else None

    def forward(self, x: Tensor, return_projection: bool = True) -> Tensor | tuple[Tensor, Tensor]:
        y = self.get_representation(x)
        if not return_projection:
            return y
        if self.projector is None:
            dim = y.shape[1]
            projector = (simplicial_projector(dim, self.make_head, *self.sem) if self.sem
                         else self.make_head(dim))
            self.projector = projector.to(y.device, y.dtype)
        return self.projector(y), y


@torch.no_grad()
def update_moving_average(ema_updater: EMA, ma_model: nn.Module, current_model: nn.Module) -> None:
    """``ma = ema_updater.update_average(ma, current)`` for the two models' parameters, paired in
    order (buffers are left alone, as in 0.9.1)."""
    for current, ma in zip(current_model.parameters(), ma_model.parameters()):
        ma.copy_(ema_updater.update_average(ma.detach(), current.detach()))


def adopt_0_9_1_state_dict(learner: BYOL, state_dict: dict[str, Any], prefix: str,
                           local_metadata: dict, strict: bool, *_: Any) -> None:
    """Load pre-hook of :class:`BYOL`: map a 0.9.1 learner's state dict onto ours, in place.

    0.9.1 saves the backbone twice (``net.*`` and ``online_encoder.net.*``) and no EMA step. With
    ``strict``, a dict of another configuration fails with the argument to change, before torch
    would list every missing and unexpected key.
    """
    if prefix + "ema_step" in state_dict:
        return  # ours
    aliases = [k for k in state_dict if k.startswith(prefix + "net.")]
    if not aliases and not (strict and any(k.startswith(prefix + "online_encoder.")
                                           for k in state_dict)):
        return
    has_target = any(k.startswith(prefix + "target_encoder.") for k in state_dict)
    if strict:
        saved_sem = any(k.startswith(prefix + "online_encoder.projector.0.0.") for k in state_dict)
        built_sem = any(isinstance(m, SEM) for m in learner.online_encoder.projector.modules())
        built_target = learner.target_encoder is not None
        for name, saved, built in (("use_simplicial_embeddings", saved_sem, built_sem),
                                   ("use_momentum", has_target, built_target)):
            if saved != built:
                raise RuntimeError(f"this byol-pytorch 0.9.1 state dict was saved with {name}="
                                   f"{saved}: build BYOL(..., {name}={saved}) to load it "
                                   "(0.9.1's defaults: use_simplicial_embeddings=True, "
                                   "use_momentum=True)")
    for key in aliases:  # the backbone's second copy
        value = state_dict.pop(key)
        state_dict.setdefault(prefix + "online_encoder." + key[len(prefix):], value)
    state_dict[prefix + "ema_step"] = torch.zeros_like(learner.ema_step)
    state_dict[prefix + "target_synced"] = torch.full_like(learner.target_synced, has_target)
    done = [f"dropped its {len(aliases)} 'net.*' keys (the backbone, also under "
            "'online_encoder.net.*')"] if aliases else []
    done.append("set the EMA step count to 0 (0.9.1 did not save it; with total_steps the tau "
                "schedule starts over)")
    warnings.warn("loading a byol-pytorch 0.9.1 state dict: " + "; ".join(
        done + ["kept its target network"] * has_target), stacklevel=4)
