"""Long pretraining runs survive faults (examples/README.md, "When things go wrong").

Each fault is made to happen at a known step by pretrain.py's test-only ``BYOL_TEST_FAULTS``
(examples/faults.py: ``FaultInjection``): a real signal, a NaN loss, overflowing gradients, a rank
that dies. Where the fault is recoverable the finished run must equal an uninterrupted one bit
for bit; where it is not, the last good checkpoint must be left intact. Tiny data, CPU, gloo.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, TINY, assert_same_model, pretrain_error, read_jsonl, run_script

sys.path.insert(0, str(EXAMPLES))

STEPS = 8  # 43 images / batch 8 = 5 steps per epoch: the runs cross an epoch boundary


def ckpt(out: Path, step: int | None = None) -> Path:
    """checkpoint.pt (the newest) or the checkpoint of ``step``."""
    return out / ("checkpoint.pt" if step is None else f"checkpoint-step{step:08d}.pt")


def steps_kept(out: Path) -> list[int]:
    return sorted(int(p.stem[len("checkpoint-step"):]) for p in out.glob("checkpoint-step*.pt"))


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def faults(spec: str) -> dict[str, str]:
    return {"BYOL_TEST_FAULTS": spec}


@pytest.fixture(scope="module")
def common(npz_file) -> list[str]:
    """The npz run: checkpoints every 2 steps, all kept (0), 8 steps."""
    return ["--dataset", "npz", "--data-path", npz_file, "--backbone", "timm:test_resnet", *TINY,
            "--epochs", "2", "--workers", "0", "--max-steps", str(STEPS), "--save-every-steps",
            "2", "--keep-last", "0"]


@pytest.fixture(scope="module")
def straight(common, tmp_path_factory) -> Path:
    """The uninterrupted single-process run that the recovered ones must equal."""
    out = tmp_path_factory.mktemp("straight")
    run_script("pretrain.py", *common, "--output-dir", out)
    assert steps_kept(out) == [2, 4, 6, 8]
    return out


@pytest.fixture(scope="module")
def ddp_straight(common, tmp_path_factory) -> Path:
    """The uninterrupted run with 2 processes (gloo)."""
    out = tmp_path_factory.mktemp("ddp_straight")
    run_script("pretrain.py", *common, "--output-dir", out, nproc=2)
    return out


# ----------------------------------------------------------------------------- preemption
@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_and_resume_equals_uninterrupted(common, straight,
                                                                        tmp_path):
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, env=faults("sigterm@3"))
    assert (f"SIGTERM received: stopped after step 3 and saved {ckpt(tmp_path, 3)}; to continue, "
            "run the same command with --resume auto") in proc.stdout
    assert steps_kept(tmp_path) == [2, 3] and load(ckpt(tmp_path))["step"] == 3  # mid-epoch
    assert [r["step"] for r in read_jsonl(tmp_path / "log_steps.jsonl")] == [1, 2, 3]
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto")
    assert f"resumed from {ckpt(tmp_path, 3)} at step 3" in proc.stdout
    assert_same_model(ckpt(straight), ckpt(tmp_path))
    assert read_jsonl(tmp_path / "log_steps.jsonl") == read_jsonl(straight / "log_steps.jsonl")


@pytest.mark.slow
def test_sigusr1_stops_like_sigterm(common, tmp_path):
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, env=faults("sigusr1@3"))
    assert "SIGUSR1 received: stopped after step 3" in proc.stdout
    assert steps_kept(tmp_path) == [2, 3] and load(ckpt(tmp_path))["step"] == 3


@pytest.mark.slow
def test_resume_auto_skips_a_truncated_checkpoint_and_keep_last_prunes(common, straight,
                                                                        tmp_path):
    run_script("pretrain.py", *common, "--output-dir", tmp_path, "--max-steps", "6",
               "--keep-last", "2")
    assert steps_kept(tmp_path) == [4, 6]
    newest = ckpt(tmp_path, 6)
    with open(newest, "r+b") as f:  # a crash while writing; checkpoint.pt is the same file
        f.truncate(newest.stat().st_size // 2)
    assert ckpt(tmp_path).stat().st_size == newest.stat().st_size
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto")
    assert f"warning: skipping {newest}: it does not load" in proc.stderr
    assert f"resumed from {ckpt(tmp_path, 4)} at step 4" in proc.stdout
    assert_same_model(ckpt(straight), ckpt(tmp_path))


@pytest.mark.slow
def test_save_every_minutes_checkpoints_by_the_clock(common, tmp_path):
    """A period shorter than any step: a checkpoint after every step."""
    run_script("pretrain.py", *common, "--output-dir", tmp_path, "--max-steps", "3",
               "--save-every-steps", "0", "--save-every-minutes", "1e-9")
    assert steps_kept(tmp_path) == [1, 2, 3]


# ----------------------------------------------------------------------------- divergence
@pytest.mark.slow
@pytest.mark.parametrize("fault, flags, noticed", [
    ("nan@3", ["--log-every", "100"], ", noticed at step 4"),  # at the save of step 4
    ("nan@3", ["--log-every", "1"], ""),  # at the log record of step 3
    ("overflow@3", ["--log-every", "100", "--clip-grad", "1e9"], ", noticed at step 4"),  # grads
])
def test_nonfinite_step_stops_and_leaves_the_last_good_checkpoint(fault, flags, noticed, common,
                                                                  straight, tmp_path):
    """The bad step 3 is flagged on the device and found at the next log record or save: the
    run stops there without writing, exit status 3."""
    proc = run_script("pretrain.py", *common, *flags, "--output-dir", tmp_path,
                      env=faults(fault), check=False)
    lr = read_jsonl(straight / "log_steps.jsonl")[2]["lr"]
    assert proc.returncode == 3
    assert (f"error: the loss or gradient norm became non-finite at step 3 (lr {lr:.4g}){noticed};"
            f" stopped without saving. The last good checkpoint is {ckpt(tmp_path, 2)} (step 2); "
            "continue from it with --resume auto. Lower --base-lr or set --clip-grad before "
            "continuing") in proc.stderr
    assert steps_kept(tmp_path) == [2] and load(ckpt(tmp_path))["step"] == 2
    assert_same_model(ckpt(straight, 2), ckpt(tmp_path))  # intact (a clip at 1e9 is a no-op)
    assert all(torch.isfinite(v).all() for v in load(ckpt(tmp_path))["model"].values()
               if v.is_floating_point())


@pytest.mark.slow
def test_a_stopped_run_is_not_retried_by_a_torchrun_restart(common, tmp_path):
    """torchrun restarts a group whose worker exited non-zero: after a divergence stop the
    restarted attempt (TORCHELASTIC_RESTART_COUNT > 0) exits at once instead of diverging again
    from the last good checkpoint; a run started by hand with --resume auto goes on."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--log-every", "1",
                      env=faults("nan@3"), check=False)
    assert proc.returncode == 3 and steps_kept(tmp_path) == [2]
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--log-every", "1",
                      env={"TORCHELASTIC_RESTART_COUNT": "1"}, check=False)
    assert proc.returncode == 3 and steps_kept(tmp_path) == [2]
    assert ("error: the previous attempt stopped on purpose (the loss or gradient norm became "
            "non-finite at step 3") in proc.stderr and "does not retry it" in proc.stderr
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto")
    assert f"resumed from {ckpt(tmp_path, 2)} at step 2" in proc.stdout
    assert steps_kept(tmp_path) == [2, 4, 6, 8]


