"""Faults at known steps (tests/fault_harness.py; examples/README.md, "When things go wrong"):
a recovered run equals an uninterrupted one bit for bit, else the last good checkpoint is intact."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY, assert_same_model, pretrain_error, read_log, run_script
from PIL import Image

STEPS = 8  # 43 images / batch 8 = 5 steps per epoch: the runs cross an epoch boundary
HARNESS = REPO_ROOT / "tests" / "fault_harness.py"
pytestmark = pytest.mark.slow


def ckpt(out: Path, step: int | None = None) -> Path:  # checkpoint.pt: the newest
    return out / ("checkpoint.pt" if step is None else f"checkpoint-step{step:08d}.pt")


def load(out: Path, step: int | None = None) -> dict:
    return torch.load(ckpt(out, step), weights_only=True)


def kept(out: Path) -> list[int]:
    return sorted(int(p.stem[len("checkpoint-step"):]) for p in out.glob("checkpoint-step*.pt"))


def pretrain(out: Path, args: list, faults: str = "", **kw):
    """pretrain.py into ``out``; with ``faults`` ("kind@step[:rank],...") under the harness."""
    if faults:
        kw["env"] = {"BYOL_TEST_FAULTS": faults}
    return run_script(HARNESS if faults else "pretrain.py", *args, "--output-dir", out, **kw)


@pytest.fixture(scope="module")
def common(npz_file) -> list[str]:
    return ["--dataset", "npz", "--data-path", npz_file, "--backbone", "timm:test_resnet", *TINY,
            "--epochs", "2", "--workers", "0", "--max-steps", str(STEPS), "--save-every-steps",
            "2", "--keep-last", "0"]  # a checkpoint every 2 steps, all kept


@pytest.fixture(scope="module")
def straight(common, tmp_path_factory) -> Path:
    """The uninterrupted single-process run the recovered ones must equal."""
    pretrain(out := tmp_path_factory.mktemp("straight"), common)
    assert kept(out) == [2, 4, 6, 8]
    return out


@pytest.fixture(scope="module")
def ddp_straight(common, tmp_path_factory) -> Path:
    pretrain(out := tmp_path_factory.mktemp("ddp"), common, nproc=2)
    return out


@pytest.mark.parametrize("signal", ["SIGTERM", "SIGUSR1"])
def test_signal_mid_epoch_checkpoints_and_resume_equals_uninterrupted(signal, common, straight,
                                                                      tmp_path):
    proc = pretrain(tmp_path, common, f"{signal.lower()}@3")
    assert (f"{signal} received: stopped after step 3 and saved {ckpt(tmp_path, 3)}; to continue,"
            " run the same command with --resume auto") in proc.stdout
    assert kept(tmp_path) == [2, 3] and load(tmp_path)["step"] == 3  # mid-epoch
    proc = pretrain(tmp_path, [*common, "--resume", "auto"])
    assert f"resumed from {ckpt(tmp_path, 3)} at step 3" in proc.stdout
    assert_same_model(ckpt(straight), ckpt(tmp_path))
    assert read_log(tmp_path / "log.jsonl", "step") == read_log(straight / "log.jsonl", "step")


def test_resume_auto_skips_a_truncated_checkpoint_keep_last_and_the_clock(common, straight,
                                                                         tmp_path):
    pretrain(tmp_path, [*common, "--max-steps", "6", "--keep-last", "2"])
    assert kept(tmp_path) == [4, 6]
    newest = ckpt(tmp_path, 6)  # cut by a crash while writing; checkpoint.pt is the same file
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])
    proc = pretrain(tmp_path, [*common, "--resume", "auto"])
    assert f"warning: skipping {newest}: it does not load" in proc.stderr
    assert f"resumed from {ckpt(tmp_path, 4)} at step 4" in proc.stdout
    assert_same_model(ckpt(straight), ckpt(tmp_path))
    pretrain(clock := tmp_path / "clock", [*common, "--max-steps", "3", "--save-every-steps", "0",
                                           "--save-every-minutes", "1e-9"])
    assert kept(clock) == [1, 2, 3]  # a period shorter than any step: one after every step


@pytest.mark.parametrize("fault, flags, noticed", [
    ("nan@3", ["--log-every", "100"], ", noticed at step 4"),  # at the save of step 4
    ("nan@3", ["--log-every", "1"], ""),  # at the log record of step 3
    ("overflow@3", ["--log-every", "100", "--clip-grad", "1e9"], ", noticed at step 4"),  # grads
])
def test_nonfinite_step_stops_and_leaves_the_last_good_checkpoint(fault, flags, noticed, common,
                                                                  straight, tmp_path):
    proc = pretrain(tmp_path, [*common, *flags], fault, check=False)
    lr = read_log(straight / "log.jsonl", "step")[2]["lr"]
    assert proc.returncode == 3 and kept(tmp_path) == [2]
    assert (f"error: the loss or gradient norm became non-finite at step 3 (lr {lr:.4g}){noticed};"
            f" stopped without saving. The last good checkpoint is {ckpt(tmp_path, 2)} (step 2); "
            "continue from it with --resume auto. Lower --base-lr or set --clip-grad before "
            "continuing") in proc.stderr
    assert_same_model(ckpt(straight, 2), ckpt(tmp_path))  # intact (a clip at 1e9 is a no-op)


def test_a_stopped_run_is_not_retried_by_a_torchrun_restart(common, tmp_path):
    """After a divergence stop a torchrun restart exits at once; --resume auto by hand goes on."""
    assert pretrain(tmp_path, [*common, "--log-every", "1"], "nan@3", check=False).returncode == 3
    proc = pretrain(tmp_path, common, env={"TORCHELASTIC_RESTART_COUNT": "1"}, check=False)
    assert proc.returncode == 3 and kept(tmp_path) == [2] and "does not retry it" in proc.stderr
    assert ("error: the previous attempt stopped on purpose (the loss or gradient norm became "
            "non-finite at step 3") in proc.stderr
    proc = pretrain(tmp_path, [*common, "--resume", "auto"])
    assert f"resumed from {ckpt(tmp_path, 2)} at step 2" in proc.stdout
    assert kept(tmp_path) == [2, 4, 6, 8]


def test_skip_bad_steps_leaves_the_state_unchanged_then_stops_past_the_limit(common, tmp_path):
    """Step 3's loss and step 5's gradients are non-finite (--skip-bad-steps checks both)."""
    proc = pretrain(tmp_path, [*common, "--save-every-steps", "1", "--skip-bad-steps", "1"],
                    "nan@3,overflow@5", check=False)
    assert proc.returncode == 3 and "non-finite loss or gradient norm at step 3" in proc.stderr
    assert "skipped, the weights, optimizer state and EMA target are unchanged" in proc.stderr
    assert "non-finite at step 5" in proc.stderr and "more than --skip-bad-steps 1 (skipped: " \
        "step 3)" in proc.stderr and f"last good checkpoint is {ckpt(tmp_path, 4)}" in proc.stderr
    assert kept(tmp_path) == [1, 2, 3, 4]
    assert_same_model(ckpt(tmp_path, 2), ckpt(tmp_path, 3))  # step 3 changed nothing ...
    before, after = load(tmp_path, 2), load(tmp_path, 3)
    for i, state in before["optimizer"]["state"].items():
        assert all(torch.equal(v, after["optimizer"]["state"][i][k]) for k, v in state.items())
    trained = load(tmp_path, 4)["model"]  # ... and step 4 trained on
    assert not all(torch.equal(v, trained[k]) for k, v in after["model"].items())


def test_fp16_gradscaler_skips_are_counted_not_divergence(common, tmp_path):
    """Step 2 overflows: the run goes on, the weights stay; the count is the scale's halvings."""
    proc = pretrain(tmp_path, [*common, "--amp", "fp16", "--max-steps", "3", "--save-every-steps",
                               "1"], "overflow@2")
    halvings = round(math.log2(65536 / load(tmp_path)["scaler"]["scale"]))
    assert halvings >= 1 and (f"the fp16 GradScaler skipped {halvings} step(s) (gradient overflow:"
                              " it lowered the loss scale; not a divergence)") in proc.stdout
    assert f"{halvings} step(s) skipped by the fp16 GradScaler" in proc.stdout
    one, two = load(tmp_path, 1)["model"], load(tmp_path, 2)["model"]
    assert all(torch.equal(one[k], two[k]) for k in one if "running_" not in k
               and "num_batches" not in k)  # incl. the target and ema_step


