"""Everything of byol-pytorch 0.9.1: its README, the patterns of public projects, its module
``byol_pytorch.byol_pytorch``, its checkpoints, and (with ``BYOL_PEER_PYTHON``) the real 0.9.1.

Code written for 0.9.1 runs unchanged. Sizes are shrunk (32 px, small heads) and
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
from conftest import REPO_ROOT, TinyNet, make_learner, train_steps
from torch import nn
from torchvision import models
from torchvision import transforms as T

import byol_pytorch
from byol_pytorch import BYOL, BYOLTrainer, MockDataset
from byol_pytorch.byol_pytorch import (EMA, MLP, SEM, MaybeSyncBatchnorm, NetWrapper, RandomApply,
                                       SimSiamMLP, cosine_loss_fn, default, exists,
                                       get_module_device, loss_fn, set_requires_grad, singleton,
                                       update_moving_average)

SIZE = 32
SMALL = dict(projection_size=16, projection_hidden_size=32)


@pytest.fixture(autouse=True)
def _quiet_expected_warnings():
    # Their README feeds torch.randn "images" (ours warns once that images belong in [0, 1]) and
    # takes embeddings in train mode (ours warns once); tests that check a warning re-enable it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expected \\[0, 1\\]")
        warnings.filterwarnings("ignore", message="embeddings taken in train mode")
        yield


def run_loop(learner, images=None, steps=6):
    """0.9.1's README loop: Adam(3e-4), forward, backward, step, update_moving_average()."""
    images = torch.randn(8, 3, SIZE, SIZE) if images is None else images
    return train_steps(learner, images, steps,
                       opt=torch.optim.Adam(learner.parameters(), lr=3e-4))


def assert_falls(losses):
    k = len(losses) // 3
    assert all(map(torch.isfinite, torch.tensor(losses))) and sum(losses[-k:]) < sum(losses[:k])


def resnet_learner(**kwargs):
    return BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool", **SMALL, **kwargs)


# =========================================================================== 1. 0.9.1's README
def test_constructor_and_forward_signatures_match_0_9_1():
    theirs = ["self", "net", "image_size", "hidden_layer", "projection_size",
              "projection_hidden_size", "augment_fn", "augment_fn2", "moving_average_decay",
              "use_momentum", "sync_batchnorm", "use_simplicial_embeddings", "sem_num_simplices",
              "sem_simplex_dim", "sem_temperature"]
    assert list(inspect.signature(BYOL.__init__).parameters)[:len(theirs)] == theirs
    fwd = list(inspect.signature(BYOL.forward).parameters)
    assert fwd[:4] == ["self", "x", "return_embedding", "return_projection"]


@pytest.mark.slow
def test_plain_loop_save_and_simsiam_mode(tmp_path):
    resnet = models.resnet18()
    assert_falls(run_loop(BYOL(resnet, image_size=SIZE, hidden_layer="avgpool", **SMALL)))
    torch.save(resnet.state_dict(), tmp_path / "improved-net.pt")
    fresh = models.resnet18()
    fresh.load_state_dict(torch.load(tmp_path / "improved-net.pt"))
    assert torch.equal(fresh.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    learner = resnet_learner(use_momentum=False)  # turn off momentum in the target encoder
    assert learner.target_encoder is None and not learner.use_momentum
    before = learner.net.conv1.weight.clone()
    assert all(map(torch.isfinite, torch.tensor(run_loop(learner))))
    assert not torch.equal(before, learner.net.conv1.weight)


def test_all_hyperparameters_by_keyword_and_the_ema_updater():
    learner = BYOL(models.resnet18(), image_size=SIZE, hidden_layer="avgpool",
                   projection_size=256, projection_hidden_size=4096, moving_average_decay=0.99)
    assert learner.tau == 0.99 and learner.target_ema_updater.beta == 0.99
    assert (learner.online_predictor[0].out_features, learner.online_predictor[3].out_features) == (
        4096, 256)
    # hand-made schedules set target_ema_updater.beta (or assign a new EMA) during training
    learner = make_learner(moving_average_decay=0.99)
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=1)
    learner.target_ema_updater.beta = 0.5
    assert learner.tau == 0.5 and learner.moving_average_decay == 0.5
    online = [p.detach().clone() for p in learner.online_encoder.parameters()]
    target = [p.detach().clone() for p in learner.target_encoder.parameters()]
    learner.update_moving_average()
    for t0, o, t1 in zip(target, online, learner.target_encoder.parameters()):
        assert torch.allclose(t1, 0.5 * t0 + 0.5 * o, atol=1e-6)
    learner.target_ema_updater = EMA(0.9)
    assert learner.tau == 0.9


