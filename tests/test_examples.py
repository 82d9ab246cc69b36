"""End-to-end tests of the example scripts (examples/): pretrain, kNN and linear evaluation.

The scripts run as subprocesses on tiny generated data (16 px images, a few steps), with one
process and with two processes under torchrun (gloo, CPU). Argument validation, helpers and
--help run in-process. Nothing here downloads anything or needs ../shared (one test reads the
shared mini CIFAR-10 if it exists and skips otherwise).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from conftest import (EXAMPLES, MINI_CIFAR, REPO_ROOT as ROOT, TINY, assert_same_model,
                      class_images, pretrain_error, read_jsonl, run_script)

sys.path.insert(0, str(EXAMPLES))

CHANCE = 100 / 3  # % top-1 of a guess among the fixtures' 3 colour-coded classes
STEP_FIELDS = {"step", "epoch", "loss", "lr", "tau", "projection_std"}
EPOCH_FIELDS = {"epoch", "step", "loss", "lr", "tau", "projection_std", "knn_top1",
                "images_per_s", "time"}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """root/{train,val}/class_{0,1,2}/*.png: 8 train and 2 val images per class, 20x20 px."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for label in range(3):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for i, img in enumerate(class_images(rng, label, n, 20)):
                Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(image_folder, tmp_path_factory) -> Path:
    """One pretraining run on the image folder: ResNet-18 with the CIFAR stem, 2 epochs."""
    out = tmp_path_factory.mktemp("folder_run")
    run_script("pretrain.py", "--dataset", "folder", "--data-path", image_folder,
               "--backbone", "resnet18", "--cifar-stem", *TINY, "--epochs", "2",
               "--knn-every", "1", "--save-every", "1", "--workers", "1", "--amp", "bf16",
               "--output-dir", out)
    return out


# ----------------------------------------------------------------------------- pretraining
@pytest.mark.slow
def test_pretrain_folder_writes_checkpoint_logs_and_backbone(folder_run):
    for name in ("checkpoint.pt", "backbone.pt", "backbone.safetensors", "args.json",
                 "log_steps.jsonl", "log_epochs.jsonl", "log_epochs.csv"):
        assert (folder_run / name).is_file(), name
    steps = read_jsonl(folder_run / "log_steps.jsonl")
    assert [r["step"] for r in steps] == list(range(1, 7))  # 24 images / 8 = 3 steps x 2 epochs
    assert all(set(r) == STEP_FIELDS and np.isfinite(r["loss"]) for r in steps)
    # 2 epochs take the official 40-epoch row of the imagenet preset: tau starts at 0.97
    assert steps[0]["tau"] == pytest.approx(0.97) and steps[-1]["tau"] > steps[0]["tau"]
    epochs = read_jsonl(folder_run / "log_epochs.jsonl")
    assert [r["epoch"] for r in epochs] == [0, 1]
    init = json.loads((folder_run / "knn_init.json").read_text())  # before the first step
    # the fixtures' classes differ by colour: kNN on any sensible features beats chance (1/3)
    assert init["knn_k"] == 20 and init["knn_top1"] > CHANCE
    assert all(set(r) == EPOCH_FIELDS and r["knn_top1"] > CHANCE for r in epochs)
    header = (folder_run / "log_epochs.csv").read_text().splitlines()[0].split(",")
    assert set(header) == EPOCH_FIELDS
    ckpt = torch.load(folder_run / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "epoch", "step", "rng", "args"} <= set(ckpt)
    assert ckpt["step"] == 6 and ckpt["epoch"] == 2
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    assert any(k.startswith("target_encoder.") for k in ckpt["model"])  # the target is saved


@pytest.mark.slow
def test_bare_backbone_loads_into_fresh_torchvision_model(folder_run):
    from safetensors.torch import load_file

    from byol_pytorch import cifar_stem_

    ckpt = torch.load(folder_run / "checkpoint.pt", weights_only=True)
    for state in (torch.load(folder_run / "backbone.pt"),
                  load_file(str(folder_run / "backbone.safetensors"))):
        model = cifar_stem_(torchvision.models.resnet18())
        model.load_state_dict(state)  # strict: same keys, no prefixes
        for key, value in model.state_dict().items():
            assert torch.equal(value, ckpt["model"][f"online_encoder.net.{key}"]), key


@pytest.mark.slow
def test_knn_eval_on_full_checkpoint(folder_run, tmp_path):
    out = tmp_path / "knn.json"
    proc = run_script("knn_eval.py", "--checkpoint", folder_run / "checkpoint.pt", "--k", "5",
                      "10", "--workers", "0", "--output", out)
    assert "kNN top-1" in proc.stdout
    result = json.loads(out.read_text())
    assert result["knn_top1@5"] > CHANCE and result["knn_top1@10"] > CHANCE
    assert result["num_train"] == 24 and result["num_val"] == 6 and result["feature_dim"] == 512


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["features", "augment"])
def test_linear_eval_on_full_checkpoint(folder_run, tmp_path, protocol):
    """An LR sweep on the colour-coded folder: one accuracy per LR, the best, all above chance."""
    out = tmp_path / "linear.json"
    base_lrs = [8.0, 32.0, 128.0]  # x batch 8 / 256: peak LRs 0.25, 1, 4
    proc = run_script("linear_eval.py", "--checkpoint", folder_run / "checkpoint.pt",
                      "--protocol", protocol, "--epochs", "10", "--probe-batch-size", "8",
                      "--lrs", *map(str, base_lrs), "--workers", "0", "--output", out)
    assert "linear top-1" in proc.stdout and "best of 3 LRs" in proc.stdout
    assert proc.stdout.count("<- best") == 1
    result = json.loads(out.read_text())
    assert result["base_lrs"] == base_lrs and result["lrs"] == pytest.approx([0.25, 1.0, 4.0])
    per_lr = result["linear_top1_per_lr"]
    # 3 classes: chance is 33.3 %; 6 validation images, so > 50 % is at least 4 of them right
    assert len(per_lr) == 3 and all(acc > 50.0 for acc in per_lr), per_lr
    best = result["best_index"]
    assert result["linear_top1"] == max(per_lr) == per_lr[best] and result["linear_top1"] >= 80.0
    assert result["best_lr"] == result["lrs"][best]
    assert result["best_base_lr"] == base_lrs[best]
    assert "linear_top5" not in result  # top-5 is meaningless with 3 classes
    assert result["backbone_frozen"] is True and result["protocol"] == protocol
    assert result["num_classes"] == 3 and result["num_val"] == 6
    assert (result["epochs"], result["probe_batch_size"], result["weight_decay"]) == (10, 8, 0.0)
    assert result["momentum"] == 0.9 and result["nesterov"] is True


@pytest.mark.slow
def test_linear_eval_protocol_follows_the_checkpoints_preset(folder_run):
    """The folder run used the imagenet preset: --protocol auto picks the paper's protocol."""
    linear_eval = importlib.import_module("linear_eval")
    assert linear_eval.pretraining_preset(folder_run / "checkpoint.pt") == "imagenet"
    assert linear_eval.pretraining_preset(folder_run / "backbone.pt") == "imagenet"  # args.json
    args = linear_eval.get_args_parser().parse_args(["--checkpoint", "unused"])
    args = linear_eval.resolve_args(args, linear_eval.pretraining_preset(
        folder_run / "checkpoint.pt"))
    assert args.protocol == "augment"


@pytest.mark.slow
def test_pretrain_npz_two_processes_then_distributed_eval(npz_file, tmp_path):
    out = tmp_path / "ddp"
    run_script("pretrain.py", "--dataset", "npz", "--data-path", npz_file,
               "--backbone", "timm:test_resnet", *TINY, "--epochs", "2", "--accum-steps", "2",
               "--knn-every", "2", "--view-batching", "separate", "--output-dir", out, nproc=2)
    steps = read_jsonl(out / "log_steps.jsonl")  # 43 train images // 4 per process = 10 micro
    assert [r["step"] for r in steps] == list(range(1, 11))  # -> 5 steps/epoch, 2 epochs
    epochs = read_jsonl(out / "log_epochs.jsonl")
    assert epochs[0]["knn_top1"] is None and epochs[1]["knn_top1"] > CHANCE
    args = json.loads((out / "args.json").read_text())
    assert args["batch_size"] == 8 and args["view_batching"] == "separate"
    # A bare backbone without args.json next to it: the model flags must be given.
    bare = tmp_path / "bare" / "weights.pt"
    bare.parent.mkdir()
    shutil.copy(out / "backbone.pt", bare)
    knn_out = tmp_path / "knn.json"
    run_script("knn_eval.py", "--checkpoint", bare, "--backbone", "timm:test_resnet",
               "--dataset", "npz", "--data-path", npz_file, "--image-size", "16", "--k", "3",
               "--output", knn_out, nproc=2)
    result = json.loads(knn_out.read_text())
    assert result["num_train"] == 43 and result["num_val"] == 5 and result["knn_top1@3"] > CHANCE
    assert result["workers"] == 0  # the default for in-memory data
    lin_out = tmp_path / "linear.json"
    run_script("linear_eval.py", "--checkpoint", out / "checkpoint.pt", "--protocol", "augment",
               "--epochs", "2", "--probe-batch-size", "8", "--workers", "0", "--output", lin_out,
               nproc=2)
    assert json.loads(lin_out.read_text())["linear_top1"] > CHANCE


@pytest.mark.slow
def test_resume_continues_the_same_run(npz_file, tmp_path):
    """6 steps straight vs 3 steps + resume: same per-step losses and bit-identical weights.

    43 images / batch 8 = 5 steps per epoch, so the resume starts mid-epoch and then crosses
    an epoch boundary (new sampler permutation). The straight run also evaluates kNN (at
    initialisation and after each epoch), which must not change the training either.
    """
    common = ["--dataset", "npz", "--data-path", npz_file, "--backbone", "timm:test_resnet",
              *TINY, "--epochs", "2", "--workers", "0"]
    run_script("pretrain.py", *common, "--max-steps", "6", "--knn-every", "1",
               "--output-dir", tmp_path / "straight")
    assert read_jsonl(tmp_path / "straight" / "log_epochs.jsonl")[0]["knn_top1"] is not None
    run_script("pretrain.py", *common, "--max-steps", "3", "--output-dir", tmp_path / "split")
    assert len(read_jsonl(tmp_path / "split" / "log_steps.jsonl")) == 3
    run_script("pretrain.py", *common, "--max-steps", "6", "--output-dir", tmp_path / "split",
               "--resume", "auto")
    straight = read_jsonl(tmp_path / "straight" / "log_steps.jsonl")
    resumed = read_jsonl(tmp_path / "split" / "log_steps.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in straight] == list(range(1, 7))
    for a, b in zip(straight, resumed):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]
        assert a["lr"] == b["lr"] and a["tau"] == b["tau"]
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    assert_same_model(tmp_path / "straight" / "checkpoint.pt", tmp_path / "split" / "checkpoint.pt")


@pytest.mark.slow
def test_timm_vit_at_another_size_pretrains_and_evaluates(npz_file, tmp_path):
    """A ViT built for 224 px trains at --image-size 32 (built with img_size=32) and the eval
    scripts rebuild it at that size from the checkpoint's arguments."""
    out = tmp_path / "vit"
    run_script("pretrain.py", "--dataset", "npz", "--data-path", npz_file,
               "--backbone", "timm:vit_tiny_patch16_224", *TINY, "--image-size", "32",
               "--token-pool", "mean", "--epochs", "1", "--max-steps", "2", "--workers", "0",
               "--output-dir", out)
    assert len(read_jsonl(out / "log_steps.jsonl")) == 2
    knn_out = tmp_path / "knn.json"
    run_script("knn_eval.py", "--checkpoint", out / "checkpoint.pt", "--k", "3", "--workers", "0",
               "--output", knn_out)
    result = json.loads(knn_out.read_text())
    assert result["feature_dim"] == 192 and result["image_size"] == 32


# ----------------------------------------------------------------------------- CLI checks
@pytest.mark.parametrize("script", ["pretrain", "knn_eval", "linear_eval"])
def test_help(script, capsys):
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exc:
        module.get_args_parser().parse_args(["--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_help_from_the_command_line():
    proc = run_script("pretrain.py", "--help")
    assert "--batch-size" in proc.stdout and "GLOBAL batch" in proc.stdout


@pytest.mark.parametrize("argv, world, message", [
    (["--dataset", "folder", "--data-path", "/nonexistent/imagenet"], 1, "does not exist"),
    (["--dataset", "folder"], 1, "needs --data-path"),
    (["--dataset", "npz", "--data-path", "/nonexistent/x.npz"], 1, "does not exist"),
    (["--dataset", "cifar10", "--data-path", "/nonexistent"], 1, "--download"),
    (["--backbone", "resnet181"], 1, "unknown backbone 'resnet181'"),
    (["--batch-size", "2"], 4, "smaller than the number of processes"),
    (["--batch-size", "9"], 2, "divisible"),
    (["--batch-size", "4", "--accum-steps", "2"], 2, ">= 2 images"),
    (["--sync-bn", "--device", "cpu"], 2, "needs CUDA"),
    (["--warmup-epochs", "20", "--epochs", "10"], 1, "--warmup-epochs"),
    (["--resume", "/nonexistent/checkpoint.pt"], 1, "does not exist"),
    (["--crop-min-scale", "0"], 1, "--crop-min-scale must lie in (0, 1]"),
    (["--flip-p", "1.5"], 1, "--flip-p must lie in [0, 1]"),
])
def test_pretrain_rejects_bad_arguments(argv, world, message, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", str(world))  # validated before joining any process group
    assert message in pretrain_error(argv, capsys)


@pytest.mark.parametrize("argv, crop_min_scale, flip_p", [
    (["--dataset", "digits"], 0.4, 0.0),  # digit-safe views
    (["--dataset", "npz", "--data-path", "NPZ"], 0.08, 0.5),  # the small preset (solo-learn)
    (["--dataset", "folder", "--data-path", "FOLDER"], 0.08, 0.5),  # the paper's
    (["--dataset", "digits", "--crop-min-scale", "0.3", "--flip-p", "0.5"], 0.3, 0.5),
])
def test_augmentation_defaults_follow_data_set_and_flags(argv, crop_min_scale, flip_p, npz_file,
                                                         image_folder):
    pretrain = importlib.import_module("pretrain")
    argv = [{"NPZ": str(npz_file), "FOLDER": str(image_folder)}.get(a, a) for a in argv]
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(argv))
    assert (args.crop_min_scale, args.flip_p) == (crop_min_scale, flip_p)


@pytest.mark.parametrize("argv, clip", [
    (["--dataset", "digits"], True),  # the small preset: solo-learn's LARS, clipped (LARC)
    (["--dataset", "folder", "--data-path", "FOLDER"], False),  # the paper's LARS
    (["--dataset", "digits", "--no-lars-clip"], False),
])
def test_lars_clipping_follows_preset_and_flag(argv, clip, image_folder):
    pretrain = importlib.import_module("pretrain")
    argv = [str(image_folder) if a == "FOLDER" else a for a in argv]
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(argv))
    optimizer = pretrain.build_optimizer(args, nn.Linear(4, 2))
    assert args.lars_clip is clip and optimizer.defaults["clip_lr"] is clip


@pytest.mark.parametrize("argv, stem", [
    (["--dataset", "digits"], True),  # small preset, a ResNet: the CIFAR stem
    (["--dataset", "digits", "--no-cifar-stem"], False),
    (["--dataset", "digits", "--backbone", "timm:vit_tiny_patch16_224"], False),  # no ResNet stem
    (["--dataset", "folder", "--data-path", "FOLDER"], False),  # imagenet preset
])
def test_cifar_stem_is_resolved_with_the_other_arguments(argv, stem, image_folder):
    pretrain = importlib.import_module("pretrain")
    argv = [str(image_folder) if a == "FOLDER" else a for a in argv]
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(argv))
    assert args.cifar_stem is stem
    net = pretrain.build_backbone(args)
    if hasattr(net, "conv1"):  # the stem built is the one resolved
        assert (net.conv1.kernel_size == (3, 3)) is stem


def test_unknown_backbone_lists_close_names(capsys):
    assert "resnet18" in pretrain_error(["--backbone", "resnet181"], capsys)


def test_bad_arguments_exit_nonzero_from_the_command_line(tmp_path):
    cmd = [sys.executable, str(EXAMPLES / "pretrain.py"), "--dataset", "folder", "--data-path",
           str(tmp_path / "missing")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


@pytest.mark.parametrize("script", ["knn_eval", "linear_eval"])
def test_eval_rejects_missing_checkpoint(script, tmp_path, capsys):
    module = importlib.import_module(script)
    args = module.get_args_parser().parse_args(["--checkpoint", str(tmp_path / "nope.pt")])
    with pytest.raises(SystemExit):
        module.main(args)
    assert "does not exist" in capsys.readouterr().err


def test_eval_needs_backbone_name_for_bare_weights(tmp_path, capsys):
    knn_eval = importlib.import_module("knn_eval")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "weights.pt")
    args = knn_eval.get_args_parser().parse_args(["--checkpoint", str(tmp_path / "weights.pt")])
    with pytest.raises(SystemExit):
        knn_eval.main(args)
    assert "pass --backbone" in capsys.readouterr().err


# ----------------------------------------------------------------------------- helpers
def test_split_is_deterministic_and_disjoint():
    data = importlib.import_module("data")
    train, val = data.split_indices(100, 0.1, seed=3)
    assert (train, val) == data.split_indices(100, 0.1, seed=3)
    assert len(val) == 10 and not set(train) & set(val) and len(train) + len(val) == 100
    assert val != data.split_indices(100, 0.1, seed=4)[1]


def test_digits_dataset_is_uint8_rgb_and_split():
    data = importlib.import_module("data")
    crops = data.PretrainViews(16)
    pretrain_set, classes = data.build_dataset("digits", None, "pretrain", crops)
    val_set, _ = data.build_dataset("digits", None, "val", data.eval_transform(16))
    views, label = data.SeededViews(pretrain_set, crops)[(0, 123)]
    assert views.dtype == torch.uint8 and views.shape == (2, 3, 16, 16) and 0 <= label < 10
    image, _ = val_set[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    assert classes == 10 and len(pretrain_set) + len(val_set) == 1797
    assert type(views) is torch.Tensor and type(image) is torch.Tensor  # collate, pickle cheaply


def test_mini_cifar_npz_loads():
    if not MINI_CIFAR.is_file():
        pytest.skip(f"{MINI_CIFAR} not present")
    data = importlib.import_module("data")
    train_set, classes = data.build_dataset("npz", str(MINI_CIFAR), "train",
                                            data.eval_transform(32))
    image, label = train_set[0]
    assert classes == 10 and image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_rng_state_round_trip():
    common = importlib.import_module("common")
    import random

    common.seed_everything(5)
    state = common.capture_rng_state()
    first = (torch.rand(3), np.random.rand(), random.random())
    common.seed_everything(6)
    common.restore_rng_state(state)
    second = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_truncate_log_drops_records_past_the_checkpoint(tmp_path):
    common = importlib.import_module("common")
    jsonl = common.JsonlWriter(tmp_path / "log.jsonl")
    csv = common.CsvWriter(tmp_path / "log.csv", ["step", "loss"])
    for step in range(1, 6):
        jsonl.write({"step": step, "loss": 1.0 / step})
        csv.write({"step": step, "loss": 1.0 / step})
    jsonl.close()
    csv.close()
    common.truncate_log(tmp_path / "log.jsonl", "step", 3)
    common.truncate_log(tmp_path / "log.csv", "step", 3)
    assert [r["step"] for r in read_jsonl(tmp_path / "log.jsonl")] == [1, 2, 3]
    assert (tmp_path / "log.csv").read_text().splitlines()[-1].startswith("3,")


# ----------------------------------------------------------------------------- linear evaluation
@pytest.mark.parametrize("preset, protocol", [("imagenet", "augment"), ("small", "features"),
                                              (None, "features")])
def test_linear_eval_defaults_are_the_papers(preset, protocol):
    """byol/configs/eval.py: 80 epochs, SGD Nesterov 0.9, base LR 0.2 x batch/256, no warm-up,
    no weight decay; batch 1024 (BYOL App. C.1). Only the protocol depends on the preset."""
    linear_eval = importlib.import_module("linear_eval")
    args = linear_eval.get_args_parser().parse_args(["--checkpoint", "unused"])
    args = linear_eval.resolve_args(args, preset)
    assert args.protocol == protocol and args.epochs == 80 and args.probe_batch_size == 1024
    assert args.base_lrs == [0.2] and args.peak_lrs == pytest.approx([0.8])
    assert args.weight_decay == 0.0


@pytest.mark.parametrize("argv, protocol, base_lrs, peak_lrs", [
    (["--protocol", "features"], "features", [0.2], [0.8]),
    (["--lr", "0.1", "--probe-batch-size", "512"], "augment", [0.1], [0.2]),
    (["--lrs", "0.05", "0.1", "0.4", "--probe-batch-size", "256"], "augment", [0.05, 0.1, 0.4],
     [0.05, 0.1, 0.4]),
])
def test_linear_eval_lr_flags_are_base_lrs(argv, protocol, base_lrs, peak_lrs):
    linear_eval = importlib.import_module("linear_eval")
    args = linear_eval.get_args_parser().parse_args(["--checkpoint", "unused", *argv])
    args = linear_eval.resolve_args(args, "imagenet")
    assert args.protocol == protocol and args.base_lrs == base_lrs
    assert args.peak_lrs == pytest.approx(peak_lrs)


@pytest.mark.parametrize("argv, message", [
    (["--lrs", "0.1", "-0.2"], "learning rates must be > 0"),
    (["--lr", "0"], "learning rates must be > 0"),
    (["--lr", "nan"], "learning rates must be > 0"),
    (["--epochs", "0"], "--epochs"),
    (["--weight-decay", "-1"], "--weight-decay"),
])
def test_linear_eval_rejects_bad_arguments(argv, message, capsys):
    linear_eval = importlib.import_module("linear_eval")
    args = linear_eval.get_args_parser().parse_args(["--checkpoint", "unused", *argv])
    with pytest.raises(SystemExit) as exc:
        linear_eval.resolve_args(args, None)
    assert exc.value.code not in (0, None) and message in capsys.readouterr().err


def test_linear_eval_lr_and_lrs_are_exclusive(capsys):
    linear_eval = importlib.import_module("linear_eval")
    with pytest.raises(SystemExit):
        linear_eval.get_args_parser().parse_args(["--checkpoint", "x", "--lr", "0.1", "--lrs",
                                                  "0.2"])
    assert "not allowed with argument" in capsys.readouterr().err


def _gradient_image(height: int, width: int) -> torch.Tensor:
    """uint8 (3, H, W): red grows left to right, green top to bottom (every crop/flip shows)."""
    cols = torch.linspace(0, 255, width).round().to(torch.uint8).expand(height, width)
    rows = torch.linspace(0, 255, height).round().to(torch.uint8).unsqueeze(1).expand(height,
                                                                                       width)
    return torch.stack([cols, rows, torch.full((height, width), 128, dtype=torch.uint8)])


def test_linear_eval_augment_views_random_train_deterministic_eval():
    linear_eval = importlib.import_module("linear_eval")
    train_view, val_view = linear_eval.protocol_views("augment")
    image = _gradient_image(40, 48)
    crop = train_view(16)
    first, second = crop(image), crop(image)
    assert first.shape == second.shape == (3, 16, 16) and first.dtype == torch.uint8
    assert not torch.equal(first, second)  # two passes over one image: two different crops
    views = [crop(image) for _ in range(40)]
    assert len({v.numpy().tobytes() for v in views}) == 40
    mirrored = [bool(v[0, :, 0].float().mean() > v[0, :, -1].float().mean()) for v in views]
    assert 5 <= sum(mirrored) <= 35  # random horizontal flips, p = 0.5
    sides = [int((v[0] > 0).sum()) for v in views]  # crops of different scales: other ramps
    assert len(set(sides)) > 1 or len({int(v[0].max()) - int(v[0].min()) for v in views}) > 1
    # Evaluation: deterministic, whatever the RNG; the official geometry (centre 224/256 of the
    # short side, offsets ((size - crop) + 1) // 2, resize to 224: a no-op here).
    centre = val_view(16, 20)
    torch.manual_seed(1)
    a = centre(image)
    torch.manual_seed(2)
    assert torch.equal(a, centre(image)) and a.shape == (3, 16, 16) and a.dtype == torch.uint8
    big = torch.randint(0, 256, (3, 256, 300), dtype=torch.uint8)
    assert torch.equal(val_view(224, 256)(big), big[:, 16:240, 38:262])
    assert linear_eval.protocol_views("features") == (None, None)
    with pytest.raises(ValueError, match="protocol must be one of"):
        linear_eval.protocol_views("auto")


class _CountingEncoder(nn.Module):
    """A fixed random projection of the images that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 4 * 4, 8)
        with torch.no_grad():  # the same projection in every run, whatever the global RNG
            self.proj.weight.copy_(torch.randn(8, 48, generator=torch.Generator().manual_seed(1)))
            self.proj.bias.zero_()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.proj(x.float().flatten(1))  # uint8 or float in [0, 1], as EvalEncoder


def _run_augment_protocol(lrs: list[float]):
    """train_heads_augmented + evaluate of linear_eval.py on 24 colour-coded 4x4 images."""
    from torch.utils.data import TensorDataset

    common = importlib.import_module("common")
    evaluation = importlib.import_module("evaluation")
    linear_eval = importlib.import_module("linear_eval")
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 3
    images = np.concatenate([class_images(rng, int(y), 1, 4) for y in labels])
    data = TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    encoder = _CountingEncoder()
    setup = evaluation.EvalSetup(encoder, data, data, 3, {})
    args = argparse.Namespace(amp="off", seed=0, probe_batch_size=8, workers=0, epochs=2,
                              weight_decay=0.0, peak_lrs=lrs, batch_size=16)
    run = common.DistInfo(0, 0, 1, torch.device("cpu"))
    heads = linear_eval.train_heads_augmented(setup, run, args)
    train_calls = encoder.calls
    return heads, train_calls, linear_eval.evaluate(encoder, heads, setup, run, args)


def test_linear_eval_augment_sweep_one_backbone_pass_per_batch_and_exact_heads():
    lrs = [0.01, 0.1, 1.0]
    heads, calls, result = _run_augment_protocol(lrs)
    assert calls == 1 + 2 * 3  # one pass for the feature size, then one per batch (2 x 24 / 8)
    assert len(result["linear_top1_per_lr"]) == 3 and result["lrs"] == lrs
    for i, lr in enumerate(lrs):
        alone, alone_calls, alone_result = _run_augment_protocol([lr])
        assert alone_calls == calls  # the number of heads does not change the backbone's work
        assert torch.equal(alone[0].weight, heads[i].weight)
        assert torch.equal(alone[0].bias, heads[i].bias)
        assert alone_result["linear_top1"] == result["linear_top1_per_lr"][i]
