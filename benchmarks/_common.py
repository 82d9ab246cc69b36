"""Timing helpers shared by the benchmark drivers (run from our virtualenv only).

Not imported by the peer worker: ``step.py --worker peer`` runs in the peer's interpreter and
must import nothing from this repository.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def iqr(xs: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentiles, a robust spread for noisy timings."""
    if len(xs) < 2:
        return (xs[0], xs[0])
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def time_once(fn: Callable[[], object], device: torch.device | str, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` over ``repeat`` back-to-back calls, device work included."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeat


def interleaved(fns: dict[str, Callable[[], object]], device: torch.device | str, rounds: int,
                warmup: int = 2, repeat: int = 1) -> dict[str, list[float]]:
    """Time several callables in alternation: each round runs every callable once (the order
    rotates every round, so no callable always runs first), after ``warmup`` untimed calls each.

    Returns {name: [seconds per call, one per round]}.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    sync(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        if r % 2:
            order = order[::-1]
        for name in order:
            times[name].append(time_once(fns[name], device, repeat))
    return times


def env_lines(device: torch.device | str) -> list[str]:
    """Markdown bullet lines describing where the numbers were taken."""
    device = torch.device(device)
    lines = [
        f"- torch {torch.__version__}, python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads here "
        f"{torch.get_num_threads()}",
    ]
    if device.type == "cuda":
        lines.append(f"- device: {torch.cuda.get_device_name(device)}")
    else:
        lines.append(f"- device: CPU ({platform.processor() or 'unknown model'})")
    try:
        load = os.getloadavg()
        lines.append(f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
                     "(other jobs share these cores: compare only numbers from one run)")
    except OSError:
        pass
    lines.append(f"- command: `{' '.join([Path(sys.executable).name] + sys.argv)}`")
    return lines


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out)


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "byol_pytorch"], cwd=REPO_ROOT,
                               capture_output=True, text=True).stdout.strip()
        return rev + ("+uncommitted changes in byol_pytorch/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
