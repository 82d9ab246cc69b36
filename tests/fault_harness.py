"""Runs examples/pretrain.py with faults at known steps (run it in place of the script, also
under torchrun): ``BYOL_TEST_FAULTS="kind@step[:rank],..."``.

``nan``: that step's loss and gradients are NaN; ``overflow``: only its gradients are infinite
(an fp16 overflow); ``sigterm``, ``sigusr1``: that signal to this process; ``sigterm-parent``:
SIGTERM to its launcher (torchrun passes it on); ``exit``: the process dies, before any torchrun
restart only. Steps are 1-based, as logged; no rank means every rank. The faults happen in the
step's ``Guards.check`` (after its backward, before the ranks agree on it), as real ones would.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import faults  # noqa: E402
import pretrain  # noqa: E402

KINDS = ("nan", "overflow", "sigterm", "sigusr1", "sigterm-parent", "exit")


def main() -> None:
    plan: dict[int, set[str]] = {}  # step -> the faults of this rank at it
    for item in filter(None, os.environ.get("BYOL_TEST_FAULTS", "").split(",")):
        kind, _, where = item.partition("@")
        step, _, only = where.partition(":")
        assert kind in KINDS and step.isdigit(), f"bad fault {item!r}"
        if not only or only == os.environ.get("RANK", "0"):
            plan.setdefault(int(step), set()).add(kind)
    check = faults.Guards.check

    def check_with_faults(self, step, step_loss, learner, *args):
        kinds = plan.get(step, set())
        if "nan" in kinds:
            step_loss.mul_(float("nan"))  # in place: the loss the loop logs is NaN too
        for g in (p.grad for p in learner.parameters() if kinds & {"nan", "overflow"}
                  and p.grad is not None):
            g.mul_(float("nan") if "nan" in kinds else float("inf"))
        for kind in kinds & {"sigterm", "sigusr1"}:
            os.kill(os.getpid(), signal.SIGTERM if kind == "sigterm" else signal.SIGUSR1)
        if "sigterm-parent" in kinds:
            os.kill(os.getppid(), signal.SIGTERM)
        if "exit" in kinds and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":
            os._exit(1)
        return check(self, step, step_loss, learner, *args)

    faults.Guards.check = check_with_faults
    pretrain.main(pretrain.get_args_parser().parse_args())


if __name__ == "__main__":
    main()
