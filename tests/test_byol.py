"""The BYOL learner: construction, training step, target, state, embeddings, errors, precisions."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from conftest import TinyNet, small_byol_kwargs
from test_features import BACKBONES
from torch import nn

from byol_pytorch import BYOL, update_moving_average
from byol_pytorch.heads import SEM, SimSiamMLP
from byol_pytorch.schedules import cosine_tau


def make_learner(net=None, **overrides):
    return BYOL(net if net is not None else TinyNet(), **small_byol_kwargs(**overrides))


def train_step(learner, opt, x):
    loss = learner(x)
    opt.zero_grad()
    loss.backward()
    opt.step()
    learner.update_moving_average()
    return loss.item()


# --------------------------------------------------------------------------- construction
def test_parameters_complete_after_init_and_target_frozen():
    learner = make_learner()
    names = {n for n, _ in learner.named_parameters()}
    assert any(n.startswith("online_encoder.projector.") for n in names)
    assert any(n.startswith("online_predictor.") for n in names)
    # the target is listed (as in byol-pytorch 0.9.1, and for any module containing the learner)
    # but frozen, so optimizers never update it
    target = dict(learner.target_encoder.named_parameters())
    assert target and not any(p.requires_grad for p in target.values())
    trainable = sum(p.numel() for p in learner.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in learner.online_encoder.parameters()) + sum(
        p.numel() for p in learner.online_predictor.parameters())
    # the projector's input size was inferred: 8 channels of TinyNet's pool output
    assert learner.online_encoder.projector[0].in_features == 8


def test_dry_run_leaves_bn_stats_and_modes_untouched():
    net = torchvision.models.resnet18()
    net.train()
    net.layer1.eval()  # a mixed mode must be restored exactly
    with torch.no_grad():
        net.bn1.running_mean.normal_()
    before = copy.deepcopy(net.state_dict())
    modes = {n: m.training for n, m in net.named_modules()}
    BYOL(net, image_size=32, hidden_layer="avgpool", projection_hidden_size=32)
    assert {n: m.training for n, m in net.named_modules()} == modes
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_state_dict_has_backbone_once_and_target():
    learner = make_learner()
    state = learner.state_dict()
    assert sum(k.endswith("conv.weight") for k in state) == 2  # online + target, no duplicate alias
    assert not any(k.startswith("net.") for k in state)
    assert any(k.startswith("target_encoder.") for k in state)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_sync_batchnorm_conversion_covers_heads_and_target():
    learner = nn.SyncBatchNorm.convert_sync_batchnorm(make_learner(net=torchvision.models.resnet18()))
    for part in (learner.online_encoder, learner.online_predictor, learner.target_encoder):
        kinds = {type(m) for m in part.modules()}
        assert nn.SyncBatchNorm in kinds and nn.BatchNorm1d not in kinds
    assert isinstance(make_learner(sync_batchnorm=True).online_predictor[1], nn.SyncBatchNorm)
    assert type(make_learner(sync_batchnorm=False).online_predictor[1]) is nn.BatchNorm1d


def test_bad_hidden_layer_name_in_constructor():
    with pytest.raises(ValueError, match="closest names"):
        make_learner(hidden_layer="avg_pool")


def test_huge_flattened_representation_warns():
    class Wide(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 300, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.warns(UserWarning, match="hook a pooling layer"):
        BYOL(Wide(), image_size=16, hidden_layer=None, projection_size=4,
             projection_hidden_size=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_one_line_wrap_trains_every_backbone_family(name):
    make, layer, size, dim = BACKBONES[name]
    net = make()
    learner = BYOL(net, image_size=size, hidden_layer=layer, projection_size=16,
                   projection_hidden_size=32)
    assert learner.online_encoder.projector[0].in_features == dim
    opt = torch.optim.SGD(learner.parameters(), lr=0.01)
    loss = train_step(learner, opt, torch.rand(2, 3, size + 8, size + 8))
    assert 0 <= loss <= 8
    first = next(p for p in net.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0  # the backbone itself trains
    assert learner.step == 1


# --------------------------------------------------------------------------- training step
def test_training_step_updates_online_not_target_until_ema(images):
    learner = make_learner()
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    loss = learner(images)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and 0 <= loss.item() <= 8
    loss.backward()
    assert all(p.grad is None for p in learner.target_encoder.parameters())
    assert learner.online_predictor[0].weight.grad.abs().sum() > 0
    assert learner.net.conv.weight.grad.abs().sum() > 0
    assert learner.net.fc.weight.grad is None  # the classifier is not part of the representation
    target_before = [p.clone() for p in learner.target_encoder.parameters()]
    online_before = [p.clone() for p in learner.online_encoder.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(target_before, learner.target_encoder.parameters()))
    learner.update_moving_average()
    tau = 0.996
    for t0, o0, o1, t1 in zip(target_before, online_before, learner.online_encoder.parameters(),
                              learner.target_encoder.parameters()):
        # target started as a copy of the online weights (o0), then one EMA step towards o1
        assert torch.allclose(t0, o0)
        assert torch.allclose(t1, tau * o0 + (1 - tau) * o1, atol=1e-6)


@pytest.mark.slow
def test_loss_falls_on_fixed_batch():
    torch.manual_seed(0)
    learner = make_learner(image_size=16)
    x = torch.rand(16, 3, 16, 16)
    opt = torch.optim.Adam(learner.parameters(), lr=3e-3)
    losses = [train_step(learner, opt, x) for _ in range(30)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_user_views_are_used_as_given():
    learner = make_learner()
    v1, v2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    learner.eval()  # deterministic BN
    a = learner(v1, x2=v2)
    b = learner(v2, x2=v1)
    assert torch.allclose(a, b, atol=1e-6)  # the loss is symmetric in the two views
    with pytest.raises(ValueError, match="same batch size"):
        learner(v1, x2=v2[:2])


def test_custom_augment_fns_receive_batches():
    seen = []

    def aug(x):
        seen.append(tuple(x.shape))
        return torch.flip(x, dims=[3])

    learner = make_learner(augment_fn=aug)
    learner(torch.rand(4, 3, 16, 16))
    assert seen == [(4, 3, 16, 16), (4, 3, 16, 16)]  # augment_fn2 defaults to augment_fn
    with pytest.raises(ValueError, match="augment_fn must map"):
        make_learner(augment_fn=lambda x: x[0])(torch.rand(4, 3, 16, 16))


def test_simsiam_variant():
    learner = make_learner(use_momentum=False)
    assert learner.target_encoder is None
    projector = learner.online_encoder.projector  # SimSiam's: 3 linear layers, BN after each
    assert isinstance(projector, SimSiamMLP)
    assert [type(m).__name__ for m in projector] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not projector[7].affine and all(projector[i].bias is None for i in (0, 3, 6))
    loss = learner(torch.rand(4, 3, 16, 16))
    loss.backward()
    assert learner.online_predictor[0].weight.grad is not None
    with pytest.raises(RuntimeError, match="use_momentum=True"):
        learner.update_moving_average()


def test_simplicial_embeddings_when_enabled(images):
    learner = make_learner(use_simplicial_embeddings=True, sem_num_simplices=4, sem_simplex_dim=3)
    embed, sem, mlp = learner.online_encoder.projector  # byol-pytorch 0.9.1's layout
    assert embed[0].out_features == 12 and isinstance(sem, SEM) and mlp[0].in_features == 12
    groups = sem(embed(torch.randn(4, 8))).view(4, 4, 3)
    assert torch.allclose(groups.sum(-1), torch.ones(4, 4)) and (groups > 0).all()
    learner(images).backward()
    assert embed[0].weight.grad.abs().sum() > 0
    assert not any(isinstance(m, SEM) for m in make_learner().modules())


# --------------------------------------------------------------------------- tau schedule / state
def test_tau_constant_and_cosine_schedule(images):
    assert make_learner().tau == 0.996
    learner = make_learner(total_steps=10, moving_average_decay=0.9)
    opt = torch.optim.SGD(learner.parameters(), lr=0.0)
    taus = []
    for _ in range(4):
        taus.append(learner.tau)
        train_step(learner, opt, images)
    assert taus == [cosine_tau(k, 10, 0.9, 1.0) for k in range(4)]
    assert learner.step == 4


def test_state_dict_round_trip_restores_weights_and_schedule(images):
    learner = make_learner(total_steps=100)
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    for _ in range(3):
        train_step(learner, opt, images)
    state = learner.state_dict()
    fresh = make_learner(total_steps=100)
    fresh.load_state_dict(state)
    assert fresh.step == 3 and fresh.tau == learner.tau
    for (k, a), b in zip(learner.state_dict().items(), fresh.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b), k
    learner.eval(), fresh.eval()
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    assert torch.equal(learner(v1, x2=v2), fresh(v1, x2=v2))


def test_reset_moving_average_copies_online():
    learner = make_learner()
    with torch.no_grad():
        learner.net.conv.weight.add_(1.0)
    learner.reset_moving_average()
    assert torch.equal(learner.target_encoder.net.conv.weight, learner.net.conv.weight)
    assert learner.step == 0


def test_target_follows_backbone_weights_loaded_after_construction(images):
    net = TinyNet()
    learner = make_learner(net)
    pretrained = TinyNet()
    net.load_state_dict(pretrained.state_dict())  # e.g. resuming from a backbone checkpoint
    learner(images)
    assert torch.equal(learner.target_encoder.net.conv.weight, pretrained.conv.weight)


def test_to_moves_target_and_helper_unwraps():
    learner = make_learner().to(torch.float64)
    assert learner.target_encoder.net.conv.weight.dtype == torch.float64
    wrapped = torch.compile(learner, backend="eager")
    update_moving_average(wrapped)
    assert learner.step == 1
    with pytest.raises(TypeError, match="expected a BYOL learner"):
        update_moving_average(nn.Linear(2, 2))


# --------------------------------------------------------------------------- embeddings
def test_return_embedding_shapes_and_compat(images):
    learner = make_learner()
    proj, emb = learner(images, return_embedding=True)
    assert proj.shape == (4, 8) and emb.shape == (4, 8)
    # which is which: the projection is the projector applied to the embedding (same batch)
    with torch.no_grad():
        assert torch.allclose(learner.online_encoder.projector(emb), proj, atol=1e-6)
    emb_only = learner(images, return_embedding=True, return_projection=False)
    assert torch.allclose(emb_only, emb)
    proj2, _ = learner(images, True)  # byol-pytorch 0.9.1's positional form
    assert torch.allclose(proj2, proj)
    assert torch.allclose(learner(images, True, False), emb)  # (x, return_embedding, return_proj.)
    assert torch.allclose(learner(images, True, return_projection=False), emb)
    # default augmentations normalise, so the embedding sees the same normalised input
    learner.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    y = learner(images, return_embedding=True, return_projection=False)
    assert torch.allclose(y, learner.online_encoder.get_representation((images - mean) / std), atol=1e-6)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "x, exc, match",
    [
        (torch.rand(3, 16, 16), ValueError, r"\(B, C, H, W\).*unsqueeze"),
        (torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8), TypeError, "x.float\\(\\) / 255"),
        (torch.rand(4, 1, 16, 16), ValueError, r"1 channels but the backbone takes 3.*expand"),
        (torch.rand(1, 3, 16, 16), ValueError, "batch of 1"),
        ([[0.0]], TypeError, "must be a torch.Tensor"),
    ],
)
def test_bad_input_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        make_learner()(x)


def test_batch_of_one_allowed_in_eval():
    learner = make_learner().eval()
    assert learner(torch.rand(1, 3, 16, 16)).isfinite()


def test_out_of_range_values_warn_once():
    learner = make_learner()
    with pytest.warns(UserWarning, match=r"expected \[0, 1\]"):
        learner(torch.rand(4, 3, 16, 16) * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner(torch.rand(4, 3, 16, 16) * 255)  # no second warning


def test_device_mismatch_is_reported():
    learner = make_learner()
    with pytest.raises(ValueError, match="learner is on cpu"):
        learner(torch.rand(4, 3, 16, 16, device="meta"))


# --------------------------------------------------------------------------- precisions / formats
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(images, dtype):
    learner = make_learner()
    with torch.autocast("cpu", dtype=dtype):
        loss = learner(images)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(learner.online_predictor[0].weight.grad).all()


@pytest.mark.slow
def test_channels_last():
    net = torchvision.models.resnet18().to(memory_format=torch.channels_last)
    learner = BYOL(net, image_size=32, hidden_layer="avgpool", projection_hidden_size=32)
    x = torch.rand(4, 3, 40, 40).to(memory_format=torch.channels_last)
    loss = learner(x)
    loss.backward()
    assert torch.isfinite(loss) and net.conv1.weight.grad is not None


def _same_weights_learners(*modes, **overrides):
    torch.manual_seed(0)
    learners = [make_learner(net=torchvision.models.resnet18(), image_size=32, view_batching=m,
                             **overrides) for m in modes]
    for learner in learners[1:]:
        learner.load_state_dict(learners[0].state_dict())
    return learners


@pytest.mark.slow
def test_joint_views_differ_only_by_batchnorm_statistics():
    v1, v2 = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    separate, joint = _same_weights_learners("separate", "joint")
    assert not torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-3)
    separate, joint = _same_weights_learners("separate", "joint")
    separate.eval(), joint.eval()  # running statistics: the batch composition no longer matters
    assert torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:the views are")
def test_view_batching_default_and_views_of_two_sizes():
    assert make_learner().view_batching == "separate"  # per-view BatchNorm statistics (paper)
    # "joint" cannot put views of different sizes in one batch: it takes one pass per view then.
    separate, joint = _same_weights_learners("separate", "joint")
    v1, v2 = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 24, 24)
    assert torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-6)
    with pytest.raises(ValueError, match=r"view_batching must be one of \('separate', 'joint'\)"):
        make_learner(view_batching="stacked")


def test_projection_std_is_recorded(images):
    learner = make_learner()
    assert learner.last_projection_std is None
    learner(images)
    std = learner.last_projection_std
    assert std.dim() == 0 and 0 < std.item() < 1


def test_embedding_uses_custom_byolaugment_normalisation(images):
    from byol_pytorch import BYOLAugment

    aug = BYOLAugment(16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    learner = make_learner(augment_fn=aug).eval()
    y = learner(images, return_embedding=True, return_projection=False)
    assert torch.allclose(y, learner.online_encoder.get_representation((images - 0.5) / 0.25), atol=1e-6)
    plain = make_learner(augment_fn=lambda x: x).eval()  # unknown callable: input used as given
    plain.load_state_dict(learner.state_dict())
    assert torch.allclose(plain(images, return_embedding=True, return_projection=False),
                          plain.online_encoder.get_representation(images), atol=1e-6)
