"""All of byol-pytorch 0.9.1: its README, public projects' patterns, its module, its checkpoints,
(with ``BYOL_PEER_PYTHON``) the real 0.9.1; at CPU sizes (32 px, small heads, no downloads)."""

from __future__ import annotations

import copy
import inspect
import os
import random
import subprocess
import sys
import warnings
from importlib import metadata

import kornia
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, TinyNet, load_script, make_learner, train_steps
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision import models
from torchvision import transforms as T

import byol_pytorch
from byol_pytorch import BYOL, BYOLTrainer, MockDataset
from byol_pytorch.byol_pytorch import (EMA, MLP, SEM, MaybeSyncBatchnorm, NetWrapper, RandomApply,
                                       SimSiamMLP, cosine_loss_fn, default, exists,
                                       get_module_device, loss_fn, set_requires_grad, singleton,
                                       update_moving_average)

PEER = load_script("tests/peer/run_0_9_1.py", "run_0_9_1")  # how the peer builds and probes 0.9.1
SIZE, SMALL = 32, dict(projection_size=16, projection_hidden_size=32)
pytestmark = [pytest.mark.filterwarnings(r"ignore:.*expected \[0, 1\]"),  # their torch.randn images
              pytest.mark.filterwarnings("ignore:embeddings taken in train mode")]  # their README


def run_loop(learner, images=None, steps=6, lr=3e-4):
    """0.9.1's README loop: Adam, forward, backward, step, update_moving_average()."""
    images = torch.randn(8, 3, SIZE, SIZE) if images is None else images
    return train_steps(learner, images, steps, opt=torch.optim.Adam(learner.parameters(), lr=lr))


def assert_falls(losses):
    k = len(losses) // 3
    assert all(map(torch.isfinite, torch.tensor(losses))) and sum(losses[-k:]) < sum(losses[:k])


def resnet_learner(net=None, **kwargs):
    net = models.resnet18() if net is None else net
    return BYOL(net, image_size=SIZE, hidden_layer="avgpool", **SMALL, **kwargs)


@pytest.mark.slow
def test_0_9_1_training_end_to_end(tmp_path):
    """0.9.1's README loop with SEM; monitoring; reset; saving; SimSiam; BYOLTrainer; Lightning."""
    learner = resnet_learner(resnet := models.resnet18(), use_simplicial_embeddings=True,
                             sem_num_simplices=4, sem_simplex_dim=4)
    embed, sem, mlp = learner.online_encoder.projector  # 0.9.1's layout
    assert embed[0].out_features == 16 and isinstance(sem, SEM) and mlp[0].in_features == 16
    assert_falls(run_loop(learner))
    images = torch.rand(8, 3, SIZE, SIZE)
    with torch.no_grad():
        z_online, representation = learner.eval().online_encoder(images)
        z_target, prediction = learner.target_encoder(images)[0], learner.online_predictor(z_online)
    assert 0.0 < F.cosine_similarity(z_online, z_target).mean().item() < 1.0
    assert representation.shape == (8, 512) and prediction.shape == (8, 16)
    online, target = learner.online_encoder.state_dict(), learner.target_encoder.state_dict
    assert any(not torch.equal(v, online[k]) for k, v in target().items())
    learner.reset_moving_average()
    assert all(torch.equal(v, online[k]) for k, v in target().items())
    assert learner.online_encoder.net is learner.net is resnet
    torch.save(learner.online_encoder.net.state_dict(), tmp_path / "improved-net.pt")
    other = resnet_learner()
    other.online_encoder.net.load_state_dict(torch.load(tmp_path / "improved-net.pt"))
    assert torch.equal(other.net.layer4[1].conv2.weight, resnet.layer4[1].conv2.weight)
    learner = resnet_learner(use_momentum=False)  # turn off momentum in the target encoder
    assert learner.target_encoder is None and not learner.use_momentum
    before = learner.net.conv1.weight.clone()
    assert all(map(torch.isfinite, torch.tensor(run_loop(learner))))
    assert not torch.equal(before, learner.net.conv1.weight)
    resnet, folder = models.resnet18(), tmp_path / "checkpoints"
    trainer = BYOLTrainer(resnet, dataset=MockDataset(SIZE, 16), image_size=SIZE,
                          hidden_layer="avgpool", learning_rate=3e-4, num_train_steps=3,
                          batch_size=8, checkpoint_every=2, byol_kwargs=SMALL, progress=False,
                          checkpoint_folder=str(folder))
    assert len(trainer()) == 3 and trainer.byol.step == 3
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.0.pt", "checkpoint.1.pt"]
    assert torch.equal(torch.load(folder / "checkpoint.1.pt")["conv1.weight"], resnet.conv1.weight)
    L = pytest.importorskip("lightning")

    class SelfSupervisedLearner(L.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.learner = resnet_learner(net)

        def training_step(self, images, _):
            return {"loss": self.learner(images)}

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-4)

        def on_before_zero_grad(self, _):
            if self.learner.use_momentum:
                self.learner.update_moving_average()

    model = SelfSupervisedLearner(models.resnet18())
    target = nn.utils.parameters_to_vector(model.learner.target_encoder.parameters())
    L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path / "lightning").fit(
        model, torch.utils.data.DataLoader(torch.rand(16, 3, SIZE, SIZE), batch_size=4))
    assert model.learner.step == 3 and not torch.equal(target, nn.utils.parameters_to_vector(
        model.learner.target_encoder.parameters()))
    (ckpt,) = tmp_path.rglob("*.ckpt")
    loaded = SelfSupervisedLearner.load_from_checkpoint(ckpt, net=models.resnet18())
    assert loaded.learner.step == 3 and all(map(
        torch.equal, loaded.state_dict().values(), model.state_dict().values()))


