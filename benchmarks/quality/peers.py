"""The other libraries, trained by ``train.py``'s loop: byol-pytorch 0.9.1 in its own interpreter
(:func:`run_peer` here -> :func:`peer_worker` there) and BYOL from lightly's blocks.

The peer's interpreter imports this module and ``train.py`` from a copy (see ``_SOURCES``):
module-level imports stay within the standard library, torch, torchvision and ``train``.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn

from .train import BACKBONES, train_model

# The worker's code as the driver imported it: the worker runs this copy, so a run that lasts an
# hour is not broken by an edit (or a checkout) of these files in the meantime.
_PACKAGE = Path(__file__).resolve().parent
_SOURCES = {name: (_PACKAGE / name).read_text() for name in ("__init__.py", "train.py", "peers.py")}
# -I (isolated: neither the cwd nor PYTHONPATH on sys.path) runs this, given (folder, job file)
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from quality.peers import peer_worker; peer_worker(sys.argv[2])")


def build_peer(kwargs: dict[str, Any], net: nn.Module, cfg: dict[str, Any],
               total_steps: int) -> tuple[nn.Module, dict[str, Callable]]:
    """0.9.1's ``BYOL`` (the interpreter's ``byol_pytorch``) around ``net`` and its callbacks."""
    import byol_pytorch

    net.to(cfg["device"])  # the peer's constructor runs a forward on the backbone's device
    learner = byol_pytorch.BYOL(net, image_size=cfg["image_size"], hidden_layer="avgpool",
                                projection_size=cfg["projection_size"],
                                projection_hidden_size=cfg["projection_hidden_size"], **kwargs)
    beta = learner.target_ema_updater.beta
    return learner, dict(update_ema=learner.update_moving_average, tau_fn=lambda: beta)


def peer_worker(job_path: str) -> None:
    """Run in the peer's interpreter: train with byol-pytorch 0.9.1, save the backbone, its curve
    snapshots and the run record next to ``job_path``."""
    from importlib import metadata

    import byol_pytorch

    here = Path(job_path).parent
    job = json.loads(Path(job_path).read_text())
    cfg, repo = job["cfg"], Path(job["repo_root"]).resolve()
    where = Path(byol_pytorch.__file__).resolve()
    if repo in where.parents:
        raise SystemExit(f"peer worker imported OUR byol_pytorch ({where}); refusing to run")
    if any(p and Path(p).resolve() == repo for p in sys.path):
        raise SystemExit(f"peer worker has the repo root on sys.path: {sys.path}")
    torch.set_num_threads(cfg["threads"])
    images = torch.load(here / "train.pt", weights_only=True)
    snaps: list[dict[str, Any]] = []

    def save(meta: dict[str, Any], state: dict[str, Tensor]) -> None:
        meta = dict(meta, file=f"snap_{len(snaps)}.pt")
        torch.save(state, here / meta["file"])
        snaps.append(meta)

    net, record = train_model(build_peer, job["kwargs"], images, cfg, job["lrs"],
                              BACKBONES[cfg["backbone"]], f"{job['name']} seed {cfg['seed']}",
                              on_snapshot=save)
    torch.save(net.state_dict(), here / "backbone.pt")
    record.update(library_version=metadata.version("byol-pytorch"), library_file=str(where),
                  torch=torch.__version__, torchvision=torchvision.__version__,
                  python=platform.python_version(), snapshots=snaps)
    (here / "record.json").write_text(json.dumps(record))


def run_peer(peer_python: str, name: str, kwargs: dict[str, Any], images: Tensor,
             cfg: dict[str, Any], lrs: list[float]
             ) -> tuple[nn.Module, dict[str, Any], list[tuple[dict[str, Any], dict[str, Tensor]]]]:
    """Train variant ``name`` of 0.9.1 in a subprocess of ``peer_python`` on ``images`` (N, 3, H,
    W) float in [0, 1] at ``lrs``; returns its backbone, record and curve snapshots."""
    with tempfile.TemporaryDirectory(prefix="byol_peer_") as tmp:
        (Path(tmp) / "quality").mkdir()
        for file, text in _SOURCES.items():
            (Path(tmp) / "quality" / file).write_text(text)
        job = dict(cfg=cfg, kwargs=kwargs, name=name, lrs=lrs,
                   repo_root=str(_PACKAGE.parents[1]))
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        torch.save(images, Path(tmp) / "train.pt")  # the peer cannot import examples/data
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        # cwd is the temp dir (outside the repo), a second guard against importing ours
        cmd = [peer_python, "-I", "-c", _BOOT, tmp, str(Path(tmp) / "job.json")]
        sys.stdout.flush()
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"peer worker failed with status {proc.returncode}: {cmd}")
        record = json.loads((Path(tmp) / "record.json").read_text())
        record["subprocess_wall_s"] = time.perf_counter() - start
        net = BACKBONES[cfg["backbone"]]()
        net.load_state_dict(torch.load(Path(tmp) / "backbone.pt", weights_only=True))
        snaps = [(meta, torch.load(Path(tmp) / meta.pop("file"), weights_only=True))
                 for meta in record.pop("snapshots")]
    return net, record, snaps


class LightlyBYOL(nn.Module):
    """BYOL assembled from lightly's building blocks, as lightly's ``examples/pytorch/byol.py``.

    ``loss = learner(x)`` on (B, 3, H, W) images in [0, 1] (exact uint8 / 255): each image goes
    through lightly's two view transforms as a PIL image (what its data loaders do), both views
    run through the online and the momentum networks one view at a time, and the loss is
    ``0.5 * (NegativeCosineSimilarity(p0, z1) + NegativeCosineSimilarity(p1, z0))``.
    ``update_ema()`` moves the momentum networks with ``update_momentum`` at
    ``cosine_schedule(step, total_steps, tau, 1)``. The backbone ``net`` is trained in place
    (the online backbone is ``nn.Sequential(*children[:-1])`` of it, sharing its modules).
    """

    def __init__(self, net: nn.Module, image_size: int, projection_size: int,
                 projection_hidden_size: int, tau: float, total_steps: int) -> None:
        super().__init__()
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad
        from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform

        # lightly's idiom: the backbone is the network without its classifier (ends at avgpool)
        self.backbone = nn.Sequential(*list(net.children())[:-1])
        with torch.no_grad():
            was_training = self.backbone.training
            self.backbone.eval()
            dim = self.backbone(torch.zeros(2, 3, image_size, image_size)).flatten(1).shape[1]
            self.backbone.train(was_training)
        self.projection_head = BYOLProjectionHead(dim, projection_hidden_size, projection_size)
        self.prediction_head = BYOLPredictionHead(projection_size, projection_hidden_size,
                                                  projection_size)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        # lightly's CIFAR example: its BYOL views at the image size with the blur off
        self.view1 = BYOLView1Transform(input_size=image_size, gaussian_blur=0.0)
        self.view2 = BYOLView2Transform(input_size=image_size, gaussian_blur=0.0)
        self.tau, self.total_steps, self.step = tau, total_steps, 0

    def momentum(self) -> float:
        from lightly.utils.scheduler import cosine_schedule

        return cosine_schedule(min(self.step, self.total_steps), self.total_steps, self.tau, 1.0)

    def views(self, x: Tensor) -> tuple[Tensor, Tensor]:
        from PIL import Image

        u8 = x.detach().mul(255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        pil = [Image.fromarray(img) for img in u8]
        v0 = torch.stack([self.view1(p) for p in pil]).to(x.device)
        v1 = torch.stack([self.view2(p) for p in pil]).to(x.device)
        return v0, v1

    def online(self, x: Tensor) -> Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(1)))

    @torch.no_grad()
    def target(self, x: Tensor) -> Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(1)).detach()

    def forward(self, x: Tensor) -> Tensor:
        x0, x1 = self.views(x)
        p0, z0 = self.online(x0), self.target(x0)
        p1, z1 = self.online(x1), self.target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def update_ema(self) -> None:
        from lightly.models.utils import update_momentum

        m = self.momentum()
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        self.step += 1


def lightly_available() -> bool:
    """Whether ``lightly`` (with the building blocks used here) can be imported."""
    try:
        import lightly.loss  # noqa: F401
        import lightly.models.modules  # noqa: F401
        import lightly.transforms.byol_transform  # noqa: F401
    except ImportError:
        return False
    return True


def build_lightly(kwargs: dict[str, Any], net: nn.Module, cfg: dict[str, Any],
                  total_steps: int) -> tuple[nn.Module, dict[str, Callable]]:
    """:class:`LightlyBYOL` around ``net`` (tau: the variant's, else the budget's), callbacks."""
    net.to(cfg["device"])
    learner = LightlyBYOL(net, cfg["image_size"], cfg["projection_size"],
                          cfg["projection_hidden_size"], kwargs.get("tau", cfg["tau"]),
                          total_steps).to(cfg["device"])
    return learner, dict(update_ema=learner.update_ema, tau_fn=learner.momentum)