def test_collapse_warns_once_or_stops(common, tmp_path):
    """A threshold above any healthy std (--collapse-ratio 100) makes every interval "low"."""
    proc = pretrain(tmp_path / "warn", [*common, "--max-steps", "4", "--collapse-ratio", "100",
                                        "--collapse-patience", "2"])
    assert proc.stderr.count("WARNING: representation collapse") == 1
    assert "for 2 log intervals in a row (steps 1-2" in proc.stderr
    proc = pretrain(tmp_path, [*common, "--collapse-ratio", "100", "--collapse-patience", "3",
                               "--stop-on-collapse"], check=False)
    assert proc.returncode == 3 and "(steps 1-3, lr " in proc.stderr and kept(tmp_path) == [2]
    assert f"The newest checkpoint is {ckpt(tmp_path, 2)} (step 2)" in proc.stderr


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory) -> Path:
    """train/: 7 images + 1 bad file per class (24 = 3 batches: all read each epoch); val/: 2."""
    root, rng = tmp_path_factory.mktemp("bad_folder"), np.random.default_rng(0)
    for split, n in (("train", 7), ("val", 2)):
        for label in range(3):
            (d := root / split / f"class_{label}").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(d / f"{i}.png")
    (root / "train/class_0/empty.png").write_bytes(b"")
    truncated = root / "train/class_1/truncated.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    (root / "train/class_2/notanimage.jpg").write_bytes(b"<html>not found</html>")
    return root