@pytest.mark.slow
def test_custom_kornia_augmentations():
    augment_fn = nn.Sequential(kornia.augmentation.RandomHorizontalFlip())
    augment_fn2 = nn.Sequential(kornia.augmentation.RandomHorizontalFlip(),
                                kornia.filters.GaussianBlur2d((3, 3), (1.5, 1.5)))
    learner = BYOL(models.resnet18(), image_size=SIZE, augment_fn=augment_fn, **SMALL)
    assert learner.augment1 is augment_fn and learner.augment2 is augment_fn
    learner = BYOL(models.resnet18(), image_size=SIZE, augment_fn=augment_fn,
                   augment_fn2=augment_fn2, **SMALL)
    assert learner.augment2 is augment_fn2
    assert_falls(run_loop(learner))


def test_return_embedding_and_get_representation():
    learner = resnet_learner()
    imgs = torch.rand(2, 3, SIZE, SIZE)
    projection, embedding = learner(imgs, return_embedding=True)
    assert projection.shape == (2, 16) and embedding.shape == (2, 512)
    assert torch.allclose(learner.online_encoder.projector(embedding), projection, atol=1e-6)
    learner.eval()
    embedding = learner(imgs, return_embedding=True, return_projection=False)
    assert torch.equal(embedding, learner(imgs, True, False))  # their positional form
    normalised = learner.augment1.normalize(imgs)
    assert torch.equal(learner.online_encoder.get_representation(normalised), embedding)


@pytest.mark.slow
def test_reset_moving_average_and_simplicial_embeddings():
    learner = resnet_learner(use_simplicial_embeddings=True, sem_num_simplices=4,
                             sem_simplex_dim=4)
    embed, sem, mlp = learner.online_encoder.projector  # 0.9.1's layout
    assert embed[0].out_features == 16 and isinstance(sem, SEM) and mlp[0].in_features == 16
    assert_falls(run_loop(learner))
    online, target = learner.online_encoder.state_dict(), learner.target_encoder.state_dict()
    assert any(not torch.equal(online[k], target[k]) for k in online)
    learner.reset_moving_average()
    assert all(torch.equal(v, online[k]) for k, v in learner.target_encoder.state_dict().items())


@pytest.mark.slow
def test_trainer_and_mock_dataset(tmp_path):
    resnet = models.resnet18()
    trainer = BYOLTrainer(resnet, dataset=MockDataset(SIZE, 16), image_size=SIZE,
                          hidden_layer="avgpool", learning_rate=3e-4, num_train_steps=3,
                          batch_size=8, checkpoint_every=2, byol_kwargs=SMALL, progress=False,
                          checkpoint_folder=str(tmp_path / "checkpoints"))
    losses = trainer()
    assert len(losses) == 3 and trainer.byol.step == 3
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["checkpoint.0.pt", "checkpoint.1.pt"]
    state = torch.load(tmp_path / "checkpoints" / "checkpoint.1.pt")
    assert torch.equal(state["conv1.weight"], resnet.conv1.weight)


