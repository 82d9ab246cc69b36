"""DeepMind's BYOL checkpoints (``pretrain_res50x1.pkl``, ...) as torchvision ResNets, no jax."""

from __future__ import annotations

import codecs
import pickle
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["load_deepmind_checkpoint", "same_padding_"]

FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")


def _same_pad(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: pads the (B, C, H, W) input like TF "SAME" (odd pixel: bottom/right)."""
    (k, s), pads = module.same_padding, []
    for size in args[0].shape[:-3:-1]:  # W, then H: F.pad's order
        total = max(k - (size % s or s), 0)  # TF: (ceil(size / s) - 1) * s + k - size
        pads += [total // 2, total - total // 2]
    return (F.pad(args[0], pads, value=-float("inf") if isinstance(module, nn.MaxPool2d) else 0),)


def same_padding_(model: nn.Module) -> nn.Module:
    """In place: strided convs (kernel > 1) and max pools pad as Haiku's "SAME"; keys unchanged."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and not hasattr(m, "same_padding"):
            k, s = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride))
            if k > 1 and s > 1:
                m.padding, m.same_padding = 0, (k, s)
                m.register_forward_pre_hook(_same_pad)
    return model


class _Foreign(tuple):
    """Inert stand-in for any class of the training code: its arguments (frozendict's: a dict)."""

    def __new__(cls, *args, **kwargs):
        mapping = len(args) == 1 and isinstance(args[0], Mapping)
        return dict(args[0]) if mapping else super().__new__(cls, args)


def _array(fun, args, state, *_) -> np.ndarray:
    value = fun(*args)  # dill's _create_array, jax's _reconstruct_array: numpy's reduce inside
    value.__setstate__(state)
    return value


_SAFE = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype, "_codecs.encode": codecs.encode,
         "dill._dill._create_array": _array, "jax._src.array._reconstruct_array": _array,
         "jax._src.device_array.reconstruct_device_array": _array,  # NamedTuples dill saved:
         "dill._dill._create_namedtuple": lambda n, fields, *_: namedtuple(n, fields, rename=True)}
_SAFE.update({f"numpy.{core}.multiarray.{f.__name__}": f for core in ("core", "_core")
              for f in (np.zeros(0).__reduce__()[0], np.float32(0).__reduce__()[0])})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # not in _SAFE: an inert stand-in, no code runs
        return _SAFE.get(f"{module}.{name}", _Foreign)


def _read(path: Path) -> tuple[int, dict]:
    """The step and experiment state (FIELDS -> nested dicts of numpy arrays) of a checkpoint."""
    with open(path, "rb") as f:
        try:
            data = _Unpickler(f).load()
        except Exception as e:  # any unpickling failure means the same to users
            if isinstance(e, EOFError) or "truncated" in str(e):
                raise ValueError(f"{path} is truncated: download it again") from e
            raise ValueError(f"{path} is not a BYOL checkpoint of deepmind-research") from e
    state = data.get("experiment_state") if isinstance(data, dict) else None
    if hasattr(state, "_asdict") or isinstance(state, tuple) and len(state) == len(FIELDS):
        state = state._asdict() if hasattr(state, "_asdict") else dict(zip(FIELDS, state))
    if not isinstance(state, dict) or not isinstance(state.get("online_params"), dict):
        raise ValueError(f"{path} is not a BYOL pretraining checkpoint of deepmind-research: "
                         "no experiment_state with online_params")
    return int(np.asarray(data.get("step", -1))), state