def test_unreadable_images_are_replaced_once_each_and_resume_stays_exact(bad_folder, tmp_path):
    args = ["--dataset", "folder", "--data-path", bad_folder, "--backbone", "timm:test_resnet",
            *TINY, "--epochs", "2", "--workers", "1"]
    proc = pretrain(tmp_path / "a", [*args, "--knn-every", "2"])
    for bad in ("class_0/empty.png (empty file", "class_1/truncated.png (OSError: image file is "
                "truncated", "class_2/notanimage.jpg (not an image PIL can read"):
        warning = f"warning: unreadable image {bad_folder / 'train'}/{bad}"
        assert len([line for line in proc.stderr.splitlines() if warning in line and "replaced by "
                    "the next readable image of the data set" in line]) == 1, bad  # read twice
    assert all(f"epoch {e}: 3 unreadable image(s) were replaced" in proc.stdout for e in (0, 1))
    assert read_log(tmp_path / "a/log.jsonl", "epoch")[1]["knn_top1"] is not None
    pretrain(tmp_path / "b", args, "sigterm@4")  # one step into the second epoch
    pretrain(tmp_path / "b", [*args, "--resume", "auto"])
    assert_same_model(ckpt(tmp_path / "a"), ckpt(tmp_path / "b"))


@pytest.mark.parametrize("case, message", [("empty", "error: no images in"),
                                           ("all_bad", "images can be read (e.g. unreadable")])
def test_data_that_yields_nothing_fails_at_start(case, message, tmp_path, capsys):
    (root := tmp_path / "data" / "class_0").mkdir(parents=True)
    for i in range(3 if case == "all_bad" else 0):
        (root / f"{i}.png").write_bytes(b"")
    err = pretrain_error(["--dataset", "folder", "--data-path", str(root.parent), "--backbone",
                          "timm:test_resnet", *TINY, "--output-dir", str(tmp_path / "out")], capsys)
    assert message in err and err.startswith("error: ")


def test_signal_to_one_rank_stops_all_at_one_step_and_resume_is_exact(common, ddp_straight,
                                                                      tmp_path):
    """Only rank 1 gets SIGTERM: both stop after step 3; the checkpoint holds both RNG states."""
    proc = pretrain(tmp_path, common, "sigterm@3:1", nproc=2)
    assert "SIGTERM received: stopped after step 3" in proc.stdout
    state = load(tmp_path)
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["rng"]) == 2
    pretrain(tmp_path, [*common, "--resume", "auto"], nproc=2)
    assert_same_model(ckpt(ddp_straight), ckpt(tmp_path))


def test_sigterm_to_torchrun_checkpoints_on_every_rank(common, tmp_path):
    proc = pretrain(tmp_path, common, "sigterm-parent@3:0", nproc=2, check=False)
    assert "SIGTERM received: stopped after step" in proc.stdout
    assert "exitcode" not in proc.stderr  # torchrun names any worker that failed
    assert 3 <= (state := load(tmp_path))["step"] < STEPS and len(state["rng"]) == 2


def test_lost_rank_is_restarted_by_torchrun_and_the_run_matches(common, ddp_straight, tmp_path):
    """Rank 1 dies at step 5 (once); torchrun restarts the group, which resumes from step 4."""
    proc = pretrain(tmp_path, common, "exit@5:1", nproc=2, torchrun_args=("--max-restarts", "1"))
    assert "failed (exitcode: 1) local_rank: 1" in proc.stderr  # it did die
    assert "torchrun restart 1: resuming from the newest checkpoint" in proc.stdout
    assert f"resumed from {ckpt(tmp_path, 4)} at step 4" in proc.stdout
    assert_same_model(ckpt(ddp_straight), ckpt(tmp_path))