# =========================================================================== 2. real projects
def test_parts_follow_the_backbones_device_and_dtype():
    """``BYOL(resnet.cuda(), ...)`` then ``learner(images.cuda())`` without ``learner.to()``:
    every part follows the backbone (the meta device needs no GPU)."""
    learner = BYOL(models.resnet18().to("meta"), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    assert {t.device.type for t in [*learner.parameters(), *learner.buffers()]} == {"meta"}
    assert learner.augment1.normalize.mean.device.type == "meta"
    learner = make_learner(TinyNet().double())
    assert {p.dtype for p in learner.parameters()} == {torch.float64}
    learner(torch.rand(4, 3, 16, 16)).backward()  # float32 images, float64 model
    assert learner.online_predictor[0].weight.grad.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_images_in_another_float_dtype_are_converted(dtype):
    learner = make_learner()
    images = torch.rand(4, 3, 16, 16)
    loss = learner(images.to(dtype))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    learner.eval()
    ours = learner(images.to(dtype), return_embedding=True, return_projection=False)
    assert ours.dtype == torch.float32 and torch.equal(ours, learner(
        images.to(dtype).float(), return_embedding=True, return_projection=False))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backbone_on_cuda_needs_no_to():
    learner = BYOL(models.resnet18().cuda(), image_size=SIZE, hidden_layer="avgpool", **SMALL)
    assert_falls(run_loop(learner, torch.rand(8, 3, SIZE, SIZE, device="cuda")))


@pytest.mark.slow
def test_encoder_attributes_as_monitoring_code_uses_them(tmp_path):
    """wandb-style monitoring (``learner.online_encoder(images)[0]`` against the target's), then
    ``torch.save(learner.online_encoder.net.state_dict())`` reloaded into another learner."""
    learner = resnet_learner()
    images = torch.rand(8, 3, SIZE, SIZE)
    run_loop(learner, images, steps=2)
    learner.eval()
    with torch.no_grad():
        z_online, z_target = learner.online_encoder(images)[0], learner.target_encoder(images)[0]
        _, representation = learner.online_encoder(images)
        prediction = learner.online_predictor(z_online)
    assert 0.0 < F.cosine_similarity(z_online, z_target).mean().item() < 1.0
    assert representation.shape == (8, 512) and prediction.shape == (8, 16)
    assert learner.online_encoder.net is learner.net
    torch.save(learner.online_encoder.net.state_dict(), tmp_path / "pretrained_model.pth")
    other = resnet_learner()
    other.online_encoder.net.load_state_dict(torch.load(tmp_path / "pretrained_model.pth"))
    assert torch.equal(other.net.layer4[1].conv2.weight, learner.net.layer4[1].conv2.weight)


def test_checkpoint_filtered_by_online_encoder_prefix_and_part_state_dicts():
    """Keep ``learner.online_encoder.net.*`` of a wrapper's checkpoint for a fresh backbone;
    save ``online_encoder`` / ``online_predictor`` state dicts and load them elsewhere."""
    wrapper = nn.ModuleDict(dict(learner=make_learner()))
    learner = wrapper["learner"]
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=2)
    prefix = "learner.online_encoder.net."
    net = TinyNet()
    net.load_state_dict({k[len(prefix):]: v for k, v in wrapper.state_dict().items()
                         if k.startswith(prefix)}, strict=True)
    assert torch.equal(net.conv.weight, learner.net.conv.weight)
    other = make_learner()
    other.online_encoder.load_state_dict(learner.online_encoder.state_dict())
    other.online_predictor.load_state_dict(learner.online_predictor.state_dict())
    learner.eval(), other.eval()
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(other.online_encoder(x)[0], learner.online_encoder(x)[0])


def test_netwrapper_built_directly_for_feature_extraction():
    net = TinyNet().eval()
    encoder = NetWrapper(net, layer="pool", projection_size=8, projection_hidden_size=16).eval()
    x = torch.rand(3, 3, 16, 16)
    expected = net.pool(net.relu(net.bn(net.conv(x)))).flatten(1)
    assert torch.allclose(encoder(x, return_projection=False), expected)
    assert encoder.projector is None  # created at the first projection, as in 0.9.1
    projection, representation = encoder(x)
    assert projection.shape == (3, 8) and torch.allclose(representation, expected)
    assert encoder.projector[0].in_features == 8 and encoder.get_representation(x).shape == (3, 8)


@pytest.mark.slow
def test_custom_learner_assembled_from_0_9_1_pieces():
    """Projects that adapt BYOL rebuild the learner from 0.9.1's pieces: NetWrapper (projector
    made by a dry-run forward), MLP, EMA, ``singleton`` for the target, ``loss_fn`` and the
    3-argument ``update_moving_average``."""
    import copy

    class FlipBYOL(nn.Module):
        def __init__(self, net, image_size, projection_size=16, projection_hidden_size=32):
            super().__init__()
            self.online_encoder = NetWrapper(net, projection_size, projection_hidden_size)
            self.target_encoder = None
            self.target_ema_updater = EMA(0.9)
            self.online_predictor = MLP(projection_size, projection_size, projection_hidden_size)
            self.use_momentum = True
            self.forward(torch.randn(2, 3, image_size, image_size, device=get_module_device(net)))

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
            pred_one = self.online_predictor(self.online_encoder(one)[0])
            pred_two = self.online_predictor(self.online_encoder(two)[0])
            with torch.no_grad():
                target = self._get_target_encoder()
                target_one, target_two = target(one)[0], target(two)[0]
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
    """0.9.1's Lightning example, then reloading its checkpoint."""
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader

    class SelfSupervisedLearner(L.LightningModule):
        def __init__(self, net, **kwargs):
            super().__init__()
            self.learner = BYOL(net, **kwargs)

        def training_step(self, images, _):
            return {"loss": self.learner(images)}

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
    assert any(not torch.equal(a, b) for a, b in zip(
        initial_target, model.learner.target_encoder.parameters()))
    (ckpt,) = Path(tmp_path).rglob("*.ckpt")
    loaded = SelfSupervisedLearner.load_from_checkpoint(ckpt, net=models.resnet18(), **kwargs)
    assert loaded.learner.step == 3
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values()))


