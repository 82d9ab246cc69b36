"""python -m byol_pytorch.convert IN OUT: a BYOL checkpoint of deepmind-research (such as
pretrain_res50x1.pkl) -> the torchvision ResNet state dict in OUT (.safetensors, .pth or .pt)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from byol_pytorch.deepmind import load_deepmind_checkpoint


def main(argv: list[str] | None = None) -> None:
    """Convert and say what the file holds; a user mistake exits 1 with a one-line error."""
    parser = argparse.ArgumentParser(prog="python -m byol_pytorch.convert", description=__doc__)
    parser.add_argument("checkpoint", type=Path, help="the .pkl file DeepMind released")
    parser.add_argument("output", type=Path, help="the file to write: .safetensors, .pth or .pt")
    parser.add_argument("--target", action="store_true", help="the target network, not the online")
    parser.add_argument("--no-classifier", dest="fc", action="store_false", help="no classifier")
    args = parser.parse_args(argv)
    if (suffix := args.output.suffix) not in (".safetensors", ".pth", ".pt"):
        parser.error(f"OUT must end in .safetensors, .pth or .pt, not {args.output.name!r}")
    try:
        model = load_deepmind_checkpoint(args.checkpoint, target=args.target, classifier=args.fc)
        info = model.deepmind_info
        if suffix == ".safetensors":  # with what the example scripts rebuild the network from
            from safetensors.torch import save_file

            arch = info["architecture"]  # networks.py's ResNet-50/101/152 x1 are torchvision's
            name = {f"ResNet-{d} x1": f"resnet{d}" for d in (50, 101, 152)}.get(arch)
            meta = dict(same_padding=True, preset="imagenet", image_size=224, dataset="folder",
                        cifar_stem=False, architecture=arch, **({"backbone": name} if name else {}))
            save_file(model.state_dict(), str(args.output), {"byol_torch": json.dumps(meta)})
        else:
            torch.save(model.state_dict(), args.output)
    except ImportError:
        parser.exit(1, "error: writing .safetensors needs safetensors: pip install safetensors\n")
    except (OSError, ValueError) as e:
        parser.exit(1, f"error: {e}\n")
    print(f"{args.checkpoint}: {info['architecture']}, step {info['step']}, saved "
          f"{', '.join(info['saved'])}; heads: {', '.join(info['heads']) or 'none'}")
    print(f"wrote {args.output}: the {'target' if args.target else 'online'} encoder, BatchNorm "
          f"statistics{' and classifier (fc)' if isinstance(model.fc, torch.nn.Linear) else ''}, "
          "torchvision keys; for the official padding, call byol_pytorch.deepmind.same_padding_"
          "(model) after loading" + ("" if suffix == ".safetensors" else " (the example scripts "
                                     "read the architecture and padding from a .safetensors file's "
                                     "metadata)"))


if __name__ == "__main__":
    main()
