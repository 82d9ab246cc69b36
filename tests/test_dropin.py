"""Code written for byol-pytorch 0.9.1, run unchanged against this library.

Part 1 runs 0.9.1's README. Part 2 ports the patterns of public projects that import
``byol_pytorch`` (each test names its pattern): attribute access, the ``byol_pytorch.byol_pytorch``
module, Lightning, custom augmentations, grayscale backbones, saving and reloading, 0.9.1
checkpoints. Part 3 compares with the real 0.9.1 where its interpreter is given
(``BYOL_PEER_PYTHON``; ``.ci/run`` provides one). Sizes are shrunk (32 px, small heads) and
``pretrained=True`` is dropped (no downloads) so that the file runs in seconds on CPU.
"""

from __future__ import annotations

import inspect
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import kornia
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, TinyNet
from torch import nn
from torchvision import models
from torchvision import transforms as T

import byol_pytorch
from byol_pytorch import BYOL, BYOLTrainer, MockDataset
from byol_pytorch.byol_pytorch import RandomApply

SIZE = 32
STEPS = 6
SMALL = dict(projection_size=16, projection_hidden_size=32)


@pytest.fixture(autouse=True)
def _quiet_expected_warnings():
    # Their README feeds torch.randn "images" (ours warns once that images belong in [0, 1]) and
    # takes embeddings in train mode (ours warns once); tests that check a warning re-enable it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expected \\[0, 1\\]")
        warnings.filterwarnings("ignore", message="embeddings taken in train mode")
        yield


def run_loop(learner, images=None, steps=STEPS, update=True):
    """0.9.1's README loop; returns the losses."""
    opt = torch.optim.Adam(learner.parameters(), lr=3e-4)
    images = torch.randn(8, 3, SIZE, SIZE) if images is None else images
    losses = []
    for _ in range(steps):
        loss = learner(images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if update:
            learner.update_moving_average()  # update moving average of target encoder
        losses.append(loss.item())
    return losses


def assert_falls(losses):
    assert all(torch.isfinite(torch.tensor(losses)))
    k = len(losses) // 3
    assert sum(losses[-k:]) < sum(losses[:k]), losses


# =========================================================================== 1. 0.9.1's README
def test_constructor_and_forward_signatures_match_0_9_1():
    params = list(inspect.signature(BYOL.__init__).parameters)
    theirs = ["self", "net", "image_size", "hidden_layer", "projection_size",
              "projection_hidden_size", "augment_fn", "augment_fn2", "moving_average_decay",
              "use_momentum", "sync_batchnorm", "use_simplicial_embeddings", "sem_num_simplices",
              "sem_simplex_dim", "sem_temperature"]
    assert params[: len(theirs)] == theirs
    fwd = list(inspect.signature(BYOL.forward).parameters)
    assert fwd[:4] == ["self", "x", "return_embedding", "return_projection"]


@pytest.mark.slow
def test_plain_loop_and_save(tmp_path):
    resnet = models.resnet18()
    learner = BYOL(resnet, image_size=SIZE, hidden_layer="avgpool", **SMALL)
    assert_falls(run_loop(learner))
    torch.save(resnet.state_dict(), tmp_path / "improved-net.pt")
    fresh = models.resnet18()
    fresh.load_state_dict(torch.load(tmp_path / "improved-net.pt"))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 resnet.state_dict().values()))


@pytest.mark.slow
def test_simsiam_mode():
    resnet = models.resnet18()
    learner = BYOL(resnet, image_size=SIZE, hidden_layer="avgpool", **SMALL,
                   use_momentum=False)  # turn off momentum in the target encoder
    assert learner.target_encoder is None and not learner.use_momentum
    before = resnet.conv1.weight.clone()
    losses = run_loop(learner, update=False)  # on random "images" the loss need not fall
    assert all(torch.isfinite(torch.tensor(losses))) and not torch.equal(before, resnet.conv1.weight)
    with pytest.raises(RuntimeError, match="use_momentum=True"):
        learner.update_moving_average()  # 0.9.1 asserts here too