def test_optimizer_over_a_wrapper_never_moves_the_target():
    """``Adam(wrapper.parameters())`` lists the frozen target too (as 0.9.1): it moves only
    through the EMA."""
    wrapper = nn.ModuleDict(dict(learner=make_learner()))
    learner = wrapper["learner"]
    target_ids = {id(p) for p in learner.target_encoder.parameters()}
    assert target_ids <= {id(p) for p in wrapper.parameters()}
    opt = torch.optim.Adam(wrapper.parameters(), lr=1e-2)
    learner(torch.rand(4, 3, 16, 16)).backward()
    before = [p.clone() for p in learner.target_encoder.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, learner.target_encoder.parameters()))
    assert not target_ids & {id(p) for p in opt.state}


def test_hidden_layer_minus_one_is_the_networks_output():
    net = TinyNet()
    learner = make_learner(net, hidden_layer=-1).eval()
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(learner(x, return_embedding=True, return_projection=False),
                       net(learner.augment1.normalize(x)))
    assert learner.online_encoder.projector[0].in_features == 5  # TinyNet's 5 classes


def _single_channel_resnet():
    resnet = models.resnet18()
    resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return resnet


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    pytest.param(lambda: timm.create_model("resnet18", in_chans=1, num_classes=0), id="timm"),
    pytest.param(_single_channel_resnet, id="conv1-replaced"),
])
def test_grayscale_backbone(make):
    """``in_channels`` comes from the first convolution; the default views skip the RGB-only ops."""
    learner = BYOL(make(), image_size=SIZE, **SMALL)
    assert learner.in_channels == 1
    assert_falls(run_loop(learner, torch.rand(8, 1, SIZE, SIZE)))
    learner.eval()
    assert learner(torch.rand(2, 1, SIZE, SIZE), return_embedding=True)[1].shape == (2, 512)


def test_augmentations_built_from_random_apply_and_torchvision():
    """0.9.1's default pipeline rebuilt by hand (``RandomApply`` from 0.9.1's module path)."""
    augment = nn.Sequential(
        RandomApply(T.ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.3), T.RandomGrayscale(p=0.2),
        T.RandomHorizontalFlip(), RandomApply(T.GaussianBlur((3, 3), (1.0, 2.0)), p=0.2),
        T.RandomResizedCrop((SIZE, SIZE), antialias=True),
        T.Normalize(mean=torch.tensor([0.485, 0.456, 0.406]),
                    std=torch.tensor([0.229, 0.224, 0.225])))
    learner = resnet_learner(augment_fn=augment)
    random.seed(0)  # RandomApply draws from Python's random
    assert_falls(run_loop(learner, torch.rand(8, 3, 40, 40), steps=9))


def test_state_dict_holds_tensors_only(tmp_path):
    from safetensors.torch import load_file, save_file

    learner = make_learner(total_steps=100)
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=3)
    state = learner.state_dict()
    save_file({k: v.cpu() for k, v in state.items()}, str(tmp_path / "learner.safetensors"))
    other = make_learner(total_steps=100)
    other.load_state_dict(load_file(str(tmp_path / "learner.safetensors")))
    assert other.step == 3 and other.tau == learner.tau
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())


# --------------------------------------------------------------------------- 0.9.1 checkpoints
def as_0_9_1(state: dict, prefix: str = "") -> dict:
    """A state dict laid out as a 0.9.1 learner's: the backbone also under ``net.``, no EMA step."""
    out = {k: v for k, v in state.items() if not k.endswith(("ema_step", "target_synced"))}
    backbone = prefix + "online_encoder.net."
    out.update({prefix + "net." + k[len(backbone):]: v for k, v in state.items()
                if k.startswith(backbone)})
    return out


