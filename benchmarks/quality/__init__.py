"""Representation quality: BYOL (ours) vs byol-pytorch 0.9.1 vs a lightly reference vs random init.

Pretrains a CIFAR-stem ResNet on the mini CIFAR-10 set (5,085 train images) minus a fixed, seeded
held-out split of 1,000 images (``examples/data.py``'s ``split_indices``, as ``pretrain.py`` holds
out its validation images), then reports on the held-out split:

* weighted kNN top-1 (k = 20 and 200, temperature 0.07, cosine similarity; the bank is the
  4,085 un-augmented training images), and
* linear-probe top-1 (``nn.Linear`` on frozen, standardised features of the training images),

as the mean and standard deviation over ``--seeds`` (each seed: initial weights, data order and
augmentations; the split stays fixed, so every model is scored on the same 1,000 images and the
per-seed differences between models are paired). A kNN@20 curve against training time is taken
from backbone snapshots during pretraining (``--plot`` draws it).

Every model gets the same backbone, initial weights (same seed), data order, epochs, batch size,
optimizer, LR schedule (linear warm-up + cosine) and precision. What differs is the library: its
augmentations, heads, loss and EMA schedule, with each library's defaults except where a variant
or the budget says otherwise (``budgets.VARIANTS`` and ``budgets.BUDGETS``). Models: ``random``
(the initial weights, untrained), ``ours`` (``byol_pytorch.BYOL``), ``peer`` (byol-pytorch 0.9.1
in its own interpreter, ``--peer-python``) and ``lightly`` (BYOL from lightly's building blocks).

One module per job:

* ``budgets.py``: the budgets, the model variants, a run's settings and its LR schedule;
* ``train.py``: the backbones and the training loop every library shares (plain torch: the
  peer's interpreter runs it too);
* ``peers.py``: the other libraries: 0.9.1 in its own interpreter, the lightly reference;
* ``evaluate.py``: kNN and linear probe on the held-out split, the kNN curve of the snapshots;
* ``report.py``: statistics over seeds, the table, the verdict lines and the plot;
* ``cli.py``: the command line and the run (``python benchmarks/quality.py``).
"""
