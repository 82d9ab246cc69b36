"""``python -I run_0_9_1.py OUT.pt`` in byol-pytorch 0.9.1's interpreter (only torch, torchvision).

Per CONFIGS: a seeded learner's initial state, losses of 3 SGD steps on fixed views (SGD keeps
rounding at rounding level; Adam amplifies it to +-lr), final state and ``outputs`` on a batch;
0.9.1's helpers on seeded inputs. tests/test_compat.py imports it to build ours the same way.
"""

import copy
import sys

import torch
import torchvision
from byol_pytorch import byol_pytorch as peer

SIZE, STEPS = 32, 3
CONFIGS = {
    "default": dict(hidden_layer="avgpool"),  # 0.9.1's defaults: simplicial embeddings on
    "plain": dict(hidden_layer="avgpool", use_simplicial_embeddings=False),
    "simsiam": dict(hidden_layer="avgpool", use_simplicial_embeddings=False, use_momentum=False),
    "output": dict(hidden_layer=-1, use_simplicial_embeddings=False),
}
COMMON = dict(image_size=SIZE, projection_size=16, projection_hidden_size=32, sem_num_simplices=4,
              sem_simplex_dim=4, moving_average_decay=0.9)
identity, mirror = torch.nn.Identity(), torchvision.transforms.functional.hflip  # x.flip(-1)


def backbone():  # no dropout: train-mode outputs are deterministic
    return torchvision.models.mobilenet_v3_small(num_classes=10, dropout=0.0)


def outputs(learner, x):
    """Online projection/representation, prediction, embedding, target (eval); the train loss."""
    learner.eval()
    with torch.no_grad():
        projection, representation = learner.online_encoder(x)
        out = dict(projection=projection, representation=representation,
                   prediction=learner.online_predictor(projection),
                   embedding=learner(x, return_embedding=True, return_projection=False))
        if learner.target_encoder is not None:
            out["target"] = learner.target_encoder(x)[0]
        out["loss"] = copy.deepcopy(learner).train()(x)  # on a copy: it moves BN statistics
    return out


def run(config):
    torch.manual_seed(0)
    learner = peer.BYOL(backbone(), augment_fn=identity, augment_fn2=mirror, **COMMON, **config)
    initial = copy.deepcopy(learner.state_dict())
    opt = torch.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)
    train, losses = torch.rand(6, 3, SIZE, SIZE), []
    for _ in range(STEPS):
        opt.zero_grad()
        (loss := learner(train)).backward()
        opt.step()
        losses.append(loss.item())
        if learner.use_momentum:
            learner.update_moving_average()
    x = torch.rand(4, 3, SIZE, SIZE)
    return dict(initial=initial, train=train, losses=losses, state_dict=learner.state_dict(), x=x,
                outputs=outputs(learner, x))


def helpers():
    torch.manual_seed(1)
    x, y = torch.randn(5, 12), torch.randn(5, 12)
    ma, current = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    out = dict(x=x, y=y, loss=peer.cosine_loss_fn(x, y), sem=peer.SEM(12, 0.5, 3)(x),
               ema=peer.EMA(0.75).update_average(x, y), current=current.state_dict(),
               ma_before=copy.deepcopy(ma.state_dict()))
    peer.update_moving_average(peer.EMA(0.75), ma, current)
    mlps = {"MLP": peer.MLP(12, 4, 8), "SimSiamMLP": peer.SimSiamMLP(12, 4, 8)}
    return dict(out, ma=ma.state_dict(), mlps={
        k: [(n, tuple(t.shape)) for n, t in m.state_dict().items()] for k, m in mlps.items()})


if __name__ == "__main__":  # 0.9.1 defines BYOL in this module; ours imports it from byol.py
    if peer.BYOL.__module__ != peer.__name__ or not hasattr(peer, "MaybeSyncBatchnorm"):
        sys.exit(f"not byol-pytorch 0.9.1: {peer.__file__}")
    torch.save({**{name: run(c) for name, c in CONFIGS.items()}, "helpers": helpers()}, sys.argv[1])