def test_0_9_1_state_dict_loads_with_a_note_also_nested():
    learner = make_learner()
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=2)
    theirs = as_0_9_1(learner.state_dict())
    keys = set(theirs)
    other = make_learner()
    with pytest.warns(UserWarning, match=r"0.9.1 state dict: dropped its \d+ 'net\.\*' keys.*EMA "
                                         r"step count to 0.*kept its target"):
        other.load_state_dict(theirs)
    assert set(theirs) == keys and other.step == 0  # the caller's dict is left alone
    other(torch.rand(4, 3, 16, 16))  # the first step must not overwrite the saved target
    assert all(torch.equal(a, b) for a, b in zip(other.target_encoder.parameters(),
                                                 learner.target_encoder.parameters()))
    outer = nn.ModuleDict(dict(learner=learner))  # a Lightning checkpoint: learner.net.*, ...
    nested = nn.ModuleDict(dict(learner=make_learner()))
    with pytest.warns(UserWarning, match="0.9.1 state dict"):
        nested.load_state_dict(as_0_9_1(outer.state_dict(), prefix="learner."))
    assert torch.equal(nested["learner"].net.conv.weight, learner.net.conv.weight)


@pytest.mark.parametrize("saved, built, message", [
    (dict(use_simplicial_embeddings=True, sem_num_simplices=2, sem_simplex_dim=4), {},
     "use_simplicial_embeddings=True"),
    ({}, dict(use_simplicial_embeddings=True, sem_num_simplices=2, sem_simplex_dim=4),
     "use_simplicial_embeddings=False"),
    (dict(use_momentum=False), {}, "use_momentum=False"),
])
def test_0_9_1_state_dict_of_another_configuration_names_the_argument(saved, built, message):
    with pytest.raises(RuntimeError, match=message) as err:
        make_learner(**built).load_state_dict(as_0_9_1(make_learner(**saved).state_dict()))
    assert "Missing key" not in str(err.value)  # not torch's raw list of keys


# --------------------------------------------------------------------------- errors and warnings
def test_embeddings_in_train_mode_warn_once_and_a_single_image_says_eval():
    learner = make_learner()
    x = torch.rand(4, 3, 16, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner(x, return_embedding=True)
        learner(x, return_embedding=True)
    assert [str(w.message)[:31] for w in caught] == ["embeddings taken in train mode "]
    assert caught[0].filename == __file__  # points at the caller's line
    with pytest.raises(ValueError, match=r"single image.*learner\.eval\(\)"):
        learner(x[:1], return_embedding=True)
    learner.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert learner(x[:1], return_embedding=True)[1].shape == (1, 8)


def test_vit_embeds_other_sizes_and_rejects_a_wrong_image_size():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, num_classes=0)
    learner = BYOL(vit, image_size=SIZE, hidden_layer=None, **SMALL).eval()
    photos = torch.rand(2, 3, 48, 40)
    resized = F.interpolate(photos, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    assert torch.allclose(learner(photos, return_embedding=True, return_projection=False),
                          learner(resized, return_embedding=True, return_projection=False),
                          atol=1e-6)
    with pytest.raises(RuntimeError, match=r"(?s)dry run.*AssertionError.*img_size=32\)"):
        BYOL(timm.create_model("vit_tiny_patch16_224", num_classes=0), image_size=SIZE,
             hidden_layer=None, **SMALL)
    learner = BYOL(vit, image_size=SIZE, hidden_layer=None, augment_fn=lambda x: x[..., :16, :16],
                   **SMALL)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"backbone failed on views "
                                                                     r"of size \[\(16, 16\)\]"):
        learner(torch.rand(2, 3, SIZE, SIZE))


def test_wrong_channels_sizes_and_positional_views_say_what_to_do():
    with pytest.raises(ValueError, match=r"1 channels but the backbone takes 3.*expand\(-1, 3"):
        make_learner()(torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match="augment_fn returned views with 1 channels"):
        make_learner(augment_fn=lambda x: x[:, :1])(torch.rand(4, 3, 16, 16))
    learner = make_learner(augment_fn=lambda x: x[..., :12, :12])  # a CNN takes other sizes
    with pytest.warns(UserWarning, match=r"views are \(12, 12\).*image_size is \(16, 16\)"):
        assert torch.isfinite(learner(torch.rand(4, 3, 16, 16)))
    with pytest.raises(TypeError, match=r"learner\(view1, x2=view2\)"):
        learner(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))