def test_signatures_hyperparameters_ema_updater_embeddings_and_image_dtypes():
    theirs = ("self net image_size hidden_layer projection_size projection_hidden_size augment_fn "
              "augment_fn2 moving_average_decay use_momentum sync_batchnorm "
              "use_simplicial_embeddings sem_num_simplices sem_simplex_dim sem_temperature").split()
    assert list(inspect.signature(BYOL.__init__).parameters)[:len(theirs)] == theirs
    assert list(inspect.signature(BYOL.forward).parameters)[:4] == [
        "self", "x", "return_embedding", "return_projection"]
    net, x = TinyNet(), torch.rand(3, 3, 16, 16)
    learner = BYOL(net, image_size=16, hidden_layer=-1, projection_size=256,  # -1: the output
                   projection_hidden_size=4096, moving_average_decay=0.99)
    assert learner.tau == 0.99 and learner.target_ema_updater.beta == 0.99
    assert [learner.online_predictor[i].out_features for i in (0, 3)] == [4096, 256]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        projection, embedding = learner(x, return_embedding=True)
        learner(x, return_embedding=True)
        assert learner.eval()(x[:1], return_embedding=True)[1].shape == (1, 5)  # eval: no warning
    assert [str(w.message)[:31] for w in caught] == ["embeddings taken in train mode "]
    assert caught[0].filename == __file__  # points at the caller's line
    assert projection.shape == (3, 256) and embedding.shape == (3, 5)  # TinyNet's 5 classes
    with pytest.raises(ValueError, match=r"single image.*learner\.eval\(\)"):
        learner.train()(x[:1], return_embedding=True)
    run_loop(learner, torch.rand(4, 3, 16, 16), steps=1)
    learner.target_ema_updater.beta = 0.5  # hand-made schedules set it (or assign a new EMA)
    assert learner.tau == 0.5 and learner.moving_average_decay == 0.5
    vec = nn.utils.parameters_to_vector  # a copy of the parameters
    o, t = (vec(m.parameters()) for m in (learner.online_encoder, learner.target_encoder))
    learner.update_moving_average()
    assert torch.allclose(vec(learner.target_encoder.parameters()), 0.5 * t + 0.5 * o, atol=1e-6)
    learner.target_ema_updater = EMA(0.9)
    assert learner.tau == 0.9
    embedding = learner.eval()(x, return_embedding=True, return_projection=False)
    assert torch.equal(embedding, learner(x, True, False))  # their positional form
    normalised = learner.augment1.normalize(x)
    assert torch.equal(learner.online_encoder.get_representation(normalised), embedding)
    assert torch.equal(embedding, net(normalised))
    for img in (x.double(), x.half(), x.bfloat16()):  # converted to float32
        loss = learner.train()(img)
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        ours = learner.eval()(img, return_embedding=True, return_projection=False)
        assert ours.dtype == torch.float32 and torch.equal(ours, learner(img.float(), True, False))


