"""The BYOL learner: building, step, target, state, embeddings, errors, precision, DDP, compile."""

from __future__ import annotations

import copy
import os
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


def test_construction_is_complete_frozen_and_leaves_the_backbone_alone():
    target = list((learner := make_learner()).target_encoder.parameters())
    assert target and not any(p.requires_grad for p in target)
    assert sum(p.numel() for p in learner.parameters() if p.requires_grad) == sum(
        p.numel() for m in (learner.online_encoder, learner.online_predictor)
        for p in m.parameters())
    assert learner.online_encoder.projector[0].in_features == 8  # inferred: TinyNet's pool
    state = learner.state_dict()
    assert sum(k.endswith("conv.weight") for k in state) == 2  # online + target, no alias
    assert all(torch.is_tensor(v) and not k.startswith("net.") for k, v in state.items())
    net = torchvision.models.resnet18()  # the dry run: modes and BatchNorm statistics untouched
    net.layer1.eval()
    net.bn1.running_mean.normal_()  # a buffer: no autograd
    before, modes = copy.deepcopy(net.state_dict()), {n: m.training for n, m in net.named_modules()}
    learner = nn.SyncBatchNorm.convert_sync_batchnorm(make_learner(net, image_size=32))
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    for part in (learner.online_encoder, learner.online_predictor, learner.target_encoder):
        kinds = {type(m) for m in part.modules()}
        assert nn.SyncBatchNorm in kinds and nn.BatchNorm1d not in kinds
    assert isinstance(make_learner(sync_batchnorm=True).online_predictor[1], nn.SyncBatchNorm)
    assert type(make_learner(sync_batchnorm=None).online_predictor[1]) is nn.BatchNorm1d


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_layer="pooll"), "closest names"),
    (dict(view_batching="stacked"), r"view_batching must be one of \('separate', 'joint'\)"),
    (dict(moving_average_decay=1.5), "moving_average_decay must lie in"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_learner(**kwargs)
    with pytest.warns(UserWarning, match="hook a pooling layer"):
        BYOL(nn.Conv2d(3, 300, 1), image_size=16, hidden_layer=None, projection_size=4,
             projection_hidden_size=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BACKBONES))