# --------------------------------------------------------------------------- installing
def test_installed_under_its_own_distribution_name():
    from importlib import metadata

    assert metadata.distribution("byol-torch").version == byol_pytorch.__version__


def test_import_warns_when_byol_pytorch_0_9_1_is_installed_too(tmp_path):
    info = tmp_path / "byol_pytorch-0.9.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byol-pytorch\nVersion: 0.9.1\n")
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", "import byol_pytorch"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "pip uninstall -y byol-pytorch byol-torch && pip install byol-torch" in proc.stderr


@pytest.mark.parametrize("version, fails", [("2.2.2+cpu", True), ("2.3.0", False)])
def test_import_names_the_torch_bound(version, fails):
    code = f"import torch; torch.__version__ = {version!r}; import byol_pytorch"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert (proc.returncode != 0) == fails, proc.stderr[-500:]
    if fails:
        assert (f"byol_pytorch needs torch>=2.3, found torch {version}; upgrade it: pip install "
                "'torch>=2.3'") in proc.stderr
    declared = (REPO_ROOT / "setup.cfg").read_text()
    assert "    torch>=2.3\n" in declared and "    torchvision>=0.18\n" in declared


# =========================================================================== 3. the module
def test_module_path_names_and_small_helpers():
    assert byol_pytorch.byol_pytorch.BYOL is BYOL and NetWrapper is byol_pytorch.NetWrapper
    assert default(None, 3) == 3 and default(0, 3) == 0 and exists(0) and not exists(None)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert get_module_device(net) == torch.device("cpu")
    set_requires_grad(net, False)
    assert not any(p.requires_grad for p in net.parameters())

    class Holder:
        built, calls = None, 0

        @singleton("built")
        def build(self):
            self.calls += 1
            return object()

    h = Holder()
    first = h.build()
    assert h.build() is first and h.calls == 1
    h.built = None  # 0.9.1's reset_moving_average() pattern
    assert h.build() is not first and h.calls == 2


def test_heads_take_0_9_1_argument_order_and_one_batchnorm_rule(monkeypatch):
    mlp = MLP(12, 4, 8)  # (dim, projection_size, hidden_size)
    assert (mlp[0].in_features, mlp[0].out_features, mlp[3].out_features) == (12, 8, 4)
    assert isinstance(MLP(12, 4, 8, sync_batchnorm=True)[1], nn.SyncBatchNorm)
    simsiam = SimSiamMLP(12, 4, 8)
    assert (simsiam[0].in_features, simsiam[3].out_features, simsiam[6].out_features) == (12, 8, 4)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    # None is BatchNorm1d everywhere, as BYOL(sync_batchnorm=None): convert models instead
    assert MaybeSyncBatchnorm() is nn.BatchNorm1d and type(MLP(12, 4, 8)[1]) is nn.BatchNorm1d
    assert MaybeSyncBatchnorm(True) is nn.SyncBatchNorm


def test_loss_sem_ema_and_three_argument_update():
    x, y = torch.randn(5, 12), torch.randn(5, 12)
    expected = 2 - 2 * F.cosine_similarity(x, y, dim=-1)
    assert torch.allclose(cosine_loss_fn(x, y), expected, atol=1e-6) and loss_fn is cosine_loss_fn
    groups = SEM(12, temperature=0.5, dim_simplex=3)(x)
    assert torch.allclose(groups, torch.softmax(x.view(5, 4, 3) / 0.5, -1).view(5, 12), atol=1e-6)
    with pytest.raises(ValueError, match="multiple of dim_simplex"):
        SEM(10, dim_simplex=3)
    ema = EMA(0.75)
    assert torch.allclose(ema.update_average(x, y), 0.75 * x + 0.25 * y)
    assert ema.update_average(None, y) is y
    ma, current = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in ma.parameters()]
    update_moving_average(ema, ma, current)
    for b, m, c in zip(before, ma.parameters(), current.parameters()):
        assert torch.allclose(m, 0.75 * b + 0.25 * c)