@pytest.mark.slow
def test_skip_bad_steps_leaves_the_state_unchanged_then_stops_past_the_limit(common, tmp_path):
    """Step 3's loss and step 5's gradients are non-finite (--skip-bad-steps checks both)."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--save-every-steps", "1",
                      "--skip-bad-steps", "1", env=faults("nan@3,overflow@5"), check=False)
    assert "non-finite loss or gradient norm at step 3" in proc.stderr
    assert "skipped, the weights, optimizer state and EMA target are unchanged" in proc.stderr
    assert proc.returncode == 3
    assert ("non-finite at step 5" in proc.stderr and "more than --skip-bad-steps 1 (skipped: "
            "step 3)" in proc.stderr and f"last good checkpoint is {ckpt(tmp_path, 4)}"
            in proc.stderr)
    assert steps_kept(tmp_path) == [1, 2, 3, 4]
    assert_same_model(ckpt(tmp_path, 2), ckpt(tmp_path, 3))  # step 3 changed nothing ...
    before, after = load(ckpt(tmp_path, 2)), load(ckpt(tmp_path, 3))
    for i, state in before["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, after["optimizer"]["state"][i][key]), (i, key)
    trained = load(ckpt(tmp_path, 4))["model"]  # ... and step 4 trained on
    assert not all(torch.equal(v, trained[k]) for k, v in after["model"].items())


@pytest.mark.slow
def test_fp16_gradscaler_skips_are_counted_not_divergence(common, tmp_path):
    """Step 2's gradients overflow (the CPU GradScaler may skip others on its own at the start):
    the run goes on, the skipped step leaves the weights as they were, and the count reported
    is the number of times the scaler halved its scale."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--amp", "fp16",
                      "--max-steps", "3", "--save-every-steps", "1", env=faults("overflow@2"))
    halvings = round(math.log2(65536 / load(ckpt(tmp_path))["scaler"]["scale"]))
    assert halvings >= 1
    assert (f"the fp16 GradScaler skipped {halvings} step(s) (gradient overflow: it lowered the "
            "loss scale; not a divergence)") in proc.stdout
    assert f"{halvings} step(s) skipped by the fp16 GradScaler" in proc.stdout
    one, two = load(ckpt(tmp_path, 1))["model"], load(ckpt(tmp_path, 2))["model"]
    weights = [k for k in one if "running_" not in k and "num_batches" not in k]
    assert all(torch.equal(one[k], two[k]) for k in weights)  # incl. target and ema_step


