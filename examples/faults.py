"""What pretrain.py does when a long run meets a fault (examples/README.md, "When things go wrong").

* :class:`StepControl`: SIGTERM / SIGUSR1 (preemption) and the ``--save-every-steps`` /
  ``--save-every-minutes`` clocks, decided by every rank together once per step (one tiny CPU
  all-reduce over gloo: no device sync), so that all ranks stop or save at the same step.
* :class:`Checkpoints`: step-numbered checkpoints, the newest ``--keep-last`` kept,
  ``checkpoint.pt`` the newest; ``--resume auto`` takes the newest that loads.
* :class:`Divergence`: a non-finite loss or gradient norm, flagged on the device and read with
  the values already brought to the host for logging and before every save; with
  ``--skip-bad-steps`` checked every step and skipped instead.
* :class:`ScalerSkips`: steps the fp16 GradScaler skipped (counted, not a divergence).
* :class:`CollapseMonitor`: the projection std below its threshold for N log intervals.
* :class:`BadImages`: the unreadable images the data workers replaced, reported once each.
* :class:`Guards`: all of the above for one run, with its checkpoint writing and resuming; the
  training loop calls :meth:`Guards.check` once per step.

tests/fault_harness.py makes each fault happen at a known step by wrapping ``Guards.check``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from common import (DistInfo, fail, gather_rng_states, is_main_process, load_checkpoint, print0,
                    restart_count, restore_rng_state, save_backbone, save_checkpoint)
from torch import Tensor, nn
from tqdm import tqdm

from byol_pytorch import __version__
from byol_pytorch.monitor import CollapseWarning, is_collapsed

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what SLURM and torchrun send before a kill
STOPPED = 3  # exit status of a run stopped by divergence or collapse (2: bad arguments)
LATEST = "checkpoint.pt"
STEP_PREFIX = "checkpoint-step"
# Written by a run stopped on purpose (divergence, collapse): a torchrun restart must not retry it.
STOP_NOTE = "STOPPED"
# What torch.load raises on a truncated, empty or foreign file.
UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError)
_NEVER = 2**62  # "no bad step yet", as a step number


def say(message: str) -> None:
    """To stderr, around any progress bar; PYTHONWARNINGS cannot hide it: faults must be seen."""
    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def warn(message: str) -> None:
    say(f"warning: {message}")


# ----------------------------------------------------------------------------- preemption
@dataclass(frozen=True)
class Decision:
    """What every rank does after this step: stop (the signal's name), save, skip it."""

    stop: str | None
    save: bool
    skip: bool


class StopFlag:
    """Set by SIGTERM / SIGUSR1 (see :func:`stop_signals`): the signal's number, 0 if none."""

    signum = 0


@contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """While inside: SIGTERM and SIGUSR1 only set the flag (a handler must not do the work); the
    training loop stops after the step in progress. The previous handlers come back after."""
    flag = StopFlag()

    def handler(signum: int, frame: Any) -> None:
        flag.signum = signum

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class StepControl:
    """Stop and save decisions that every rank takes at the same step: :meth:`decide`
    all-reduces the flags (MAX), so a signal that reached one rank stops all of them after the
    same step, and the checkpoint then holds every rank's state."""

    def __init__(self, save_every_steps: int, save_every_minutes: float, signals: StopFlag
                 ) -> None:
        self.save_every_steps = save_every_steps
        self.save_every_s = 60.0 * save_every_minutes
        self.signals = signals
        self.last_save = time.monotonic()
        self.stopped_by: str | None = None
        self.distributed = dist.is_initialized() and dist.get_world_size() > 1
        # a CPU group: agreeing must not wait for the device (NCCL would need a sync)
        self.group = (dist.new_group(backend="gloo") if self.distributed
                      and dist.get_backend() != "gloo" else None)

    def decide(self, step: int, bad: bool = False) -> Decision:
        """After the backward pass of ``step`` (1-based): stop, save and skip, agreed by all."""
        timed = self.save_every_s > 0 and time.monotonic() - self.last_save >= self.save_every_s
        flags = [self.signals.signum, int(timed), int(bad)]
        if self.distributed:
            reduced = torch.tensor(flags, dtype=torch.int64)
            dist.all_reduce(reduced, op=dist.ReduceOp.MAX, group=self.group)
            flags = reduced.tolist()
        signum, timed, bad = flags
        stop = signal.Signals(signum).name if signum else None
        every = self.save_every_steps > 0 and step % self.save_every_steps == 0
        self.stopped_by = stop
        return Decision(stop, bool(stop or timed or every), bool(bad))

    def saved(self) -> None:
        self.last_save = time.monotonic()


# ----------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """``OUTPUT_DIR/checkpoint-stepNNNNNNNN.pt``, the newest ``keep_last`` kept (0: all), and
    ``checkpoint.pt``, a hard link to (or, where links fail, a copy of) the newest."""

    def __init__(self, out: Path, keep_last: int) -> None:
        self.out, self.keep_last = out, keep_last
        self.last: tuple[Path, int] | None = None  # the newest good checkpoint: (path, step)

    def path(self, step: int) -> Path:
        return self.out / f"{STEP_PREFIX}{step:08d}.pt"

    def by_step(self) -> dict[int, Path]:
        found = {}
        for path in self.out.glob(f"{STEP_PREFIX}*.pt"):
            digits = path.stem[len(STEP_PREFIX):]
            if digits.isdigit():
                found[int(digits)] = path
        return found

    def write(self, state: dict, step: int) -> None:
        """Rank 0: write ``step``'s checkpoint (atomically), point checkpoint.pt at it, and
        delete all but the newest ``keep_last`` (and any of a later step: those belong to a
        continuation that this run, resumed from an earlier step, replaces)."""
        path = self.path(step)
        save_checkpoint(state, path)
        tmp = self.out / (LATEST + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(path, tmp)
        os.replace(tmp, self.out / LATEST)
        steps = sorted((s for s in self.by_step() if s <= step), reverse=True)
        keep = set(steps[:self.keep_last] if self.keep_last else steps)
        for old, old_path in self.by_step().items():
            if old not in keep:
                old_path.unlink(missing_ok=True)

    def newest_loadable(self) -> tuple[Path, dict] | None:
        """The newest checkpoint that loads, skipping (with a warning) any that does not;
        None if there is none. Fails if there are checkpoints but none of them loads."""
        candidates = [p for _, p in sorted(self.by_step().items(), reverse=True)]
        if not candidates and (self.out / LATEST).is_file():  # written by an older version
            candidates = [self.out / LATEST]
        for path in candidates:
            try:
                ckpt = load_checkpoint(path)
                if not isinstance(ckpt, dict) or "step" not in ckpt:
                    raise ValueError("not a pretrain.py checkpoint")
                return path, ckpt
            except UNREADABLE as err:
                if is_main_process():
                    warn(f"skipping {path}: it does not load ({type(err).__name__}: "
                         f"{str(err)[:200]}), e.g. truncated by a crash; trying an older one")
        if candidates:
            raise fail(f"none of the {len(candidates)} checkpoints in {self.out} loads; pass "
                       "--resume PATH, or move them away to start again")
        return None


def checkpoint_to_resume(resume: str | None, checkpoints: Checkpoints) -> tuple[Path, dict] | None:
    """The checkpoint to continue from: ``--resume PATH``, or with ``--resume auto`` the newest
    one in the output directory that loads. After a torchrun restart (a lost worker) the newest
    one is taken whatever ``--resume`` says, so the group goes on without a manual step."""
    restarted = restart_count() > 0
    note = checkpoints.out / STOP_NOTE
    if restarted and note.is_file():
        if is_main_process():
            say(f"error: the previous attempt stopped on purpose ({note.read_text().strip()}); a "
                "torchrun restart does not retry it. Fix the cause, then run the same command "
                "with --resume auto")
        raise SystemExit(STOPPED)
    if not restarted and is_main_process():
        note.unlink(missing_ok=True)  # a run started by hand is a new attempt
    if restarted:
        print0(f"torchrun restart {restart_count()}: resuming from the newest checkpoint in "
               f"{checkpoints.out}")
    if restarted or resume == "auto":
        found = checkpoints.newest_loadable()
        if found is not None or resume in (None, "auto"):
            if found is None:
                print0(f"no checkpoint in {checkpoints.out} yet, starting from scratch")
            return found
    if resume is None:
        return None
    try:
        return Path(resume), load_checkpoint(resume)
    except UNREADABLE as err:
        raise fail(f"--resume {resume} does not load ({type(err).__name__}: {str(err)[:200]})"
                   ) from None


# ----------------------------------------------------------------------------- stopping
def stop_run(reason: str, checkpoints: Checkpoints, advice: str, good: bool = True
             ) -> SystemExit:
    """The error of a run stopped by divergence or collapse: the reason, the last (``good``)
    checkpoint, left as it was since nothing is saved, and how to go on. Raise it on every rank."""
    if checkpoints.last is None:
        last = "No checkpoint was written before it"
    else:
        last = (f"The {'last good' if good else 'newest'} checkpoint is {checkpoints.last[0]} "
                f"(step {checkpoints.last[1]})" + ("; continue from it with --resume auto"
                                                   if good else ""))
    if is_main_process():
        say(f"error: {reason}; stopped without saving. {last}. {advice}")
        (checkpoints.out / STOP_NOTE).write_text(reason + "\n")
    return SystemExit(STOPPED)


class Divergence:
    """Non-finite loss or gradient norm.

    By default each step only updates a flag on the device (the first bad step), read on the
    host with the values already brought there for logging and before every save: no extra
    sync. With ``skip_limit`` > 0 (``--skip-bad-steps``) every step is checked on the host (one
    sync per step) so that a bad step can be skipped before the optimizer applies it.
    """

    def __init__(self, device: torch.device, skip_limit: int, checkpoints: Checkpoints,
                 lr_at: Callable[[int], float]) -> None:
        self.first = torch.full((), _NEVER, dtype=torch.long, device=device)
        self.skip_limit, self.checkpoints, self.lr_at = skip_limit, checkpoints, lr_at
        self.skipped: list[int] = []

    def snapshot(self, learner: nn.Module) -> list[Tensor] | None:
        """Copies of the buffers (BatchNorm statistics) a skipped step must not change."""
        return [b.clone() for b in learner.buffers()] if self.skip_limit else None

    def track(self, step: int, values: list[Tensor]) -> bool:
        """Record whether ``values`` are finite; returns True for a bad step to skip."""
        finite = torch.isfinite(torch.stack([v.float() for v in values])).all()
        if self.skip_limit:
            return not bool(finite)
        self.first = torch.minimum(self.first, torch.where(finite, _NEVER, step))
        return False

    @property
    def flag(self) -> Tensor:
        """1.0 if a step was bad, else 0.0 (a device scalar to reduce with the log values)."""
        return (self.first < _NEVER).float()

    def check(self, flag: float, step: int) -> None:
        """Stop if ``flag`` (:attr:`flag`, averaged over ranks) says a step was bad."""
        if flag > 0:
            first = self.first.clone()
            if dist.is_initialized():
                dist.all_reduce(first, op=dist.ReduceOp.MIN)
            raise self._error(int(first), step)

    def ensure_finite(self, learner: nn.Module, step: int) -> None:
        """Before a save (a collective): stop instead of writing non-finite weights."""
        weights_bad = torch.stack([(~torch.isfinite(t)).any() for t in
                                   learner.state_dict().values() if t.is_floating_point()]).any()
        flags = torch.stack([self.flag, weights_bad.float()])
        if dist.is_initialized():
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        flagged, weights = flags.tolist()
        self.check(flagged, step)  # names the first bad step
        if weights > 0:
            raise self._error(step, step, "the weights became non-finite")

    def skip(self, step: int, learner: nn.Module, buffers: list[Tensor]) -> None:
        """Undo a bad step's buffer updates (its optimizer step and EMA update are not made);
        stop once more than ``skip_limit`` steps were bad."""
        self.skipped.append(step)
        if len(self.skipped) > self.skip_limit:
            raise self._error(step, step, note=f", more than --skip-bad-steps {self.skip_limit} "
                              f"(skipped: step {', '.join(map(str, self.skipped[:-1]))})")
        with torch.no_grad():
            for saved, buffer in zip(buffers, learner.buffers()):
                buffer.copy_(saved)
        if is_main_process():
            warn(f"non-finite loss or gradient norm at step {step} (lr {self.lr_at(step):.4g}): "
                 f"skipped, the weights, optimizer state and EMA target are unchanged "
                 f"({len(self.skipped)} of at most {self.skip_limit}, --skip-bad-steps)")

    def _error(self, first: int, step: int, what: str = "the loss or gradient norm became "
               "non-finite", note: str = "") -> SystemExit:
        noticed = f", noticed at step {step}" if step != first else ""
        return stop_run(f"{what} at step {first} (lr {self.lr_at(first):.4g}){noticed}{note}",
                        self.checkpoints, "Lower --base-lr or set --clip-grad before continuing,"
                        " or pass --skip-bad-steps K to skip up to K such steps.")


class ScalerSkips:
    """Optimizer steps the fp16 GradScaler skipped (gradients overflowed: it halves its scale
    and goes on; not a divergence). Counted with an optimizer step hook: no device sync."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.steps = self.epoch = self.total = 0
        optimizer.register_step_post_hook(self._count)

    def _count(self, *_: Any) -> None:
        self.steps += 1

    def step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
        """``scaler.step`` + ``update``; returns whether the optimizer stepped."""
        before = self.steps
        scaler.step(optimizer)
        scaler.update()
        if self.steps == before:
            self.epoch += 1
            self.total += 1
        return self.steps > before

    def pop_epoch(self) -> int:
        skipped, self.epoch = self.epoch, 0
        return skipped


# ----------------------------------------------------------------------------- collapse
class CollapseMonitor:
    """The projection std below ``ratio / sqrt(dim)`` for ``patience`` log intervals in a row:
    a loud warning (once per such stretch), and with ``stop`` the run stops as on divergence."""

    def __init__(self, dim: int, ratio: float, patience: int, stop: bool,
                 checkpoints: Checkpoints) -> None:
        self.dim, self.ratio, self.patience, self.stop = dim, ratio, patience, stop
        self.checkpoints = checkpoints
        self.count = self.since = 0

    def update(self, std: float, step: int, lr: float) -> None:
        """One log interval's std (the same on every rank, so all ranks stop together)."""
        if not is_collapsed(std, self.dim, self.ratio, warn=False):
            self.count = 0
            return
        self.count += 1
        self.since = step if self.count == 1 else self.since
        if self.count != self.patience:
            return
        reason = (f"representation collapse: projection std {std:.4g} < "
                  f"{self.ratio / self.dim ** 0.5:.4g} (--collapse-ratio {self.ratio} / "
                  f"sqrt({self.dim})) for {self.patience} log intervals in a row (steps "
                  f"{self.since}-{step}, lr {lr:.4g})")
        if self.stop:
            raise stop_run(reason, self.checkpoints, "Checkpoints written since step "
                           f"{self.since} may hold the collapse: resume from an earlier one if "
                           "--keep-last kept it, with a lower --base-lr.", good=False)
        if is_main_process():
            bar = "!" * 78
            say(f"{bar}\nWARNING: {reason}.\nLower the learning rate, check the augmentations "
                f"and the EMA; --stop-on-collapse stops such a run.\n{bar}")
            warnings.warn(reason, CollapseWarning, stacklevel=2)


# ----------------------------------------------------------------------------- bad data
class BadImages:
    """Reports the unreadable images that the data set replaced (``data.SubstitutingViews``):
    one warning per file, and a count per epoch."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.epoch: set[str] = set()

    def report(self, messages: Iterable[str]) -> None:
        for message in (line for m in messages for line in m.splitlines()):
            self.epoch.add(message)
            if message not in self.seen:
                self.seen.add(message)
                warn(f"{message}: replaced by the next readable image of the data set (the same "
                     "in every epoch and on resume); fix or delete the file")

    def pop_epoch(self) -> int:
        count, self.epoch = len(self.epoch), set()
        return count


def add_fault_args(parser: argparse.ArgumentParser) -> None:
    """pretrain.py's flags for checkpoints and faults."""
    g = parser.add_argument_group("checkpoints and faults (examples/README.md: When things go "
                                  "wrong)")
    g.add_argument("--save-every-steps", type=int, default=0, help="also checkpoint every N "
                   "optimizer steps, mid-epoch included; 0 = off")
    g.add_argument("--save-every-minutes", type=float, default=0.0, help="also checkpoint when "
                   "this many minutes have passed since the last one; 0 = off")
    g.add_argument("--keep-last", type=int, default=2, help="step-numbered checkpoints kept "
                   "(checkpoint-stepNNNNNNNN.pt; checkpoint.pt is the newest); 0 = all")
    g.add_argument("--resume", default=None, help="checkpoint to continue from, or 'auto' for "
                   "the newest one in OUTPUT_DIR that loads (after a torchrun restart: always)")
    g.add_argument("--skip-bad-steps", type=int, default=0, help="skip up to K steps with a "
                   "non-finite loss or gradient norm (weights, optimizer and EMA unchanged) "
                   "instead of stopping; costs one device sync per step; 0 = stop at the first")
    g.add_argument("--collapse-ratio", type=float, default=0.1, help="collapse threshold of the "
                   "projection std, as a fraction of the healthy 1/sqrt(--proj-dim)")
    g.add_argument("--collapse-patience", type=int, default=5, help="log intervals in a row "
                   "below the threshold before the collapse warning")
    g.add_argument("--stop-on-collapse", action="store_true", help="stop (without saving, "
                   "non-zero exit) instead of only warning on a collapse")


@dataclass
class Guards:
    """Everything above for one run, and the references its checkpoints are written from."""

    control: StepControl
    checkpoints: Checkpoints
    divergence: Divergence
    scaler_skips: ScalerSkips
    collapse: CollapseMonitor
    bad_images: BadImages
    run: DistInfo
    parts: dict[str, Any]  # learner, optimizer, scaler, sched, args (json), clip_grad

    @staticmethod
    def check_args(args: argparse.Namespace) -> None:
        """The fault flags' own checks (SystemExit with the flag's name)."""
        if min(args.save_every_steps, args.save_every_minutes, args.keep_last,
               args.skip_bad_steps) < 0:
            raise fail("--save-every-steps, --save-every-minutes, --keep-last and "
                       "--skip-bad-steps must be >= 0")
        if not (args.collapse_ratio > 0 and args.collapse_patience >= 1):
            raise fail("--collapse-ratio must be > 0 and --collapse-patience >= 1")

    @classmethod
    def create(cls, args: argparse.Namespace, out: Path, signals: StopFlag, run: DistInfo,
               learner: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, sched: Any, json_args: dict) -> Guards:
        """From pretrain.py's arguments; a collective (the agreement's CPU group)."""
        checkpoints = Checkpoints(out, args.keep_last)
        return cls(StepControl(args.save_every_steps, args.save_every_minutes, signals),
                   checkpoints, Divergence(run.device, args.skip_bad_steps, checkpoints,
                                           lambda step: sched.lr(step - 1)),
                   ScalerSkips(optimizer),
                   CollapseMonitor(args.proj_dim, args.collapse_ratio, args.collapse_patience,
                                   args.stop_on_collapse, checkpoints), BadImages(), run,
                   dict(learner=learner, optimizer=optimizer, scaler=scaler,
                        sched=sched, args=json_args, clip_grad=args.clip_grad))

    def snapshot(self, learner: nn.Module) -> list[Tensor] | None:
        """Before the step's forward: what a skipped step must restore (--skip-bad-steps)."""
        return self.divergence.snapshot(learner)

    def check(self, step: int, step_loss: Tensor, learner: nn.Module,
              scaler: torch.amp.GradScaler, buffers: list[Tensor] | None) -> Decision:
        """After the backward pass of ``step``: flag a non-finite loss (or gradient norm, with
        --clip-grad or --skip-bad-steps; with fp16 those are the GradScaler's), then agree with the
        other ranks on stopping, saving and skipping. A skipped step's BatchNorm updates are undone;
        the caller applies a step that is not skipped."""
        checked = [step_loss]
        if not scaler.is_enabled() and (self.parts["clip_grad"] or self.divergence.skip_limit):
            checked.append(nn.utils.get_total_norm(
                [p.grad for p in learner.parameters() if p.grad is not None]))
        decision = self.control.decide(step, self.divergence.track(step, checked))
        if decision.skip:
            self.divergence.skip(step, learner, buffers)
        return decision

    def scaler_step(self, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> bool:
        """``scaler.step`` + ``update``; whether the optimizer stepped (fp16 may skip a step)."""
        return self.scaler_skips.step(scaler, optimizer)

    def logged(self, bad: float, std: float, step: int, lr: float) -> None:
        """At a log step, with the values brought to the host (the same on every rank):
        divergence stops the run (the last checkpoint untouched); collapse warns or stops."""
        self.divergence.check(bad, step)
        self.collapse.update(std, step, lr)

    def save(self) -> None:
        """Checkpoint this step (once) + bare backbone, never with non-finite weights; a
        collective (every rank's RNG state is gathered), rank 0 writes."""
        p, sched = self.parts, self.parts["sched"]
        if self.checkpoints.last is None or self.checkpoints.last[1] != sched.step:
            self.divergence.ensure_finite(p["learner"], sched.step)
            rng = gather_rng_states()
            if self.run.is_main:
                learner = p["learner"]  # unwrapped: keys without module. / _orig_mod.
                state = dict(model=learner.state_dict(), optimizer=p["optimizer"].state_dict(),
                             scaler=p["scaler"].state_dict(), step=sched.step,
                             epoch=sched.step // sched.steps_per_epoch,
                             steps_per_epoch=sched.steps_per_epoch,
                             world_size=self.run.world_size, rng=rng, args=p["args"],
                             version=__version__)
                self.checkpoints.write(state, sched.step)
                save_backbone(learner.net, self.checkpoints.out)
            self.checkpoints.last = (self.checkpoints.path(sched.step), sched.step)
        self.control.saved()

    def resume(self, path: Path, ckpt: dict, compared: tuple[str, ...]) -> list | None:
        """Load checkpoint ``ckpt`` (read from ``path``) in place; the per-rank RNG states to
        restore before training (None if the data order cannot continue exactly)."""
        p, sched = self.parts, self.parts["sched"]
        old, now = ckpt.get("args", {}), p["args"]
        changed = [f"--{k.replace('_', '-')} {old[k]} -> {now[k]}" for k in compared
                   if k in old and old[k] != now[k]]
        if changed:
            warn(f"resuming {path} with different arguments ({'; '.join(changed)}): the run will "
                 "not continue exactly as the original one")
        try:
            p["learner"].load_state_dict(ckpt["model"])
        except RuntimeError as err:
            raise fail(f"{path} does not fit this model (pass the pretraining flags again: "
                       f"{', '.join(changed) or 'see its args'}): {str(err)[:500]}") from None
        p["optimizer"].load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"] and p["scaler"].is_enabled():
            p["scaler"].load_state_dict(ckpt["scaler"])
        sched.step = int(ckpt["step"])
        self.checkpoints.last = (path, sched.step)
        if ckpt["steps_per_epoch"] != sched.steps_per_epoch or \
                ckpt["world_size"] != self.run.world_size:
            warn("the batch size, data set or number of processes changed since the checkpoint: "
                 "training continues, but not on the same data order/RNG stream")
            return None
        print0(f"resumed from {path} at step {sched.step} (epoch "
               f"{sched.step // sched.steps_per_epoch})")
        return ckpt["rng"]

    def restore_rng(self, states: list | None) -> None:
        if states is not None:
            restore_rng_state(states[self.run.rank])

    def end_epoch(self, epoch: int, device: torch.device) -> None:
        """Report the epoch's replaced images (all ranks) and fp16 skipped steps (a collective)."""
        bad = torch.tensor(float(self.bad_images.pop_epoch()), device=device)
        if dist.is_initialized():
            dist.all_reduce(bad)
        if bad > 0:
            print0(f"epoch {epoch}: {int(bad)} unreadable image(s) were replaced by the next "
                   "readable one (see the warnings)")
        skipped = self.scaler_skips.pop_epoch()  # the same on every rank (all-reduced gradients)
        if skipped:
            print0(f"epoch {epoch}: the fp16 GradScaler skipped {skipped} step(s) (gradient "
                   "overflow: it lowered the loss scale; not a divergence)")

    def skipped(self) -> str:
        """"; N step(s) skipped by ..." for the run's summary line ("" if none were)."""
        counts = ((len(self.divergence.skipped), "--skip-bad-steps"),
                  (self.scaler_skips.total, "the fp16 GradScaler"))
        return "".join(f"; {n} step(s) skipped by {what}" for n, what in counts if n)