@pytest.mark.parametrize("augment_fn, augment_fn2", [
    pytest.param(nn.Sequential(kornia.augmentation.RandomHorizontalFlip()), nn.Sequential(
        kornia.augmentation.RandomHorizontalFlip(),
        kornia.filters.GaussianBlur2d((3, 3), (1.5, 1.5))), id="kornia", marks=pytest.mark.slow),
    pytest.param(nn.Sequential(  # 0.9.1's default views rebuilt, RandomApply from its module
        RandomApply(T.ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.3), T.RandomGrayscale(p=0.2),
        T.RandomHorizontalFlip(), RandomApply(T.GaussianBlur((3, 3), (1.0, 2.0)), p=0.2),
        T.RandomResizedCrop((SIZE, SIZE), antialias=True),
        T.Normalize(mean=torch.tensor([0.485, 0.456, 0.406]),
                    std=torch.tensor([0.229, 0.224, 0.225]))), None, id="torchvision"),
])
def test_custom_augmentations(augment_fn, augment_fn2):
    learner = resnet_learner(augment_fn=augment_fn, augment_fn2=augment_fn2)
    assert learner.augment1 is augment_fn and learner.augment2 is (augment_fn2 or augment_fn)
    random.seed(0)  # RandomApply draws from Python's random
    assert_falls(run_loop(learner, torch.rand(8, 3, SIZE, SIZE), steps=9))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backbone_on_cuda_needs_no_to():
    learner = resnet_learner(models.resnet18().cuda())
    assert_falls(run_loop(learner, torch.rand(8, 3, SIZE, SIZE, device="cuda")))


def test_checkpoints_of_a_wrapped_learner_ours_and_0_9_1s(tmp_path):
    """Adam over a wrapper lists the frozen target (as 0.9.1) but never moves it; the checkpoint:
    tensors only, loaded whole, by parts, by the ``online_encoder.net.`` prefix, as 0.9.1's."""
    def as_0_9_1(state: dict, prefix: str = "") -> dict:  # the backbone also as net.*, no EMA step
        on = prefix + "online_encoder.net."
        return {**{k: v for k, v in state.items() if not k.endswith(("ema_step", "target_synced"))},
                **{prefix + "net." + k[len(on):]: v for k, v in state.items() if k.startswith(on)}}
    learner = (wrapper := nn.ModuleDict(dict(learner=make_learner())))["learner"]
    target = list(learner.target_encoder.parameters())
    assert {id(p) for p in target} <= {id(p) for p in wrapper.parameters()}
    opt = torch.optim.Adam(wrapper.parameters(), lr=1e-2)
    learner(torch.rand(4, 3, 16, 16)).backward()
    before = [p.clone() for p in target]
    opt.step()
    assert all(map(torch.equal, before, target)) and not any(p in opt.state for p in target)
    learner.update_moving_average()
    save_file(state := wrapper.state_dict(), str(tmp_path / "learner.safetensors"))
    other = nn.ModuleDict(dict(learner=make_learner()))
    other.load_state_dict(load_file(str(tmp_path / "learner.safetensors")))
    assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())
    prefix, net, other = "learner.online_encoder.net.", TinyNet(), make_learner()
    net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    assert torch.equal(net.conv.weight, learner.net.conv.weight)
    for part in ("online_encoder", "online_predictor"):
        getattr(other, part).load_state_dict(getattr(learner, part).state_dict())
    x = torch.rand(4, 3, 16, 16)
    assert torch.equal(other.eval().online_encoder(x)[0], learner.eval().online_encoder(x)[0])
    keys, other = set(theirs := as_0_9_1(learner.state_dict())), make_learner()
    with pytest.warns(UserWarning, match=r"0.9.1 state dict: dropped its \d+ 'net\.\*' keys.*EMA "
                                         r"step count to 0.*kept its target"):
        other.load_state_dict(theirs)
    assert set(theirs) == keys and other.step == 0  # the caller's dict is left alone
    other(torch.rand(4, 3, 16, 16))  # the first step must not overwrite the saved target
    assert all(map(torch.equal, other.target_encoder.parameters(), target))
    nested = nn.ModuleDict(dict(learner=make_learner()))  # a Lightning checkpoint: learner.net.*
    with pytest.warns(UserWarning, match="0.9.1 state dict"):
        nested.load_state_dict(as_0_9_1(state, prefix="learner."))
    assert torch.equal(nested["learner"].net.conv.weight, learner.net.conv.weight)
    sem = dict(use_simplicial_embeddings=True, sem_num_simplices=2, sem_simplex_dim=4)
    for saved, built, message in ((sem, {}, "use_simplicial_embeddings=True"),
                                  ({}, sem, "use_simplicial_embeddings=False"),
                                  (dict(use_momentum=False), {}, "use_momentum=False")):
        with pytest.raises(RuntimeError, match=message) as err:  # another configuration
            make_learner(**built).load_state_dict(as_0_9_1(make_learner(**saved).state_dict()))
        assert "Missing key" not in str(err.value)  # not torch's raw list of keys


