"""Long pretraining runs survive faults (examples/README.md, "When things go wrong").

tests/fault_harness.py runs pretrain.py with a fault at a known step: a real signal, a NaN loss,
overflowing gradients, a rank that dies. Where the fault is recoverable the finished run must
equal an uninterrupted one bit for bit; where it is not, the last good checkpoint must be left
intact. Tiny data, CPU, gloo; every test here is slow (end to end).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY, assert_same_model, pretrain_error, read_log, run_script

STEPS = 8  # 43 images / batch 8 = 5 steps per epoch: the runs cross an epoch boundary
HARNESS = REPO_ROOT / "tests" / "fault_harness.py"


def ckpt(out: Path, step: int | None = None) -> Path:
    """checkpoint.pt (the newest) or the checkpoint of ``step``."""
    return out / ("checkpoint.pt" if step is None else f"checkpoint-step{step:08d}.pt")


def kept(out: Path) -> list[int]:
    return sorted(int(p.stem[len("checkpoint-step"):]) for p in out.glob("checkpoint-step*.pt"))


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def faulty(out: Path, args: list, spec: str, nproc: int = 1, check: bool = True, **kw):
    """pretrain.py with the faults ``spec`` ("kind@step[:rank],...")."""
    return run_script(HARNESS, *args, "--output-dir", out, nproc=nproc, check=check,
                      env={"BYOL_TEST_FAULTS": spec}, **kw)


@pytest.fixture(scope="module")
def common(npz_file) -> list[str]:
    """The npz run: checkpoints every 2 steps, all kept (0), 8 steps."""
    return ["--dataset", "npz", "--data-path", npz_file, "--backbone", "timm:test_resnet", *TINY,
            "--epochs", "2", "--workers", "0", "--max-steps", str(STEPS), "--save-every-steps",
            "2", "--keep-last", "0"]


@pytest.fixture(scope="module")
def straight(common, tmp_path_factory) -> Path:
    """The uninterrupted single-process run the recovered ones must equal."""
    out = tmp_path_factory.mktemp("straight")
    run_script("pretrain.py", *common, "--output-dir", out)
    assert kept(out) == [2, 4, 6, 8]
    return out


@pytest.fixture(scope="module")
def ddp_straight(common, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_straight")
    run_script("pretrain.py", *common, "--output-dir", out, nproc=2)
    return out


pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- preemption
@pytest.mark.parametrize("signal", ["SIGTERM", "SIGUSR1"])
def test_signal_mid_epoch_checkpoints_and_resume_equals_uninterrupted(signal, common, straight,
                                                                      tmp_path):
    proc = faulty(tmp_path, common, f"{signal.lower()}@3")
    assert (f"{signal} received: stopped after step 3 and saved {ckpt(tmp_path, 3)}; to continue,"
            " run the same command with --resume auto") in proc.stdout
    assert kept(tmp_path) == [2, 3] and load(ckpt(tmp_path))["step"] == 3  # mid-epoch
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto")
    assert f"resumed from {ckpt(tmp_path, 3)} at step 3" in proc.stdout
    assert_same_model(ckpt(straight), ckpt(tmp_path))
    assert read_log(tmp_path / "log.jsonl", "step") == read_log(straight / "log.jsonl", "step")


def test_resume_auto_skips_a_truncated_checkpoint_keep_last_and_the_clock(common, straight,
                                                                         tmp_path):
    run_script("pretrain.py", *common, "--output-dir", tmp_path, "--max-steps", "6",
               "--keep-last", "2")
    assert kept(tmp_path) == [4, 6]
    newest = ckpt(tmp_path, 6)
    with open(newest, "r+b") as f:  # a crash while writing; checkpoint.pt is the same file
        f.truncate(newest.stat().st_size // 2)
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto")
    assert f"warning: skipping {newest}: it does not load" in proc.stderr
    assert f"resumed from {ckpt(tmp_path, 4)} at step 4" in proc.stdout
    assert_same_model(ckpt(straight), ckpt(tmp_path))
    clock = tmp_path / "clock"  # a period shorter than any step: a checkpoint after every step
    run_script("pretrain.py", *common, "--output-dir", clock, "--max-steps", "3",
               "--save-every-steps", "0", "--save-every-minutes", "1e-9")
    assert kept(clock) == [1, 2, 3]


# ----------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("fault, flags, noticed", [
    ("nan@3", ["--log-every", "100"], ", noticed at step 4"),  # at the save of step 4
    ("nan@3", ["--log-every", "1"], ""),  # at the log record of step 3
    ("overflow@3", ["--log-every", "100", "--clip-grad", "1e9"], ", noticed at step 4"),  # grads
])
def test_nonfinite_step_stops_and_leaves_the_last_good_checkpoint(fault, flags, noticed, common,
                                                                  straight, tmp_path):
    proc = faulty(tmp_path, [*common, *flags], fault, check=False)
    lr = read_log(straight / "log.jsonl", "step")[2]["lr"]
    assert proc.returncode == 3
    assert (f"error: the loss or gradient norm became non-finite at step 3 (lr {lr:.4g}){noticed};"
            f" stopped without saving. The last good checkpoint is {ckpt(tmp_path, 2)} (step 2); "
            "continue from it with --resume auto. Lower --base-lr or set --clip-grad before "
            "continuing") in proc.stderr
    assert kept(tmp_path) == [2]
    assert_same_model(ckpt(straight, 2), ckpt(tmp_path))  # intact (a clip at 1e9 is a no-op)


def test_a_stopped_run_is_not_retried_by_a_torchrun_restart(common, tmp_path):
    """After a divergence stop a restarted attempt (TORCHELASTIC_RESTART_COUNT > 0) exits at once
    instead of diverging again; a run started by hand with --resume auto goes on."""
    assert faulty(tmp_path, [*common, "--log-every", "1"], "nan@3", check=False).returncode == 3
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path,
                      env={"TORCHELASTIC_RESTART_COUNT": "1"}, check=False)
    assert proc.returncode == 3 and kept(tmp_path) == [2] and "does not retry it" in proc.stderr
    assert ("error: the previous attempt stopped on purpose (the loss or gradient norm became "
            "non-finite at step 3") in proc.stderr
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto")
    assert f"resumed from {ckpt(tmp_path, 2)} at step 2" in proc.stdout and kept(tmp_path) == [
        2, 4, 6, 8]


def test_skip_bad_steps_leaves_the_state_unchanged_then_stops_past_the_limit(common, tmp_path):
    """Step 3's loss and step 5's gradients are non-finite (--skip-bad-steps checks both)."""
    proc = faulty(tmp_path, [*common, "--save-every-steps", "1", "--skip-bad-steps", "1"],
                  "nan@3,overflow@5", check=False)
    assert proc.returncode == 3 and "non-finite loss or gradient norm at step 3" in proc.stderr
    assert "skipped, the weights, optimizer state and EMA target are unchanged" in proc.stderr
    assert ("non-finite at step 5" in proc.stderr and "more than --skip-bad-steps 1 (skipped: "
            f"step 3)" in proc.stderr and f"last good checkpoint is {ckpt(tmp_path, 4)}"
            in proc.stderr)
    assert kept(tmp_path) == [1, 2, 3, 4]
    assert_same_model(ckpt(tmp_path, 2), ckpt(tmp_path, 3))  # step 3 changed nothing ...
    before, after = load(ckpt(tmp_path, 2)), load(ckpt(tmp_path, 3))
    for i, state in before["optimizer"]["state"].items():
        assert all(torch.equal(v, after["optimizer"]["state"][i][k]) for k, v in state.items())
    trained = load(ckpt(tmp_path, 4))["model"]  # ... and step 4 trained on
    assert not all(torch.equal(v, trained[k]) for k, v in after["model"].items())


def test_fp16_gradscaler_skips_are_counted_not_divergence(common, tmp_path):
    """Step 2's gradients overflow: the run goes on, the skipped step leaves the weights as they
    were, and the count reported is the number of times the scaler halved its scale."""
    proc = faulty(tmp_path, [*common, "--amp", "fp16", "--max-steps", "3", "--save-every-steps",
                             "1"], "overflow@2")
    halvings = round(math.log2(65536 / load(ckpt(tmp_path))["scaler"]["scale"]))
    assert halvings >= 1 and (f"the fp16 GradScaler skipped {halvings} step(s) (gradient "
                              "overflow: it lowered the loss scale; not a divergence)") in proc.stdout
    assert f"{halvings} step(s) skipped by the fp16 GradScaler" in proc.stdout
    one, two = load(ckpt(tmp_path, 1))["model"], load(ckpt(tmp_path, 2))["model"]
    assert all(torch.equal(one[k], two[k]) for k in one if "running_" not in k
               and "num_batches" not in k)  # incl. the target and ema_step


# ----------------------------------------------------------------------------- collapse
def test_collapse_warns_once_or_stops(common, tmp_path):
    """A threshold above any healthy std (--collapse-ratio 100) makes every interval "low"."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path / "warn", "--max-steps",
                      "4", "--collapse-ratio", "100", "--collapse-patience", "2")
    assert proc.stderr.count("WARNING: representation collapse") == 1
    assert "for 2 log intervals in a row (steps 1-2" in proc.stderr
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--collapse-ratio", "100",
                      "--collapse-patience", "3", "--stop-on-collapse", check=False)
    assert proc.returncode == 3 and "(steps 1-3, lr " in proc.stderr
    assert f"The newest checkpoint is {ckpt(tmp_path, 2)} (step 2)" in proc.stderr
    assert kept(tmp_path) == [2]


