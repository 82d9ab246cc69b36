"""The BYOL learner: construction, training step, target, state, embeddings, errors, precisions,
DistributedDataParallel and torch.compile."""

from __future__ import annotations

import copy
import os
import socket
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torchvision
from conftest import TinyNet, make_learner, train_steps
from test_features import BACKBONES
from torch import nn
from torch._dynamo.testing import CompileCounter

from byol_pytorch import BYOL, BYOLAugment, cosine_tau, update_moving_average


# --------------------------------------------------------------------------- construction
def test_parameters_complete_after_init_and_target_frozen():
    learner = make_learner()
    target = dict(learner.target_encoder.named_parameters())
    assert target and not any(p.requires_grad for p in target.values())
    trainable = sum(p.numel() for p in learner.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for m in (learner.online_encoder, learner.online_predictor)
                            for p in m.parameters())
    assert learner.online_encoder.projector[0].in_features == 8  # inferred: TinyNet's pool


def test_dry_run_leaves_bn_stats_and_modes_untouched():
    net = torchvision.models.resnet18()
    net.layer1.eval()  # a mixed mode must be restored exactly
    with torch.no_grad():
        net.bn1.running_mean.normal_()
    before, modes = copy.deepcopy(net.state_dict()), {n: m.training for n, m in net.named_modules()}
    BYOL(net, image_size=32, hidden_layer="avgpool", projection_hidden_size=32)
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_state_dict_has_backbone_once_and_target():
    state = make_learner().state_dict()
    assert sum(k.endswith("conv.weight") for k in state) == 2  # online + target
    assert not any(k.startswith("net.") for k in state)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_sync_batchnorm_conversion_and_argument():
    learner = nn.SyncBatchNorm.convert_sync_batchnorm(make_learner(torchvision.models.resnet18()))
    for part in (learner.online_encoder, learner.online_predictor, learner.target_encoder):
        assert nn.SyncBatchNorm in {type(m) for m in part.modules()}
        assert nn.BatchNorm1d not in {type(m) for m in part.modules()}
    assert isinstance(make_learner(sync_batchnorm=True).online_predictor[1], nn.SyncBatchNorm)
    assert type(make_learner(sync_batchnorm=None).online_predictor[1]) is nn.BatchNorm1d


