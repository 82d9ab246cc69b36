"""kNN against a hand computation and across chunk sizes, feature extraction, linear probes (a
sweep equals separate fits, the loader path equals the tensor path, two processes equal one),
input errors, check_frozen."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from byol_pytorch.eval import (LinearHeads, check_frozen, extract_features, fit_linear_probe,
                               knn_accuracy, knn_predict, linear_probe_accuracy)


def test_knn_matches_a_hand_computation() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-3.0, 0.0]])  # norms do not matter
    labels, query = torch.tensor([0, 0, 1, 2]), torch.tensor([[2.0, 0.0], [0.6, 0.8]])
    # cosine similarities: query 0 -> (1, 0.8, 0, -1), query 1 -> (0.6, 0.96, 0.8, -0.6)
    scores = knn_predict(query, bank, labels, 3, k=2, temperature=0.5)
    e = math.exp
    expected = torch.tensor([[e(2.0) + e(1.6), 0, 0], [e(1.92), e(1.6), 0]])
    torch.testing.assert_close(scores, expected)
    result = knn_accuracy(bank, labels, query, torch.tensor([0, 1]), k=(1, 2), num_classes=5)
    # k=1: query 1's only vote is class 0, so class 1 (no vote) is not a top-5 hit either
    assert result == {"knn_top1@1": 50.0, "knn_top5@1": 50.0, "knn_top1@2": 50.0,
                      "knn_top5@2": 100.0}
    assert set(knn_accuracy(bank, labels, query, torch.tensor([0, 1]), k=2)) == {"knn_top1@2"}


def test_knn_chunking_gives_identical_results() -> None:
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(300, 16, generator=g) * 5, torch.randn(70, 16, generator=g)
    labels, targets = torch.randint(0, 7, (300,), generator=g), torch.randint(0, 7, (70,))
    results = [knn_accuracy(bank, labels, query, targets, k=(5, 20), chunk_size=c)
               for c in (1, 16, 1024)]
    assert results[0] == results[1] == results[2] and len(results[0]) == 4
    scores = [knn_predict(query, bank, labels, 7, k=20, chunk_size=c) for c in (1, 16, 1024)]
    for other in scores[1:]:  # the matmul blocking differs: equal up to float rounding
        torch.testing.assert_close(other, scores[0], rtol=1e-5, atol=1e-6)
        assert torch.equal(other.argmax(1), scores[0].argmax(1))


def test_extract_features_restores_modes_and_matches_forward() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.AdaptiveAvgPool2d(1)).train()
    model[1].eval()  # a deliberately frozen submodule must stay frozen
    loader = DataLoader(TensorDataset(torch.rand(10, 3, 8, 8), torch.arange(10) % 3), batch_size=4)
    feats, labels = extract_features(model, loader, progress=False)
    raw, _ = extract_features(model, loader, "cpu", normalize=False, progress=False)
    assert model.training and model[0].training and not model[1].training
    with torch.no_grad():
        expected = torch.cat([model.eval()(x).flatten(1) for x, _ in loader])
    torch.testing.assert_close(raw, expected)
    torch.testing.assert_close(feats, nn.functional.normalize(expected, dim=1))
    assert labels.tolist() == [i % 3 for i in range(10)] and labels.dtype == torch.int64
    with pytest.raises(TypeError, match="\\(images, labels\\)"):
        extract_features(model, [torch.rand(2, 3, 8, 8)], progress=False)


def _separable(seed: int, n: int = 1300, dim: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of 6 classes from a random linear map: separable by hyperplanes, not clustered."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, dim, generator=g)
    return x, (x @ torch.randn(dim, 6, generator=g)).argmax(1)


@pytest.mark.parametrize("kwargs", [dict(), dict(batch_size=7),
                                    dict(optimizer="adamw", weight_decay=5e-4, normalize=True)])
def test_sweep_heads_equal_separate_fits(kwargs: dict) -> None:
    x, y = _separable(2, n=120)
    lrs = [1e-3, 0.05, 2.0]
    common = {**dict(num_classes=6, epochs=3, batch_size=32, progress=False, seed=4), **kwargs}
    probe = fit_linear_probe(x, y, lrs=lrs, **common)
    assert isinstance(probe, LinearHeads) and probe.lrs == tuple(lrs) and not probe.training
    for i, lr in enumerate(lrs):  # one head per LR: exactly what it would be alone
        alone = fit_linear_probe(x, y, lrs=lr, **common).heads[0]
        assert torch.equal(probe.heads[i].weight, alone.weight), f"head {i} (lr {lr}) differs"
        assert torch.equal(probe.heads[i].bias, alone.bias), f"head {i} (lr {lr}) differs"
    assert not torch.equal(probe.heads[0].weight, probe.heads[-1].weight)  # the LRs mattered
    other_seed = fit_linear_probe(x, y, lrs=lrs, **{**common, "seed": 5})
    assert not torch.equal(other_seed.heads[0].weight, probe.heads[0].weight)


class _CountingEncoder(nn.Module):
    """Images (B, 3, 2, 2) -> (B, 12) through BatchNorm (frozen only in eval mode); counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.bn, self.calls = nn.BatchNorm1d(12), 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.bn(images.flatten(1))


