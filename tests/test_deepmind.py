"""DeepMind's BYOL checkpoints: converted networks checked against Haiku's own outputs (slow; the
official network is built and checkpointed in the interpreter BYOL_JAX_PYTHON names, with jax,
dm-haiku and dill) and the error paths of the loader and of the command (fast, no jax)."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from torch import nn

from byol_pytorch import load_deepmind_checkpoint
from byol_pytorch.convert import main as convert
from byol_pytorch.deepmind import same_padding_

HELPER = Path(__file__).parent / "deepmind" / "make_checkpoint.py"


@pytest.fixture(scope="module", params=["50", "18", "tiny2"])
def haiku(request, tmp_path_factory) -> Iterator[tuple[Path, dict]]:
    """(pretrain.pkl, Haiku's outputs) of the network tests/deepmind/make_checkpoint.py builds."""
    python = os.environ.get("BYOL_JAX_PYTHON")
    if not python:
        pytest.skip("BYOL_JAX_PYTHON (an interpreter with jax, dm-haiku and dill) is not set")
    out = tmp_path_factory.mktemp(f"haiku{request.param}")
    proc = subprocess.run([python, str(HELPER), str(out), request.param], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield out / "pretrain.pkl", dict(np.load(out / "outputs.npz"))
    (out / "pretrain.pkl").unlink()  # up to 0.4 GB: pytest keeps the last runs' folders


def outputs(model: nn.Module, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H, W, 3) Haiku images -> (representations, logits) of ``model`` in its dtype."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(model.conv1.weight.dtype)
    head, model.fc = model.fc, nn.Identity()
    with torch.no_grad():
        representation = model(x)
        model.fc = head
        return representation, model(x)


def error(model: nn.Module, ref: dict, kind: str, size: int, suffix: str = "") -> float:
    """Max abs difference from Haiku's representation and logits (float64 ones: suffix _64)."""
    got = outputs(model, ref[f"{kind}_images{size}"])
    want = (torch.from_numpy(ref[f"{kind}_{key}{size}{suffix}"]) for key in ("embedding", "logits"))
    return max((g - w).abs().max().item() for g, w in zip(got, want))


@pytest.mark.slow
@pytest.mark.parametrize("target", [False, True])
def test_matches_haiku(haiku, target):
    """float32 within 1e-4 of Haiku's float32 outputs at 224 and 225 px; float64 exact; without
    the SAME padding off at 224 px, and right only where every strided input is odd (225)."""
    path, ref = haiku
    kind = "target" if target else "online"
    model = load_deepmind_checkpoint(path, target=target)
    plain = load_deepmind_checkpoint(path, target=target, same_padding=False)
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
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_convert_command(haiku, suffix, tmp_path):
    """The command's file loads into a plain torchvision.models.resnet50() (strict);
    same_padding_ then gives Haiku's logits. It says what the checkpoint holds."""
    path, ref = haiku
    out = tmp_path / f"resnet50_byol{suffix}"
    proc = subprocess.run([sys.executable, "-m", "byol_pytorch.convert", str(path), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for fact in ("ResNet-50 x1", "step 1234", "online_params", "target_state", "opt_state",
                 "classifier, predictor, projector", "BatchNorm statistics and classifier (fc)"):
        assert fact in proc.stdout
    read = safetensors.torch.load_file if suffix == ".safetensors" else torch.load
    model = torchvision.models.resnet50()
    model.load_state_dict(read(out))
    assert error(same_padding_(model.eval()), ref, "online", 224) <= 1e-4
    assert error(model, ref, "online", 225) <= 1e-4
    # the target's encoder without the classifier: representations only
    assert convert([str(path), str(out), "--target", "--no-classifier"]) is None
    model.fc = nn.Identity()
    model.load_state_dict(read(out))
    got = outputs(model, ref["target_images224"])[0]
    assert torch.allclose(got, torch.from_numpy(ref["target_embedding224"]), atol=1e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("haiku", ["50"], indirect=True)
def test_converted_weights_through_init_from_and_the_eval_scripts(haiku, npz_file, tmp_path):
    """The converted .safetensors names its architecture and padding: the eval scripts and
    pretrain.py --init-from rebuild the official network from it (Haiku's outputs), and a run
    fine-tuned from it evaluates again."""
    from conftest import EXAMPLES, TINY, run_script
    sys.path.insert(0, str(EXAMPLES))
    import evaluation
    import knn_eval
    import pretrain

    path, ref = haiku
    converted = tmp_path / "resnet50_byol.safetensors"
    convert([str(path), str(converted)])
    data = ["--dataset", "npz", "--data-path", str(npz_file), "--image-size", "32"]
    setup = evaluation.setup_eval(knn_eval.get_args_parser().parse_args(
        ["--checkpoint", str(converted), *data]))
    args = pretrain.resolve_args(pretrain.get_args_parser().parse_args(
        [*data, "--init-from", str(converted)]))
    assert (args.backbone, args.same_padding, args.cifar_stem) == ("resnet50", True, False)
    for net in (setup.encoder.encoder.net, pretrain.build_backbone(args)):
        assert error(net.eval(), ref, "online", 224) <= 1e-4
    run_script("knn_eval.py", "--checkpoint", converted, *data, "--k", "3", "--output",
               tmp_path / "knn.json")
    run_script("pretrain.py", *data, "--init-from", converted, *TINY[2:], "--max-steps", "2",
               "--output-dir", tmp_path / "run")
    run_script("knn_eval.py", "--checkpoint", tmp_path / "run/checkpoint.pt", "--k", "3",
               "--output", tmp_path / "knn_run.json")
    assert json.loads((tmp_path / "knn_run.json").read_text())["feature_dim"] == 2048


def test_same_padding_is_tf_same():
    """Even sizes: 3x3/7x7 stride-2 convolutions and the max pool pad the odd pixel at the
    bottom/right (-inf for the pool); odd sizes as torchvision; weights, keys kept; idempotent."""
    x = torch.randn(2, 3, 10, 10)
    conv3, conv7, pool = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(3, 4, 7, 2, 3), nn.MaxPool2d(3, 2, 1)
    pad = torch.nn.functional.pad
    want = (torch.conv2d(pad(x, (0, 1, 0, 1)), conv3.weight, conv3.bias, 2),
            torch.conv2d(pad(x, (2, 3, 2, 3)), conv7.weight, conv7.bias, 2),
            torch.max_pool2d(pad(x, (0, 1, 0, 1), value=-float("inf")), 3, 2))
    odd = [m(x[..., :9, :9]) for m in (conv3, conv7, pool)]
    weight = conv3.weight
    for m, w, o in zip((conv3, conv7, pool), want, odd):
        assert not torch.allclose(m(x), w)
        same_padding_(same_padding_(m))
        torch.testing.assert_close(m(x), w)
        torch.testing.assert_close(m(x[..., :9, :9]), o)
    assert list(conv3.state_dict()) == ["weight", "bias"] and conv3.weight is weight


def write(path: Path, obj, cut: int | None = None) -> Path:
    data = pickle.dumps(obj, protocol=2)
    path.write_bytes(data[:cut])
    return path


class Payload:
    def __reduce__(self):  # what a malicious pickle would run on an unrestricted load
        return os.system, (f"touch {Path.cwd() / 'ran'}",)


def stem_only(tmp_path: Path, batchnorm: str) -> Path:
    params = {"res_net50/~/initial_conv": {"w": np.zeros((7, 7, 3, 64), np.float32)},
              f"res_net50/~/{batchnorm}": {"scale": np.ones((1, 1, 1, 64), np.float32)}}
    state = dict(online_params=params, online_state={}, target_params=params, target_state={})
    return write(tmp_path / "stem.pkl", {"experiment_state": state, "step": 3})


@pytest.mark.parametrize("case, message", [
    ("missing", "No such file"), ("state_dict", "not a BYOL pretraining checkpoint"),
    ("torch", "not a BYOL checkpoint of deepmind-research"), ("truncated", "is truncated"),
    ("resnet_v2", "pre-activation ResNet (resnet_v2=True)"), ("no_encoder", "no ResNet encoder"),
    ("no_groups", "not a ResNet v1 of byol/utils/networks.py"), ("code", "no ResNet encoder")])
def test_errors(case, message, tmp_path, monkeypatch, capsys):
    """A ValueError/OSError naming the problem from the loader; from the command, one line on
    stderr and exit status 1, no traceback. A pickle's code never runs."""
    monkeypatch.chdir(tmp_path)
    arrays = {"online_params": {"res_net50/~/block": {"w": np.zeros(4000, np.float32)}}}
    torch.save({"w": torch.zeros(3)}, tmp_path / "weights.pth")  # a file users may mistake for one
    path = {"missing": lambda: tmp_path / "none.pkl", "torch": lambda: tmp_path / "weights.pth",
            "state_dict": lambda: write(tmp_path / "sd.pkl", {"state_dict": {}}),
            "truncated": lambda: write(tmp_path / "cut.pkl", {"experiment_state": arrays}, 9000),
            "resnet_v2": lambda: stem_only(tmp_path, "final_batchnorm"),
            "no_groups": lambda: stem_only(tmp_path, "initial_batchnorm"),
            "no_encoder": lambda: write(tmp_path / "e.pkl", {"experiment_state": arrays}),
            "code": lambda: write(tmp_path / "c.pkl", {"experiment_state": {
                "online_params": {"x": Payload()}, "online_state": {}}})}[case]()
    with pytest.raises((ValueError, OSError), match=re.escape(message)):
        load_deepmind_checkpoint(path)
    with pytest.raises(SystemExit) as exit_:
        convert([str(path), str(tmp_path / "out.pth")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out.pth").exists()


def test_command_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        convert([str(stem_only(tmp_path, "initial_batchnorm")), str(tmp_path / "out.bin")])
    assert exit_.value.code == 2 and "OUT must end in .safetensors, .pth or .pt" in (
        capsys.readouterr().err)