def test_constructor_errors_and_warnings():
    with pytest.raises(ValueError, match="closest names"):
        make_learner(hidden_layer="pooll")
    with pytest.raises(ValueError, match=r"view_batching must be one of \('separate', 'joint'\)"):
        make_learner(view_batching="stacked")
    with pytest.raises(ValueError, match="moving_average_decay must lie in"):
        make_learner(moving_average_decay=1.5)
    with pytest.warns(UserWarning, match="hook a pooling layer"):
        BYOL(nn.Conv2d(3, 300, 1), image_size=16, hidden_layer=None, projection_size=4,
             projection_hidden_size=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_one_line_wrap_trains_every_backbone_family(name):
    make, layer, size, dim = BACKBONES[name]
    net = make()
    learner = BYOL(net, image_size=size, hidden_layer=layer, projection_size=16,
                   projection_hidden_size=32)
    assert learner.online_encoder.projector[0].in_features == dim
    (loss,) = train_steps(learner, torch.rand(2, 3, size + 8, size + 8), lr=0.01)
    assert 0 <= loss <= 8 and learner.step == 1
    first = next(p for p in net.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0  # the backbone itself trains


# --------------------------------------------------------------------------- training step
def test_training_step_updates_online_then_target_by_the_ema_formula(images):
    learner = make_learner()
    opt = torch.optim.SGD(learner.parameters(), lr=0.1)
    loss = learner(images)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and 0 <= loss.item() <= 8
    loss.backward()
    assert all(p.grad is None for p in learner.target_encoder.parameters())
    assert learner.net.conv.weight.grad.abs().sum() > 0
    assert learner.net.fc.weight.grad is None  # the classifier is not part of the representation
    online_before = [p.clone() for p in learner.online_encoder.parameters()]
    target_before = [p.clone() for p in learner.target_encoder.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(target_before, learner.target_encoder.parameters()))
    learner.update_moving_average()
    for t0, o0, o1, t1 in zip(target_before, online_before, learner.online_encoder.parameters(),
                              learner.target_encoder.parameters()):
        assert torch.allclose(t0, o0)  # the target started as a copy of the online network
        assert torch.allclose(t1, 0.996 * o0 + 0.004 * o1, atol=1e-6)


@pytest.mark.slow
def test_loss_falls_on_fixed_batch():
    losses = train_steps(make_learner(), torch.rand(16, 3, 16, 16), steps=30, lr=0.05)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_user_views_and_custom_augmentations():
    learner = make_learner().eval()  # deterministic BatchNorm
    v1, v2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    assert torch.allclose(learner(v1, x2=v2), learner(v2, x2=v1), atol=1e-6)  # symmetric loss
    with pytest.raises(ValueError, match="same batch size"):
        learner(v1, x2=v2[:2])
    seen = []
    learner = make_learner(augment_fn=lambda x: seen.append(tuple(x.shape)) or x.flip(3))
    learner(torch.rand(4, 3, 16, 16))
    assert seen == [(4, 3, 16, 16)] * 2  # augment_fn2 defaults to augment_fn
    with pytest.raises(ValueError, match="augment_fn must map"):
        make_learner(augment_fn=lambda x: x[0])(torch.rand(4, 3, 16, 16))


def test_simsiam_variant(images):
    learner = make_learner(use_momentum=False)
    assert learner.target_encoder is None
    assert [type(m).__name__ for m in learner.online_encoder.projector] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    learner(images).backward()
    assert learner.online_predictor[0].weight.grad is not None
    with pytest.raises(RuntimeError, match="use_momentum=True"):
        learner.update_moving_average()


# --------------------------------------------------------------------------- tau schedule / state
def test_tau_constant_and_cosine_schedule(images):
    assert make_learner().tau == 0.996
    learner = make_learner(total_steps=10, moving_average_decay=0.9)
    taus = []
    for _ in range(4):
        taus.append(learner.tau)
        train_steps(learner, images, lr=0.0)
    assert taus == [cosine_tau(k, 10, 0.9, 1.0) for k in range(4)] and learner.step == 4


def test_state_dict_round_trip_restores_weights_and_schedule(images):
    learner = make_learner(total_steps=100)
    train_steps(learner, images, steps=3)
    fresh = make_learner(total_steps=100)
    fresh.load_state_dict(learner.state_dict())
    assert fresh.step == 3 and fresh.tau == learner.tau
    learner.eval(), fresh.eval()
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    assert torch.equal(learner(v1, x2=v2), fresh(v1, x2=v2))


def test_target_copies_the_online_network_at_the_first_step_and_on_reset(images):
    net = TinyNet()
    learner = make_learner(net)
    pretrained = TinyNet()
    net.load_state_dict(pretrained.state_dict())  # e.g. a backbone checkpoint loaded later
    learner(images)
    assert torch.equal(learner.target_encoder.net.conv.weight, pretrained.conv.weight)
    train_steps(learner, images, steps=2)
    with torch.no_grad():
        learner.net.conv.weight.add_(1.0)
    learner.reset_moving_average()
    assert torch.equal(learner.target_encoder.net.conv.weight, learner.net.conv.weight)
    assert learner.step == 0


def test_to_moves_target_and_helper_unwraps():
    learner = make_learner().to(torch.float64)
    assert learner.target_encoder.net.conv.weight.dtype == torch.float64
    update_moving_average(torch.compile(learner, backend="eager"))
    assert learner.step == 1
    with pytest.raises(TypeError, match="expected a BYOL learner"):
        update_moving_average(nn.Linear(2, 2))


# --------------------------------------------------------------------------- embeddings
def test_embeddings_see_the_views_normalisation(images):
    learner = make_learner().eval()
    projection, y = learner(images, return_embedding=True)
    assert torch.allclose(learner.online_encoder.projector(y), projection, atol=1e-6)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    direct = learner.online_encoder((images - mean) / std, return_projection=False)
    assert torch.allclose(y, direct, atol=1e-6)
    custom = make_learner(augment_fn=BYOLAugment(16, mean=(0.5,) * 3, std=(0.25,) * 3)).eval()
    custom.load_state_dict(learner.state_dict())
    assert torch.allclose(custom(images, True, False), custom.online_encoder(
        (images - 0.5) / 0.25, return_projection=False), atol=1e-6)
    plain = make_learner(augment_fn=lambda x: x).eval()  # unknown callable: input as given
    plain.load_state_dict(learner.state_dict())
    assert torch.allclose(plain(images, True, False), plain.online_encoder(images, False))


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("x, exc, match", [
    (torch.rand(3, 16, 16), ValueError, r"\(B, C, H, W\).*unsqueeze"),
    (torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8), TypeError, r"x.float\(\) / 255"),
    (torch.rand(4, 1, 16, 16), ValueError, r"1 channels but the backbone takes 3.*expand"),
    (torch.rand(1, 3, 16, 16), ValueError, "batch of 1"),
    (torch.rand(4, 3, 16, 16, device="meta"), ValueError, "learner is on cpu"),
    ([[0.0]], TypeError, "must be a torch.Tensor"),
])
def test_bad_input_errors(x, exc, match):
    with pytest.raises(exc, match=match):
        make_learner()(x)


def test_batch_of_one_in_eval_and_out_of_range_values_warn_once():
    assert make_learner().eval()(torch.rand(1, 3, 16, 16)).isfinite()
    learner = make_learner()
    with pytest.warns(UserWarning, match=r"expected \[0, 1\]"):
        learner(torch.rand(4, 3, 16, 16) * 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        learner(torch.rand(4, 3, 16, 16) * 255)  # no second warning


# --------------------------------------------------------------------------- precisions / views
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(images, dtype):
    learner = make_learner()
    with torch.autocast("cpu", dtype=dtype):
        loss = learner(images)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(learner.online_predictor[0].weight.grad).all()
    assert 0 < learner.last_projection_std.item() < 1  # the collapse monitor's value


def _same_weights(*modes, **overrides):
    learners = [make_learner(torchvision.models.resnet18(), image_size=32, view_batching=m,
                             **overrides) for m in modes]
    for learner in learners[1:]:
        learner.load_state_dict(learners[0].state_dict())
    return learners


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:the views are")
def test_joint_views_differ_only_by_batchnorm_statistics():
    v1, v2 = torch.rand(4, 3, 32, 32).to(memory_format=torch.channels_last), torch.rand(4, 3, 32, 32)
    separate, joint = _same_weights("separate", "joint")
    assert not torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-3)
    separate, joint = _same_weights("separate", "joint")  # the forward moved BN statistics
    separate.eval(), joint.eval()  # running statistics: the batch composition no longer matters
    assert torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-5)
    # views of two sizes cannot share a batch: "joint" takes one pass per view then
    separate, joint = _same_weights("separate", "joint")
    v2 = torch.rand(4, 3, 24, 24)
    assert torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-6)