# ----------------------------------------------------------------------------- bad data
@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    """root/{train,val}/class_{0,1,2}: 7 good images and one bad file per class in train/ (24
    files: 3 steps of 8, so every file is read in every epoch), 2 good ones in val/."""
    import io

    from PIL import Image

    root = tmp_path_factory.mktemp("bad_folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 7), ("val", 2)):
        for label in range(3):
            (root / split / f"class_{label}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(
                    root / split / f"class_{label}" / f"{i}.png")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png, "PNG")
    (root / "train/class_0/empty.png").write_bytes(b"")
    (root / "train/class_1/truncated.png").write_bytes(png.getvalue()[:2000])
    (root / "train/class_2/notanimage.jpg").write_bytes(b"<html>not found</html>")
    return root


def test_unreadable_images_are_replaced_once_each_and_resume_stays_exact(bad_folder, tmp_path):
    args = ["--dataset", "folder", "--data-path", bad_folder, "--backbone", "timm:test_resnet",
            *TINY, "--epochs", "2", "--workers", "1"]
    proc = run_script("pretrain.py", *args, "--knn-every", "2", "--output-dir", tmp_path / "a")
    for name, why in {"class_0/empty.png": "empty file", "class_2/notanimage.jpg": "not an image "
                      "PIL can read", "class_1/truncated.png": "OSError: image file is "
                      "truncated"}.items():
        warning = f"warning: unreadable image {bad_folder / 'train' / name} ({why}"
        assert len([line for line in proc.stderr.splitlines() if warning in line and "replaced by "
                    "the next readable image of the data set" in line]) == 1, name  # read twice
    assert all(f"epoch {e}: 3 unreadable image(s) were replaced" in proc.stdout for e in (0, 1))
    assert read_log(tmp_path / "a/log.jsonl", "epoch")[1]["knn_top1"] is not None
    faulty(tmp_path / "b", args, "sigterm@4")  # one step into the second epoch
    run_script("pretrain.py", *args, "--output-dir", tmp_path / "b", "--resume", "auto")
    assert_same_model(ckpt(tmp_path / "a"), ckpt(tmp_path / "b"))


