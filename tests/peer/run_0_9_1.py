"""Run in byol-pytorch 0.9.1's own interpreter (``python -I``): train tiny learners, save results.

Usage: python -I run_0_9_1.py OUT.pt. Imports only torch, torchvision and that interpreter's
byol_pytorch, and refuses to run if byol_pytorch is not 0.9.1's. For each configuration in
CONFIGS it builds a seeded MobileNetV3-small learner (small, with BatchNorm), saves its initial
state_dict, trains it for three SGD steps on fixed views (SGD is linear in the gradients, so
rounding differences stay at rounding level; Adam's first steps amplify them to +-lr) recording
the losses, then saves its state_dict and, for a fixed batch, the outputs the tests compare with:
online encoder (projection, representation), target projection, prediction, embedding (eval
mode) and the loss (train mode).
"""

import copy
import sys

import torch
import torchvision
from byol_pytorch import byol_pytorch as peer

if not hasattr(peer, "MaybeSyncBatchnorm") or hasattr(peer, "first_conv_channels"):
    sys.exit(f"not byol-pytorch 0.9.1: {peer.__file__}")

SIZE = 32
STEPS = 3
CONFIGS = {
    "default": dict(hidden_layer="avgpool"),  # 0.9.1's defaults: simplicial embeddings on
    "plain": dict(hidden_layer="avgpool", use_simplicial_embeddings=False),
    "simsiam": dict(hidden_layer="avgpool", use_simplicial_embeddings=False, use_momentum=False),
    "output": dict(hidden_layer=-1, use_simplicial_embeddings=False),
}
COMMON = dict(image_size=SIZE, projection_size=16, projection_hidden_size=32, sem_num_simplices=4,
              sem_simplex_dim=4, moving_average_decay=0.9)


def identity(x):
    return x


def mirror(x):
    return x.flip(-1)


def backbone():
    """The backbone both sides build: no dropout, so that train-mode outputs are deterministic."""
    return torchvision.models.mobilenet_v3_small(num_classes=10, dropout=0.0)


def run(config):
    torch.manual_seed(0)
    learner = peer.BYOL(backbone(), augment_fn=identity, augment_fn2=mirror, **COMMON, **config)
    initial = copy.deepcopy(learner.state_dict())
    opt = torch.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)
    train = torch.rand(6, 3, SIZE, SIZE)
    losses = []
    for _ in range(STEPS):
        loss = learner(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if learner.use_momentum:
            learner.update_moving_average()
        losses.append(loss.item())
    x = torch.rand(4, 3, SIZE, SIZE)
    state = learner.state_dict()
    learner.eval()
    with torch.no_grad():
        projection, representation = learner.online_encoder(x)
        out = dict(projection=projection, representation=representation,
                   prediction=learner.online_predictor(projection),
                   embedding=learner(x, return_embedding=True, return_projection=False))
        if learner.target_encoder is not None:
            out["target"] = learner.target_encoder(x)[0]
    learner = copy.deepcopy(learner).train()  # a train-mode forward changes BN statistics
    with torch.no_grad():
        out["loss"] = learner(x)
    return dict(initial=initial, train=train, losses=losses, state_dict=state, x=x, outputs=out)


def helpers():
    """Outputs of 0.9.1's module-level helpers on seeded inputs."""
    torch.manual_seed(1)
    x, y = torch.randn(5, 12), torch.randn(5, 12)
    ma, current = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ma_before = copy.deepcopy(ma.state_dict())
    peer.update_moving_average(peer.EMA(0.75), ma, current)
    mlps = {name: fn(12, 4, 8) for name, fn in (("MLP", peer.MLP), ("SimSiamMLP", peer.SimSiamMLP))}
    return dict(x=x, y=y, loss=peer.cosine_loss_fn(x, y), sem=peer.SEM(12, 0.5, 3)(x),
                ema=peer.EMA(0.75).update_average(x, y), current=current.state_dict(),
                ma_before=ma_before, ma=ma.state_dict(),
                mlp_keys={k: list(m.state_dict()) for k, m in mlps.items()},
                mlp_shapes={k: [tuple(t.shape) for t in m.state_dict().values()]
                            for k, m in mlps.items()})


if __name__ == "__main__":
    runs = {name: run(config) for name, config in CONFIGS.items()}
    torch.save({**runs, "helpers": helpers()}, sys.argv[1])