def test_one_line_wrap_trains_every_backbone_family(name):
    make, layer, size, dim = BACKBONES[name]
    learner = BYOL(net := make(), size, layer, projection_size=16, projection_hidden_size=32)
    assert learner.online_encoder.projector[0].in_features == dim
    (loss,) = train_steps(learner, torch.rand(2, 3, size + 8, size + 8), lr=0.01)
    assert 0 <= loss <= 8 and learner.step == 1
    first = next(p for p in net.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0  # the backbone itself trains


def test_training_step_updates_online_then_target_by_the_ema_formula(images):
    opt = torch.optim.SGD((learner := make_learner()).parameters(), lr=0.1)
    loss = learner(images)
    assert loss.dim() == 0 and loss.dtype == torch.float32 and 0 <= loss.item() <= 8
    loss.backward()
    assert all(p.grad is None for p in learner.target_encoder.parameters())
    assert learner.net.conv.weight.grad.abs().sum() > 0
    assert learner.net.fc.weight.grad is None  # the classifier is not part of the representation
    online_before = [p.clone() for p in learner.online_encoder.parameters()]
    target_before = [p.clone() for p in learner.target_encoder.parameters()]
    opt.step()
    assert all(map(torch.equal, target_before, learner.target_encoder.parameters()))
    learner.update_moving_average()
    for t0, o0, o1, t1 in zip(target_before, online_before, learner.online_encoder.parameters(),
                              learner.target_encoder.parameters()):
        assert torch.allclose(t0, o0)  # the target started as a copy of the online network
        assert torch.allclose(t1, 0.996 * o0 + 0.004 * o1, atol=1e-6)


@pytest.mark.slow
def test_loss_falls_on_fixed_batch():
    losses = train_steps(make_learner(), torch.rand(16, 3, 16, 16), steps=30, lr=0.05)
    assert sum(losses[-5:]) < sum(losses[:5])


def test_user_views_custom_augmentations_and_simsiam(images):
    learner = make_learner().eval()  # deterministic BatchNorm
    v1, v2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    assert torch.allclose(learner(v1, x2=v2), learner(v2, x2=v1), atol=1e-6)  # symmetric loss
    with pytest.raises(ValueError, match="same batch size"):
        learner(v1, x2=v2[:2])
    seen = []
    make_learner(augment_fn=lambda x: seen.append(tuple(x.shape)) or x.flip(3))(images)
    assert seen == [(4, 3, 16, 16)] * 2  # augment_fn2 defaults to augment_fn
    with pytest.raises(ValueError, match="augment_fn must map"):
        make_learner(augment_fn=lambda x: x[0])(images)
    assert (learner := make_learner(use_momentum=False)).target_encoder is None
    assert [type(m).__name__ for m in learner.online_encoder.projector] == [
        "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    learner(images).backward()
    assert learner.online_predictor[0].weight.grad is not None
    with pytest.raises(RuntimeError, match="use_momentum=True"):
        learner.update_moving_average()


def test_tau_schedule_state_round_trip_and_target_copies(images):
    assert make_learner().tau == 0.996
    learner, taus = make_learner(total_steps=10, moving_average_decay=0.9), []
    for _ in range(4):
        taus.append(learner.tau)
        train_steps(learner, images, lr=0.0)
    assert taus == [cosine_tau(k, 10, 0.9, 1.0) for k in range(4)] and learner.step == 4
    fresh = make_learner(total_steps=10, moving_average_decay=0.9)
    fresh.load_state_dict(learner.state_dict())
    assert fresh.step == 4 and fresh.tau == learner.tau
    learner.eval(), fresh.eval()
    assert torch.equal(learner(images, x2=images.flip(3)), fresh(images, x2=images.flip(3)))
    net, pretrained = TinyNet(), TinyNet()
    learner = make_learner(net)
    net.load_state_dict(pretrained.state_dict())  # e.g. a backbone checkpoint loaded later
    learner(images)
    assert torch.equal(learner.target_encoder.net.conv.weight, pretrained.conv.weight)
    train_steps(learner, images, steps=2)
    with torch.no_grad():
        learner.net.conv.weight.add_(1.0)
    learner.reset_moving_average()
    assert torch.equal(learner.target_encoder.net.conv.weight, learner.net.conv.weight)
    assert learner.step == 0
    assert learner.to(torch.float64).target_encoder.net.conv.weight.dtype == torch.float64
    update_moving_average(torch.compile(learner, backend="eager"))
    assert learner.step == 1
    with pytest.raises(TypeError, match="expected a BYOL learner"):
        update_moving_average(nn.Linear(2, 2))


def test_embeddings_see_the_views_normalisation(images):
    learner = make_learner().eval()
    projection, y = learner(images, return_embedding=True)
    assert torch.allclose(learner.online_encoder.projector(y), projection, atol=1e-6)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(y, learner.online_encoder((images - mean) / std, False), atol=1e-6)
    custom = make_learner(augment_fn=BYOLAugment(16, mean=(0.5,) * 3, std=(0.25,) * 3)).eval()
    custom.load_state_dict(learner.state_dict())
    assert torch.allclose(custom(images, True, False), custom.online_encoder(
        (images - 0.5) / 0.25, return_projection=False), atol=1e-6)
    plain = make_learner(augment_fn=lambda x: x).eval()  # unknown callable: input as given
    plain.load_state_dict(learner.state_dict())
    assert torch.allclose(plain(images, True, False), plain.online_encoder(images, False))


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(images, dtype):
    learner = make_learner()
    with torch.autocast("cpu", dtype=dtype):
        loss = learner(images)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(learner.online_predictor[0].weight.grad).all()
    assert 0 < learner.last_projection_std.item() < 1  # the collapse monitor's value


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:the views are")
def test_joint_views_differ_only_by_batchnorm_statistics():
    def pair():  # "separate" and "joint" learners with the same weights
        a, b = (make_learner(torchvision.models.resnet18(), image_size=32, view_batching=m)
                for m in ("separate", "joint"))
        b.load_state_dict(a.state_dict())
        return a, b

    v1 = torch.rand(4, 3, 32, 32).to(memory_format=torch.channels_last)
    v2 = torch.rand(4, 3, 32, 32)
    separate, joint = pair()
    assert not torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-3)
    separate, joint = pair()  # (the forward moved BN statistics) running statistics: the batch
    separate.eval(), joint.eval()  # composition no longer matters
    assert torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-5)
    separate, joint = pair()  # views of two sizes cannot share a batch: one pass per view then
    v2 = torch.rand(4, 3, 24, 24)
    assert torch.allclose(separate(v1, x2=v2), joint(v1, x2=v2), atol=1e-6)