def test_all_hyperparameters_by_keyword():
    learner = BYOL(
        models.resnet18(),
        image_size=SIZE,
        hidden_layer="avgpool",
        projection_size=256,  # the projection size
        projection_hidden_size=4096,  # the hidden dimension of the MLP
        moving_average_decay=0.99,  # the moving average decay factor for the target encoder
    )
    assert learner.tau == 0.99 and learner.target_ema_updater.beta == 0.99
    predictor = learner.online_predictor
    assert (predictor[0].out_features, predictor[3].out_features) == (4096, 256)


@pytest.mark.slow
def test_custom_kornia_augmentations():
    resnet = models.resnet18()
    augment_fn = nn.Sequential(kornia.augmentation.RandomHorizontalFlip())
    augment_fn2 = nn.Sequential(
        kornia.augmentation.RandomHorizontalFlip(),
        kornia.filters.GaussianBlur2d((3, 3), (1.5, 1.5)),
    )
    learner = BYOL(resnet, image_size=SIZE, hidden_layer=-2, augment_fn=augment_fn, **SMALL)
    assert learner.augment1 is augment_fn and learner.augment2 is augment_fn
    learner = BYOL(resnet, image_size=SIZE, hidden_layer=-2, augment_fn=augment_fn,
                   augment_fn2=augment_fn2, **SMALL)
    assert learner.augment2 is augment_fn2
    assert_falls(run_loop(learner))


def test_return_embedding():
    learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    imgs = torch.rand(2, 3, SIZE, SIZE)
    projection, embedding = learner(imgs, return_embedding=True)
    assert projection.shape == (2, 16) and embedding.shape == (2, 512)
    assert torch.allclose(learner.online_encoder.projector(embedding), projection, atol=1e-6)
    learner.eval()
    embedding = learner(imgs, return_embedding=True, return_projection=False)
    assert torch.equal(embedding, learner(imgs, True, False))  # their positional form


@pytest.mark.slow
def test_reset_moving_average_and_simplicial_embeddings():
    learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", **SMALL,
                   use_simplicial_embeddings=True, sem_num_simplices=4, sem_simplex_dim=4)
    assert_falls(run_loop(learner))
    online, target = learner.online_encoder.state_dict(), learner.target_encoder.state_dict()
    assert any(not torch.equal(online[k], target[k]) for k in online)
    learner.reset_moving_average()
    assert all(torch.equal(v, online[k]) for k, v in learner.target_encoder.state_dict().items())


@pytest.mark.slow
def test_trainer_and_mock_dataset(tmp_path):
    resnet = models.resnet18()
    trainer = BYOLTrainer(
        resnet,
        dataset=MockDataset(SIZE, 16),
        image_size=SIZE,
        hidden_layer="avgpool",
        learning_rate=3e-4,
        num_train_steps=3,
        batch_size=8,
        checkpoint_every=2,  # improved model will be saved periodically to ./checkpoints folder
        checkpoint_folder=str(tmp_path / "checkpoints"),
        byol_kwargs=SMALL,
        progress=False,
    )
    losses = trainer()
    assert len(losses) == 3 and trainer.byol.step == 3
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["checkpoint.0.pt", "checkpoint.1.pt"]
    state = torch.load(tmp_path / "checkpoints" / "checkpoint.1.pt")
    assert torch.equal(state["conv1.weight"], resnet.conv1.weight)


# =========================================================================== 2. real projects
def tiny(**overrides):
    return BYOL(TinyNet(), **{**dict(image_size=16, projection_size=8, projection_hidden_size=16),
                              **overrides})


