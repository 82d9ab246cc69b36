"""byol_pytorch.eval: kNN by hand and in chunks, features, linear probes (sweeps, loaders, DDP)."""

from __future__ import annotations

import functools
from math import exp

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from byol_pytorch.eval import (LinearHeads, check_frozen, extract_features, fit_linear_probe,
                               knn_accuracy, knn_predict, linear_probe_accuracy)

X, Y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2
FIT = functools.partial(fit_linear_probe, num_classes=2, progress=False)
HEADS = LinearHeads(4, 2, 1.0)  # an nn.Module too: check_frozen's errors
DDP = dict(encoder=nn.Identity(), num_classes=6, lrs=[0.1, 1.0], epochs=3, progress=False)


def separable(seed: int, n: int = 1300, dim: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels of 6 classes from a random linear map: separable by hyperplanes, not clustered."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n, dim, generator=g)
    return x, (x @ torch.randn(dim, 6, generator=g)).argmax(1)


def test_knn_matches_a_hand_computation_and_any_chunk_size() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0], [-3.0, 0.0]])  # norms do not matter
    labels, query = torch.tensor([0, 0, 1, 2]), torch.tensor([[2.0, 0.0], [0.6, 0.8]])
    # cosine similarities: query 0 -> (1, 0.8, 0, -1), query 1 -> (0.6, 0.96, 0.8, -0.6)
    expected = torch.tensor([[exp(2.0) + exp(1.6), 0, 0], [exp(1.92), exp(1.6), 0]])
    torch.testing.assert_close(knn_predict(query, bank, labels, 3, k=2, temperature=0.5), expected)
    result = knn_accuracy(bank, labels, query, torch.tensor([0, 1]), k=(1, 2), num_classes=5)
    # k=1: query 1's only vote is class 0, so class 1 (no vote) is not a top-5 hit either
    assert result == {"knn_top1@1": 50, "knn_top5@1": 50, "knn_top1@2": 50, "knn_top5@2": 100}
    assert set(knn_accuracy(bank, labels, query, torch.tensor([0, 1]), k=2)) == {"knn_top1@2"}
    g = torch.Generator().manual_seed(0)
    bank, query = torch.randn(300, 16, generator=g) * 5, torch.randn(70, 16, generator=g)
    labels, targets = torch.randint(0, 7, (300,), generator=g), torch.randint(0, 7, (70,))
    (acc, scores), *others = [(knn_accuracy(bank, labels, query, targets, k=(5, 20), chunk_size=c),
                               knn_predict(query, bank, labels, 7, k=20, chunk_size=c))
                              for c in (1, 16, 1024)]
    for other_acc, other in others:  # the matmul blocking differs: equal up to float rounding
        torch.testing.assert_close(other, scores, rtol=1e-5, atol=1e-6)
        assert other_acc == acc and torch.equal(other.argmax(1), scores.argmax(1)) and len(acc) == 4


def test_extract_features_restores_modes_matches_forward_and_leaves_it_frozen() -> None:
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.AdaptiveAvgPool2d(1)).train()
    model[1].eval()  # a deliberately frozen submodule must stay frozen
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    loader = DataLoader(TensorDataset(torch.rand(10, 3, 8, 8), torch.arange(10) % 3), batch_size=4)
    feats, labels = extract_features(model, loader, progress=False)
    raw, _ = extract_features(model, loader, "cpu", normalize=False, progress=False)
    assert model.training and model[0].training and not model[1].training
    check_frozen(before, model)  # eval-mode forwards change nothing
    expected = torch.cat([model.eval()(x).flatten(1) for x, _ in loader]).detach()
    torch.testing.assert_close(raw, expected)
    torch.testing.assert_close(feats, nn.functional.normalize(expected, dim=1))
    assert labels.tolist() == [i % 3 for i in range(10)] and labels.dtype == torch.int64
    model.train()(torch.rand(2, 3, 8, 8))  # BatchNorm's running statistics move in train mode
    with pytest.raises(RuntimeError, match="'1.running_mean' changed"):
        check_frozen(before, model)


@pytest.mark.parametrize("kwargs", [dict(), dict(batch_size=7),
                                    dict(optimizer="adamw", weight_decay=5e-4, normalize=True)])
def test_sweep_heads_equal_separate_fits(kwargs: dict) -> None:
    x, y, lrs = *separable(2, n=120), [1e-3, 0.05, 2.0]
    common = {**dict(num_classes=6, epochs=3, batch_size=32, progress=False, seed=4), **kwargs}
    probe = fit_linear_probe(x, y, lrs=lrs, **common)
    assert isinstance(probe, LinearHeads) and probe.lrs == tuple(lrs) and not probe.training
    for head, lr in zip(probe.heads, lrs):  # one head per LR: exactly what it would be alone
        alone = fit_linear_probe(x, y, lrs=lr, **common).heads[0]
        assert all(map(torch.equal, head.parameters(), alone.parameters())), f"lr {lr} differs"
    others = fit_linear_probe(x, y, lrs=lrs, **{**common, "seed": 5}).heads[0], probe.heads[-1]
    assert not any(torch.equal(probe.heads[0].weight, o.weight) for o in others)  # seed, LR matter