@pytest.mark.slow
@pytest.mark.parametrize("make", ["timm", "conv1-replaced"])
def test_grayscale_backbone(make):
    """``in_channels`` comes from the first convolution; the default views skip the RGB-only ops."""
    net = models.resnet18()
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    net = timm.create_model("resnet18", in_chans=1, num_classes=0) if make == "timm" else net
    learner = BYOL(net, image_size=SIZE, **SMALL)
    assert learner.in_channels == 1
    # lr 1e-3, 9 steps: at 3e-4 and 6 steps, whether random 32 px views' loss falls is a coin flip
    assert_falls(run_loop(learner, torch.rand(8, 1, SIZE, SIZE), steps=9, lr=1e-3))
    assert learner.eval()(torch.rand(2, 1, SIZE, SIZE), return_embedding=True)[1].shape == (2, 512)


def test_devices_dtypes_sizes_channels_and_positional_views():
    """Parts follow the backbone's device and dtype; other image sizes; mistakes say what to do."""
    learner = resnet_learner(models.resnet18().to("meta"))  # BYOL(resnet.cuda()) with no GPU
    assert {t.device.type for t in [*learner.parameters(), *learner.buffers()]} == {"meta"}
    assert learner.augment1.normalize.mean.device.type == "meta"
    learner = make_learner(TinyNet().double())
    assert {p.dtype for p in learner.parameters()} == {torch.float64}
    learner(torch.rand(4, 3, 16, 16)).backward()  # float32 images, float64 model
    assert learner.online_predictor[0].weight.grad.dtype == torch.float64
    vit = timm.create_model("vit_tiny_patch16_224", img_size=SIZE, num_classes=0)
    learner = BYOL(vit, image_size=SIZE, hidden_layer=None, **SMALL).eval()
    photos = torch.rand(2, 3, 48, 40)  # a ViT embeds other sizes, resized
    resized = F.interpolate(photos, size=(SIZE, SIZE), mode="bilinear", antialias=True)
    assert torch.allclose(learner(photos, True, False), learner(resized, True, False), atol=1e-6)
    with pytest.raises(RuntimeError, match=r"(?s)dry run.*AssertionError.*img_size=32\)"):
        BYOL(timm.create_model("vit_tiny_patch16_224", num_classes=0), image_size=SIZE,
             hidden_layer=None, **SMALL)
    learner = BYOL(vit, image_size=SIZE, hidden_layer=None, augment_fn=lambda x: x[..., :16, :16],
                   **SMALL)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"backbone failed on views "
                                                                     r"of size \[\(16, 16\)\]"):
        learner(torch.rand(2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"1 channels but the backbone takes 3.*expand\(-1, 3"):
        make_learner()(torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match="augment_fn returned views with 1 channels"):
        make_learner(augment_fn=lambda x: x[:, :1])(torch.rand(4, 3, 16, 16))
    learner = make_learner(augment_fn=lambda x: x[..., :12, :12])  # a CNN takes other sizes
    with pytest.warns(UserWarning, match=r"views are \(12, 12\).*image_size is \(16, 16\)"):
        assert torch.isfinite(learner(torch.rand(4, 3, 16, 16)))
    with pytest.raises(TypeError, match=r"learner\(view1, x2=view2\)"):
        learner(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))


def test_install_name_the_0_9_1_clash_and_the_torch_bound(tmp_path):
    assert metadata.distribution("byol-torch").version == byol_pytorch.__version__
    declared = (REPO_ROOT / "setup.cfg").read_text()
    assert "    torch>=2.3\n" in declared and "    torchvision>=0.18\n" in declared
    (info := tmp_path / "byol_pytorch-0.9.1.dist-info").mkdir()  # byol-pytorch 0.9.1 too
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: byol-pytorch\nVersion: 0.9.1\n")
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", "import byol_pytorch"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "pip uninstall -y byol-pytorch byol-torch && pip install byol-torch" in proc.stderr
    for version, fails in (("2.2.2+cpu", True), ("2.3.0", False)):
        code = f"import torch; torch.__version__ = {version!r}; import byol_pytorch"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert (proc.returncode != 0) == fails, proc.stderr[-500:]
        assert not fails or (f"byol_pytorch needs torch>=2.3, found torch {version}; upgrade it: "
                             "pip install 'torch>=2.3'") in proc.stderr


