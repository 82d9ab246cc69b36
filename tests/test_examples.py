"""The example scripts end to end on tiny generated data (one process and two under torchrun,
gloo); their arguments, recipes (vs the official code and solo-learn), data and helpers."""

from __future__ import annotations

import importlib
import json
import random
import shutil

import numpy as np
import pytest
import torch
import torchvision
from conftest import (MINI_CIFAR, TINY, assert_same_model, class_images, pretrain_error, read_log,
                      run_script)
from PIL import Image
from safetensors.torch import load_file
from torch import nn

common, data, knn_eval, linear_eval, pretrain, recipes = map(importlib.import_module, (
    "common", "data", "knn_eval", "linear_eval", "pretrain", "recipes"))
CHANCE = 100 / 3  # % top-1 of a guess among the fixtures' 3 colour-coded classes


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """root/{train,val}/class_{0,1,2}/*.png: 8 train and 2 val images per class, 20x20 px."""
    root, rng = tmp_path_factory.mktemp("folder"), np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for label in range(3):
            (d := root / split / f"class_{label}").mkdir(parents=True)
            for i, img in enumerate(class_images(rng, label, n, 20)):
                Image.fromarray(img.transpose(1, 2, 0)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def folder_run(image_folder, tmp_path_factory):
    """ResNet-18 with the CIFAR stem on the folder (the imagenet preset), 2 epochs, bf16."""
    out = tmp_path_factory.mktemp("folder_run")
    run_script("pretrain.py", "--dataset", "folder", "--data-path", image_folder, "--backbone",
               "resnet18", "--cifar-stem", *TINY, "--epochs", "2", "--knn-every", "1",
               "--save-every", "1", "--workers", "1", "--amp", "bf16", "--output-dir", out)
    return out


def parse(argv):
    """pretrain.py's resolved arguments for ``argv`` (each item passed through str)."""
    return pretrain.resolve_args(pretrain.get_args_parser().parse_args(list(map(str, argv))))


@pytest.mark.slow
def test_pretrain_writes_checkpoint_log_and_backbone_then_both_evaluations(folder_run, tmp_path):
    log = folder_run / "log.jsonl"
    steps, epochs = read_log(log, "step"), read_log(log, "epoch")
    assert [r["step"] for r in steps] == list(range(1, 7))  # 24 images / 8 = 3 steps x 2 epochs
    assert all(np.isfinite(r["loss"]) and 0 < r["projection_std"] < 1 for r in steps)
    # 2 epochs take the official 40-epoch row of the imagenet preset: tau starts at 0.97
    assert steps[0]["tau"] == pytest.approx(0.97) and steps[-1]["tau"] > steps[0]["tau"]
    assert [(r["knn_k"], r["knn_top1"] > CHANCE) for r in read_log(log, "knn_init")] == [(20, True)]
    assert [r["epoch"] for r in epochs] == [0, 1] and all(r["knn_top1"] > CHANCE for r in epochs)
    ckpt = torch.load(folder_run / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["epoch"] == 2 and {"optimizer", "scaler", "rng"} <= set(ckpt)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    for state in (torch.load(folder_run / "backbone.pt"),  # loaded strictly: no prefixes
                  load_file(folder_run / "backbone.safetensors")):
        (model := recipes.cifar_stem_(torchvision.models.resnet18())).load_state_dict(state)
        assert all(torch.equal(v, ckpt["model"][f"online_encoder.net.{k}"])
                   for k, v in model.state_dict().items())
    run_script("knn_eval.py", "--checkpoint", folder_run / "checkpoint.pt", "--k", "5", "10",
               "--workers", "0", "--output", tmp_path / "knn.json")
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert knn["knn_top1@5"] > CHANCE and knn["knn_top1@10"] > CHANCE
    assert (knn["num_train"], knn["num_val"], knn["feature_dim"]) == (24, 6, 512)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["features", "augment"])
def test_linear_eval_sweeps_lrs_in_one_pass(folder_run, tmp_path, protocol):
    base_lrs = [8.0, 32.0, 128.0]  # x batch 8 / 256: peak LRs 0.25, 1, 4
    proc = run_script("linear_eval.py", "--checkpoint", folder_run / "checkpoint.pt", "--epochs",
                      "10", "--protocol", protocol, "--probe-batch-size", "8", "--workers", "0",
                      "--lrs", *map(str, base_lrs), "--output", tmp_path / "linear.json")
    assert "best of 3 LRs" in proc.stdout and proc.stdout.count("<- best") == 1
    result = json.loads((tmp_path / "linear.json").read_text())
    assert result["base_lrs"] == base_lrs and result["lrs"] == pytest.approx([0.25, 1.0, 4.0])
    per_lr, best = result["linear_top1_per_lr"], result["best_index"]
    assert all(acc > 50.0 for acc in per_lr), per_lr  # 6 val images: > 50% is 4 right of 6
    assert result["linear_top1"] == max(per_lr) == per_lr[best] >= 80.0
    assert result["best_base_lr"] == base_lrs[best] and "linear_top5" not in result  # 3 classes
    assert result["backbone_frozen"] is True and result["protocol"] == protocol


@pytest.mark.slow
def test_two_processes_with_accumulation_then_distributed_evaluations(npz_file, tmp_path):
    run_script("pretrain.py", "--dataset", "npz", "--data-path", npz_file, "--backbone",
               "timm:test_resnet", *TINY, "--epochs", "2", "--accum-steps", "2", "--knn-every",
               "2", "--output-dir", out := tmp_path / "ddp", nproc=2)
    steps, epochs = (read_log(out / "log.jsonl", event) for event in ("step", "epoch"))
    assert [r["step"] for r in steps] == list(range(1, 11))  # 43 // 4 per process: 10 micro, 5
    assert epochs[0]["knn_top1"] is None and epochs[1]["knn_top1"] > CHANCE
    (bare := tmp_path / "bare").mkdir()  # no args.json beside the weights: flags must be given
    shutil.copy(out / "backbone.pt", bare / "weights.pt")
    run_script("knn_eval.py", "--checkpoint", bare / "weights.pt", "--backbone", "timm:test_resnet",
               "--dataset", "npz", "--data-path", npz_file, "--image-size", "16", "--k", "3",
               "--output", tmp_path / "knn.json", nproc=2)
    result = json.loads((tmp_path / "knn.json").read_text())
    assert (result["num_train"], result["num_val"], result["workers"]) == (43, 5, 0)
    assert result["knn_top1@3"] > CHANCE
    run_script("linear_eval.py", "--checkpoint", out / "checkpoint.pt", "--protocol", "augment",
               "--epochs", "2", "--probe-batch-size", "8", "--workers", "0", "--output",
               tmp_path / "linear.json", nproc=2)
    assert json.loads((tmp_path / "linear.json").read_text())["linear_top1"] > CHANCE


@pytest.mark.slow
def test_resume_continues_the_same_run(npz_file, tmp_path):
    """6 steps (with kNN monitoring) = 3 + resume, across an epoch (5 steps): losses, weights."""
    common_args = ["--dataset", "npz", "--data-path", npz_file, "--backbone", "timm:test_resnet",
                   *TINY, "--epochs", "2", "--workers", "0", "--max-steps"]
    for steps, out, extra in (("6", "straight", ["--knn-every", "1"]), ("3", "split", []),
                              ("6", "split", ["--resume", "auto"])):
        run_script("pretrain.py", *common_args, steps, *extra, "--output-dir", tmp_path / out)
    full, resumed = (read_log(tmp_path / d / "log.jsonl", "step") for d in ("straight", "split"))
    assert [r["step"] for r in resumed] == [r["step"] for r in full] == list(range(1, 7))
    assert all(a["loss"] == pytest.approx(b["loss"], abs=1e-6) and (a["lr"], a["tau"]) == (
        b["lr"], b["tau"]) for a, b in zip(full, resumed))
    assert_same_model(tmp_path / "straight/checkpoint.pt", tmp_path / "split/checkpoint.pt")


@pytest.mark.slow
def test_vit_at_another_size_and_init_from_our_own_backbone(npz_file, tmp_path):
    """A 224 px ViT trains and evaluates at 32 px; --init-from reads its run's args.json."""
    vit = ["--dataset", "npz", "--data-path", npz_file, *TINY, "--image-size", "32", "--epochs",
           "1", "--max-steps", "2", "--workers", "0"]
    run_script("pretrain.py", *vit, "--backbone", "timm:vit_tiny_patch16_224", "--token-pool",
               "mean", "--output-dir", out := tmp_path / "vit")
    run_script("knn_eval.py", "--checkpoint", out / "checkpoint.pt", "--k", "3", "--output",
               tmp_path / "knn.json")
    result = json.loads((tmp_path / "knn.json").read_text())
    assert result["feature_dim"] == 192 and result["image_size"] == 32
    args = parse([*vit, "--init-from", out / "backbone.safetensors"])
    assert args.backbone == "timm:vit_tiny_patch16_224"  # from the args.json beside the file
    start = pretrain.build_backbone(args).state_dict()
    assert all(torch.equal(v, start[k]) for k, v in torch.load(out / "backbone.pt").items())


@pytest.mark.parametrize("argv, world, message", [
    (["--dataset", "folder", "--data-path", "/nonexistent/imagenet"], 1, "does not exist"),
    (["--dataset", "cifar10", "--data-path", "/nonexistent"], 1, "--download"),
    (["--backbone", "resnet181"], 1, "closest names: ['resnet18', 'resnet18d'"),
    (["--batch-size", "2"], 4, "smaller than the number of processes"),
    (["--batch-size", "4", "--accum-steps", "2"], 2, ">= 2 images"),
    (["--sync-bn", "--device", "cpu"], 2, "needs CUDA"), (["--batch-size", "9"], 2, "divisible"),
    (["--warmup-epochs", "20", "--epochs", "10"], 1, "--warmup-epochs"),
    (["--resume", "/nonexistent/checkpoint.pt"], 1, "does not exist"),
    (["--init-from", "/nonexistent/r50.safetensors"], 1, "--init-from '/nonexistent"),
    (["--crop-min-scale", "0"], 1, "--crop-min-scale must lie in (0, 1]"),
    (["--keep-last", "-1"], 1, "--keep-last"), (["--tau", "1.5"], 1, "--tau must lie in [0, 1]"),
    (["--dataset", "folder"], 1, "needs --data-path"),
    (["--collapse-patience", "0"], 1, "--collapse-patience >= 1"),
])
def test_pretrain_rejects_bad_arguments(argv, world, message, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", str(world))  # validated before joining any process group
    assert message in pretrain_error(argv, capsys)


def test_help_exits_0_bad_arguments_exit_2_and_evals_name_what_is_missing(tmp_path, capsys):
    for script in (pretrain, knn_eval, linear_eval):
        with pytest.raises(SystemExit) as exc:
            script.get_args_parser().parse_args(["--help"])
        assert exc.value.code == 0 and "usage" in capsys.readouterr().out
    proc = run_script("pretrain.py", "--dataset", "folder", "--data-path", "/missing", check=False)
    assert (proc.returncode, proc.stderr[:7]) == (2, "error: ") and "Traceback" not in proc.stderr
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "weights.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    for checkpoint, message in (("nope.pt", "does not exist"), ("weights.pt", "pass --backbone"),
                                ("junk.pt", "does not load")):
        for script in (knn_eval, linear_eval):
            with pytest.raises(SystemExit) as exc:
                script.main(script.get_args_parser().parse_args(
                    ["--checkpoint", str(tmp_path / checkpoint)]))
            assert exc.value.code != 0 and message in capsys.readouterr().err, (script, message)


@pytest.mark.parametrize("epochs, expected", [  # byol/configs/byol.py _LR/_WD/_EMA_PRESETS
    (40, (0.45, 1e-6, 0.97)), (100, (0.45, 1e-6, 0.99)), (300, (0.3, 1e-6, 0.99)),
    (1000, (0.2, 1.5e-6, 0.996)), (200, (0.3, 1e-6, 0.99)), (600, (0.2, 1.5e-6, 0.996)),
    (10, (0.45, 1e-6, 0.97)),  # other lengths: the nearest official one on a log scale
])
def test_imagenet_preset_takes_the_official_settings_for_its_length(epochs, expected, image_folder):
    args = parse(argv := ["--dataset", "folder", "--data-path", image_folder, "--epochs", epochs])
    assert (args.base_lr, args.weight_decay, args.tau) == expected
    assert (args.lars_eta, args.lars_clip, args.warmup_epochs, args.batch_size, args.cifar_stem,
            args.head_output_bias) == (1e-3, False, min(10, epochs / 10), 4096, False, False)
    given = parse(argv + ["--base-lr", "0.1", "--tau", "0.9"])
    assert (given.base_lr, given.weight_decay, given.tau) == (0.1, expected[1], 0.9)


def test_small_preset_follows_solo_learn_and_digits_get_safe_views(npz_file):
    """solo-learn scripts/pretrain/cifar/byol.yaml (+ asymmetric.yaml, MEANS_N_STD)."""
    a = parse(["--dataset", "npz", "--data-path", npz_file])
    assert (a.base_lr, a.weight_decay, a.tau, a.lars_eta, a.lars_clip, a.batch_size, a.epochs,
            a.cifar_stem, a.head_output_bias, a.crop_min_scale, a.flip_p) == (
        1.0, 1e-5, 0.99, 0.02, True, 256, 1000, True, True, 0.08, 0.5)
    assert recipes.normalization("cifar10") == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert recipes.normalization("folder") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    digits = parse(["--dataset", "digits"])
    assert (digits.crop_min_scale, digits.flip_p, digits.image_size) == (0.4, 0.0, 16)
    assert parse(["--dataset", "digits", "--flip-p", "0.5", "--no-cifar-stem"]).flip_p == 0.5
    assert parse(["--backbone", "timm:vit_tiny_patch16_224"]).cifar_stem is False  # no ResNet
    optimizer = pretrain.build_optimizer(parse(["--no-lars-clip"]), nn.Linear(4, 2))
    assert optimizer.defaults["clip_lr"] is False


@pytest.mark.parametrize("dataset, world, device, expected", [
    ("folder", 8, "cuda", True), ("folder", 1, "cuda", False),  # official: BN over all processes
    ("cifar10", 8, "cuda", False), ("folder", 2, "cpu", False),  # solo-learn: one GPU; needs CUDA
])
def test_sync_batchnorm_default(dataset, world, device, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: device == "cuda")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "cifar-10-batches-py").mkdir()
    args = parse(["--dataset", dataset, "--data-path", tmp_path, "--batch-size", "64"])
    assert args.sync_bn is expected


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "timm:resnet18"])
def test_recipe_resnets_start_with_identity_residual_blocks(name):
    """The official ResNets zero-initialise each block's last BN scale: blocks start as identity."""
    net = recipes.create_backbone(name, zero_init_residual=True).eval()
    blocks = [m for m in net.modules() if type(m).__name__ in ("BasicBlock", "Bottleneck")]
    shortcut = [b for b in blocks if b.downsample is None]
    assert len(blocks) in (8, 16) and len(shortcut) >= len(blocks) - 4
    for block in shortcut:
        assert torch.equal(block(x := torch.randn(2, block.conv1.in_channels, 4, 4)), torch.relu(x))