def test_loader_and_encoder_path_equals_tensor_path() -> None:
    (x, y), kw = separable(3, n=96), dict(num_classes=6, lrs=[0.1, 1.0], epochs=5, progress=False)
    encoder, calls = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(12)).train(), []  # (B, 12)
    encoder.register_forward_hook(lambda *_: calls.append(1))
    loader = DataLoader(TensorDataset(x.view(96, 3, 2, 2), y), batch_size=96)  # one full batch
    feats, _ = extract_features(encoder, loader, normalize=False, progress=False)
    via_encoder = fit_linear_probe(loader, encoder=encoder, **kw)
    assert len(calls) == 1 + 5  # one encoder pass per batch, whatever the number of heads
    assert encoder.training and not encoder[1].running_mean.any()  # eval mode, then restored
    on_features = fit_linear_probe(feats, y, batch_size=96, **kw)
    for a, b in zip(via_encoder.parameters(), on_features.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # batch order: rounding only
    assert linear_probe_accuracy(via_encoder, loader, encoder=encoder) == \
        linear_probe_accuracy(via_encoder, feats, y)


def test_probe_learns_and_picks_the_best_lr() -> None:
    (x, y), rng, lrs = separable(6), torch.get_rng_state(), [1e-6, 0.5, 1e-5]
    probe = fit_linear_probe(x[:1000], y[:1000], num_classes=6, lrs=lrs,
                             epochs=10, batch_size=64, progress=False)
    assert torch.equal(rng, torch.get_rng_state())  # a private generator
    r = linear_probe_accuracy(probe, x[1000:], y[1000:])
    small, good, smaller = r["linear_top1_per_lr"]
    assert good >= 88.0 and max(small, smaller) < 50.0  # a tiny LR stays near the N(0, 0.01) init
    assert (r["best_index"], r["best_lr"], r["linear_top1"], r["lrs"]) == (1, 0.5, good, lrs)
    assert r["linear_top5"] == r["linear_top5_per_lr"][1] >= 99.0


@pytest.mark.parametrize("fn, args, kwargs, error, match", [
    (FIT, (X[0], Y), {}, ValueError, "float \\(N, D\\) tensor"),
    (FIT, (X, Y[:7]), {}, ValueError, "integer tensor of shape \\(8,\\)"),
    (FIT, (X, Y.float()), {}, ValueError, "integer tensor"),
    (FIT, (X, Y + 1), {}, ValueError, "must lie in \\[0, num_classes=2\\)"),
    (FIT, (X, Y), dict(lrs=0.0), ValueError, "lrs must be a number > 0"),
    (FIT, (X, Y), dict(lrs=[0.1, float("nan")]), ValueError, "lrs must be a number > 0"),
    (FIT, (X, Y), dict(lrs=[]), ValueError, "non-empty sequence"),
    (FIT, (X, Y), dict(optimizer="lbfgs"), ValueError, "optimizer must be sgd or adamw"),
    (FIT, (X, Y), dict(epochs=0), ValueError, "epochs must be a positive int"),
    (FIT, (X[:0], Y[:0]), {}, ValueError, "number of training batches"),
    (FIT, (X, Y), dict(encoder=nn.Identity()), TypeError, "labels must be None"),
    (linear_probe_accuracy, (HEADS, torch.zeros(8, 5), Y), {}, ValueError,
     "features must be \\(B, 4\\), not \\[8, 5\\]"),
    (linear_probe_accuracy, (HEADS, X, Y + 1), {}, ValueError, "must lie in"),
    (linear_probe_accuracy, (HEADS, DataLoader(TensorDataset(X, Y + 1), batch_size=4)),
     dict(encoder=nn.Identity()), ValueError, "loader labels must lie in"),
    (linear_probe_accuracy, (nn.Linear(4, 2), X, Y), {}, TypeError, "LinearHeads"),
    (knn_accuracy, (X, Y, X, Y), dict(k=9), ValueError, "exceeds the bank size 8"),
    (knn_accuracy, (X, Y, X, Y), dict(k=3, temperature=0.0), ValueError, "temperature must be > 0"),
    (knn_accuracy, (X, Y, X, Y), dict(k=3, num_classes=1), ValueError, "must lie in"),
    (knn_predict, (torch.zeros(3, 5), X, Y, 2), dict(k=3), ValueError,
     "query/test features must be a \\(Q, D=4\\)"),
    (extract_features, (nn.Identity(), [torch.zeros(2, 3)]), {}, TypeError, "\\(images, labels\\)"),
    (check_frozen, (HEADS.state_dict(), HEADS), {}, ValueError, "shares memory"),  # an alias
    (check_frozen, ({"heads.0.weight": X}, HEADS), {}, RuntimeError, "keys differ"),
    (check_frozen, ({}, {}), {}, TypeError, "nn.Module")])
def test_bad_input_raises_clear_errors(fn, args: tuple, kwargs: dict, error: type, match: str):
    with pytest.raises(error, match=match):
        fn(*args, **kwargs)


def ddp_worker(rank: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=2)
    torch.set_num_threads(1)
    data = TensorDataset(*separable(7, n=64))  # each rank: every other image of each batch
    loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, 2, rank, False))
    probe = fit_linear_probe(loader, **DDP)
    result = linear_probe_accuracy(probe, loader, encoder=nn.Identity())
    torch.save((probe.state_dict(), result), f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_process_on_the_union(tmp_path) -> None:
    mp.spawn(ddp_worker, args=(str(tmp_path),), nprocs=2, join=True)
    (state, result), (state1, result1) = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    x, y = separable(7, n=64)
    one = fit_linear_probe(DataLoader(TensorDataset(x, y), batch_size=16), **DDP)
    for key, value in state.items():
        assert torch.equal(value, state1[key]), f"{key} differs across ranks"
        torch.testing.assert_close(value, one.state_dict()[key], rtol=1e-5, atol=1e-6)
    one.load_state_dict(state)  # the ranks' probe
    assert result == result1 == linear_probe_accuracy(one, x, y)  # counts summed over ranks
