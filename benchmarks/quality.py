"""Representation quality: ours vs byol-pytorch 0.9.1 vs lightly vs random init (the code and the
protocol: the ``quality/`` package beside this file; its ``__init__`` describes both).

Usage::

    # CPU budget: a 0.3M-parameter ResNet-10 at 16 px, 3 seeds: ~4 min per model (lightly ~6)
    # with one thread, ~45 min for random + ours + both peers (see budgets.BUDGETS["cpu"])
    python benchmarks/quality.py --budget cpu --threads 1 \
        --models random ours peer lightly --peer-python /path/to/peer/venv/bin/python \
        --output benchmarks/results/quality_cpu.json --plot benchmarks/results/quality_cpu.png
    # the former CPU budget (ResNet-18, 32 px, 10 epochs, ~25-50 min per model on 2 cores)
    python benchmarks/quality.py --budget cpu-long ...
    # GPU budget (>= 200 epochs; needs CUDA)
    python benchmarks/quality.py --budget gpu --peer-python ... --output quality_gpu.json
    # re-print the table and redraw the plot of a finished run
    python benchmarks/quality.py --from-json benchmarks/results/quality_cpu.json --plot out.png

If the data file is absent the script prints ``SKIP`` and exits with status 0.
"""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # imported by path (the tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality.cli import main  # noqa: E402  (the package quality/, not this file)

if __name__ == "__main__":
    main()