def test_parts_are_built_on_the_backbones_device():
    """``BYOL(resnet.cuda(), ...)`` then ``learner(images.cuda())`` without ``learner.to()``:
    every part follows the backbone (here the meta device, which needs no GPU)."""
    learner = BYOL(models.resnet18().to("meta"), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    devices = {t.device.type for t in [*learner.parameters(), *learner.buffers()]}
    assert devices == {"meta"}
    assert learner.augment1.normalize.mean.device.type == "meta"


def test_parts_take_the_backbones_dtype_and_images_are_converted():
    learner = BYOL(TinyNet().double(), image_size=16, projection_size=8, projection_hidden_size=16)
    assert {p.dtype for p in learner.parameters()} == {torch.float64}
    images = torch.rand(4, 3, 16, 16)  # float32 images, float64 model
    loss = learner(images)
    loss.backward()
    assert torch.isfinite(loss) and learner.online_predictor[0].weight.grad.dtype == torch.float64
    learner.eval()
    for dtype in (torch.float16, torch.bfloat16):  # converted to the model's dtype
        half = images.to(dtype)
        assert torch.equal(learner(half, return_embedding=True, return_projection=False),
                           learner(half.double(), return_embedding=True, return_projection=False))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backbone_on_cuda_needs_no_to():
    resnet = models.resnet18().cuda()
    learner = BYOL(resnet, image_size=SIZE, hidden_layer="avgpool", **SMALL)
    assert_falls(run_loop(learner, torch.rand(8, 3, SIZE, SIZE, device="cuda")))


@pytest.mark.slow
def test_encoder_attributes_as_monitoring_code_uses_them():
    """wandb-style monitoring: ``learner.online_encoder(images)[0]`` (projection) against
    ``learner.target_encoder(images)[0]``; ``_, repr = learner.online_encoder(images)``."""
    learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    images = torch.rand(8, 3, SIZE, SIZE)
    run_loop(learner, images, steps=2)
    learner.eval()
    with torch.no_grad():
        z_online = learner.online_encoder(images)[0]  # get projection
        z_target = learner.target_encoder(images)[0]  # get projection
        _, representation = learner.online_encoder(images)
        alone = learner.online_encoder(images, return_projection=False)
        prediction = learner.online_predictor(z_online)
    cos_sim = F.cosine_similarity(z_online, z_target).mean().item()
    assert 0.0 < cos_sim < 1.0  # target = EMA of online: close, not equal
    assert torch.equal(alone, representation) and representation.shape == (8, 512)
    assert torch.allclose(learner.online_encoder.projector(representation), z_online)
    assert prediction.shape == (8, 16)
    assert learner.online_encoder.net is learner.net
    assert callable(learner.augment1) and callable(learner.augment2)


def test_setting_target_ema_updater_beta_changes_the_rate():
    """Hand-made schedules set ``learner.target_ema_updater.beta`` during training."""
    learner = tiny(moving_average_decay=0.99)
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=1)
    learner.target_ema_updater.beta = 0.5
    assert learner.tau == 0.5
    online = [p.detach().clone() for p in learner.online_encoder.parameters()]
    target = [p.detach().clone() for p in learner.target_encoder.parameters()]
    learner.update_moving_average()
    for t0, o, t1 in zip(target, online, learner.target_encoder.parameters()):
        assert torch.allclose(t1, 0.5 * t0 + 0.5 * o, atol=1e-6)


@pytest.mark.slow
def test_saving_online_encoder_net_and_reloading_it(tmp_path):
    """``torch.save(learner.online_encoder.net.state_dict(), path)``, later
    ``model.learner.online_encoder.net.load_state_dict(torch.load(path))``."""
    learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    run_loop(learner, steps=2)
    torch.save(learner.online_encoder.net.state_dict(), tmp_path / "pretrained_model.pth")
    other = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    other.online_encoder.net.load_state_dict(torch.load(tmp_path / "pretrained_model.pth"))
    assert all(torch.equal(a, b) for a, b in zip(other.net.state_dict().values(),
                                                 learner.net.state_dict().values()))


@pytest.mark.slow
def test_checkpoint_filtered_by_online_encoder_prefix(tmp_path):
    """Keep the keys starting with ``learner.online_encoder.net.`` of a wrapper's checkpoint, strip
    the prefix, load into a fresh backbone with ``strict=True``."""
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool",
                                **SMALL)

    wrapper = Wrapper()
    run_loop(wrapper.learner, steps=1)
    torch.save({"state_dict": wrapper.state_dict()}, tmp_path / "epoch=1.ckpt")
    state = torch.load(tmp_path / "epoch=1.ckpt")["state_dict"]
    prefix = "learner.online_encoder.net."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    resnet = models.resnet18()
    resnet.load_state_dict(weights, strict=True)
    assert torch.equal(resnet.layer4[1].conv2.weight, wrapper.learner.net.layer4[1].conv2.weight)