# --------------------------------------------------------------------------- torch.compile
@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _compiled_vs_eager(compile_step: bool):
    """6 steps eager and compiled (dynamo with CompileCounter, graphs run eagerly) from one start;
    (eager losses, compiled losses, frames compiled after each step, eager and compiled learner)."""
    eager = make_learner(total_steps=100)
    compiled = copy.deepcopy(eager)
    counter = CompileCounter()
    model = compiled if compile_step else torch.compile(compiled, backend=counter)

    def make_step(learner, forward):
        opt = torch.optim.SGD(learner.parameters(), lr=0.1)

        def step(images):
            loss = forward(images)
            loss.backward()
            opt.step()
            opt.zero_grad()
            learner.update_moving_average()
            return loss.detach()
        return step

    steps = [make_step(eager, eager), make_step(compiled, model)]
    if compile_step:
        steps[1] = torch.compile(steps[1], backend=counter)
    images = torch.rand(8, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    runs = []
    for step in steps:
        torch.manual_seed(1)
        runs.append([(float(step(images)), counter.frame_count) for _ in range(6)])
    return [r[0] for r in runs[0]], [r[0] for r in runs[1]], [r[1] for r in runs[1]], eager, compiled


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("compile_step", [False, True], ids=["learner", "whole-step"])
def test_compiles_once_and_trains_as_eager(compile_step):
    ref, got, frames, eager, compiled = _compiled_vs_eager(compile_step)
    # The learner: one graph (augmentation, both networks, loss) compiled at the first step; the
    # one-time target copy runs outside it. The whole step: graph breaks at backward(),
    # zero_grad() and update_moving_average() (eager on purpose), nothing new after step 2.
    assert (frames[1:] == [frames[1]] * 5) if compile_step else (frames == [1] * 6)
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)
    assert compiled.step == 6 and compiled.tau == pytest.approx(eager.tau)
    for p, q in zip(compiled.target_encoder.parameters(), eager.target_encoder.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
def test_inductor_matches_eager():
    learner = make_learner()
    compiled = torch.compile(learner)
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    loss = compiled(v1, x2=v2)
    torch.testing.assert_close(loss, learner(v1, x2=v2), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert learner.net.conv.weight.grad.abs().sum() > 0
    assert torch.isfinite(compiled(torch.rand(4, 3, 16, 16)))  # with the augmentations too


# --------------------------------------------------------------------------- DDP (2 CPU processes)
def _ddp_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
    learner = BYOL(torchvision.models.resnet18(num_classes=10), image_size=32, projection_size=16,
                   projection_hidden_size=32)  # hidden_layer -2: the classifier is unused
    model = nn.parallel.DistributedDataParallel(learner)  # plain: no find_unused_parameters
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        loss = model(torch.rand(4, 3, 32, 32))  # different data on each rank
        opt.zero_grad()
        loss.backward()
        opt.step()
        tau, before = learner.tau, [p.clone() for p in learner.target_encoder.parameters()]
        update_moving_average(model)
    online = [p.detach() for p in learner.online_encoder.parameters()]
    ema_ok = all(torch.allclose(t, torch.lerp(b, o, 1 - tau), atol=1e-7) for t, b, o in
                 zip(learner.target_encoder.parameters(), before, online))
    fc = learner.net.fc
    trained = [p for n, p in learner.named_parameters() if p.requires_grad and ".fc." not in n]
    torch.save(dict(online=torch.cat([p.detach().flatten() for p in trained]),
                    target=torch.cat([p.flatten() for n, p in
                                      learner.target_encoder.named_parameters()
                                      if not n.startswith("net.fc.")]),
                    fc=fc.weight.detach().clone(), fc_grad=fc.weight.grad, ema_ok=ema_ok,
                    step=learner.step), os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["online"], r1["online"]) and torch.equal(r0["target"], r1["target"])
    # the classifier after the hooked layer is never trained: no gradient, each rank's own init
    assert r0["fc_grad"] is None and r1["fc_grad"] is None
    assert not torch.equal(r0["fc"], r1["fc"])
    assert r0["ema_ok"] and r1["ema_ok"] and r0["step"] == r1["step"] == 3