@pytest.mark.parametrize("compile_step", [False, True], ids=["learner", "whole-step"])
def test_compiles_once_and_trains_as_eager(compile_step):
    """6 steps eager and compiled (CompileCounter) from one start: the learner is one graph from
    step 1; the whole step breaks at backward, zero_grad and the EMA, nothing new after step 2."""
    torch._dynamo.reset()
    eager, counter, runs = make_learner(total_steps=100), CompileCounter(), []
    compiled = copy.deepcopy(eager)
    for learner in (eager, compiled):
        opt = torch.optim.SGD(learner.parameters(), lr=0.1)
        forward = learner if learner is eager or compile_step else torch.compile(
            learner, backend=counter)

        def step(images, forward=forward, learner=learner, opt=opt):
            loss = forward(images)
            loss.backward()
            opt.step()
            opt.zero_grad()
            learner.update_moving_average()
            return loss.detach()

        if learner is compiled and compile_step:
            step = torch.compile(step, backend=counter)
        images = torch.rand(8, 3, 20, 20, generator=torch.Generator().manual_seed(1))
        torch.manual_seed(1)
        runs.append([(float(step(images)), counter.frame_count) for _ in range(6)])
    torch._dynamo.reset()
    frames = [f for _, f in runs[1]]
    assert (frames[1:] == [frames[1]] * 5) if compile_step else (frames == [1] * 6)
    assert [loss for loss, _ in runs[1]] == pytest.approx([loss for loss, _ in runs[0]],
                                                          rel=1e-5, abs=1e-6)
    assert compiled.step == 6 and compiled.tau == pytest.approx(eager.tau)
    for p, q in zip(compiled.target_encoder.parameters(), eager.target_encoder.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_inductor_matches_eager():
    torch._dynamo.reset()
    compiled = torch.compile(learner := make_learner())
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    loss = compiled(v1, x2=v2)
    torch.testing.assert_close(loss, learner(v1, x2=v2), atol=1e-5, rtol=1e-5)
    loss.backward()
    assert learner.net.conv.weight.grad.abs().sum() > 0
    assert torch.isfinite(compiled(torch.rand(4, 3, 16, 16)))  # with the augmentations too


def _ddp_worker(rank: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
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
    ema_ok = all(torch.allclose(t, torch.lerp(b, o.detach(), 1 - tau), atol=1e-7) for t, b, o in
                 zip(learner.target_encoder.parameters(), before,
                     learner.online_encoder.parameters()))
    flat = lambda named: torch.cat([p.detach().flatten() for n, p in named  # noqa: E731
                                    if ".fc." not in f".{n}"])
    torch.save(dict(online=flat(learner.named_parameters()),
                    target=flat(learner.target_encoder.named_parameters()),
                    fc=learner.net.fc.weight.detach().clone(), fc_grad=learner.net.fc.weight.grad,
                    ema_ok=ema_ok, step=learner.step), os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["online"], r1["online"]) and torch.equal(r0["target"], r1["target"])
    # the classifier after the hooked layer is never trained: no gradient, each rank's own init
    assert r0["fc_grad"] is None and r1["fc_grad"] is None and not torch.equal(r0["fc"], r1["fc"])
    assert r0["ema_ok"] and r1["ema_ok"] and r0["step"] == r1["step"] == 3
