"""Detect the other distribution that installs the ``byol_pytorch`` package."""

from __future__ import annotations

import warnings
from importlib import metadata

DISTRIBUTION = "byol-torch"  # ours; the import name stays byol_pytorch
OTHER = "byol-pytorch"  # byol-pytorch 0.9.1 and earlier: same import name, other files


def warn_if_shadowed() -> None:
    """Warn when ``byol-pytorch`` is installed too: both write ``byol_pytorch/``; either may win."""
    try:
        other = metadata.version(OTHER)
    except metadata.PackageNotFoundError:
        return
    warnings.warn(f"both {DISTRIBUTION} and {OTHER} {other} are installed and both provide the "
                  f"module byol_pytorch, so the files of one may shadow the other's; keep one: "
                  f"pip uninstall -y {OTHER} {DISTRIBUTION} && pip install {DISTRIBUTION}",
                  stacklevel=3)
