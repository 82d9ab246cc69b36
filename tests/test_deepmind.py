"""DeepMind's BYOL checkpoints: converted networks against Haiku's (slow), the errors (fast)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from torch import nn

from byol_pytorch.convert import main as convert
from byol_pytorch.deepmind import load_deepmind_checkpoint, same_padding_


@pytest.fixture(scope="module", params=["50", "18", "tiny2"])
def haiku(request, tmp_path_factory):
    """(pretrain.pkl, Haiku's outputs) of the network deepmind/make_checkpoint.py builds."""
    if not (python := os.environ.get("BYOL_JAX_PYTHON")):
        pytest.skip("BYOL_JAX_PYTHON (an interpreter with jax, dm-haiku and dill) is not set")
    out = tmp_path_factory.mktemp(f"haiku{request.param}")
    proc = subprocess.run([python, Path(__file__).parent / "deepmind/make_checkpoint.py", out,
                           request.param], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield out / "pretrain.pkl", dict(np.load(out / "outputs.npz"))
    (out / "pretrain.pkl").unlink()  # up to 0.4 GB: pytest keeps the last runs' folders


def error(model: nn.Module, ref: dict, kind: str, size: int, suffix: str = "") -> float:
    """Max abs difference from Haiku's (B, D) representations and (B, 1000) logits (with an fc)."""
    x = torch.from_numpy(ref[f"{kind}_images{size}"]).to(model.conv1.weight.dtype)  # (B, H, W, 3)
    with torch.no_grad():  # a torchvision ResNet's children, in the order its forward runs them
        rep = nn.Sequential(*list(model.children())[:-1], nn.Flatten())(x.permute(0, 3, 1, 2))
        got = {"embedding": rep, "logits": model.fc(rep)}
    return max((v - torch.from_numpy(ref[f"{kind}_{k}{size}{suffix}"])).abs().max().item()
               for k, v in got.items() if k == "embedding" or isinstance(model.fc, nn.Linear))


@pytest.mark.slow
def test_matches_haiku(haiku):
    """Online and target: float32 within 1e-4 of Haiku at 224 and 225 px, float64 (suffix _64)
    exact; without the SAME padding off at 224 px, right only where all strided inputs are odd."""
    path, ref = haiku
    for kind in ("online", "target"):
        model = load_deepmind_checkpoint(path, target=kind == "target")
        plain = load_deepmind_checkpoint(path, target=kind == "target", same_padding=False)
        for size in (224, 225):
            measured = error(model, ref, kind, size), error(model.double(), ref, kind, size, "_64")
            model.float()
            print(f"{path.parent.name} {kind} {size}px: float32 {measured[0]:.1e}, float64 "
                  f"{measured[1]:.1e}, torchvision padding {error(plain, ref, kind, size):.1e}")
            assert measured[0] <= 1e-4 and measured[1] <= 1e-9
        assert error(plain, ref, kind, 224) > 0.05  # representations are O(1)
        assert error(plain, ref, kind, 225) <= 1e-4  # 225 -> 113 -> 57 -> 29 -> 15: all odd


@pytest.mark.slow
@pytest.mark.parametrize("haiku", ["50"], indirect=True)
def test_command_and_the_example_scripts(haiku, npz_file, tmp_path):
    """The command's files load into resnet50() (strict); the eval scripts and pretrain.py
    --init-from rebuild the official network from its .safetensors; a fine-tuned run evaluates."""
    import evaluation
    import knn_eval
    import pretrain
    from conftest import TINY, run_script

    (path, ref), out = haiku, tmp_path / "resnet50_byol.safetensors"
    proc = subprocess.run([sys.executable, "-m", "byol_pytorch.convert", path, out],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert all(fact in proc.stdout for fact in ("ResNet-50 x1", "step 1234", "online_params",
               "target_state", "opt_state", "classifier, predictor, projector",
               "BatchNorm statistics and classifier (fc)")), proc.stdout
    model = torchvision.models.resnet50().eval()
    model.load_state_dict(safetensors.torch.load_file(out))
    assert error(model, ref, "online", 225) <= 1e-4  # odd sizes: no padding fix needed
    assert error(same_padding_(model), ref, "online", 224) <= 1e-4
    convert([str(path), str(tmp_path / "t.pth"), "--target", "--no-classifier"])  # .pth, no fc
    model.fc = nn.Identity()
    model.load_state_dict(torch.load(tmp_path / "t.pth"))
    assert error(model, ref, "target", 224) <= 1e-4
    data = ["--dataset", "npz", "--data-path", str(npz_file), "--image-size", "32"]
    setup = evaluation.setup_eval(knn_eval.get_args_parser().parse_args(
        ["--checkpoint", str(out), *data]))
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(
        [*data, "--init-from", str(out)]))
    assert (args.backbone, args.same_padding, args.cifar_stem) == ("resnet50", True, False)
    for net in (setup.encoder.encoder.net, pretrain.build_backbone(args)):
        assert error(net.eval(), ref, "online", 224) <= 1e-4
    knn = ["--k", "3", "--output", tmp_path / "knn.json"]
    run_script("knn_eval.py", "--checkpoint", out, *data, *knn)
    run_script("pretrain.py", *data, "--init-from", out, *TINY[2:], "--max-steps", "2",
               "--output-dir", tmp_path / "run")
    run_script("knn_eval.py", "--checkpoint", tmp_path / "run/checkpoint.pt", *knn)
    assert json.loads((tmp_path / "knn.json").read_text())["feature_dim"] == 2048


def test_same_padding_is_tf_same():
    """Even sizes: 3x3/7x7 stride-2 convolutions and the max pool pad the odd pixel at the
    bottom/right (-inf for the pool); odd sizes as torchvision; the same tensors; idempotent."""
    x, pad = torch.randn(2, 3, 10, 10), torch.nn.functional.pad
    conv3, conv7, pool = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(3, 4, 7, 2, 3), nn.MaxPool2d(3, 2, 1)
    want = (torch.conv2d(pad(x, (0, 1, 0, 1)), conv3.weight, conv3.bias, 2),
            torch.conv2d(pad(x, (2, 3, 2, 3)), conv7.weight, conv7.bias, 2),
            torch.max_pool2d(pad(x, (0, 1, 0, 1), value=-float("inf")), 3, 2))
    for m, w in zip((conv3, conv7, pool), want):
        tensors, before, odd = [*m.state_dict(keep_vars=True).items()], m(x), m(x[..., 1:, 1:])
        same_padding_(same_padding_(m))
        assert not torch.allclose(before, w) and [*m.state_dict(keep_vars=True).items()] == tensors
        torch.testing.assert_close((m(x), m(x[..., 1:, 1:])), (w, odd))


class Payload:
    def __reduce__(self):  # what a malicious pickle would run on an unrestricted load
        return os.system, (f"touch {Path.cwd() / 'ran'}",)


def stem(batchnorm: str) -> dict:  # a checkpoint whose encoder has only a stem
    params = {"res_net50/~/initial_conv": {"w": np.zeros((7, 7, 3, 64), np.float32)},
              f"res_net50/~/{batchnorm}": {"scale": np.ones((1, 1, 1, 64), np.float32)}}
    return {"experiment_state": dict(online_params=params, online_state={}), "step": 3}


@pytest.mark.parametrize("obj, message", [
    (None, "No such file"), ("torch", "not a BYOL checkpoint of deepmind-research"),
    ({"state_dict": {}}, "not a BYOL pretraining checkpoint"),
    (stem("initial_batchnorm"), "is truncated"),  # cut at 9000 bytes
    (stem("final_batchnorm"), "pre-activation ResNet (resnet_v2=True)"),
    (stem("initial_batchnorm"), "not a ResNet v1 of byol/utils/networks.py"),
    ({"experiment_state": {"online_params": {"res_net50/~/block": {}}}}, "no ResNet encoder"),
    ({"experiment_state": {"online_params": {"x": Payload()}, "online_state": {}}}, "no ResNet")])
def test_errors(obj, message, tmp_path, monkeypatch, capsys):
    """A ValueError/OSError naming the problem; the command: one line, exit status 1 (2: OUT)."""
    monkeypatch.chdir(tmp_path)
    path, out = tmp_path / "in.pkl", tmp_path / "out.pth"
    if obj == "torch":  # a file users may mistake for one
        torch.save({"w": torch.zeros(3)}, path)
    elif obj is not None:
        path.write_bytes(pickle.dumps(obj, protocol=2)[:9000 if "truncated" in message else None])
    with pytest.raises((ValueError, OSError), match=re.escape(message)):
        load_deepmind_checkpoint(path)
    with pytest.raises(SystemExit, match="^1$"):
        convert([str(path), str(out)])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and not Path("ran").exists() and not out.exists()
    with pytest.raises(SystemExit, match="^2$"):
        convert([str(path), "out.bin"])
    assert "OUT must end in .safetensors, .pth or .pt" in capsys.readouterr().err