# ----------------------------------------------------------------------------- collapse
@pytest.mark.slow
def test_collapse_warns_once_after_patience_and_the_run_goes_on(common, tmp_path):
    """A threshold above any healthy std (--collapse-ratio 100) makes every interval "low"."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--max-steps", "4",
                      "--collapse-ratio", "100", "--collapse-patience", "2")
    assert proc.stderr.count("WARNING: representation collapse") == 1
    assert "for 2 log intervals in a row (steps 1-2" in proc.stderr
    assert load(ckpt(tmp_path))["step"] == 4


@pytest.mark.slow
def test_stop_on_collapse_stops_without_saving(common, tmp_path):
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, "--collapse-ratio", "100",
                      "--collapse-patience", "3", "--stop-on-collapse", check=False)
    assert proc.returncode == 3
    assert ("error: representation collapse" in proc.stderr and "(steps 1-3, lr " in proc.stderr
            and f"The newest checkpoint is {ckpt(tmp_path, 2)} (step 2)" in proc.stderr)
    assert steps_kept(tmp_path) == [2] and load(ckpt(tmp_path))["step"] == 2


# ----------------------------------------------------------------------------- bad data
BAD_FILES = {"class_0/empty.png": "empty file",
             "class_1/truncated.png": "OSError: image file is truncated",
             "class_2/notanimage.jpg": "not an image PIL can read"}


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
                image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / split / f"class_{label}" / f"{i}.png")
    png = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(png, "PNG")
    (root / "train" / "class_0" / "empty.png").write_bytes(b"")
    (root / "train" / "class_1" / "truncated.png").write_bytes(png.getvalue()[:2000])
    (root / "train" / "class_2" / "notanimage.jpg").write_bytes(b"<html>not found</html>")
    return root


@pytest.fixture(scope="module")
def folder_common(bad_folder) -> list[str]:
    return ["--dataset", "folder", "--data-path", bad_folder, "--backbone", "timm:test_resnet",
            *TINY, "--epochs", "2", "--workers", "1"]


@pytest.fixture(scope="module")
def bad_folder_run(folder_common, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_folder_run")
    return out, run_script("pretrain.py", *folder_common, "--knn-every", "2", "--output-dir", out)


@pytest.mark.slow
def test_unreadable_images_are_replaced_with_one_warning_each(bad_folder, bad_folder_run):
    out, proc = bad_folder_run
    for name, why in BAD_FILES.items():
        warning = f"warning: unreadable image {bad_folder / 'train' / name} ({why}"
        assert proc.stderr.count(warning) >= 1
        pretraining = [line for line in proc.stderr.splitlines() if warning in line
                       and "replaced by the next readable image of the data set" in line]
        assert len(pretraining) == 1, name  # read in both epochs, reported once
    for epoch in (0, 1):
        assert f"epoch {epoch}: 3 unreadable image(s) were replaced" in proc.stdout
    steps = read_jsonl(out / "log_steps.jsonl")
    assert [r["step"] for r in steps] == list(range(1, 7)) and all(
        np.isfinite(r["loss"]) for r in steps)
    assert read_jsonl(out / "log_epochs.jsonl")[1]["knn_top1"] is not None


@pytest.mark.slow
def test_resume_over_unreadable_images_is_exact(folder_common, bad_folder_run, tmp_path):
    straight, _ = bad_folder_run
    run_script("pretrain.py", *folder_common, "--output-dir", tmp_path, env=faults("sigterm@4"))
    assert load(ckpt(tmp_path))["step"] == 4  # one step into the second epoch
    run_script("pretrain.py", *folder_common, "--output-dir", tmp_path, "--resume", "auto")
    assert_same_model(ckpt(straight), ckpt(tmp_path))


def test_fault_flags_defaults_and_checks(capsys):
    pretrain = importlib.import_module("pretrain")
    args = pretrain.get_args_parser().parse_args([])
    assert (args.keep_last, args.skip_bad_steps, args.save_every_steps) == (2, 0, 0)
    assert (args.collapse_ratio, args.collapse_patience, args.stop_on_collapse) == (0.1, 5, False)
    for argv in (["--keep-last", "-1"], ["--save-every-minutes", "-1"], ["--collapse-ratio", "0"],
                 ["--collapse-patience", "0"], ["--skip-bad-steps", "-2"]):
        assert argv[0] in pretrain_error(argv, capsys)


@pytest.mark.parametrize("case, message", [
    ("empty", "error: no images in"),
    ("all_bad", "images can be read (e.g. unreadable image"),
])
def test_data_that_yields_nothing_fails_at_start(case, message, tmp_path, capsys):
    root = tmp_path / "data"
    (root / "class_0").mkdir(parents=True)
    if case == "all_bad":
        for i in range(3):
            (root / "class_0" / f"{i}.png").write_bytes(b"")
    err = pretrain_error(["--dataset", "folder", "--data-path", str(root), "--backbone",
                          "timm:test_resnet", *TINY, "--output-dir", str(tmp_path / "out")],
                         capsys)
    assert message in err and err.startswith("error: ")
    assert not list((tmp_path / "out").glob("checkpoint*"))


# ----------------------------------------------------------------------------- several processes
@pytest.mark.slow
def test_signal_to_one_rank_stops_all_at_one_step_and_resume_is_exact(common, ddp_straight,
                                                                      tmp_path):
    """Only rank 1 gets SIGTERM: both ranks agree to stop after step 3, rank 0 writes the
    checkpoint with rank 1's RNG state too, and the resumed run equals the uninterrupted one."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, nproc=2,
                      env=faults("sigterm@3:1"))
    assert "SIGTERM received: stopped after step 3" in proc.stdout
    state = load(ckpt(tmp_path))
    assert state["step"] == 3 and state["world_size"] == 2 and len(state["rng"]) == 2
    run_script("pretrain.py", *common, "--output-dir", tmp_path, "--resume", "auto", nproc=2)
    assert_same_model(ckpt(ddp_straight), ckpt(tmp_path))