def test_random_apply_draws_once_per_call_from_pythons_random():
    double = RandomApply(lambda x: 2 * x, p=0.3)
    random.seed(0)
    outcomes = [double(torch.ones(2))[0].item() for _ in range(2000)]
    random.seed(0)
    assert outcomes == [2.0 if random.random() <= 0.3 else 1.0 for _ in range(2000)]


# =========================================================================== 4. the real 0.9.1
PEER_CONFIGS = {  # ours, built like tests/peer/run_0_9_1.py's CONFIGS
    "default": dict(hidden_layer="avgpool", use_simplicial_embeddings=True),
    "plain": dict(hidden_layer="avgpool"),
    "simsiam": dict(hidden_layer="avgpool", use_momentum=False),
    "output": dict(hidden_layer=-1),
}


def ours_like_peer(name: str, **overrides) -> BYOL:
    def mirror(x):
        return x.flip(-1)

    kwargs = dict(image_size=SIZE, projection_size=16, projection_hidden_size=32,
                  sem_num_simplices=4, sem_simplex_dim=4, moving_average_decay=0.9,
                  augment_fn=nn.Identity(), augment_fn2=mirror, view_batching="joint",
                  **PEER_CONFIGS[name])
    return BYOL(models.mobilenet_v3_small(num_classes=10, dropout=0.0), **{**kwargs, **overrides})


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
        ours["loss"] = learner.train()(x)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.allclose(ours[key], value, atol=1e-5, rtol=1e-5), key


@pytest.mark.parametrize("name", list(PEER_CONFIGS))
def test_peer_training_from_the_same_start_follows_the_same_path(peer_runs, name):
    """Same weights, views, optimizer and EMA rate: with ``view_batching="joint"`` (0.9.1's
    BatchNorm statistics over both views) losses and weights follow 0.9.1's to rounding."""
    run = peer_runs[name]
    learner = ours_like_peer(name)
    with pytest.warns(UserWarning, match="byol-pytorch 0.9.1"):
        learner.load_state_dict(run["initial"])
    opt = torch.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)  # the peer script's
    losses = train_steps(learner, run["train"], len(run["losses"]), opt=opt)
    assert losses == pytest.approx(run["losses"], rel=1e-5, abs=5e-5)
    final = {k[len("online_encoder."):]: v for k, v in run["state_dict"].items()
             if k.startswith("online_encoder.") and v.is_floating_point()}
    for key, value in learner.online_encoder.state_dict().items():
        if key in final and "running" not in key:
            assert torch.allclose(value, final[key], atol=1e-4), key


def test_peer_default_checkpoint_into_a_default_learner_names_the_fix(peer_runs):
    """0.9.1's defaults turn simplicial embeddings on; ours off: say which argument to set."""
    with pytest.raises(RuntimeError, match=r"use_simplicial_embeddings=True\)") as err:
        ours_like_peer("plain").load_state_dict(peer_runs["default"]["state_dict"])
    assert "Unexpected key" not in str(err.value)


def test_helpers_match_0_9_1(peer_runs):
    h = peer_runs["helpers"]
    x, y = h["x"], h["y"]
    assert torch.allclose(cosine_loss_fn(x, y), h["loss"], atol=1e-6)
    assert torch.allclose(SEM(12, 0.5, 3)(x), h["sem"], atol=1e-6)
    assert torch.allclose(EMA(0.75).update_average(x, y), h["ema"], atol=1e-6)
    ma, current = nn.Linear(3, 2), nn.Linear(3, 2)
    ma.load_state_dict(h["ma_before"])
    current.load_state_dict(h["current"])
    update_moving_average(EMA(0.75), ma, current)
    assert all(torch.allclose(v, h["ma"][k], atol=1e-6) for k, v in ma.state_dict().items())
    for name, fn in (("MLP", MLP), ("SimSiamMLP", SimSiamMLP)):
        state = fn(12, 4, 8).state_dict()
        assert list(state) == h["mlp_keys"][name]
        assert [tuple(t.shape) for t in state.values()] == h["mlp_shapes"][name]


# =========================================================================== our README
def test_readme_use_snippet_runs_without_warnings(tmp_path, monkeypatch):
    """The README's "Use" code, shrunk (ResNet-18 at 32 px): it runs, warns about nothing and
    gives the shapes its comments state."""
    readme = (REPO_ROOT / "README.md").read_text()
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
