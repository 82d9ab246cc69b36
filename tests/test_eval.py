"""kNN against a brute-force reference, feature extraction, linear probes and the LR sweep (exact
equivalence with separate runs, the paper's optimiser and schedule), frozen-backbone check."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from byol_pytorch.eval import (
    PAPER_LINEAR_EVAL,
    LinearHeads,
    check_frozen,
    extract_features,
    knn_accuracy,
    knn_predict,
    linear_heads_loss,
    linear_probe_accuracy,
    linear_probe_optimizer,
    linear_probe_step,
    linear_probe_sweep,
    scale_lr,
    set_probe_lr,
    summarize_sweep,
    topk_hits,
    train_linear_probe,
    train_linear_probes,
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


@pytest.mark.parametrize("progress", [False, True])
def test_extract_features_iterates_the_loader_once(progress: bool) -> None:
    """One pass over the loader: a DataLoader with workers starts them once per call."""
    class CountingLoader:
        passes = 0

        def __init__(self) -> None:
            self.loader = _image_loader()

        def __iter__(self):
            CountingLoader.passes += 1
            return iter(self.loader)

        def __len__(self) -> int:
            return len(self.loader)

    feats, _ = extract_features(_Frozen().eval(), CountingLoader(), progress=progress)
    assert CountingLoader.passes == 1 and feats.shape[0] == 10


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


# ----------------------------------------------------------------------------- LR sweep
@pytest.mark.parametrize("kwargs", [dict(), dict(weight_decay=5e-4, normalize=True),
                                    dict(optimizer="adamw"), dict(batch_size=7)])
def test_sweep_heads_equal_separate_runs(kwargs: dict) -> None:
    """k heads in one pass == each head trained alone (same LR, seed, batch order): bit-exact."""
    train, train_y, _, _ = _separable(2, n_train=200)
    lrs = [1e-3, 0.05, 0.5, 2.0] if kwargs.get("optimizer") != "adamw" else [1e-4, 1e-2, 0.1]
    common = dict(epochs=3, batch_size=32, progress=False, seed=4)
    common.update(kwargs)
    heads = train_linear_probes(train, train_y, 6, lrs=lrs, **common)
    assert isinstance(heads, LinearHeads) and len(heads) == len(lrs) and not heads.training
    for i, lr in enumerate(lrs):
        alone = train_linear_probe(train, train_y, 6, lr=lr, **common)
        assert torch.equal(heads[i].weight, alone.weight), f"head {i} (lr {lr}) differs"
        assert torch.equal(heads[i].bias, alone.bias), f"head {i} (lr {lr}) differs"
    assert not torch.equal(heads[0].weight, heads[-1].weight)  # the LRs did matter


def test_sweep_accuracies_equal_separate_runs() -> None:
    train, train_y, test, test_y = _separable(3, n_train=300, n_test=100)
    lrs = [0.01, 0.1, 1.0]
    kw = dict(epochs=4, batch_size=64, progress=False, seed=1)
    sweep = linear_probe_sweep(train, train_y, test, test_y, 6, lrs=lrs, **kw)
    assert sweep["lrs"] == lrs and len(sweep["linear_top1_per_lr"]) == 3
    for i, lr in enumerate(lrs):
        alone = linear_probe_accuracy(train, train_y, test, test_y, 6, lr=lr, **kw)
        assert sweep["linear_top1_per_lr"][i] == alone["linear_top1"]
        assert sweep["linear_top5_per_lr"][i] == alone["linear_top5"]


def test_manual_loop_with_library_pieces_matches_train_linear_probes() -> None:
    """The augmented protocol's loop (LinearHeads + linear_probe_optimizer + linear_probe_step)
    trains exactly what train_linear_probes trains on the same batches."""
    train, train_y, _, _ = _separable(5, n_train=96)
    lrs = [0.1, 1.0]
    expected = train_linear_probes(train, train_y, 6, lrs=lrs, epochs=2, batch_size=32,
                                   progress=False, seed=9)
    gen = torch.Generator().manual_seed(9)
    heads = LinearHeads(12, 6, 2, generator=gen)
    opt = linear_probe_optimizer(heads, lrs)
    step, total = 0, 2 * 3
    for _ in range(2):
        perm = torch.randperm(96, generator=gen)
        for start in range(0, 96, 32):
            idx = perm[start:start + 32]
            linear_probe_step(heads, opt, train[idx], train_y[idx], step, total)
            step += 1
    for got, want in zip(heads.heads, expected.heads):
        assert torch.equal(got.weight, want.weight) and torch.equal(got.bias, want.bias)


def test_heads_start_equal_and_leave_global_rng() -> None:
    rng = torch.get_rng_state()
    heads = LinearHeads(10, 4, 3, seed=2)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(h.weight, heads[0].weight) for h in heads.heads)
    assert all(not h.bias.any() for h in heads.heads)
    assert 0.005 < heads[0].weight.std() < 0.02  # N(0, 0.01)
    assert heads(torch.randn(5, 10)).shape == (3, 5, 4)


def test_paper_optimizer_and_schedule_match_the_reference() -> None:
    """SGD, Nesterov momentum 0.9, no weight decay, LR 0.2 x batch / 256, cosine to 0 without
    warm-up (deepmind-research byol/configs/eval.py, byol/utils/schedules.py)."""
    ref = PAPER_LINEAR_EVAL
    assert (ref["base_lr"], ref["batch_size"], ref["epochs"]) == (0.2, 1024, 80)
    assert (ref["momentum"], ref["nesterov"], ref["weight_decay"], ref["warmup_steps"]) == \
        (0.9, True, 0.0, 0)
    peak = scale_lr(ref["base_lr"], ref["batch_size"])
    assert peak == pytest.approx(0.8) and scale_lr(0.2, 256) == pytest.approx(0.2)
    assert scale_lr(0.1, 4096) == pytest.approx(1.6)
    heads = LinearHeads(16, 10, 3)
    opt = linear_probe_optimizer(heads, [scale_lr(b, 1024) for b in (0.1, 0.2, 0.4)])
    assert type(opt) is torch.optim.SGD and len(opt.param_groups) == 3
    for group, head, base in zip(opt.param_groups, heads.heads, (0.1, 0.2, 0.4)):
        assert group["nesterov"] is True and group["momentum"] == 0.9
        assert group["weight_decay"] == 0.0 and group["dampening"] == 0.0
        assert group["peak_lr"] == pytest.approx(base * 4)
        assert {id(p) for p in group["params"]} == {id(head.weight), id(head.bias)}
    total = 80 * 1251  # 80 epochs of ImageNet at batch 1024
    official = [0.8 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(0, total + 1, 997)]
    ours = [set_probe_lr(opt, s, total)[1] for s in range(0, total + 1, 997)]
    assert ours == pytest.approx(official, rel=1e-12, abs=1e-15)
    assert set_probe_lr(opt, 0, total) == pytest.approx([0.4, 0.8, 1.6])  # no warm-up
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.4, 0.8, 1.6])
    assert set_probe_lr(opt, total // 2, total) == pytest.approx([0.2, 0.4, 0.8])
    assert set_probe_lr(opt, total, total) == [0.0, 0.0, 0.0]  # ends at 0
    assert 0 < set_probe_lr(opt, total - 1, total)[1] < 1e-6


def test_best_lr_is_the_most_accurate_head() -> None:
    """A too-small LR has not left the N(0, 0.01) initialisation after a few epochs."""
    train, train_y, test, test_y = _separable(6, n_train=600, n_test=300)
    sweep = linear_probe_sweep(train, train_y, test, test_y, 6, lrs=[1e-6, 0.5, 1e-5],
                               epochs=5, batch_size=64, progress=False)
    small, good, smaller = sweep["linear_top1_per_lr"]
    assert good >= 85.0 and max(small, smaller) < 50.0
    assert sweep["best_index"] == 1 and sweep["best_lr"] == 0.5
    assert sweep["linear_top1"] == good and sweep["linear_top5"] == sweep["linear_top5_per_lr"][1]


def test_summarize_sweep_ties_and_errors() -> None:
    out = summarize_sweep([0.1, 0.2, 0.4], [50.0, 70.0, 70.0], [90.0, 95.0, 99.0])
    assert out["best_index"] == 1 and out["best_lr"] == 0.2  # ties: the first listed
    assert out["linear_top1"] == 70.0 and out["linear_top5"] == 95.0
    assert "linear_top5" not in summarize_sweep([0.1], [40.0])
    with pytest.raises(ValueError, match="one accuracy per learning rate"):
        summarize_sweep([0.1, 0.2], [50.0])
    with pytest.raises(ValueError, match="one accuracy per learning rate"):
        summarize_sweep([], [])


def test_topk_hits_counts_per_head() -> None:
    logits = torch.tensor([[[3.0, 2.0, 1.0], [0.0, 1.0, 2.0]],
                           [[1.0, 2.0, 3.0], [2.0, 1.0, 0.0]]])  # (H=2, B=2, C=3)
    labels = torch.tensor([1, 2])
    assert topk_hits(logits, labels, top=2).tolist() == [[1, 2], [0, 1]]
    assert topk_hits(logits, labels, top=1).tolist() == [[1, 1], [0, 0]]
    with pytest.raises(ValueError, match="\\(H, B, C\\)"):
        topk_hits(logits[0], labels)
    with pytest.raises(ValueError, match="\\(H, B, C\\)"):
        linear_heads_loss(logits, labels[:1])


@pytest.mark.parametrize("lrs, match", [
    ([], "non-empty sequence"),
    ((), "non-empty sequence"),
    ("0.1", "non-empty sequence"),
    ([0.1, 0.0], "lrs must be > 0"),
    ([-0.1], "lrs must be > 0"),
    ([float("nan")], "lrs must be > 0 and finite"),
    ([float("inf")], "lrs must be > 0 and finite"),
    ([True], "lrs must be > 0"),
])
def test_sweep_rejects_bad_learning_rates(lrs, match: str) -> None:
    feats, labels = torch.randn(8, 4), torch.arange(8) % 2
    with pytest.raises(ValueError, match=match):
        train_linear_probes(feats, labels, 2, lrs=lrs, progress=False)
    with pytest.raises(ValueError, match=match):
        linear_probe_sweep(feats, labels, feats, labels, 2, lrs=lrs, progress=False)


def test_sweep_input_errors() -> None:
    feats, labels = torch.randn(8, 4), torch.arange(8) % 2
    with pytest.raises(ValueError, match="8 train features but 7 train labels"):
        train_linear_probes(feats, labels[:7], 2, lrs=[0.1])
    with pytest.raises(ValueError, match="7 test features but 8 test labels"):
        linear_probe_sweep(feats, labels, feats[:7], labels, 2, lrs=[0.1])
    with pytest.raises(ValueError, match="feature sizes differ"):
        linear_probe_sweep(feats, labels, torch.randn(8, 5), labels, 2, lrs=[0.1])
    with pytest.raises(ValueError, match="test set is empty"):
        linear_probe_sweep(feats, labels, feats[:0], labels[:0], 2, lrs=[0.1])
    with pytest.raises(ValueError, match="train_features is empty"):
        train_linear_probes(feats[:0], labels[:0], 2, lrs=[0.1])
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        train_linear_probes(feats, labels, 0, lrs=[0.1])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        train_linear_probes(feats, labels, 2, lrs=[0.1], batch_size=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        train_linear_probes(feats, labels, 2, lrs=[0.1], weight_decay=-1.0)
    heads = LinearHeads(4, 2, 2)
    with pytest.raises(ValueError, match="1 learning rates for 2 heads"):
        linear_probe_optimizer(heads, [0.1])
    with pytest.raises(TypeError, match="LinearHeads"):
        linear_probe_optimizer(nn.Linear(4, 2), [0.1])
    with pytest.raises(ValueError, match="peak_lr"):
        set_probe_lr(torch.optim.SGD(nn.Linear(4, 2).parameters(), lr=0.1), 0, 10)
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        LinearHeads(4, 2, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        scale_lr(0.2, 0)
    with pytest.raises(ValueError, match="base_lr must be > 0"):
        scale_lr(-0.2, 256)


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