@pytest.mark.slow
def test_sigterm_to_torchrun_checkpoints_on_every_rank(common, tmp_path):
    """SIGTERM to torchrun itself, which passes it on to both workers (a scheduler's kill):
    both finish their step and exit cleanly after rank 0 wrote the checkpoint of that step."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, nproc=2,
                      env=faults("sigterm-parent@3:0"), check=False)
    assert "SIGTERM received: stopped after step" in proc.stdout
    assert "exitcode" not in proc.stderr  # torchrun names any worker that failed
    state = load(ckpt(tmp_path))
    assert 3 <= state["step"] < STEPS and len(state["rng"]) == 2


@pytest.mark.slow
def test_lost_rank_is_restarted_by_torchrun_and_the_run_matches(common, ddp_straight, tmp_path):
    """Rank 1 dies at step 5 (before the restart only); torchrun --max-restarts 1 restarts the
    group, which resumes from the step-4 checkpoint without being told to."""
    proc = run_script("pretrain.py", *common, "--output-dir", tmp_path, nproc=2,
                      torchrun_args=("--max-restarts", "1"), env=faults("exit@5:1"))
    assert "failed (exitcode: 1) local_rank: 1" in proc.stderr  # it did die
    assert "torchrun restart 1: resuming from the newest checkpoint" in proc.stdout
    assert f"resumed from {ckpt(tmp_path, 4)} at step 4" in proc.stdout
    assert_same_model(ckpt(ddp_straight), ckpt(tmp_path))