def test_online_encoder_and_predictor_state_dicts(tmp_path):
    """``{'online_encoder': learner.online_encoder.state_dict(), 'online_predictor': ...}``."""
    learner = tiny()
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=2)
    torch.save({"epoch": 1, "online_encoder": learner.online_encoder.state_dict(),
                "online_predictor": learner.online_predictor.state_dict()}, tmp_path / "best.pt")
    ckpt = torch.load(tmp_path / "best.pt")
    other = tiny()
    other.online_encoder.load_state_dict(ckpt["online_encoder"])
    other.online_predictor.load_state_dict(ckpt["online_predictor"])
    learner.eval(), other.eval()
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(other.online_encoder(x)[0], learner.online_encoder(x)[0])


def test_netwrapper_built_directly_for_feature_extraction():
    """``NetWrapper(net, layer=..., projection_size=..., projection_hidden_size=...)`` then
    ``encoder(x, return_projection=False)`` as an embedding model."""
    from byol_pytorch.byol_pytorch import NetWrapper

    net = TinyNet().eval()
    encoder = NetWrapper(net, layer="pool", projection_size=8, projection_hidden_size=16).eval()
    x = torch.rand(3, 3, 16, 16)
    expected = net.pool(net.relu(net.bn(net.conv(x)))).flatten(1)
    assert torch.allclose(encoder(x, return_projection=False), expected)
    assert encoder.projector is None  # created at the first projection, as in 0.9.1
    projection, representation = encoder(x)
    assert projection.shape == (3, 8) and torch.allclose(representation, expected)
    assert encoder.projector[0].in_features == 8


@pytest.mark.slow
def test_custom_learner_assembled_from_0_9_1_pieces():
    """Projects that adapt BYOL (other inputs, other views) rebuild the learner from 0.9.1's
    pieces: ``NetWrapper`` (projector created by a dry-run forward), ``MLP``, ``EMA``,
    ``singleton`` for the target, ``loss_fn`` and the 3-argument ``update_moving_average``."""
    import copy

    from byol_pytorch.byol_pytorch import (EMA, MLP, NetWrapper, get_module_device, loss_fn,
                                           set_requires_grad, singleton, update_moving_average)

    class FlipBYOL(nn.Module):
        def __init__(self, net, image_size, hidden_layer=-2, projection_size=16,
                     projection_hidden_size=32, moving_average_decay=0.9):
            super().__init__()
            self.online_encoder = NetWrapper(net, projection_size, projection_hidden_size,
                                             layer=hidden_layer)
            self.target_encoder = None
            self.target_ema_updater = EMA(moving_average_decay)
            self.online_predictor = MLP(projection_size, projection_size, projection_hidden_size)
            device = get_module_device(net)
            self.to(device)
            self.forward(torch.randn(2, 3, image_size, image_size, device=device))

        @singleton("target_encoder")
        def _get_target_encoder(self):
            target_encoder = copy.deepcopy(self.online_encoder)
            set_requires_grad(target_encoder, False)
            return target_encoder

        def update_moving_average(self):
            update_moving_average(self.target_ema_updater, self.target_encoder,
                                  self.online_encoder)

        def forward(self, x):
            one, two = x, x.flip(-1)
            online_one, online_two = self.online_encoder(one)[0], self.online_encoder(two)[0]
            pred_one, pred_two = self.online_predictor(online_one), self.online_predictor(online_two)
            with torch.no_grad():
                target_encoder = self._get_target_encoder()
                target_one, target_two = target_encoder(one)[0], target_encoder(two)[0]
            return (loss_fn(pred_one, target_two) + loss_fn(pred_two, target_one)).mean()

    learner = FlipBYOL(TinyNet(), image_size=16)
    assert learner.online_encoder.projector[0].in_features == 8  # built by the dry run
    before = learner.target_encoder.net.conv.weight.clone()
    assert_falls(run_loop(learner, torch.rand(8, 3, 16, 16), steps=9))
    after, online = learner.target_encoder.net.conv.weight, learner.online_encoder.net.conv.weight
    # the target moved a tenth of the way each step: towards the online weights, not onto them
    assert 0 < (after - online).abs().max() < (before - online).abs().max()


