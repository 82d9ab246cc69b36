"""kNN against a brute-force reference, feature extraction, linear probe, frozen-backbone check."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from byol_pytorch.eval import (
    check_frozen,
    extract_features,
    knn_accuracy,
    knn_predict,
    linear_probe_accuracy,
    train_linear_probe,
)


def _brute_force_scores(query, bank, labels, num_classes, k, temperature):
    """Full similarity matrix, full sort, explicit loop over neighbours."""
    q = query.double() / query.double().norm(dim=1, keepdim=True)
    b = bank.double() / bank.double().norm(dim=1, keepdim=True)
    sim = q @ b.T
    scores = torch.zeros(len(query), num_classes, dtype=torch.float64)
    for i in range(len(query)):
        order = torch.sort(sim[i], descending=True).indices[:k]
        for j in order.tolist():
            scores[i, labels[j]] += torch.exp(sim[i, j] / temperature)
    return scores


def _brute_force_accuracy(scores, targets, top):
    hits = 0
    for row, target in zip(scores.tolist(), targets.tolist()):
        voted = sorted((c for c in range(len(row)) if row[c] > 0), key=lambda c: -row[c])
        hits += target in voted[:top]  # classes without a vote never count
    return 100.0 * hits / len(targets)


def _random_split(n_bank=300, n_query=70, dim=16, num_classes=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    bank = torch.randn(n_bank, dim, generator=g) * torch.rand(n_bank, 1, generator=g) * 5
    query = torch.randn(n_query, dim, generator=g)
    return (bank, torch.randint(0, num_classes, (n_bank,), generator=g),
            query, torch.randint(0, num_classes, (n_query,), generator=g))


@pytest.mark.parametrize("k", [1, 10, 300])
@pytest.mark.parametrize("chunk_size", [1, 16, 1024])
def test_knn_predict_matches_brute_force(k: int, chunk_size: int) -> None:
    bank, labels, query, _ = _random_split()
    scores = knn_predict(query, bank, labels, 7, k=k, temperature=0.1, chunk_size=chunk_size)
    assert scores.shape == (70, 7) and scores.dtype == torch.float32
    expected = _brute_force_scores(query, bank, labels, 7, k, 0.1)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=1e-6)
    assert torch.equal(scores.argmax(1), expected.argmax(1))
    # Different chunk shapes change the matmul blocking, so scores agree to float rounding only.
    reference = knn_predict(query, bank, labels, 7, k=k, temperature=0.1, chunk_size=70)
    torch.testing.assert_close(scores, reference, rtol=1e-5, atol=1e-6)
    assert torch.equal(scores.argmax(1), reference.argmax(1))


def test_knn_predict_other_dtypes() -> None:
    bank, labels, query, _ = _random_split()
    scores = knn_predict(query, bank, labels.int(), 7, k=10, temperature=0.1)
    half = knn_predict(query, bank.half(), labels, 7, k=10, temperature=0.1)
    double = knn_predict(query.double(), bank.double(), labels, 7, k=10, temperature=0.1)
    torch.testing.assert_close(double, scores, rtol=1e-4, atol=1e-5)
    assert half.dtype == torch.float32
    agree = (half.argmax(1) == scores.argmax(1)).float().mean()
    assert agree > 0.9


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_knn_accuracy_matches_brute_force(chunk_size: int) -> None:
    bank, labels, query, targets = _random_split()
    result = knn_accuracy(bank, labels, query, targets, k=(5, 20), temperature=0.07,
                          chunk_size=chunk_size)
    assert set(result) == {"knn_top1@5", "knn_top5@5", "knn_top1@20", "knn_top5@20"}
    for k in (5, 20):
        scores = _brute_force_scores(query, bank, labels, 7, k, 0.07)
        assert result[f"knn_top1@{k}"] == pytest.approx(_brute_force_accuracy(scores, targets, 1))
        assert result[f"knn_top5@{k}"] == pytest.approx(_brute_force_accuracy(scores, targets, 5))
    single = knn_accuracy(bank, labels, query, targets, k=20, chunk_size=chunk_size)
    assert single == {key: v for key, v in result.items() if key.endswith("@20")}


def test_knn_top5_ignores_classes_without_votes() -> None:
    bank, labels, query, targets = _random_split()
    result = knn_accuracy(bank, labels, query, targets, k=1)  # one vote: top-5 cannot beat top-1
    assert result["knn_top5@1"] == result["knn_top1@1"]


def test_knn_accuracy_few_classes_reports_top1_only() -> None:
    bank, _, query, _ = _random_split()
    result = knn_accuracy(bank, torch.randint(0, 3, (300,)), query, torch.randint(0, 3, (70,)),
                          k=5)
    assert set(result) == {"knn_top1@5"}


def _clusters(n_per_class, num_classes=10, dim=32, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=g)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return feats, labels, centres


def test_knn_well_separated_clusters_near_perfect() -> None:
    train, train_y, _ = _clusters(50, seed=0)
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(len(train), generator=g)
    test, test_y = train[perm[:100]] + 0.05 * torch.randn(100, 32, generator=g), train_y[perm[:100]]
    result = knn_accuracy(train, train_y, test, test_y, k=(20, 200))
    assert result["knn_top1@20"] >= 99.0 and result["knn_top1@200"] >= 99.0
    assert result["knn_top5@20"] == 100.0


def test_knn_random_labels_near_chance() -> None:
    g = torch.Generator().manual_seed(3)
    train, test = torch.randn(2000, 16, generator=g), torch.randn(1000, 16, generator=g)
    result = knn_accuracy(train, torch.randint(0, 10, (2000,), generator=g),
                          test, torch.randint(0, 10, (1000,), generator=g), k=20)
    assert 5.0 <= result["knn_top1@20"] <= 15.0  # chance is 10 %
    assert 40.0 <= result["knn_top5@20"] <= 60.0  # chance is 50 %


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(bank=torch.randn(10, 4, 1)), "floating \\(N, D\\)"),
        (dict(query=torch.randn(5, 3)), "feature sizes differ"),
        (dict(labels=torch.zeros(10)), "integer \\(N,\\) tensor"),
        (dict(labels=torch.zeros(9, dtype=torch.long)), "10 bank features but 9"),
        (dict(labels=torch.full((10,), -1)), "must lie in \\[0, num_classes"),
        (dict(k=11), "exceeds the bank size 10"),
        (dict(k=0), "positive int"),
        (dict(temperature=0.0), "temperature must be > 0"),
        (dict(num_classes=0), "num_classes must be a positive int"),
        (dict(chunk_size=0), "chunk_size must be a positive int"),
    ],
)
def test_knn_predict_errors(change: dict, match: str) -> None:
    args = dict(query=torch.randn(5, 4), bank=torch.randn(10, 4),
                labels=torch.zeros(10, dtype=torch.long), num_classes=3, k=3, temperature=0.1,
                chunk_size=4)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        knn_predict(args["query"], args["bank"], args["labels"], args["num_classes"], k=args["k"],
                    temperature=args["temperature"], chunk_size=args["chunk_size"])


def test_knn_accuracy_errors() -> None:
    bank, labels, query, targets = _random_split()
    with pytest.raises(ValueError, match="query/test features"):
        knn_accuracy(bank, labels, query[0], targets)
    with pytest.raises(ValueError, match="70 bank features but 69"):
        knn_accuracy(bank, labels, query, targets[:-1])
    with pytest.raises(ValueError, match="non-empty sequence"):
        knn_accuracy(bank, labels, query, targets, k=())
    with pytest.raises(ValueError, match="exceeds the bank size"):
        knn_accuracy(bank, labels, query, targets, k=(5, 301))
    with pytest.raises(ValueError, match="test_labels must lie in"):
        knn_accuracy(bank, labels, query, targets + 7, num_classes=7)
    with pytest.raises(ValueError, match="train_labels must lie in"):
        knn_accuracy(bank, labels, query, targets, num_classes=5)


class _Frozen(nn.Module):
    """Conv -> BN -> pool; returns (B, C, 1, 1) so that flattening is exercised."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.bn(self.conv(x)))