def test_module_helpers_heads_netwrapper_and_a_learner_assembled_from_them(monkeypatch):
    """Projects rebuild BYOL from 0.9.1's module: NetWrapper, MLP, EMA, ``singleton``, loss_fn."""
    h = PEER.helpers()  # the peer script's calls of 0.9.1's helpers, on ours
    x, y, ma, ma0, current = (h[k] for k in ("x", "y", "ma", "ma_before", "current"))
    assert torch.allclose(h["loss"], 2 - 2 * F.cosine_similarity(x, y, dim=-1), atol=1e-6)
    assert torch.allclose(h["sem"], torch.softmax(x.view(5, 4, 3) / 0.5, -1).view(5, 12), atol=1e-6)
    assert torch.allclose(h["ema"], 0.75 * x + 0.25 * y) and EMA(0.9).update_average(None, y) is y
    assert all(torch.allclose(ma[k], 0.75 * ma0[k] + 0.25 * current[k]) for k in ma)
    assert loss_fn is cosine_loss_fn and not torch.equal(ma["weight"], ma0["weight"])
    with pytest.raises(ValueError, match="multiple of dim_simplex"):
        SEM(10, dim_simplex=3)
    double = RandomApply(lambda x: 2 * x, p=0.3)  # one draw of Python's random per call
    random.seed(0)
    outcomes = [double(torch.ones(2))[0].item() for _ in range(2000)]
    random.seed(0)
    assert outcomes == [2.0 if random.random() <= 0.3 else 1.0 for _ in range(2000)]
    assert byol_pytorch.byol_pytorch.BYOL is BYOL and NetWrapper is byol_pytorch.NetWrapper
    assert default(None, 3) == 3 and default(0, 3) == 0 and exists(0) and not exists(None)
    net, x = TinyNet().eval(), torch.rand(3, 3, 16, 16)
    encoder = NetWrapper(net, layer="pool", projection_size=8, projection_hidden_size=16).eval()
    expected = net.pool(net.relu(net.bn(net.conv(x)))).flatten(1)
    assert torch.allclose(encoder(x, return_projection=False), expected)
    assert encoder.projector is None  # made at the first projection, as in 0.9.1
    projection, representation = encoder(x)
    assert projection.shape == (3, 8) and torch.allclose(representation, expected)
    assert encoder.projector[0].in_features == 8 and encoder.get_representation(x).shape == (3, 8)

    class FlipBYOL(nn.Module):
        def __init__(self, net, image_size, projection_size=16, projection_hidden_size=32):
            super().__init__()
            self.online_encoder = NetWrapper(net, projection_size, projection_hidden_size)
            self.online_predictor = MLP(projection_size, projection_size, projection_hidden_size)
            self.target_encoder, self.target_ema_updater, self.use_momentum = None, EMA(0.9), True
            self.forward(torch.randn(2, 3, image_size, image_size, device=get_module_device(net)))

        @singleton("target_encoder")
        def get_target_encoder(self):
            set_requires_grad(target_encoder := copy.deepcopy(self.online_encoder), False)
            return target_encoder

        def update_moving_average(self):  # 0.9.1's 3-argument function
            update_moving_average(self.target_ema_updater, self.target_encoder, self.online_encoder)

        def forward(self, x):
            views = (x, x.flip(-1))
            pred_one, pred_two = (self.online_predictor(self.online_encoder(v)[0]) for v in views)
            with torch.no_grad():
                target_one, target_two = (self.get_target_encoder()(v)[0] for v in views)
            return (loss_fn(pred_one, target_two) + loss_fn(pred_two, target_one)).mean()

    learner = FlipBYOL(TinyNet(), image_size=16)
    assert learner.online_encoder.projector[0].in_features == 8  # built by the dry run
    target = learner.get_target_encoder()
    assert learner.get_target_encoder() is target and get_module_device(target).type == "cpu"
    assert not any(p.requires_grad for p in target.parameters())
    before = target.net.conv.weight.clone()
    assert_falls(run_loop(learner, torch.rand(8, 3, 16, 16), steps=9))
    after, online = target.net.conv.weight, learner.online_encoder.net.conv.weight
    assert 0 < (after - online).abs().max() < (before - online).abs().max()  # towards, not onto
    learner.target_encoder = None  # 0.9.1's reset_moving_average(): a new copy at the next call
    assert torch.equal(learner.get_target_encoder().net.conv.weight, online)
    assert learner.target_encoder is not target
    mlp, simsiam = MLP(12, 4, 8), SimSiamMLP(12, 4, 8)  # (dim, projection_size, hidden_size)
    assert (mlp[0].in_features, mlp[0].out_features, mlp[3].out_features) == (12, 8, 4)
    assert (simsiam[0].in_features, simsiam[3].out_features, simsiam[6].out_features) == (12, 8, 4)
    assert isinstance(MLP(12, 4, 8, sync_batchnorm=True)[1], nn.SyncBatchNorm)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    # None is BatchNorm1d everywhere, as BYOL(sync_batchnorm=None): convert models instead
    assert MaybeSyncBatchnorm() is nn.BatchNorm1d and type(MLP(12, 4, 8)[1]) is nn.BatchNorm1d
    assert MaybeSyncBatchnorm(True) is nn.SyncBatchNorm