@pytest.mark.slow
def test_lightning_module_with_ema_in_on_before_zero_grad(tmp_path):
    """0.9.1's Lightning example: the learner inside a LightningModule, ``self.parameters()`` to
    Adam, the EMA update in ``on_before_zero_grad``; then reload its checkpoint."""
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader

    class SelfSupervisedLearner(L.LightningModule):
        def __init__(self, net, **kwargs):
            super().__init__()
            self.learner = BYOL(net, **kwargs)

        def forward(self, images):
            return self.learner(images)

        def training_step(self, images, _):
            loss = self.forward(images)
            return {"loss": loss}

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-4)

        def on_before_zero_grad(self, _):
            if self.learner.use_momentum:
                self.learner.update_moving_average()

    kwargs = dict(image_size=SIZE, hidden_layer="avgpool", **SMALL)
    model = SelfSupervisedLearner(models.resnet18(), **kwargs)
    initial_target = [p.clone() for p in model.learner.target_encoder.parameters()]
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(torch.rand(16, 3, SIZE, SIZE), batch_size=4))
    assert model.learner.step == 3
    moved = [not torch.equal(a, b) for a, b in zip(initial_target,
                                                    model.learner.target_encoder.parameters())]
    assert any(moved)
    (ckpt,) = Path(tmp_path).rglob("*.ckpt")
    loaded = SelfSupervisedLearner.load_from_checkpoint(ckpt, net=models.resnet18(), **kwargs)
    assert loaded.learner.step == 3
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_optimizer_over_a_wrapper_never_moves_the_target():
    """``Adam(wrapper.parameters())`` lists the frozen target too (as with 0.9.1): it gets no
    gradient and no optimizer state, and moves only through the EMA."""
    wrapper = nn.ModuleDict(dict(learner=tiny()))
    learner = wrapper["learner"]
    target_ids = {id(p) for p in learner.target_encoder.parameters()}
    assert target_ids <= {id(p) for p in wrapper.parameters()}
    opt = torch.optim.Adam(wrapper.parameters(), lr=1e-2)
    loss = learner(torch.rand(4, 3, 16, 16))
    opt.zero_grad()
    loss.backward()
    before = [p.clone() for p in learner.target_encoder.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, learner.target_encoder.parameters()))
    assert not target_ids & {id(p) for p in opt.state}


def test_hidden_layer_minus_one_is_the_networks_output():
    net = TinyNet()
    learner = BYOL(net, image_size=16, hidden_layer=-1, projection_size=8,
                   projection_hidden_size=16).eval()
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(learner(x, return_embedding=True, return_projection=False),
                       net(learner.augment1.normalize(x)))
    assert learner.online_encoder.projector[0].in_features == 5  # TinyNet's 5 classes


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    pytest.param(lambda: timm.create_model("resnet18", in_chans=1, num_classes=0), id="timm"),
    pytest.param(lambda: _single_channel(models.resnet18()), id="conv1-replaced"),
])
def test_grayscale_backbone(make):
    """A backbone built for 1 channel: ``in_channels`` is read from its first convolution and the
    default augmentations leave out the RGB-only colour ops."""
    learner = BYOL(make(), image_size=SIZE, **SMALL)
    assert learner.in_channels == 1
    assert_falls(run_loop(learner, torch.rand(8, 1, SIZE, SIZE)))
    learner.eval()
    assert learner(torch.rand(2, 1, SIZE, SIZE), return_embedding=True)[1].shape == (2, 512)


def _single_channel(resnet):
    resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return resnet


def test_grayscale_images_into_an_rgb_backbone_say_what_to_do():
    learner = tiny()
    with pytest.raises(ValueError, match=r"1 channels but the backbone takes 3.*expand\(-1, 3"):
        learner(torch.rand(4, 1, 16, 16))
    assert torch.isfinite(learner(torch.rand(4, 1, 16, 16).expand(-1, 3, -1, -1)))