def _image_loader(n=10, batch_size=4):
    data = TensorDataset(torch.rand(n, 3, 8, 8), torch.arange(n) % 3)
    return DataLoader(data, batch_size=batch_size)


def test_extract_features_shapes_norms_and_modes() -> None:
    model = _Frozen().train()
    model.bn.eval()  # a deliberately frozen submodule must stay frozen
    running = model.bn.running_mean.clone()
    feats, labels = extract_features(model, _image_loader(), progress=False)
    assert feats.shape == (10, 6) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert labels.dtype == torch.int64 and labels.tolist() == [i % 3 for i in range(10)]
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(10))
    assert model.training and model.conv.training and not model.bn.training
    torch.testing.assert_close(model.bn.running_mean, running)
    assert not feats.is_inference() and not feats.requires_grad


def test_extract_features_raw_matches_eval_forward() -> None:
    model = _Frozen().eval()
    loader = _image_loader()
    feats, _ = extract_features(model, loader, "cpu", normalize=False, progress=False)
    with torch.no_grad():
        expected = torch.cat([model(x).flatten(1) for x, _ in loader])
    torch.testing.assert_close(feats, expected)
    assert not model.training


def test_extract_features_bad_loader_restores_mode() -> None:
    model = _Frozen().train()
    with pytest.raises(TypeError, match="\\(images, labels\\)"):
        extract_features(model, [torch.rand(2, 3, 8, 8)], progress=False)
    assert model.training and model.bn.training
    with pytest.raises(ValueError, match="no batch"):
        extract_features(model, [], progress=False)


