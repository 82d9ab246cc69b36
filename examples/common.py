"""Helpers shared by the example scripts: distributed setup, rank-0 logging, checkpoints.

This is the only module that reads the torchrun environment (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``). Without it, the scripts run as one process without a process group.
"""

from __future__ import annotations

import datetime
import json
import os
import pickle
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from byol_pytorch import unwrap
from byol_pytorch.features import HiddenLayer

__all__ = [
    "DistInfo", "init_distributed", "cleanup_distributed", "env_world_size", "restart_count",
    "is_main_process", "print0", "seed_everything", "RunLog", "truncate_log", "read_log",
    "mean_over_ranks", "capture_rng_state", "restore_rng_state", "gather_rng_states",
    "save_checkpoint", "load_checkpoint", "read_backbone", "load_backbone_weights",
    "backbone_state_dict", "save_backbone",
    "all_gather_varsize", "parse_hidden_layer", "fail", "Timer", "unwrap",
]


# ------------------------------------------------------------------------------ distributed
@dataclass(frozen=True)
class DistInfo:
    """Where this process runs: its global and local rank, the world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 without it); readable before any initialisation."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0 without torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("error: --device cuda was requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"error: LOCAL_RANK={local_rank} but only "
                             f"{torch.cuda.device_count()} GPUs are visible on this node")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if device != "cpu":
        raise SystemExit(f"error: unknown device {device!r}; use auto, cuda or cpu")
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_min: float = 30.0) -> DistInfo:
    """Join the torchrun process group if there is one, else run as a single process.

    Reads ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` (set by ``torchrun``); ``MASTER_ADDR`` and
    ``MASTER_PORT`` are read by ``init_method="env://"``. Uses NCCL on CUDA (one GPU per process,
    ``LOCAL_RANK`` picks it) and gloo on CPU. Without ``WORLD_SIZE`` (or with 1) no process group
    is created, like torchvision's ``init_distributed_mode``.
    """
    world_size = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        timeout = datetime.timedelta(minutes=timeout_min)
        store = _restart_store(world_size, timeout)
        dist.init_process_group(
            backend, init_method=None if store else "env://", store=store,
            world_size=world_size, rank=rank, timeout=timeout,
            device_id=dev if dev.type == "cuda" else None,  # eager NCCL init, bound to our GPU
        )
    return DistInfo(rank, local_rank, world_size, dev)


def _restart_store(world_size: int, timeout: datetime.timedelta) -> dist.Store | None:
    """After a torchrun restart, its store with a prefix of this attempt; else None (env://).

    torchrun keeps serving the same store across restarts, and the restarted ranks would read
    the addresses the failed group left there (gloo: "connectFullMesh failed ... Connection
    refused"; pytorch/pytorch#167288 for NCCL): a fresh prefix per attempt avoids them.
    """
    restart = restart_count()
    if restart == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"restart{restart}/", agent)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (flushed); other ranks stay silent. builtins.print is untouched."""
    if is_main_process():
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def all_gather_varsize(t: Tensor) -> Tensor:
    """Concatenate ``t`` (N_r, ...) from every rank along dim 0 (N_r may differ between ranks).

    The tensor is gathered on its own device (use a CUDA tensor with NCCL); without a process
    group it is returned unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s.item()) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    out = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(out, padded.contiguous())
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


# ------------------------------------------------------------------------------ randomness
def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG this process draws from, as plain tensors/lists (``weights_only``-safe).

    The learner's augmentations draw from the global torch generator of the images' device, so
    both the CPU and the CUDA states are captured.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, (tuple, list)) else x


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) != torch.cuda.device_count():
            warnings.warn(f"checkpoint has RNG states for {len(cuda_states)} GPUs, this node has "
                          f"{torch.cuda.device_count()}: the CUDA RNG is restored only partly")
        for i, s in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


def gather_rng_states() -> list[dict[str, Any]]:
    """The RNG state of every rank (index = rank); a collective: every rank must call it."""
    state = capture_rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return [_cpu(s) for s in states]


def _cpu(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _cpu(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu(v) for v in x)
    return x


# ------------------------------------------------------------------------------ logs
class RunLog:
    """Rank 0's log of a run: one JSONL file (each record has an ``event``) + TensorBoard scalars
    of ``scalars`` (if tensorboard is installed). Other ranks get a no-op log."""

    def __init__(self, path: Path, enabled: bool, scalars: tuple[str, ...] = (),
                 tensorboard: bool = False, start_step: int = 0) -> None:
        self.file = self.tb = None
        self.scalars = scalars
        if not enabled:
            return
        truncate_log(path, start_step)  # on resume: the records past the checkpoint are redone
        self.file = open(path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return
            self.tb = SummaryWriter(str(path.parent / "tensorboard"), purge_step=start_step or None)

    def write(self, event: str, record: Mapping[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"event": event, **record}, allow_nan=True) + "\n")
        self.file.flush()  # readers can tail it
        for key in self.scalars:
            if self.tb is not None and record.get(key) is not None:
                self.tb.add_scalar(f"{event}/{key}", record[key], record["step"])

    def close(self) -> None:
        for sink in (self.file, self.tb):
            if sink is not None:
                sink.close()


def _records(path: Path) -> list[dict[str, Any]]:
    """A JSONL log's records; a half-written last line (a run killed mid-write) is dropped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(path: str | Path, max_step: int) -> None:
    """Drop the records of a JSONL log whose ``step`` exceeds ``max_step`` (on resume, the steps
    logged after the checkpoint by the run that stopped are trained, and logged, again)."""
    path = Path(path)
    if path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in _records(path)
                                if r["step"] <= max_step), encoding="utf-8")


def read_log(path: str | Path, event: str) -> list[dict[str, Any]]:
    """The records of one ``event`` ("step", "epoch", "knn_init") of a run's log.jsonl."""
    return [r for r in _records(Path(path)) if r.get("event") == event]


def mean_over_ranks(values: Tensor) -> list[float]:
    """Average a small tensor over processes (gloo has no AVG op: sum / world) -> floats."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values.tolist()


class Timer:
    """Wall-clock seconds since construction or the last ``reset()``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def reset(self) -> None:
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


# ------------------------------------------------------------------------------ checkpoints
def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file, synced, then rename: a crash never leaves a
    half-written file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(dict(state), f)
        f.flush()
        os.fsync(f.fileno())  # on disk before the rename: a node crash leaves no truncated file
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (plain containers: ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    return torch.load(path, map_location=map_location, weights_only=True)


BACKBONE_PREFIX = "online_encoder.net."  # the backbone's keys in a learner's state dict


def read_backbone(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Backbone weights and what is known of how they were made, from any of:

    * a pretrain.py checkpoint (``checkpoint.pt``): the learner's online backbone, its ``args``;
    * a bare state dict (``.pt``/``.pth``/``.safetensors``): ours (``backbone.pt``, with
      ``args.json`` beside it), torchvision's or timm's, or a file of ``python -m
      byol_pytorch.convert`` (its architecture is in the safetensors metadata).

    Raises:
        ValueError: the file is none of these.
    """
    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} does not load ({type(err).__name__}: {str(err)[:200]})") from None
    info: dict[str, Any] = {}
    if isinstance(ckpt.get("model"), Mapping):  # a full checkpoint of pretrain.py
        state = {k[len(BACKBONE_PREFIX):]: v for k, v in ckpt["model"].items()
                 if k.startswith(BACKBONE_PREFIX)}
        if not state:
            raise ValueError(f"{path} has a 'model' entry without {BACKBONE_PREFIX!r} keys: not a "
                             "BYOL checkpoint from pretrain.py")
        return state, dict(ckpt.get("args", {}))
    if not ckpt or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} is neither a pretrain.py checkpoint nor a state dict of tensors")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            info = json.loads((f.metadata() or {}).get("byol_torch", "{}"))
        if "architecture" in info and "backbone" not in info:  # python -m byol_pytorch.convert
            raise ValueError(f"{path} holds DeepMind's {info['architecture']}, which the example "
                             "scripts cannot rebuild by name (ResNet-50/101/152 x1 they can); "
                             "use byol_pytorch.load_deepmind_checkpoint on the .pkl instead")
    if (path.parent / "args.json").is_file():
        info = {**json.loads((path.parent / "args.json").read_text()), **info}
    return dict(ckpt), info


def load_backbone_weights(net: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> None:
    """Load :func:`read_backbone`'s ``state`` (read from ``source``) into ``net``, strictly except
    for a classifier the file leaves out (``fc.*``: not part of the representation)."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
        bad = [k for k in missing if not k.startswith("fc.")] + list(unexpected)
        if bad:
            raise RuntimeError(f"missing or unexpected keys: {bad[:5]}")
    except RuntimeError as err:
        raise ValueError(f"the weights in {source} do not fit the backbone {type(net).__name__}: "
                         f"{str(err)[:400]}\nPass the --backbone (and --cifar-stem) they were "
                         "trained with") from None


def backbone_state_dict(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's weights as contiguous CPU tensors, without wrapper prefixes."""
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(backbone).state_dict().items()}


def save_backbone(backbone: nn.Module, output_dir: str | Path) -> None:
    """Write ``backbone.pt`` (a state_dict) and ``backbone.safetensors`` (if safetensors exists).

    Both load straight into a freshly built model of the same architecture:
    ``model.load_state_dict(torch.load("backbone.pt"))``.
    """
    output_dir = Path(output_dir)
    state = backbone_state_dict(backbone)
    save_checkpoint(state, output_dir / "backbone.pt")
    try:
        from safetensors.torch import save_file
    except ImportError:
        return
    save_file(state, str(output_dir / "backbone.safetensors"))


# ------------------------------------------------------------------------------ models
def parse_hidden_layer(value: str | int | None) -> HiddenLayer:
    """``"none"`` -> None, ``"-2"`` -> -2, anything else stays a module name."""
    if value is None or isinstance(value, int):
        return value
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        return value


def fail(message: str, code: int = 2) -> SystemExit:
    """A SystemExit that prints ``error: message`` to stderr (raise it)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return SystemExit(code)