def test_augmentations_built_from_random_apply_and_torchvision():
    """0.9.1's default pipeline rebuilt by hand (``RandomApply`` from 0.9.1's module path)."""
    augment = nn.Sequential(
        RandomApply(T.ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.3),
        T.RandomGrayscale(p=0.2),
        T.RandomHorizontalFlip(),
        RandomApply(T.GaussianBlur((3, 3), (1.0, 2.0)), p=0.2),
        T.RandomResizedCrop((SIZE, SIZE), antialias=True),
        T.Normalize(mean=torch.tensor([0.485, 0.456, 0.406]),
                    std=torch.tensor([0.229, 0.224, 0.225])),
    )
    learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", augment_fn=augment,
                   **SMALL)
    random.seed(0)  # RandomApply draws from Python's random
    assert_falls(run_loop(learner, torch.rand(8, 3, 40, 40), steps=9))


def test_state_dict_holds_tensors_only(tmp_path):
    """``safetensors.torch.save_file(learner.state_dict())`` and ``{k: v.cpu() ...}`` work, and the
    tau schedule position comes back."""
    from safetensors.torch import load_file, save_file

    learner = tiny(total_steps=100)
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=3)
    state = learner.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    save_file({k: v.cpu() for k, v in state.items()}, str(tmp_path / "learner.safetensors"))
    other = tiny(total_steps=100)
    other.load_state_dict(load_file(str(tmp_path / "learner.safetensors")))
    assert other.step == 3 and other.tau == learner.tau
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())


# --------------------------------------------------------------------------- 0.9.1 checkpoints
def as_0_9_1(state: dict, prefix: str = "") -> dict:
    """A state dict laid out as a 0.9.1 learner's: the backbone also under ``net.``, no EMA step."""
    out = {k: v for k, v in state.items()
           if k not in (prefix + "ema_step", prefix + "target_synced")}
    backbone = prefix + "online_encoder.net."
    out.update({prefix + "net." + k[len(backbone):]: v for k, v in state.items()
                if k.startswith(backbone)})
    return out