@pytest.mark.parametrize("case, message", [("empty", "error: no images in"),
                                           ("all_bad", "images can be read (e.g. unreadable")])
def test_data_that_yields_nothing_fails_at_start(case, message, tmp_path, capsys):
    root = tmp_path / "data" / "class_0"
    root.mkdir(parents=True)
    for i in range(3 if case == "all_bad" else 0):
        (root / f"{i}.png").write_bytes(b"")
    err = pretrain_error(["--dataset", "folder", "--data-path", str(root.parent), "--backbone",
                          "timm:test_resnet", *TINY, "--output-dir", str(tmp_path / "out")], capsys)
    assert message in err and err.startswith("error: ")


# ----------------------------------------------------------------------------- several processes
def test_signal_to_one_rank_stops_all_at_one_step_and_resume_is_exact(common, ddp_straight,
                                                                      tmp_path):
    """Only rank 1 gets SIGTERM: both ranks stop after step 3, rank 0 writes the checkpoint with
    rank 1's RNG state too, and the resumed run equals the uninterrupted one."""
    proc = faulty(tmp_path, common, "sigterm@3:1", nproc=2)
    assert "SIGTERM received: stopped after step 3" in proc.stdout
    state = load(ckpt(tmp_path))
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["rng"]) == 2
    run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto", nproc=2)
    assert_same_model(ckpt(ddp_straight), ckpt(tmp_path))


def test_sigterm_to_torchrun_checkpoints_on_every_rank(common, tmp_path):
    proc = faulty(tmp_path, common, "sigterm-parent@3:0", nproc=2, check=False)
    assert "SIGTERM received: stopped after step" in proc.stdout
    assert "exitcode" not in proc.stderr  # torchrun names any worker that failed
    assert 3 <= load(ckpt(tmp_path))["step"] < STEPS and len(load(ckpt(tmp_path))["rng"]) == 2


def test_lost_rank_is_restarted_by_torchrun_and_the_run_matches(common, ddp_straight, tmp_path):
    """Rank 1 dies at step 5 (before the restart only); torchrun --max-restarts 1 restarts the
    group, which resumes from the step-4 checkpoint without being told to."""
    proc = faulty(tmp_path, common, "exit@5:1", nproc=2, torchrun_args=("--max-restarts", "1"))
    assert "failed (exitcode: 1) local_rank: 1" in proc.stderr  # it did die
    assert "torchrun restart 1: resuming from the newest checkpoint" in proc.stdout
    assert f"resumed from {ckpt(tmp_path, 4)} at step 4" in proc.stdout
    assert_same_model(ckpt(ddp_straight), ckpt(tmp_path))