def test_loader_and_encoder_path_equals_tensor_path() -> None:
    x, y = _separable(3, n=96)
    encoder = _CountingEncoder().train()
    loader = DataLoader(TensorDataset(x.view(96, 3, 2, 2), y), batch_size=96)  # one full batch
    feats, _ = extract_features(encoder, loader, normalize=False, progress=False)
    kw = dict(num_classes=6, lrs=[0.1, 1.0], epochs=5, progress=False)
    encoder.calls = 0
    via_encoder = fit_linear_probe(loader, encoder=encoder, **kw)
    assert encoder.calls == 5  # one encoder pass per batch, whatever the number of heads
    assert encoder.training and not encoder.bn.running_mean.any()  # eval mode, then restored
    on_features = fit_linear_probe(feats, y, batch_size=96, **kw)
    for a, b in zip(via_encoder.parameters(), on_features.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # batch order: rounding only
    assert linear_probe_accuracy(via_encoder, loader, encoder=encoder) == \
        linear_probe_accuracy(via_encoder, feats, y)


def test_probe_learns_and_picks_the_best_lr() -> None:
    x, y = _separable(6)
    rng = torch.get_rng_state()
    probe = fit_linear_probe(x[:1000], y[:1000], num_classes=6, lrs=[1e-6, 0.5, 1e-5],
                             epochs=10, batch_size=64, progress=False)
    assert torch.equal(rng, torch.get_rng_state())  # a private generator
    result = linear_probe_accuracy(probe, x[1000:], y[1000:])
    small, good, smaller = result["linear_top1_per_lr"]
    assert good >= 88.0 and max(small, smaller) < 50.0  # a tiny LR stays near the N(0, 0.01) init
    assert (result["best_index"], result["best_lr"], result["linear_top1"]) == (1, 0.5, good)
    assert result["linear_top5"] == result["linear_top5_per_lr"][1] >= 99.0
    assert result["lrs"] == [1e-6, 0.5, 1e-5]


X, Y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((X[0], Y), {}, ValueError, "float \\(N, D\\) tensor"),
    ((X, Y[:7]), {}, ValueError, "integer tensor of shape \\(8,\\)"),
    ((X, Y.float()), {}, ValueError, "integer tensor"),
    ((X, Y + 1), {}, ValueError, "must lie in \\[0, num_classes=2\\)"),
    ((X, Y), dict(lrs=0.0), ValueError, "lrs must be a number > 0"),
    ((X, Y), dict(lrs=[0.1, float("nan")]), ValueError, "lrs must be a number > 0"),
    ((X, Y), dict(lrs=[]), ValueError, "non-empty sequence"),
    ((X, Y), dict(optimizer="lbfgs"), ValueError, "optimizer must be sgd or adamw"),
    ((X, Y), dict(epochs=0), ValueError, "epochs must be a positive int"),
    ((X[:0], Y[:0]), {}, ValueError, "number of training batches"),
    ((X, Y), dict(encoder=nn.Identity()), TypeError, "labels must be None"),
])
def test_fit_rejects_bad_input(args: tuple, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        fit_linear_probe(*args, **{"num_classes": 2, "progress": False, **kwargs})


def test_evaluation_rejects_bad_input() -> None:
    probe = fit_linear_probe(X, Y, num_classes=2, epochs=1, progress=False)
    with pytest.raises(ValueError, match="features must be \\(B, 4\\), not \\[8, 5\\]"):
        linear_probe_accuracy(probe, torch.randn(8, 5), Y)
    with pytest.raises(ValueError, match="must lie in"):
        linear_probe_accuracy(probe, X, Y + 1)
    loader = DataLoader(TensorDataset(X, Y + 1), batch_size=4)
    with pytest.raises(ValueError, match="loader labels must lie in"):
        linear_probe_accuracy(probe, loader, encoder=nn.Identity())
    with pytest.raises(TypeError, match="LinearHeads"):
        linear_probe_accuracy(nn.Linear(4, 2), X, Y)
    for kwargs, match in [(dict(k=9), "exceeds the bank size 8"), (dict(temperature=0.0),
                          "temperature must be > 0"), (dict(num_classes=1), "must lie in")]:
        with pytest.raises(ValueError, match=match):
            knn_accuracy(X, Y, X, Y, **{"k": 3, **kwargs})
    with pytest.raises(ValueError, match="query/test features must be a \\(Q, D=4\\)"):
        knn_predict(torch.randn(3, 5), X, Y, 2, k=3)


def test_check_frozen() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.eval()(torch.randn(5, 4))
    check_frozen(before, model)  # an eval-mode forward changes nothing
    model.train()(torch.randn(5, 4))  # BatchNorm's running statistics move in train mode
    with pytest.raises(RuntimeError, match="'1.running_mean' changed"):
        check_frozen(before, model)
    with pytest.raises(ValueError, match="shares memory"):
        check_frozen(model.state_dict(), model)  # aliases the model: would always be equal
    with pytest.raises(RuntimeError, match="keys differ"):
        check_frozen({"0.weight": before["0.weight"]}, model)
    with pytest.raises(TypeError, match="nn.Module"):
        check_frozen(before, before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    data = TensorDataset(*_separable(7, n=64))  # each rank: every other image of each batch
    loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, 2, rank, False))
    probe = fit_linear_probe(loader, encoder=nn.Identity(), num_classes=6, lrs=[0.1, 1.0],
                             epochs=3, progress=False)
    result = linear_probe_accuracy(probe, loader, encoder=nn.Identity())
    torch.save((probe.state_dict(), result), os.path.join(out, f"{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_union(tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    (state, result), (state1, result1) = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    x, y = _separable(7, n=64)
    one = fit_linear_probe(DataLoader(TensorDataset(x, y), batch_size=16), encoder=nn.Identity(),
                           num_classes=6, lrs=[0.1, 1.0], epochs=3, progress=False)
    for key, value in state.items():
        assert torch.equal(value, state1[key]), f"{key} differs across ranks"
        torch.testing.assert_close(value, one.state_dict()[key], rtol=1e-5, atol=1e-6)
    probe = LinearHeads(12, 6, [0.1, 1.0])
    probe.load_state_dict(state)
    assert result == result1 == linear_probe_accuracy(probe, x, y)  # counts summed over ranks