def test_0_9_1_state_dict_loads_with_a_note():
    learner = tiny()
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=2)
    theirs = as_0_9_1(learner.state_dict())
    keys = set(theirs)
    other = tiny()
    with pytest.warns(UserWarning, match=r"byol-pytorch 0.9.1 state dict: dropped its \d+ "
                                         r"'net\.\*' keys.*EMA step count to 0.*kept its target"):
        other.load_state_dict(theirs)
    assert set(theirs) == keys  # the caller's dict is left alone
    assert other.step == 0
    # the saved target is kept: the first training step must not overwrite it with the online net
    other(torch.rand(4, 3, 16, 16))
    for a, b in zip(other.target_encoder.parameters(), learner.target_encoder.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(other.net.conv.weight, learner.net.conv.weight)


def test_0_9_1_state_dict_loads_into_a_nested_learner():
    """A Lightning checkpoint of a 0.9.1 module: ``learner.net.*``, ``learner.online_encoder.*``."""
    outer = nn.ModuleDict(dict(learner=tiny()))
    theirs = as_0_9_1(outer.state_dict(), prefix="learner.")
    other = nn.ModuleDict(dict(learner=tiny()))
    with pytest.warns(UserWarning, match="byol-pytorch 0.9.1 state dict"):
        other.load_state_dict(theirs)
    assert torch.equal(other["learner"].net.conv.weight, outer["learner"].net.conv.weight)


@pytest.mark.parametrize("saved, built, message", [
    (dict(use_simplicial_embeddings=True, sem_num_simplices=2, sem_simplex_dim=4), {},
     "use_simplicial_embeddings=True"),
    ({}, dict(use_simplicial_embeddings=True, sem_num_simplices=2, sem_simplex_dim=4),
     "use_simplicial_embeddings=False"),
    (dict(use_momentum=False), {}, "use_momentum=False"),
])
def test_0_9_1_state_dict_of_another_configuration_names_the_argument(saved, built, message):
    theirs = as_0_9_1(tiny(**saved).state_dict())
    with pytest.warns(UserWarning, match="0.9.1"), pytest.raises(RuntimeError, match=message):
        tiny(**built).load_state_dict(theirs)


# --------------------------------------------------------------------------- errors and warnings
def test_embeddings_in_train_mode_warn_once_and_a_single_image_says_eval():
    learner = tiny()
    x = torch.rand(4, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner(x, return_embedding=True)
        learner(x, return_embedding=True)
    assert [str(w.message)[:31] for w in caught] == ["embeddings taken in train mode "]
    with pytest.raises(ValueError, match=r"single image.*learner\.eval\(\)"):
        learner(x[:1], return_embedding=True)
    learner.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert learner(x[:1], return_embedding=True)[1].shape == (1, 8)


def test_embeddings_are_taken_at_image_size():
    """A timm ViT built for 32 px embeds larger photos: they are resized first."""
    vit = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, num_classes=0)
    learner = BYOL(vit, image_size=SIZE, hidden_layer=None, **SMALL).eval()
    photos = torch.rand(2, 3, 48, 40)
    resized = F.interpolate(photos, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    assert torch.allclose(learner(photos, return_embedding=True, return_projection=False),
                          learner(resized, return_embedding=True, return_projection=False),
                          atol=1e-6)


def test_backbone_that_rejects_image_size_names_the_fix():
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=0)  # built for 224 px
    with pytest.raises(RuntimeError, match=r"(?s)dry run.*AssertionError.*img_size=32\)"):
        BYOL(vit, image_size=SIZE, hidden_layer=None, **SMALL)


def test_augment_fn_with_the_wrong_channels_or_size():
    with pytest.raises(ValueError, match="augment_fn returned views with 1 channels"):
        tiny(augment_fn=lambda x: x[:, :1])(torch.rand(4, 3, 16, 16))
    # a CNN takes other sizes: it trains, with one warning
    learner = tiny(augment_fn=lambda x: x[..., :12, :12])
    with pytest.warns(UserWarning, match=r"views are \(12, 12\).*image_size is \(16, 16\)"):
        assert torch.isfinite(learner(torch.rand(4, 3, 16, 16)))
    # a ViT does not: a clear error instead of its AssertionError
    vit = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, num_classes=0)
    learner = BYOL(vit, image_size=SIZE, hidden_layer=None, augment_fn=lambda x: x[..., :16, :16],
                   **SMALL)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"backbone failed on views "
                                                                     r"of size \[\(16, 16\)\]"):
        learner(torch.rand(2, 3, SIZE, SIZE))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_in_another_float_dtype_are_converted(dtype):
    learner = tiny()
    images = torch.rand(4, 3, 16, 16)
    loss = learner(images.to(dtype))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    learner.eval()
    ours = learner(images.to(dtype), return_embedding=True, return_projection=False)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, learner(images.to(dtype).float(), return_embedding=True,
                                     return_projection=False))


def test_second_view_passed_positionally_points_to_x2():
    learner = tiny()
    v1, v2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    with pytest.raises(TypeError, match=r"learner\(view1, x2=view2\)"):
        learner(v1, v2)


# --------------------------------------------------------------------------- installing
def test_installed_under_its_own_distribution_name():
    from importlib import metadata

    dist = metadata.distribution("byol-torch")
    assert "byol_pytorch" in (dist.read_text("top_level.txt") or "byol_pytorch")
    assert dist.version == byol_pytorch.__version__


def test_import_warns_when_byol_pytorch_0_9_1_is_installed_too(tmp_path):
    info = tmp_path / "byol_pytorch-0.9.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byol-pytorch\nVersion: 0.9.1\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", "import byol_pytorch"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "pip uninstall -y byol-pytorch byol-torch && pip install byol-torch" in proc.stderr


@pytest.mark.parametrize("version, fails", [("2.2.2+cpu", True), ("2.3.0", False)])
def test_import_names_the_torch_bound(version, fails):
    """An older torch fails at import with the fix, not with an AttributeError deep in a step;
    the bound is the one setup.cfg declares."""
    code = f"import torch; torch.__version__ = {version!r}; import byol_pytorch"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert (proc.returncode != 0) == fails, proc.stderr[-500:]
    if fails:
        assert (f"byol_pytorch needs torch>=2.3, found torch {version}; upgrade it: pip install "
                "'torch>=2.3'") in proc.stderr
    declared = (REPO_ROOT / "setup.cfg").read_text()
    assert "    torch>=2.3\n" in declared and "    torchvision>=0.18\n" in declared


