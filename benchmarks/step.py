#!/usr/bin/env python
"""Training-step throughput: ours against byol-pytorch 0.9.1 (the peer), alternating in one run.

One step = forward (augmentation + online + target + loss), backward, Adam step, EMA update.
Each implementation runs in its own long-lived worker process (ours: this interpreter; the peer:
``--peer-python``, its own virtualenv, started isolated with ``-I`` from a temporary directory so
that this repository is not on its ``sys.path``; the worker checks where ``byol_pytorch`` was
imported from). After warm-up, the driver asks the workers in turn for a few steps each, rotating
the order every round, so that slow phases of a shared machine hit all of them alike; it prints
median seconds per step, images/s and the ratios to the peer measured in this same run.

    python benchmarks/step.py --config cpu --peer-python /work/peervenv/bin/python
    python benchmarks/step.py --config gpu --peer-python /path/to/peer/python   # CUDA machine
    python benchmarks/step.py --config gpu --batch 256 --dtype bf16 --channels-last on \
        --impls ours,ours-compiled,peer,peer-compiled

The worker mode (``--worker ours|peer``) is internal; it imports only the standard library,
torch, torchvision and the ``byol_pytorch`` of the interpreter it runs in.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

IMPLS = {
    # name: (worker, options)
    "ours": ("ours", {"view_batching": "separate"}),  # the default: one pass per view
    "ours-joint": ("ours", {"view_batching": "joint"}),  # BN statistics over both views, as the peer
    "peer": ("peer", {"sem": False}),  # like-for-like BYOL: simplicial embeddings off
    "peer-default": ("peer", {"sem": True}),  # the peer's default (SEM on)
    # torch.compile(learner); the warm-up column then includes the compilation
    "ours-compiled": ("ours", {"view_batching": "separate", "compile": True}),
    "peer-compiled": ("peer", {"sem": False, "compile": True}),
}

CONFIGS = {
    # Grids: every combination of the list-valued settings is one table.
    "cpu": dict(device="cpu", arch="resnet18", image_size=64, batch=[32], dtype=["fp32"],
                channels_last=["off"],
                impls=["ours", "ours-compiled", "peer", "peer-compiled", "peer-default"],
                rounds=10, steps_per_round=1, warmup=2),
    "gpu": dict(device="cuda", arch="resnet50", image_size=224, batch=[128, 256],
                dtype=["fp32", "bf16"], channels_last=["off", "on"],
                impls=["ours", "ours-compiled", "ours-joint", "peer", "peer-compiled"],
                rounds=10, steps_per_round=5, warmup=5),
    # A seconds-long smoke test of the eager code paths on CPU (tiny images; no compilation).
    "smoke": dict(device="cpu", arch="resnet18", image_size=32, batch=[8], dtype=["fp32", "bf16"],
                  channels_last=["off", "on"], impls=["ours", "peer"],
                  rounds=2, steps_per_round=1, warmup=1),
}


# ============================================================================ worker (both venvs)
def _read_status(key: str) -> int:
    """A /proc/self/status value in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def worker_main(args: argparse.Namespace) -> None:
    # Keep stdout for the protocol; whatever the libraries print goes to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    root = os.path.realpath(args.repo_root)
    if args.worker == "ours":
        sys.path.insert(0, root)
    else:
        # this checkout off the path (a virtualenv inside it may stay: the peer's torch lives there)
        sys.path[:] = [p for p in sys.path if "site-packages" in p
                       or not os.path.realpath(p or os.getcwd()).startswith(root)]

    import contextlib
    import importlib.metadata

    import torch
    import torchvision

    import byol_pytorch

    where = os.path.realpath(byol_pytorch.__file__)
    inside = where.startswith(root + os.sep)
    if inside != (args.worker == "ours"):
        raise SystemExit(f"worker {args.worker} imported byol_pytorch from {where}: wrong library")
    # ours is the distribution byol-torch (it has __version__); the peer's is byol-pytorch
    version = getattr(byol_pytorch, "__version__", None) or importlib.metadata.version(
        "byol-pytorch")

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    channels_last = args.channels_last == "on"
    net = getattr(torchvision.models, args.arch)()
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    common = dict(image_size=args.image_size, hidden_layer=-2, projection_size=256,
                  projection_hidden_size=4096, moving_average_decay=0.996, use_momentum=True)
    if args.worker == "ours":
        learner = byol_pytorch.BYOL(net, use_simplicial_embeddings=False,
                                    view_batching=args.view_batching, **common)
    else:
        # The peer's constructor runs a forward pass that builds its projector and its target.
        learner = byol_pytorch.BYOL(net, use_simplicial_embeddings=args.sem, **common)
    learner = learner.to(device)
    learner.train()
    # As both READMEs do: Adam over learner.parameters() (the peer's includes its frozen target,
    # whose parameters never get gradients).
    opt = torch.optim.Adam(learner.parameters(), lr=3e-4)
    model = torch.compile(learner) if args.compile else learner

    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=gen).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16"
           else contextlib.nullcontext())

    def step() -> None:
        with amp:
            loss = model(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        learner.update_moving_average()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(steps: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return (time.perf_counter() - t0) / steps

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    info = dict(impl=args.worker, version=version, path=where, torch=torch.__version__,
                threads=torch.get_num_threads(), warmup_s=time.perf_counter() - t0,
                params=sum(p.numel() for p in learner.parameters() if p.requires_grad))
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
    proto.write(json.dumps({"ready": info}) + "\n")

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "run":
            if cmd.get("refill", 0):  # re-fill the CUDA caching allocator after empty_cache()
                timed(cmd["refill"])
            sec = timed(cmd["steps"])
            if cmd.get("release") and device.type == "cuda":
                torch.cuda.empty_cache()
            proto.write(json.dumps({"sec_per_step": sec}) + "\n")
        elif cmd["cmd"] == "mem":
            sync()
            if device.type == "cuda":
                torch.cuda.empty_cache()
                resident = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
                timed(cmd["steps"])
                peak = torch.cuda.max_memory_allocated(device)
                kind = "cuda max_memory_allocated"
            else:
                resident = _read_status("VmRSS")
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the peak-RSS high-water mark (Linux >= 4.0)
                timed(cmd["steps"])
                peak = _read_status("VmHWM")
                kind = "process RSS high-water mark"
            proto.write(json.dumps({"resident": resident, "peak": peak, "kind": kind}) + "\n")
    proto.close()


# ============================================================================ driver (our venv)
class Worker:
    """A worker process speaking one JSON line per request."""

    def __init__(self, name: str, python: str, args: argparse.Namespace, cfg: dict,
                 env_extra: dict | None = None) -> None:
        import subprocess
        import tempfile

        from _common import REPO_ROOT

        kind, opts = IMPLS[name]
        self.name = name
        cmd = [python, "-I", os.path.abspath(__file__), "--worker", kind,
               "--repo-root", str(REPO_ROOT), "--device", cfg["device"], "--arch", cfg["arch"],
               "--image-size", str(cfg["image_size"]), "--batch-size", str(cfg["batch"]),
               "--dtype-one", cfg["dtype"], "--channels-last-one", cfg["channels_last"],
               "--warmup", str(cfg["warmup"]),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        if "view_batching" in opts:
            cmd += ["--view-batching", opts["view_batching"]]
        if opts.get("sem"):
            cmd.append("--sem")
        if opts.get("compile"):
            cmd.append("--compile")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(env_extra or {})
        if opts.get("compile"):  # time a cold compilation, as a user's first run sees it
            env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
        self._tmp = tempfile.TemporaryDirectory()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1, cwd=self._tmp.name, env=env)
        self.info: dict | None = None

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died (exit code {self.proc.wait()})")
        return json.loads(line)

    def ready(self) -> dict:
        self.info = self._reply()["ready"]
        return self.info

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait(timeout=120)
        self._tmp.cleanup()


PEER_PYTHON = os.environ.get("BYOL_PEER_PYTHON", "/work/peervenv/bin/python")


def python_for(name: str, args: argparse.Namespace) -> str:
    return args.peer_python if IMPLS[name][0] == "peer" else sys.executable


def grid(cfg: dict) -> list[dict]:
    out = []
    for b in cfg["batch"]:
        for dt in cfg["dtype"]:
            for cl in cfg["channels_last"]:
                out.append({**cfg, "batch": b, "dtype": dt, "channels_last": cl})
    return out


def run_config(cfg: dict, args: argparse.Namespace, impls: list[str]) -> str:
    from _common import iqr, median, table

    workers: list[Worker] = []
    try:
        for name in impls:  # one at a time: construction and warm-up are not timed
            w = Worker(name, python_for(name, args), args, cfg)
            w.ready()
            workers.append(w)
        cuda = cfg["device"] == "cuda"
        times: dict[str, list[float]] = {w.name: [] for w in workers}
        for r in range(cfg["rounds"]):
            k = r % len(workers)
            order = workers[k:] + workers[:k]
            if r % 2:
                order = order[::-1]
            for w in order:
                time.sleep(args.pause)  # let the previous worker's threads go idle
                # On CUDA every worker hands its cached blocks back after its turn (several
                # ResNet-50 processes do not fit at once) and refills them untimed first.
                rep = w.ask(cmd="run", steps=cfg["steps_per_round"],
                            refill=1 if cuda else 0, release=cuda)
                times[w.name].append(rep["sec_per_step"])
    finally:
        for w in workers:
            w.close()

    b = cfg["batch"]
    ref = "peer" if "peer" in times else None
    rows = []
    for w in workers:
        ts = times[w.name]
        med = median(ts)
        lo, hi = iqr(ts)
        row = [w.name, f"{w.info['impl']} {w.info['version']}, {w.info['threads']} thr",
               f"{med * 1e3:.1f}",
               f"{lo * 1e3:.1f}-{hi * 1e3:.1f}", f"{b / med:.1f}", f"{w.info['warmup_s']:.1f}"]
        if ref:
            pr = times[ref]
            paired = median([p / o for p, o in zip(pr, ts)])
            row += [f"{median(pr) / med:.3f}x", f"{paired:.3f}x"]
        rows.append(row)
    header = ["impl", "library, torch threads", "median ms/step", "IQR ms", "images/s",
              "warm-up s (incl. compile)"]
    if ref:
        header += ["vs peer (medians)", "vs peer (median of per-round ratios)"]
    title = (f"### {cfg['arch']} {cfg['image_size']}px, batch {b}, {cfg['dtype']}, "
             f"channels_last {cfg['channels_last']}, "
             f"{cfg['device']}: {cfg['rounds']} rounds x {cfg['steps_per_round']} step(s) each, "
             f"after {cfg['warmup']} warm-up steps")
    return title + "\n\n" + table(header, rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    p.add_argument("--peer-python", default=PEER_PYTHON,
                   help="interpreter of the virtualenv where byol-pytorch 0.9.1 is installed")
    p.add_argument("--impls", help=f"comma-separated subset of {list(IMPLS)}")
    p.add_argument("--batch", help="comma-separated batch sizes (overrides the config)")
    p.add_argument("--dtype", help="comma-separated: fp32,bf16 (bf16 = autocast)")
    p.add_argument("--channels-last", help="comma-separated: off,on")
    p.add_argument("--arch", help="torchvision model name")
    p.add_argument("--image-size", type=int)
    p.add_argument("--rounds", type=int)
    p.add_argument("--steps-per-round", type=int)
    p.add_argument("--warmup", type=int, help="untimed steps per worker before the rounds")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: default)")
    p.add_argument("--pause", type=float, default=0.2, help="seconds between two workers' turns")
    p.add_argument("--seed", type=int, default=0)
    # worker mode (internal)
    p.add_argument("--worker", choices=["ours", "peer"], help=argparse.SUPPRESS)
    p.add_argument("--repo-root", help=argparse.SUPPRESS)
    p.add_argument("--device", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dtype-one", dest="dtype_one", help=argparse.SUPPRESS)
    p.add_argument("--channels-last-one", dest="channels_last_one", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--view-batching", default="separate", help=argparse.SUPPRESS)
    p.add_argument("--sem", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker:
        args.batch, args.dtype = args.batch_size, args.dtype_one
        args.channels_last = args.channels_last_one
        worker_main(args)
        return

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import env_lines, git_rev

    cfg = dict(CONFIGS[args.config])
    for key in ("arch", "image_size", "rounds", "steps_per_round", "warmup"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    for key in ("batch", "dtype", "channels_last"):
        if getattr(args, key):
            vals = getattr(args, key).split(",")
            cfg[key] = [int(v) for v in vals] if key == "batch" else vals
    impls = args.impls.split(",") if args.impls else cfg["impls"]
    unknown = set(impls) - set(IMPLS)
    if unknown:
        p.error(f"unknown impls {sorted(unknown)}; choose from {list(IMPLS)}")

    print(f"## Training step, ours vs byol-pytorch 0.9.1 (config {args.config!r})\n")
    for line in env_lines(cfg["device"]):
        print(line)
    print(f"- ours: git {git_rev()}; peer interpreter: {args.peer_python}")
    print("- step = forward (incl. augmentation) + backward + Adam(lr 3e-4) + EMA update; "
          "projector/predictor 4096 -> 256; default augmentations of each library "
          "(ours per-image parameters, the peer's one set per batch)")
    print("- ratio > 1: faster than the peer (`peer` = byol-pytorch with "
          "use_simplicial_embeddings=False; `peer-default` = its default, SEM on)\n", flush=True)
    for one in grid(cfg):
        print(run_config(one, args, impls), flush=True)


if __name__ == "__main__":
    main()
