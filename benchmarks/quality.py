"""Representation quality: BYOL (ours) vs byol-pytorch 0.9.1 (the peer) vs random init.

Pretrains a CIFAR-style ResNet-18 (torchvision ``resnet18`` with the CIFAR stem: 3x3 stride-1
``conv1``, no max-pool; representation = the 512-d ``avgpool`` output) on the mini CIFAR-10 set
(5,085 train images) minus a fixed, seeded held-out split of 1,000 images, then reports on the
held-out split:

* weighted kNN top-1 (k = 20 and 200, temperature 0.07, cosine similarity; the bank is the
  4,085 un-augmented training images), and
* linear-probe top-1 (``nn.Linear`` on frozen, standardised features of the training images).

Every model gets the same backbone, initial weights (same seed), data order, epochs, batch size,
optimizer (SGD, momentum 0.9), LR schedule (linear warm-up + cosine) and precision. What differs
is the library: its augmentations, heads and EMA schedule, with each library's defaults except
where a variant says otherwise (see ``VARIANTS``). The peer trains in its own interpreter
(``--peer-python``) from a worker entry point of this file run with ``python -I`` (isolated: no
repo root, no PYTHONPATH on ``sys.path``) and saves the backbone's state_dict; all models are
then evaluated here, by the same code.

Usage::

    # CPU budget (10 epochs: ~26 min per model on 2 cores; --epochs 3 for a quick look)
    python benchmarks/quality.py --budget cpu --peer-python /path/to/peer/venv/bin/python \
        --output benchmarks/results/quality_cpu.json
    # GPU budget (>= 200 epochs; needs CUDA)
    python benchmarks/quality.py --budget gpu --peer-python ... --output quality_gpu.json

Models (``--models``): ``random``, ``ours``, ``peer`` and the variants in ``VARIANTS``.
If the data file is absent the script prints ``SKIP`` and exits with status 0.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

# NOTE: this file is also run by the PEER's interpreter (``--peer-worker``), where the name
# ``byol_pytorch`` is byol-pytorch 0.9.1. Module-level imports are therefore limited to
# torch/torchvision/numpy/stdlib; our library is imported inside the functions that use it.

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = "../shared/data/cifar10_mini_train.npz"  # relative to the repo root
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

BUDGETS: dict[str, dict[str, Any]] = {
    # fp32: CPU bf16 autocast is only fast with native bf16 instructions (AVX512-BF16 / AMX);
    # on an AVX2-only CPU it measured 20x slower than fp32. ~5 s per step on 2 AVX2 cores, so
    # 10 epochs (310 steps) take ~26 min per model; 3 epochs barely move kNN off random init.
    "cpu": dict(epochs=10, batch_size=128, base_lr=0.06, warmup_epochs=0, weight_decay=5e-4,
                device="cpu", precision="fp32", probe_epochs=100),
    # The usual CIFAR recipe length (solo-learn / lightly benchmarks run 200-1000 epochs).
    "gpu": dict(epochs=200, batch_size=256, base_lr=0.06, warmup_epochs=10, weight_decay=5e-4,
                device="cuda", precision="bf16", probe_epochs=100),
}

# name -> (library, constructor keyword arguments, description)
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    # The recipe's small-data preset (examples/pretrain.py --preset small): its augmentations
    # and its tau; the optimizer is the benchmark's, shared by every model.
    "ours": ("ours", dict(augment_preset="small", moving_average_decay=0.99),
             "the recipe's small preset: augment_preset='small' (crop scale >= 0.08, no blur), "
             "tau 0.99 -> 1 (cosine over the run), per-view BatchNorm statistics"),
    "ours-crop0.2": ("ours", dict(augment_preset="small", moving_average_decay=0.99,
                                  crop_scale=(0.2, 1.0)),
                     "as ours but crop scale >= 0.2 (the small preset before it followed "
                     "solo-learn's 0.08)"),
    "ours-tau0.996": ("ours", dict(augment_preset="small"),
                      "as ours but tau 0.996 -> 1 (the ImageNet preset's tau)"),
    "ours-tau0.99": ("ours", dict(augment_preset="small", moving_average_decay=0.99,
                                  cosine_tau=False),
                     "as ours but constant tau = 0.99 (the peer's default)"),
    "ours-tau0.9": ("ours", dict(augment_preset="small", moving_average_decay=0.9,
                                 cosine_tau=False),
                    "as ours but constant tau = 0.9"),
    "ours-imagenet": ("ours", dict(augment_preset="imagenet"),
                      "as ours but augment_preset='imagenet' (official BYOL colour jitter, blur)"),
    "ours-joint": ("ours", dict(augment_preset="small", view_batching="joint"),
                   "as ours but view_batching='joint' (BatchNorm statistics over both views, as "
                   "the peer does)"),
    "peer": ("peer", dict(),
             "byol-pytorch 0.9.1 defaults: its augmentations (SimCLR-style, one random draw per "
             "BATCH), use_simplicial_embeddings=True, constant tau 0.99, views concatenated"),
    "peer-nosem": ("peer", dict(use_simplicial_embeddings=False),
                   "byol-pytorch 0.9.1 defaults but use_simplicial_embeddings=False (plain BYOL "
                   "heads)"),
}


# ------------------------------------------------------------------------------------ data
def resolve_data_path(path: str | os.PathLike) -> Path:
    """``path`` as given if it exists, else relative to the repo root (how the default is meant)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    return (REPO_ROOT / p).resolve()