# =========================================================================== 3. the real 0.9.1
PEER_CONFIGS = {  # ours, built like tests/peer/run_0_9_1.py's CONFIGS
    "default": dict(hidden_layer="avgpool", use_simplicial_embeddings=True),
    "plain": dict(hidden_layer="avgpool"),
    "simsiam": dict(hidden_layer="avgpool", use_momentum=False),
    "output": dict(hidden_layer=-1),
}


def ours_like_peer(name: str) -> BYOL:
    def identity(x):
        return x

    def mirror(x):
        return x.flip(-1)

    return BYOL(models.mobilenet_v3_small(num_classes=10, dropout=0.0), image_size=SIZE,
                projection_size=16, projection_hidden_size=32, sem_num_simplices=4,
                sem_simplex_dim=4, moving_average_decay=0.9, augment_fn=identity,
                augment_fn2=mirror, view_batching="joint", **PEER_CONFIGS[name])


@pytest.mark.parametrize("name", list(PEER_CONFIGS))
def test_peer_checkpoint_gives_the_same_outputs(peer_runs, name):
    run = peer_runs[name]
    learner = ours_like_peer(name)
    with pytest.warns(UserWarning, match="byol-pytorch 0.9.1 state dict"):
        learner.load_state_dict(run["state_dict"])
    x, theirs = run["x"], run["outputs"]
    learner.eval()
    with torch.no_grad():
        projection, representation = learner.online_encoder(x)
        ours = dict(projection=projection, representation=representation,
                    prediction=learner.online_predictor(projection),
                    embedding=learner(x, return_embedding=True, return_projection=False))
        if learner.target_encoder is not None:
            ours["target"] = learner.target_encoder(x)[0]
        learner.train()
        ours["loss"] = learner(x)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.allclose(ours[key], value, atol=1e-5, rtol=1e-5), key


@pytest.mark.parametrize("name", list(PEER_CONFIGS))
def test_peer_training_from_the_same_start_follows_the_same_path(peer_runs, name):
    """Same initial weights, views, optimizer and EMA rate: with ``view_batching="joint"`` (0.9.1's
    BatchNorm statistics over both views) the losses and weights follow 0.9.1's to rounding."""
    run = peer_runs[name]
    learner = ours_like_peer(name)
    with pytest.warns(UserWarning, match="byol-pytorch 0.9.1"):
        learner.load_state_dict(run["initial"])
    losses = _adam_steps(learner, run)
    assert losses == pytest.approx(run["losses"], rel=1e-5, abs=5e-5)
    final = {k[len("online_encoder."):]: v for k, v in run["state_dict"].items()
             if k.startswith("online_encoder.") and v.is_floating_point()}
    for key, value in learner.online_encoder.state_dict().items():
        if key in final and "running" not in key:
            assert torch.allclose(value, final[key], atol=1e-4), key


def _adam_steps(learner: BYOL, run: dict) -> list[float]:
    """The peer script's loop: SGD(lr=0.05, momentum=0.9) on its fixed training batch."""
    opt = torch.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in run["losses"]:
        loss = learner(run["train"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if learner.use_momentum:
            learner.update_moving_average()
        losses.append(loss.item())
    return losses


# =========================================================================== our README
def test_readme_use_snippet_runs_without_warnings(tmp_path, monkeypatch):
    """The README's "Use" code, shrunk (ResNet-18 at 32 px): it runs, warns about nothing (the
    embeddings are taken in eval mode) and gives the shapes its comments state."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## Use", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    small = (code.replace("resnet50()", "resnet18()").replace("image_size=224", "image_size=32")
             .replace("256, 256", "40, 40"))
    assert small.count("resnet18") == 1 and "40, 40" in small  # the shrinking applied
    monkeypatch.chdir(tmp_path)  # it saves improved.pt
    scope: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(small, "README.md", "exec"), scope)
    assert scope["projection"].shape == (16, 256) and scope["embedding"].shape == (16, 512)
    assert scope["learner"].training and (tmp_path / "improved.pt").is_file()
