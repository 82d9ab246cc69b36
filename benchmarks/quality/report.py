"""What a run reports: the hardware, statistics over seeds (paired by seed), the table, the
verdict lines and the kNN-against-time plot."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision

from .budgets import CURVE_K


def hardware_info(device: str) -> dict[str, Any]:
    """CPU model, core and thread counts, platform and versions; the GPU's name on CUDA."""
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


def metric_keys(ks: Sequence[int]) -> list[str]:
    return [f"knn_top1@{k}" for k in ks] + ["linear_top1"]


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for one value), min, max, n and the values."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return dict(mean=float(arr.mean()), std=std, min=float(arr.min()), max=float(arr.max()),
                n=len(arr), values=[float(v) for v in arr])


def summarize(runs: dict[str, list[dict[str, Any]]], ks: Sequence[int]) -> dict[str, Any]:
    """Per model: mean/std over seeds of each metric and of the pretraining wall time; per trained
    model, the per-seed (paired: same seed, same init) differences to ``random`` and to ``ours``."""
    out: dict[str, Any] = {}
    by_seed = {name: {r["seed"]: r for r in recs if "skipped" not in r}
               for name, recs in runs.items()}
    for name, recs in runs.items():
        done = [r for r in recs if "skipped" not in r]
        if not done:
            out[name] = dict(skipped=recs[0]["skipped"] if recs else "no run")
            continue
        s: dict[str, Any] = {m: mean_std([r[m] for r in done]) for m in metric_keys(ks)}
        s["seeds"] = [r["seed"] for r in done]
        s["steps"] = done[0].get("steps", 0)
        walls = [r["pretrain_wall_s"] for r in done if "pretrain_wall_s" in r]
        if walls:
            s["pretrain_wall_s"] = mean_std(walls)
        for ref in ("random", "ours"):
            if ref == name or ref not in by_seed:
                continue
            pairs = [(by_seed[name][sd], by_seed[ref][sd]) for sd in by_seed[name]
                     if sd in by_seed[ref]]
            if pairs:
                s[f"minus_{ref}"] = {m: mean_std([a[m] - b[m] for a, b in pairs])
                                     for m in metric_keys(ks)}
        out[name] = s
    return out


def _fmt(s: dict[str, Any], signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{s['mean']:{sign}.1f} ± {s['std']:.1f}" if s["n"] > 1 else f"{s['mean']:{sign}.1f}"


def markdown_table(summary: dict[str, Any], ks: Sequence[int]) -> str:
    """Mean ± seed std of each metric, the paired kNN@ks[0] gain over random init, wall time."""
    k0 = ks[0]
    cols = ([f"kNN@{k}" for k in ks] + ["linear", f"kNN@{k0} - random", "pretrain (s)", "steps",
                                        "seeds"])
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, s in summary.items():
        if "skipped" in s:
            lines.append(f"| {name} | skipped: {s['skipped']} |" + " |" * (len(cols) - 1))
            continue
        gain = s.get("minus_random", {}).get(f"knn_top1@{k0}")
        wall = s.get("pretrain_wall_s")
        vals = [_fmt(s[m]) for m in metric_keys(ks)] + [
            "-" if gain is None else _fmt(gain, signed=True),
            "-" if wall is None else f"{wall['mean']:.0f}",
            str(s["steps"]), str(len(s["seeds"]))]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def verdict(summary: dict[str, Any], ks: Sequence[int]) -> list[str]:
    """Plain-language comparisons: ours vs random and ours vs each other trained model, each with
    the paired difference's seed spread."""
    key = f"knn_top1@{ks[0]}"
    lines = []
    ours = summary.get("ours", {})
    if "minus_random" in ours:
        d = ours["minus_random"][key]
        lines.append(f"ours - random, kNN@{ks[0]}: {_fmt(d, True)} points (paired over seeds; "
                     f"target >= +10): {'MET' if d['mean'] >= 10 else 'NOT MET'}")
    for name, s in summary.items():
        if name in ("ours", "random") or "skipped" in s or "minus_ours" not in s:
            continue
        d = s["minus_ours"][key]
        diff = -d["mean"]
        spread = max(d["std"], ours.get(key, {}).get("std", 0.0), s[key]["std"])
        state = ("ours ahead by more than the seed spread" if diff > spread else
                 f"{name} ahead by more than the seed spread" if -diff > spread else
                 "within the seed spread")
        lines.append(f"ours - {name}, kNN@{ks[0]}: {diff:+.1f} points (largest seed std "
                     f"{spread:.1f}): {state}")
    return lines


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """kNN@CURVE_K against pretraining time, one line per trained model (mean over seeds at each
    snapshot, shaded between the seeds' min and max), random init as a dashed band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = f"knn_top1@{CURVE_K}"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"ours": "tab:blue", "peer": "tab:red", "lightly": "tab:green"}
    for name, recs in result["runs"].items():
        curves = [r["curve"] for r in recs if r.get("curve")]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        t = np.mean([[p["train_s"] for p in c[:n]] for c in curves], axis=0) / 60
        acc = np.array([[p[key] for p in c[:n]] for c in curves])
        colour = colours.get(name)
        ax.plot(t, acc.mean(0), marker="o", ms=3, label=f"{name} ({len(curves)} seeds)",
                color=colour)
        if len(curves) > 1:
            ax.fill_between(t, acc.min(0), acc.max(0), alpha=0.2, color=colour)
    rnd = result.get("summary", {}).get("random", {})
    if key in rnd:
        ax.axhline(rnd[key]["mean"], ls="--", color="gray", label="random init")
        ax.axhspan(rnd[key]["min"], rnd[key]["max"], color="gray", alpha=0.15)
    cfg = result["config"]
    ax.set_xlabel(f"pretraining time (min, {result['hardware']['torch_threads']} thread(s), "
                  f"{result['hardware']['cpu']})")
    ax.set_ylabel(f"held-out kNN@{CURVE_K} top-1 (%)")
    ax.set_title(f"budget {cfg['budget']}: {cfg['backbone']}, {cfg['image_size']} px, "
                 f"{cfg['epochs']} epochs, batch {cfg['batch_size']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_report(result: dict[str, Any], models: Sequence[str], plot: Path | None) -> None:
    """Print the table, the verdict lines and the notes; draw the plot if asked."""
    print()
    print(result["table"])
    print()
    for line in result.get("verdict", []):
        print(line)
    for name in models:
        print(f"- {name}: {result['notes'].get(name, '')}")
    if plot is not None:
        plot_curves(result, plot)
        print(f"plot: {plot}")