def _resnet(params: dict, stats: dict, p: str, num_classes: int, path: Path) -> ResNet:
    """A torchvision ResNet shaped as Haiku encoder ``p`` (blocks, widths, shortcuts), filled."""
    used = set()

    def load(m: nn.Module, hk: str) -> nn.Module:
        """Haiku module ``hk`` -> ``m``: HWIO -> OIHW, (in, out) -> (out, in), (1, 1, 1, C) -> C."""
        used.add(hk)
        keys = ("w", "b") if not isinstance(m, nn.BatchNorm2d) else (
            "scale", "offset", "~/mean_ema", "~/var_ema")  # running statistics: the EMA state's
        for t, key in zip((*m.parameters(), *m.buffers()), keys):
            a = np.asarray(stats[f"{hk}/{key}"]["average"] if "~" in key else params[hk][key])
            t.data.copy_(torch.tensor(a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T).view_as(t))
        return m

    if f"{p}/~/initial_batchnorm" not in params:
        raise ValueError(f"{path}: {p} is a pre-activation ResNet (resnet_v2=True), which "
                         "torchvision cannot express; only resnet_v2=False encoders load")
    block = Bottleneck if f"{p}/~/block_group_0/~/block_0/~/conv_2" in params else BasicBlock
    net = ResNet(block, [1, 1, 1, 1], num_classes=max(num_classes, 1))
    inplanes = params[f"{p}/~/initial_conv"]["w"].shape[-1]
    net.conv1 = load(nn.Conv2d(3, inplanes, 7, 2, 3, bias=False), f"{p}/~/initial_conv")
    net.bn1 = load(nn.BatchNorm2d(inplanes), f"{p}/~/initial_batchnorm")
    for g in range(4):
        group, stride = f"{p}/~/block_group_{g}/~/block_", 2 if g else 1
        n = len({k[len(group):].split("/")[0] for k in params if k.startswith(group)})
        out = params[f"{group}0/~/conv_{2 if block is Bottleneck else 1}"]["w"].shape[-1]
        down = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(
            out)) if f"{group}0/~/shortcut_conv" in params else None  # 18/34: layer1.0's too
        blocks = [block(inplanes, out // block.expansion, stride, down)]
        blocks += [block(out, out // block.expansion) for _ in range(n - 1)]
        for b, blk in enumerate(blocks):
            for i in range(3 if block is Bottleneck else 2):
                load(getattr(blk, f"conv{i + 1}"), f"{group}{b}/~/conv_{i}")
                load(getattr(blk, f"bn{i + 1}"), f"{group}{b}/~/batchnorm_{i}")
            for m, name in zip(blk.downsample or (), ("shortcut_conv", "shortcut_batchnorm")):
                load(m, f"{group}{b}/~/{name}")
        setattr(net, f"layer{g + 1}", nn.Sequential(*blocks))
        inplanes = out
    if extra := sorted(k for k in params if k.startswith(f"{p}/") and k not in used):
        raise ValueError(f"{path}: layers torchvision's ResNet does not have: {extra[:3]}")
    net.fc = load(nn.Linear(inplanes, num_classes), "classifier") if num_classes else nn.Identity()
    return net


def load_deepmind_checkpoint(path: str | Path, *, target: bool = False, classifier: bool = True,
                             same_padding: bool = True) -> ResNet:
    """A BYOL checkpoint of deepmind-research (a resnet_v2=False ResNet of networks.py, any depth
    and width) -> its online (``target``: target) torchvision ResNet in eval mode, padded as the
    official one (``same_padding``): (B, 3, H, W) ImageNet-normalized -> (B, 1000) logits in
    torchvision's class order (``classifier=False``: (B, 2048 * width)); ``.deepmind_info``."""
    step, state = _read(path := Path(path))
    kind = "target" if target else "online"
    params, stats = state.get(f"{kind}_params") or {}, state.get(f"{kind}_state")
    encoders = [k[: -len("/~/initial_conv")] for k in params if k.endswith("/~/initial_conv")]
    if len(encoders) != 1 or not isinstance(stats, dict):
        raise ValueError(f"{path}: no ResNet encoder of byol/utils/networks.py in {kind}_params")
    p, head = encoders[0], params.get("classifier") if classifier else None
    try:
        model = _resnet(params, stats, p, 0 if head is None else head["w"].shape[-1], path)
    except (KeyError, TypeError, RuntimeError) as e:  # a layer missing or of another shape
        raise ValueError(f"{path}: not a ResNet v1 of byol/utils/networks.py: {e}") from e
    depth = 2 + sum("/~/conv_" in k for k in params)  # + the stem and the classifier
    model.deepmind_info = dict(architecture=f"ResNet-{depth} x{model.conv1.out_channels / 64:g}",
                               step=step, saved=[f for f in FIELDS if state.get(f) is not None],
                               heads=sorted({k.split("/")[0] for k in params} - {p}))
    return (same_padding_(model) if same_padding else model).eval()
