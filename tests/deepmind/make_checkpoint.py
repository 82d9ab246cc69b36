"""Run by tests/test_deepmind.py in a JAX interpreter (jax, dm-haiku, dill): builds the BYOL
network of deepmind-research byol/ in Haiku (module names and computation of utils/networks.py
and of _forward in byol_experiment.py) with random weights and BatchNorm statistics, writes the
checkpoint as utils/checkpointing.py does and saves Haiku's eval-mode outputs.

usage: python make_checkpoint.py OUT_DIR {50,18,tiny2}  ->  OUT_DIR/pretrain.pkl, outputs.npz
"""
from __future__ import annotations

import sys
from typing import NamedTuple

import dill
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from haiku._src import data_structures

jax.config.update("jax_enable_x64", True)  # for the float64 reference outputs only


class frozendict(dict):  # noqa: N801 - Haiku 0.0.2's params mapping, pickled the same way
    def __reduce__(self):
        return frozendict, (dict(self),)


class _ByolExperimentState(NamedTuple):
    online_params: dict
    target_params: dict
    online_state: dict
    target_state: dict
    opt_state: tuple


AddWeightDecayState = NamedTuple("AddWeightDecayState", [])  # LARS = chain of these three
ScaleByLarsState = NamedTuple("ScaleByLarsState", [("mu", dict)])
ScaleState = NamedTuple("ScaleState", [])
# the official classes' homes: dill saves NamedTuple classes by value, with their module's name
for cls, home in ((_ByolExperimentState, "byol.byol_experiment"),
                  (AddWeightDecayState, "byol.utils.optimizers"),
                  (ScaleByLarsState, "byol.utils.optimizers"),
                  (ScaleState, "optax._src.transform"), (frozendict, "haiku._src.data_structures")):
    cls.__module__ = home
data_structures.frozendict = frozendict  # pickled by reference: must be found there

BN = dict(decay_rate=0.9, eps=1e-5, create_scale=True, create_offset=True)
# name (Haiku's from the class name), blocks and channels per group, bottleneck, width multiplier
CONFIGS = {"50": ("res_net50", (3, 4, 6, 3), (256, 512, 1024, 2048), True, 1),
           "18": ("res_net18", (2, 2, 2, 2), (64, 128, 256, 512), False, 1),
           "tiny2": ("tiny_res_net", (1, 1, 1, 1), (8, 8, 8, 8), False, 2)}


class ResNetTorso(hk.Module):
    """networks.ResNetTorso (v1): (B, H, W, 3) -> (B, width * channels[-1]). Submodules are made
    in __init__ as there, which names them "res_net50/~/initial_conv" etc."""

    def __init__(self, config: str):
        name, blocks, channels, bottleneck, width = CONFIGS[config]
        super().__init__(name=name)
        self.conv = hk.Conv2D(64 * width, 7, stride=2, with_bias=False, padding="SAME",
                              name="initial_conv")
        self.bn = hk.BatchNorm(name="initial_batchnorm", **BN)
        self.groups = [hk.nets.ResNet.BlockGroup(width * c, n, (1, 2, 2, 2)[i], BN, False,
                                                 bottleneck, True, name=f"block_group_{i}")
                       for i, (n, c) in enumerate(zip(blocks, channels))]

    def __call__(self, x, is_training):
        x = jax.nn.relu(self.bn(self.conv(x), is_training, False))
        x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
        for group in self.groups:
            x = group(x, is_training, False)
        return jnp.mean(x, axis=(1, 2))


class MLP(hk.Module):
    """networks.MLP (officially 4096 -> 256 wide; the loader does not read it)."""

    def __call__(self, x, is_training):
        x = jax.nn.relu(hk.BatchNorm(**BN)(hk.Linear(64)(x), is_training))
        return hk.Linear(32, with_bias=False)(x)


def forward(images, is_training, config):
    embedding = ResNetTorso(config)(images, is_training)
    MLP(name="predictor")(MLP(name="projector")(embedding, is_training), is_training)
    return embedding, hk.Linear(1000, name="classifier")(embedding)


def main(out_dir: str, config: str) -> None:
    net = hk.transform_with_state(lambda x, t: forward(x, t, config))
    apply = jax.jit(net.apply, static_argnums=4)
    rng = np.random.default_rng(0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    last = "/~/batchnorm_2" if CONFIGS[config][3] else "/~/batchnorm_1"

    def images(size):  # dataset.normalize_images of [0, 1] images
        return ((rng.random((2, size, size, 3)) - mean) / std).astype(np.float32)

    def randomize(module, key, value):
        """BatchNorm scales/offsets and biases away from Haiku's 1/0/0; the last BatchNorm of each
        residual branch (officially 0 at init) small, as in trained ResNets."""
        if key == "scale":
            return rng.uniform(*(0.1, 0.5) if module.endswith(last) else (0.5, 1.5), value.shape)
        return rng.normal(0, 0.1, value.shape) if key in ("offset", "b") else value

    outputs, nets = {}, []
    for kind, seed in (("online", 0), ("target", 1)):
        params, state = net.init(jax.random.PRNGKey(seed), images(64), True)
        params = {m: {k: randomize(m, k, v).astype(np.float32) for k, v in p.items()}
                  for m, p in params.items()}
        for _ in range(2):  # training-mode steps: EMA statistics of real activations
            _, state = apply(params, state, None, images(96), True)
        nets.append((params, state))
        for size in (224, 225):
            x = images(size)
            f64 = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype == np.float32 else a,
                               (params, state, x))
            for suffix, args in (("", (params, state, None, x)), ("_64", (*f64[:2], None, f64[2]))):
                (embedding, logits), _ = apply(*args, False)
                outputs.update({f"{kind}_embedding{size}{suffix}": embedding,
                                f"{kind}_logits{size}{suffix}": logits, f"{kind}_images{size}": x})
    np.savez(f"{out_dir}/outputs.npz", **outputs)
    # pmap's replicated state (one device), then what checkpointing.py does with it
    (online, online_state), (target, target_state) = nets
    opt_state = (AddWeightDecayState(), ScaleByLarsState(jax.tree.map(jnp.zeros_like, online)),
                 ScaleState())
    replicated = jax.tree.map(lambda a: jnp.asarray(a)[None], _ByolExperimentState(
        online, target, online_state, target_state, opt_state))
    state = frozen(jax.tree.map(lambda a: jax.device_get(a[0]), replicated))
    with open(f"{out_dir}/pretrain.pkl", "wb") as f:
        dill.dump({"experiment_state": state, "step": 1234, "rng": jax.random.PRNGKey(0)}, f,
                  protocol=2)


def frozen(x):
    """Mappings -> Haiku 0.0.2's frozendict, recursively, as the official run's Haiku made them."""
    if isinstance(x, dict):
        return frozendict({k: frozen(v) for k, v in x.items()})
    if isinstance(x, tuple):
        return type(x)(*map(frozen, x)) if hasattr(x, "_fields") else tuple(map(frozen, x))
    return x


if __name__ == "__main__":
    main(*sys.argv[1:])
