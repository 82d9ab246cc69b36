"""python -m byol_pytorch.convert IN OUT: a BYOL checkpoint of deepmind-research (such as
pretrain_res50x1.pkl) -> the torchvision ResNet state dict in OUT (.safetensors, .pth or .pt)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torchvision

from byol_pytorch.deepmind import load_deepmind_checkpoint


def _torchvision_name(model: torch.nn.Module) -> str | None:
    """The torchvision ResNet with exactly ``model``'s keys and shapes (ResNet-50/101/152 x1)."""
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for name in ("resnet50", "resnet101", "resnet152"):
        with torch.device("meta"):
            tv = torchvision.models.get_model(name, num_classes=getattr(model.fc, "out_features",
                                                                        1000))
        if {k: v.shape for k, v in tv.state_dict().items() if k in shapes} == shapes:
            return name
    return None


def main(argv: list[str] | None = None) -> None:
    """Convert and say what the file holds; a user mistake exits 1 with a one-line error."""
    parser = argparse.ArgumentParser(prog="python -m byol_pytorch.convert", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="the .pkl file DeepMind released")
    parser.add_argument("output", type=Path, help="the file to write: .safetensors, .pth or .pt")
    parser.add_argument("--target", action="store_true", help="the target network, not the online")
    parser.add_argument("--no-classifier", action="store_true", help="leave out the classifier")
    args = parser.parse_args(argv)
    if args.output.suffix not in (".safetensors", ".pth", ".pt"):
        parser.error(f"OUT must end in .safetensors, .pth or .pt, not {args.output.name!r}")
    try:
        model = load_deepmind_checkpoint(args.checkpoint, target=args.target,
                                         classifier=not args.no_classifier)
        state = model.state_dict()
        if args.output.suffix == ".safetensors":  # what the example scripts rebuild it from
            from safetensors.torch import save_file

            info = dict(same_padding=True, preset="imagenet", image_size=224, dataset="folder",
                        cifar_stem=False, architecture=model.deepmind_info["architecture"])
            name = _torchvision_name(model)
            save_file(state, str(args.output),
                      {"byol_torch": json.dumps({**info, **({"backbone": name} if name else {})})})
        else:
            torch.save(state, args.output)
    except ImportError:
        parser.exit(1, "error: writing .safetensors needs safetensors: pip install safetensors\n")
    except (OSError, ValueError) as e:
        parser.exit(1, f"error: {e}\n")
    info, fc = model.deepmind_info, isinstance(model.fc, torch.nn.Linear)
    print(f"{args.checkpoint}: {info['architecture']}, step {info['step']}, saved "
          f"{', '.join(info['saved'])}; heads: {', '.join(info['heads']) or 'none'}")
    print(f"wrote {args.output}: the {'target' if args.target else 'online'} encoder, BatchNorm "
          f"statistics{' and classifier (fc)' if fc else ''}, torchvision keys; for the official "
          "padding, call byol_pytorch.deepmind.same_padding_(model) after loading"
          + ("" if args.output.suffix == ".safetensors" else " (the example scripts read the "
             "architecture and padding from a .safetensors file's metadata)"))


if __name__ == "__main__":
    main()