def load_npz(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """(N, 3, H, W) uint8 images and (N,) int64 labels from ``train_images``/``train_labels``."""
    with np.load(path) as data:
        images = torch.from_numpy(np.ascontiguousarray(data["train_images"]))
        labels = torch.from_numpy(np.asarray(data["train_labels"])).long()
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"train_images must be uint8 (N, 3, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"train_labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    return images, labels


def split_indices(n: int, n_test: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed held-out split: (train indices, test indices), both sorted, disjoint, covering 0..n-1.

    Drawn with ``numpy.random.default_rng(seed)`` (stable across numpy versions and platforms).
    """
    if not 0 < n_test < n:
        raise ValueError(f"n_test must lie in (0, {n}), got {n_test}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# ------------------------------------------------------------------------------- backbone
def cifar_resnet18() -> nn.Module:
    """torchvision resnet18 (random init) with the CIFAR stem, in plain torchvision.

    Same construction order as ``byol_pytorch.create_backbone("resnet18", cifar_stem=True)``, so
    under the same seed both give identical weights (checked and recorded as ``same_init``). The
    peer worker uses this one since our library cannot be imported there.
    """
    net = torchvision.models.resnet18(weights=None)
    conv1 = net.conv1
    net.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    return net


def state_checksum(state: dict[str, Tensor]) -> str:
    """sha256 over the names and bytes of a state_dict's tensors (to compare initial weights)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if isinstance(t, Tensor):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------- training
def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, then cosine decay to 0.

    Identical to ``byol_pytorch.schedules.warmup_cosine`` (checked in the tests); written out here
    because the peer worker cannot import our library.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    decay = total - warmup
    if decay <= 0:
        return base
    progress = min(step - warmup, decay) / decay
    return base * (math.cos(math.pi * progress) + 1) / 2


def pretrain(
    learner: nn.Module,
    train_u8: Tensor,
    cfg: dict[str, Any],
    *,
    update_ema: Callable[[], None],
    tau_fn: Callable[[], float | None] = lambda: None,
    std_fn: Callable[[], float | None] = lambda: None,
    tag: str = "",
    step_log: Path | None = None,
) -> dict[str, Any]:
    """The training loop shared by every library (ours runs it here, the peer in its worker).

    Data order comes from a generator seeded with ``cfg["seed"]`` (identical for all models); the
    optimizer is SGD (momentum 0.9, weight decay on all trainable parameters), the learning rate
    ``base_lr * batch / 256`` with warm-up + cosine per step; the forward runs under bf16 autocast
    when ``cfg["precision"] == "bf16"``. ``update_ema`` is called after each optimizer step.
    Optionally writes a per-step JSONL log (step, epoch, loss, lr, tau, projection_std).

    Returns:
        wall time, steps, the mean loss per epoch and the last step's loss.
    """
    device = torch.device(cfg["device"])
    n, bsz = train_u8.shape[0], cfg["batch_size"]
    steps_per_epoch = n // bsz
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {bsz} exceeds the {n} training images")
    total = steps_per_epoch * cfg["epochs"]
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    base_lr = cfg["base_lr"] * bsz / 256
    warmup = min(cfg["warmup_epochs"] * steps_per_epoch, total)
    params = [p for p in learner.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=base_lr, momentum=0.9, weight_decay=cfg["weight_decay"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    data = train_u8.to(device)
    use_amp = cfg["precision"] == "bf16"
    learner.train()
    epoch_losses: list[float] = []
    log_f = open(step_log, "w") if step_log is not None else None
    step, loss_val = 0, float("nan")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, cpu_start, load_start = time.perf_counter(), time.process_time(), _loadavg()
    try:
        for epoch in range(cfg["epochs"]):
            perm = torch.randperm(n, generator=gen).to(device)
            running, count = torch.zeros((), device=device), 0
            for i in range(steps_per_epoch):
                if step >= total:
                    break
                lr = lr_at(step, total, base_lr, warmup)
                for g in opt.param_groups:
                    g["lr"] = lr
                x = data[perm[i * bsz:(i + 1) * bsz]].float().div_(255)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = learner(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tau = tau_fn()
                update_ema()
                running += loss.detach().float()
                count += 1
                step += 1
                if log_f is not None or step % 10 == 0 or step == total:
                    loss_val = float(loss.detach())
                if log_f is not None:
                    std = std_fn()
                    log_f.write(json.dumps(dict(step=step, epoch=epoch, loss=loss_val, lr=lr,
                                                tau=tau, projection_std=std)) + "\n")
                if step % 10 == 0 or step == total:
                    print(f"[{tag}] epoch {epoch + 1}/{cfg['epochs']} step {step}/{total} "
                          f"loss {loss_val:.4f} lr {lr:.4g} "
                          f"{time.perf_counter() - start:.0f}s", flush=True)
            if count:
                epoch_losses.append(float(running) / count)
            if step >= total:
                break
    finally:
        if log_f is not None:
            log_f.close()
    sync()
    # Process CPU time (all threads) is reported next to wall time: on a shared machine the
    # wall time also counts other people's jobs; the 1-minute load averages show how busy it was.
    return dict(pretrain_wall_s=time.perf_counter() - start,
                pretrain_cpu_s=time.process_time() - cpu_start,
                loadavg_1min=[load_start, _loadavg()], steps=step,
                epoch_mean_loss=epoch_losses, final_loss=loss_val)


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def build_learner(library: str, kwargs: dict[str, Any], net: nn.Module, cfg: dict[str, Any],
                  total_steps: int) -> tuple[nn.Module, dict[str, Callable]]:
    """A BYOL learner of ``library`` ("ours" or "peer") around ``net`` and its loop callbacks.

    Runs in whichever interpreter has that library as ``byol_pytorch``.
    """
    import byol_pytorch

    common = dict(image_size=cfg["image_size"], hidden_layer="avgpool",
                  projection_size=cfg["projection_size"],
                  projection_hidden_size=cfg["projection_hidden_size"])
    kwargs = dict(kwargs)
    if library == "ours":
        cosine = kwargs.pop("cosine_tau", True)
        if "crop_scale" in kwargs:  # the preset's views with another crop scale
            kwargs["augment_fn"], kwargs["augment_fn2"] = byol_pytorch.default_views(
                cfg["image_size"], kwargs.pop("augment_preset"),
                crop_scale=kwargs.pop("crop_scale"))
        learner = byol_pytorch.BYOL(net, **common, **kwargs,
                                    total_steps=total_steps if cosine else None)
        learner.to(cfg["device"])

        def std() -> float | None:
            s = learner.last_projection_std
            return None if s is None else float(s)

        return learner, dict(update_ema=learner.update_moving_average,
                             tau_fn=lambda: learner.tau, std_fn=std)
    net.to(cfg["device"])  # the peer's constructor runs a forward on the backbone's device
    learner = byol_pytorch.BYOL(net, **common, **kwargs)
    beta = learner.target_ema_updater.beta
    return learner, dict(update_ema=learner.update_moving_average, tau_fn=lambda: beta)


def steps_for(n_train: int, cfg: dict[str, Any]) -> int:
    total = (n_train // cfg["batch_size"]) * cfg["epochs"]
    return min(total, cfg["max_steps"]) if cfg.get("max_steps") else total


def train_model(library: str, kwargs: dict[str, Any], train_u8: Tensor, cfg: dict[str, Any],
                make_net: Callable[[], nn.Module], tag: str,
                step_log: Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Seed, build the backbone and learner, pretrain; returns the backbone and the run record."""
    torch.manual_seed(cfg["seed"])
    net = make_net()
    init = state_checksum(net.state_dict())
    learner, hooks = build_learner(library, kwargs, net, cfg, steps_for(len(train_u8), cfg))
    record = pretrain(learner, train_u8, cfg, tag=tag, step_log=step_log, **hooks)
    record["init_checksum"] = init
    return net.cpu(), record


# ------------------------------------------------------------------------------ peer side
def peer_worker(config_path: str) -> None:
    """Entry point run by the peer's interpreter: train with byol-pytorch 0.9.1, save the backbone."""
    from importlib import metadata

    import byol_pytorch

    here = Path(config_path).parent
    job = json.loads(Path(config_path).read_text())
    cfg, repo = job["cfg"], Path(job["repo_root"]).resolve()
    where = Path(byol_pytorch.__file__).resolve()
    if repo in where.parents:
        raise SystemExit(f"peer worker imported OUR byol_pytorch ({where}); refusing to run")
    if any(p and Path(p).resolve() == repo for p in sys.path):
        raise SystemExit(f"peer worker has the repo root on sys.path: {sys.path}")
    torch.set_num_threads(cfg["threads"])
    images, _ = load_npz(job["data"])
    train_u8 = images[np.asarray(job["train_idx"])]
    net, record = train_model("peer", job["kwargs"], train_u8, cfg, cifar_resnet18, job["name"])
    torch.save(net.state_dict(), here / "backbone.pt")
    record.update(library_version=metadata.version("byol-pytorch"), library_file=str(where),
                  torch=torch.__version__, torchvision=torchvision.__version__,
                  python=platform.python_version())
    (here / "record.json").write_text(json.dumps(record))


def run_peer(peer_python: str, name: str, kwargs: dict[str, Any], data: Path,
             train_idx: np.ndarray, cfg: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Train a peer model in a subprocess of ``peer_python`` and load its backbone here."""
    with tempfile.TemporaryDirectory(prefix="byol_peer_") as tmp:
        job = dict(cfg=cfg, kwargs=kwargs, name=name, data=str(Path(data).resolve()),
                   train_idx=train_idx.tolist(), repo_root=str(REPO_ROOT))
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        # -I: isolated mode, so neither this script's folder nor the cwd nor PYTHONPATH lands on
        # sys.path; cwd is the temp dir (outside the repo) as a second guard.
        cmd = [peer_python, "-I", str(Path(__file__).resolve()), "--peer-worker",
               str(Path(tmp) / "job.json")]
        sys.stdout.flush()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"peer worker failed with status {proc.returncode}: {cmd}")
        record = json.loads((Path(tmp) / "record.json").read_text())
        record["subprocess_wall_s"] = time.perf_counter() - start
        net = cifar_resnet18()
        net.load_state_dict(torch.load(Path(tmp) / "backbone.pt", weights_only=True))
    return net, record


# ------------------------------------------------------------------------------ evaluation
class Embedder(nn.Module):
    """ImageNet-normalise [0, 1] images (as both libraries do in training), then the backbone's
    ``avgpool`` output flattened to (B, 512)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        from byol_pytorch import FeatureExtractor

        self.features = FeatureExtractor(net, "avgpool")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.features((x - self.mean) / self.std)


def embed(net: nn.Module, images_u8: Tensor, labels: Tensor, device: str,
          batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """Raw (un-normalised) (N, 512) features and labels, on CPU, in fp32."""
    from byol_pytorch.eval import extract_features

    model = Embedder(copy.deepcopy(net)).to(device)
    loader = ((images_u8[i:i + batch_size].float() / 255, labels[i:i + batch_size])
              for i in range(0, len(images_u8), batch_size))
    return extract_features(model, loader, device, normalize=False, progress=False)


def evaluate(net: nn.Module, images: Tensor, labels: Tensor, train_idx: np.ndarray,
             test_idx: np.ndarray, cfg: dict[str, Any]) -> dict[str, Any]:
    """kNN (cosine, T=0.07, each k in cfg["knn_k"]) and linear-probe top-1 on the held-out split."""
    from byol_pytorch.eval import knn_accuracy, linear_probe_accuracy

    start = time.perf_counter()
    num_classes = int(labels.max()) + 1
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    f_tr, y_tr = embed(net, images[tr], labels[tr], cfg["device"])
    f_te, y_te = embed(net, images[te], labels[te], cfg["device"])
    out: dict[str, Any] = {}
    knn = knn_accuracy(f_tr, y_tr, f_te, y_te, k=list(cfg["knn_k"]), temperature=0.07,
                       num_classes=num_classes)
    out.update({k: v for k, v in knn.items() if k.startswith("knn_top1")})
    # Linear probe on standardised features (statistics of the training split), which makes one
    # learning rate fit every model whatever its feature scale (as MoCo v3/MAE's BN before the
    # linear head); SGD + cosine, as byol_pytorch.eval.train_linear_probe does.
    mean, std = f_tr.mean(0), f_tr.std(0).clamp_min(1e-6)
    lin = linear_probe_accuracy((f_tr - mean) / std, y_tr, (f_te - mean) / std, y_te, num_classes,
                                epochs=cfg["probe_epochs"], lr=0.1, weight_decay=5e-4,
                                batch_size=256, optimizer="sgd", progress=False, seed=cfg["seed"])
    out["linear_top1"] = lin["linear_top1"]
    out["feature_std"] = float(f_tr.std(0).mean())
    out["eval_wall_s"] = time.perf_counter() - start
    return out


# ------------------------------------------------------------------------------ reporting
def hardware_info(device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = dict(cpu=cpu, cpu_count=os.cpu_count(),
                                torch_threads=torch.get_num_threads(),
                                platform=platform.platform(), python=platform.python_version(),
                                torch=torch.__version__, torchvision=torchvision.__version__)
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = None
    return info


def markdown_table(models: dict[str, dict[str, Any]], ks: list[int]) -> str:
    cols = [f"kNN@{k}" for k in ks] + ["linear", "pretrain wall (s)", "steps", "final loss"]
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, r in models.items():
        if "skipped" in r:
            lines.append(f"| {name} | " + " | ".join(["skipped"] + [""] * (len(cols) - 1)) + " |")
            continue
        wall = r.get("pretrain_wall_s")
        vals = [f"{r[f'knn_top1@{k}']:.1f}" for k in ks] + [
            f"{r['linear_top1']:.1f}", "-" if wall is None else f"{wall:.0f}",
            str(r.get("steps", 0)),
            "-" if r.get("final_loss") is None else f"{r['final_loss']:.3f}"]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="npz with train_images (N,3,H,W) uint8 and train_labels; relative paths "
                        "that do not exist from the cwd are taken from the repo root")
    p.add_argument("--models", nargs="+", default=["random", "ours", "peer"],
                   help=f"any of: random {' '.join(VARIANTS)}")
    p.add_argument("--peer-python", default=None,
                   help="interpreter with byol-pytorch 0.9.1 installed; peer models are skipped "
                        "without it")
    p.add_argument("--output", type=Path, default=None, help="JSON results file")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="write a per-step JSONL log per trained model of ours here")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--knn-k", type=int, nargs="+", default=[20, 200])
    p.add_argument("--projection-size", type=int, default=256)
    p.add_argument("--projection-hidden-size", type=int, default=4096)
    # Overrides of the budget's settings.
    for name, typ in (("epochs", int), ("batch-size", int), ("base-lr", float),
                      ("warmup-epochs", int), ("weight-decay", float), ("device", str),
                      ("precision", str), ("probe-epochs", int), ("max-steps", int)):
        p.add_argument(f"--{name}", type=typ, default=None, help="overrides the budget's value")
    p.add_argument("--peer-worker", default=None, help=argparse.SUPPRESS)
    return p


def make_config(args: argparse.Namespace, image_size: int) -> dict[str, Any]:
    cfg = dict(BUDGETS[args.budget])
    cfg["max_steps"] = None
    for key in ("epochs", "batch_size", "base_lr", "warmup_epochs", "weight_decay", "device",
                "precision", "probe_epochs", "max_steps"):
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if cfg["precision"] not in ("fp32", "bf16"):
        raise SystemExit(f"--precision must be fp32 or bf16, got {cfg['precision']!r}")
    cfg.update(seed=args.seed, threads=args.threads, knn_k=list(args.knn_k),
               image_size=image_size, projection_size=args.projection_size,
               projection_hidden_size=args.projection_hidden_size, budget=args.budget)
    return cfg


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = get_args_parser().parse_args(argv)
    if args.peer_worker:
        peer_worker(args.peer_worker)
        return None
    unknown = [m for m in args.models if m != "random" and m not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown models {unknown}; choose from random {' '.join(VARIANTS)}")
    data = resolve_data_path(args.data)
    if not data.exists():
        print(f"SKIP: data file {data} not found (pass --data)")
        return None
    torch.set_num_threads(args.threads)
    import byol_pytorch
    from byol_pytorch import create_backbone

    images, labels = load_npz(data)
    cfg = make_config(args, image_size=images.shape[-1])
    if cfg["device"].startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--budget gpu / --device cuda needs a CUDA device; none is available")
    train_idx, test_idx = split_indices(len(images), args.n_test, args.seed)
    train_u8 = images[torch.from_numpy(train_idx)]
    make_ours = lambda: create_backbone("resnet18", cifar_stem=True)  # noqa: E731
    torch.manual_seed(args.seed)
    init_ours = state_checksum(make_ours().state_dict())
    torch.manual_seed(args.seed)
    same_init = init_ours == state_checksum(cifar_resnet18().state_dict())
    result: dict[str, Any] = dict(
        config=cfg, hardware=hardware_info(cfg["device"]),
        versions=dict(ours=byol_pytorch.__version__),
        data=dict(path=str(data), n_total=len(images), n_train=len(train_idx),
                  n_test=len(test_idx), image_size=cfg["image_size"],
                  test_idx_sha=hashlib.sha256(test_idx.tobytes()).hexdigest()[:16]),
        backbone="torchvision resnet18, CIFAR stem (3x3 s1 conv1, no maxpool), avgpool (512-d)",
        same_init=same_init, models={}, notes={})
    print(f"data {data}: {len(train_idx)} train / {len(test_idx)} held-out, "
          f"{cfg['image_size']}px; budget {args.budget}: {cfg}", flush=True)
    print(f"hardware: {result['hardware']}", flush=True)

    def finish() -> None:
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(result, indent=2) + "\n")

    for name in args.models:
        t0 = time.perf_counter()
        if name == "random":
            torch.manual_seed(args.seed)
            net, record = make_ours(), dict(init_checksum=init_ours, steps=0)
            result["notes"][name] = "random initialisation (seed as every other model), no training"
        else:
            library, kwargs, desc = VARIANTS[name]
            result["notes"][name] = desc
            if library == "peer":
                if not args.peer_python:
                    print(f"[{name}] skipped: no --peer-python", flush=True)
                    result["models"][name] = dict(skipped="no --peer-python given")
                    continue
                net, record = run_peer(args.peer_python, name, kwargs, data, train_idx, cfg)
                result["versions"]["peer"] = record.get("library_version")
            else:
                log = None
                if args.log_dir is not None:
                    args.log_dir.mkdir(parents=True, exist_ok=True)
                    log = args.log_dir / f"{name}_steps.jsonl"
                net, record = train_model(library, kwargs, train_u8, cfg, make_ours, name, log)
        record.update(evaluate(net, images, labels, train_idx, test_idx, cfg))
        record["total_wall_s"] = time.perf_counter() - t0
        result["models"][name] = record
        knn = ", ".join(f"kNN@{k} {record[f'knn_top1@{k}']:.1f}" for k in cfg["knn_k"])
        print(f"[{name}] {knn}, linear {record['linear_top1']:.1f} "
              f"(pretrain {record.get('pretrain_wall_s', 0):.0f}s, "
              f"eval {record['eval_wall_s']:.0f}s)", flush=True)
        finish()  # partial results survive an interrupted run

    result["table"] = markdown_table(result["models"], cfg["knn_k"])
    finish()
    print()
    print(result["table"])
    print()
    for name in args.models:
        print(f"- {name}: {result['notes'].get(name, '')}")
    return result


if __name__ == "__main__":
    main()