def _separable(seed, n_train=1000, n_test=300, dim=12, num_classes=6):
    """Labels from a random linear map: separable by a hyperplane arrangement, not clustered."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(n_train + n_test, dim, generator=g)
    y = (x @ torch.randn(dim, num_classes, generator=g)).argmax(1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.mark.parametrize("kwargs", [dict(), dict(normalize=True, lr=1.0),
                                    dict(optimizer="adamw", lr=1e-2)])
def test_linear_probe_separable_data(kwargs: dict) -> None:
    train, train_y, test, test_y = _separable(0)
    result = linear_probe_accuracy(train, train_y, test, test_y, 6, epochs=30, batch_size=64,
                                   progress=False, **kwargs)
    assert set(result) == {"linear_top1", "linear_top5"}
    assert result["linear_top1"] >= 88.0 and result["linear_top5"] >= 99.0
    knn = knn_accuracy(train, train_y, test, test_y, k=20)  # local votes miss the global planes
    assert result["linear_top1"] > knn["knn_top1@20"] + 15.0


def test_linear_probe_deterministic_and_leaves_global_rng() -> None:
    train, train_y, _, _ = _separable(1)
    rng = torch.get_rng_state()
    a = train_linear_probe(train, train_y, 6, epochs=2, progress=False, seed=5)
    assert torch.equal(rng, torch.get_rng_state())
    b = train_linear_probe(train, train_y, 6, epochs=2, progress=False, seed=5)
    c = train_linear_probe(train, train_y, 6, epochs=2, progress=False, seed=6)
    assert isinstance(a, nn.Linear) and not a.training and a.weight.shape == (6, 12)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_linear_probe_errors() -> None:
    feats, labels = torch.randn(8, 4), torch.arange(8) % 2
    with pytest.raises(ValueError, match="optimizer must be one of"):
        train_linear_probe(feats, labels, 2, optimizer="lbfgs")
    with pytest.raises(ValueError, match="train_labels must lie in"):
        train_linear_probe(feats, labels, 1)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        train_linear_probe(feats, labels, 2, epochs=0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_linear_probe(feats, labels, 2, lr=-1.0)
    with pytest.raises(ValueError, match="integer \\(N,\\) tensor"):
        train_linear_probe(feats, labels.float(), 2)


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_check_frozen(tiny_net: nn.Module) -> None:
    before = _snapshot(tiny_net)
    tiny_net.eval()
    with torch.no_grad():
        tiny_net(torch.rand(2, 3, 8, 8))
    check_frozen(before, tiny_net)  # untouched: no error
    with torch.no_grad():
        tiny_net.bn.weight[0] += 1e-3
    with pytest.raises(RuntimeError, match="'bn.weight' changed"):
        check_frozen(before, tiny_net)


def test_check_frozen_rejects_train_mode_bn_drift_and_bad_snapshots(tiny_net: nn.Module) -> None:
    before = _snapshot(tiny_net)
    tiny_net.train()(torch.rand(2, 3, 8, 8))  # BN running statistics move in train mode
    with pytest.raises(RuntimeError, match="'bn.running_mean' changed"):
        check_frozen(before, tiny_net)
    with pytest.raises(ValueError, match="shares memory"):
        check_frozen(tiny_net.state_dict(), tiny_net)
    with pytest.raises(RuntimeError, match="keys differ"):
        check_frozen({"conv.weight": before["conv.weight"]}, tiny_net)
    with pytest.raises(TypeError, match="nn.Module"):
        check_frozen(before, before)
