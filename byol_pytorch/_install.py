"""Install checks: the torch version the code needs, and the other distribution that installs the
``byol_pytorch`` package."""

from __future__ import annotations

import warnings
from importlib import metadata

DISTRIBUTION = "byol-torch"  # ours; the import name stays byol_pytorch
OTHER = "byol-pytorch"  # byol-pytorch 0.9.1 and earlier: same import name, other files
# torch.compiler.is_compiling and the device-generic torch.amp.GradScaler appeared in torch 2.3;
# setup.cfg states the same bound.
MIN_TORCH = (2, 3)


def check_torch(version: str) -> None:
    """Fail at import, with the fix, on a torch older than ``MIN_TORCH`` (e.g. ``"2.2.1+cpu"``)."""
    try:
        found = tuple(int(part) for part in version.split("+")[0].split(".")[:2])
    except ValueError:
        return  # a source build with an unusual version string: let it run
    if found < MIN_TORCH:
        need = ".".join(map(str, MIN_TORCH))
        raise ImportError(f"byol_pytorch needs torch>={need}, found torch {version}; upgrade it: "
                          f"pip install 'torch>={need}' 'torchvision>=0.18'")


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