def test_worker_crops_depend_only_on_seed_epoch_and_index_then_splits_and_data_sets():
    crops, images = data.PretrainViews(16), torch.randint(256, (10, 3, 24, 24), dtype=torch.uint8)
    dataset = data.SeededViews(data.TensorImageDataset(images, None, crops), crops)

    def epoch_items(epoch, replicas=1, rank=0, start=0):
        sampler = data.SeededSampler(dataset, num_replicas=replicas, rank=rank, seed=3)
        sampler.set_epoch(epoch)
        sampler.set_start(start)
        return {i: dataset[(i, s)][0] for i, s in sampler}
    full = epoch_items(0)
    assert len(full) == 10 and all(v.shape == (2, 3, 16, 16) for v in full.values())
    resumed = epoch_items(0, start=4)  # a run resumed mid-epoch
    assert len(resumed) == 6 and all(torch.equal(v, full[i]) for i, v in resumed.items())
    for rank in (0, 1):  # two processes see the crops one process would have seen
        assert all(torch.equal(v, full[i]) for i, v in epoch_items(0, 2, rank).items())
    assert not all(torch.equal(epoch_items(1)[i], full[i]) for i in full)  # new crops each epoch
    train, val = data.split_indices(100, 0.1, seed=3)
    assert (train, val) == data.split_indices(100, 0.1, seed=3) and not set(train) & set(val)
    assert len(val) == 10 and val != data.split_indices(100, 0.1, seed=4)[1]
    pretrain_set, classes = data.build_dataset("digits", None, "pretrain", data.PretrainViews(16))
    image, label = data.build_dataset("digits", None, "val", data.eval_transform(16))[0][0]
    assert classes == 10 and image.dtype == torch.uint8 and image.shape == (3, 16, 16)
    assert type(image) is torch.Tensor and 0 <= label < 10  # plain tensors: collate, pickle
    if MINI_CIFAR.is_file():
        train_set, classes = data.build_dataset("npz", str(MINI_CIFAR), "train",
                                                data.eval_transform(32))
        assert classes == 10 and train_set[0][0].shape == (3, 32, 32)


def test_rng_state_round_trip_and_log_truncation(tmp_path):
    common.seed_everything(5)
    state = common.capture_rng_state()
    first = (torch.rand(3), np.random.rand(), random.random())
    common.seed_everything(6)
    common.restore_rng_state(state)
    assert torch.equal(first[0], torch.rand(3)) and first[1:] == (np.random.rand(), random.random())
    log = common.RunLog(path := tmp_path / "log.jsonl", True)
    for step in range(1, 6):
        log.write("step", {"step": step, "loss": 1.0 / step})
    log.close()
    path.write_text(path.read_text() + '{"event": "step", "st')  # a run killed mid-write
    common.truncate_log(path, 3)  # on resume from step 3
    assert [r["step"] for r in read_log(path, "step")] == [1, 2, 3]
