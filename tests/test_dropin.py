"""Migration test: byol-pytorch 0.9.1's README usage, run unchanged against this library.

The calls are theirs; only the sizes are shrunk (resnet18 at 32 px, small batches) and
``pretrained=True`` is dropped (no downloads here) so that the file runs in seconds on CPU.
"""

from __future__ import annotations

import inspect
import warnings

import kornia
import pytest
import torch
from torch import nn
from torchvision import models

import byol_pytorch
from byol_pytorch import BYOL, BYOLTrainer, MockDataset

IMAGE_SIZE = 32
STEPS = 8


@pytest.fixture(autouse=True)
def _quiet_range_warning():
    # Their README feeds torch.randn "images"; ours warns once that images belong in [0, 1].
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expected \\[0, 1\\]")
        yield


def fixed_batch():
    torch.manual_seed(1)
    return torch.randn(8, 3, IMAGE_SIZE, IMAGE_SIZE)


def run_loop(learner, update=True):
    opt = torch.optim.Adam(learner.parameters(), lr=3e-4)
    images = fixed_batch()
    losses = []
    for _ in range(STEPS):
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
    assert losses[-1] < losses[0], losses


def test_constructor_signature_matches_0_9_1():
    params = list(inspect.signature(BYOL.__init__).parameters)
    theirs = ["self", "net", "image_size", "hidden_layer", "projection_size",
              "projection_hidden_size", "augment_fn", "augment_fn2", "moving_average_decay",
              "use_momentum", "sync_batchnorm", "use_simplicial_embeddings", "sem_num_simplices",
              "sem_simplex_dim", "sem_temperature"]
    assert params[: len(theirs)] == theirs
    fwd = list(inspect.signature(BYOL.forward).parameters)
    assert {"return_embedding", "return_projection"} <= set(fwd)
    assert hasattr(byol_pytorch, "SEM")


def test_plain_loop_and_save(tmp_path):
    resnet = models.resnet18()
    learner = BYOL(resnet, image_size=IMAGE_SIZE, hidden_layer="avgpool")
    assert_falls(run_loop(learner))
    torch.save(resnet.state_dict(), tmp_path / "improved-net.pt")
    fresh = models.resnet18()
    fresh.load_state_dict(torch.load(tmp_path / "improved-net.pt"))
    assert torch.equal(fresh.conv1.weight, resnet.conv1.weight)


def test_simsiam_mode():
    resnet = models.resnet18()
    learner = BYOL(resnet, image_size=IMAGE_SIZE, hidden_layer="avgpool",
                   use_momentum=False)  # turn off momentum in the target encoder
    assert_falls(run_loop(learner, update=False))


def test_all_hyperparameters_by_keyword():
    resnet = models.resnet18()
    learner = BYOL(
        resnet,
        image_size=IMAGE_SIZE,
        hidden_layer="avgpool",
        projection_size=256,  # the projection size
        projection_hidden_size=4096,  # the hidden dimension of the MLP
        moving_average_decay=0.99,  # the moving average decay factor for the target encoder
    )
    assert learner.tau == 0.99
    assert learner.predictor[0].out_features == 4096 and learner.predictor[3].out_features == 256


def test_custom_kornia_augmentations():
    resnet = models.resnet18()
    augment_fn = nn.Sequential(kornia.augmentation.RandomHorizontalFlip())
    augment_fn2 = nn.Sequential(
        kornia.augmentation.RandomHorizontalFlip(),
        kornia.filters.GaussianBlur2d((3, 3), (1.5, 1.5)),
    )
    learner = BYOL(resnet, image_size=IMAGE_SIZE, hidden_layer=-2, augment_fn=augment_fn)
    assert learner.augment1 is augment_fn and learner.augment2 is augment_fn
    learner = BYOL(resnet, image_size=IMAGE_SIZE, hidden_layer=-2, augment_fn=augment_fn,
                   augment_fn2=augment_fn2)
    assert learner.augment2 is augment_fn2
    assert_falls(run_loop(learner))


def test_return_embedding():
    resnet = models.resnet18()
    learner = BYOL(resnet, image_size=IMAGE_SIZE, hidden_layer="avgpool")
    imgs = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    projection, embedding = learner(imgs, return_embedding=True)
    assert projection.shape == (2, 256) and embedding.shape == (2, 512)
    embedding_only = learner(imgs, return_embedding=True, return_projection=False)
    assert embedding_only.shape == (2, 512)


def test_reset_moving_average_and_simplicial_embeddings():
    resnet = models.resnet18()
    learner = BYOL(resnet, image_size=IMAGE_SIZE, hidden_layer="avgpool",
                   use_simplicial_embeddings=True, sem_num_simplices=16, sem_simplex_dim=4)
    assert_falls(run_loop(learner))
    learner.reset_moving_average()
    for t, o in zip(learner.target.parameters(), learner.online.parameters()):
        assert torch.equal(t, o)


def test_trainer_and_mock_dataset(tmp_path):
    resnet = models.resnet18()
    dataset = MockDataset(IMAGE_SIZE, 16)
    trainer = BYOLTrainer(
        resnet,
        dataset=dataset,
        image_size=IMAGE_SIZE,
        hidden_layer="avgpool",
        learning_rate=3e-4,
        num_train_steps=3,
        batch_size=8,
        checkpoint_every=2,  # improved model will be saved periodically to ./checkpoints folder
        checkpoint_folder=str(tmp_path / "checkpoints"),
        progress=False,
    )
    losses = trainer()
    assert len(losses) == 3 and trainer.byol.step == 3
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["checkpoint.0.pt", "checkpoint.1.pt"]
    state = torch.load(tmp_path / "checkpoints" / "checkpoint.1.pt")
    assert torch.equal(state["conv1.weight"], resnet.conv1.weight)