@pytest.mark.parametrize("name", list(PEER.CONFIGS))
def test_peer_training_path_and_checkpoint_outputs_match(peer_runs, name):
    """From 0.9.1's start (views, SGD, EMA rate), losses and weights follow 0.9.1's to rounding;
    from its final checkpoint every output matches."""
    def ours_like_peer(**kw):  # as the peer builds 0.9.1 (its default: SEM on)
        kw = {**PEER.COMMON, "use_simplicial_embeddings": True, **PEER.CONFIGS[name], **kw}
        return BYOL(PEER.backbone(), augment_fn=PEER.identity, augment_fn2=PEER.mirror,
                    view_batching="joint", **kw)  # joint: 0.9.1's BN statistics over both views
    run, learner = peer_runs[name], ours_like_peer()
    with pytest.warns(UserWarning, match="byol-pytorch 0.9.1 state dict"):
        learner.load_state_dict(run["initial"])
    opt = torch.optim.SGD(learner.parameters(), lr=0.05, momentum=0.9)  # the peer script's
    losses = train_steps(learner, run["train"], len(run["losses"]), opt=opt)
    assert losses == pytest.approx(run["losses"], rel=1e-5, abs=5e-5)
    theirs = run["state_dict"]  # the online weights (BN statistics: through the outputs below)
    ours = {k: v for k, v in learner.state_dict().items() if k.startswith("online_encoder.")
            and k in theirs and "running" not in k and v.is_floating_point()}
    torch.testing.assert_close(ours, {k: theirs[k] for k in ours}, atol=1e-4, rtol=1e-5)
    with pytest.warns(UserWarning, match="byol-pytorch 0.9.1 state dict"):
        (learner := ours_like_peer()).load_state_dict(run["state_dict"])
    outputs = PEER.outputs(learner, run["x"])
    torch.testing.assert_close(outputs, run["outputs"], atol=1e-5, rtol=1e-5)
    if name == "default":  # into ours with our default (SEM off): the error names the argument
        with pytest.raises(RuntimeError, match=r"use_simplicial_embeddings=True\)") as err:
            ours_like_peer(use_simplicial_embeddings=False).load_state_dict(run["state_dict"])
        assert "Unexpected key" not in str(err.value)


def test_helpers_match_0_9_1(peer_runs):
    ours, theirs = PEER.helpers(), dict(peer_runs["helpers"])  # same calls, same seeded inputs
    assert ours.pop("mlps") == theirs.pop("mlps")  # MLP, SimSiamMLP state-dict keys and shapes
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)  # inputs, outputs, EMA'd Linear


def test_readme_use_snippet_runs_without_warnings(tmp_path, monkeypatch):
    """The README's "Use" code at 32 px with ResNet-18: runs, warns about nothing, shapes hold."""
    code = (REPO_ROOT / "README.md").read_text().split("## Use", 1)[1].split("```python", 1)[1]
    small = (code.split("```", 1)[0].replace("resnet50()", "resnet18()")
             .replace("image_size=224", "image_size=32").replace("256, 256", "40, 40"))
    assert small.count("resnet18") == 1 and "40, 40" in small  # the shrinking applied
    monkeypatch.chdir(tmp_path)  # it saves improved.pt
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exec(compile(small, "README.md", "exec"), scope := {})
    assert scope["projection"].shape == (16, 256) and scope["embedding"].shape == (16, 512)
    assert scope["learner"].training and (tmp_path / "improved.pt").is_file()
