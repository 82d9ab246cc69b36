"""python make_checkpoint.py OUT_DIR {50,18,tiny2} (jax, dm-haiku, dill): deepmind-research byol's
network (utils/networks.py, byol_experiment.py's _forward) in Haiku, random weights: its checkpoint
as utils/checkpointing.py writes it (pretrain.pkl), its eval-mode outputs (outputs.npz)."""
from __future__ import annotations

import sys
from collections import namedtuple

import dill
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
from haiku._src import data_structures

jax.config.update("jax_enable_x64", True)  # for the float64 reference outputs only


class frozendict(dict):  # Haiku 0.0.2's params mapping, pickled the same way
    def __reduce__(self):
        return frozendict, (dict(self),)


frozendict.__module__ = data_structures.__name__  # pickled by reference: must be found there
data_structures.frozendict = frozendict
# dill saves NamedTuple classes by value (name, fields, module): the official ones, LARS's state
State, *LARS = (namedtuple(name, fields, module=home) for name, fields, home in (
    ("_ByolExperimentState", "online_params target_params online_state target_state opt_state",
     "byol.byol_experiment"), ("AddWeightDecayState", (), "byol.utils.optimizers"),
    ("ScaleByLarsState", "mu", "byol.utils.optimizers"), ("ScaleState", (), "optax._src.transform"),
))
BN = dict(decay_rate=0.9, eps=1e-5, create_scale=True, create_offset=True)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CONFIGS = {"50": ("res_net50", (3, 4, 6, 3), True, (256, 512, 1024, 2048), 64),
           "18": ("res_net18", (2, 2, 2, 2), False, (64, 128, 256, 512), 64),
           "tiny2": ("tiny_res_net", (1, 1, 1, 1), False, (16, 16, 16, 16), 128)}


class ResNetTorso(hk.nets.ResNet):  # networks.ResNetTorso (v1): hk.nets.ResNet but its logits
    def __call__(self, x, is_training):
        x = jax.nn.relu(self.initial_batchnorm(self.initial_conv(x), is_training, False))
        x = hk.max_pool(x, window_shape=(1, 3, 3, 1), strides=(1, 2, 2, 1), padding="SAME")
        for group in self.block_groups:
            x = group(x, is_training, False)
        return jnp.mean(x, axis=(1, 2))


class MLP(hk.Module):  # networks.MLP (officially 4096 -> 256 wide; the loader does not read it)
    def __call__(self, x, is_training):
        x = jax.nn.relu(hk.BatchNorm(**BN)(hk.Linear(64)(x), is_training))
        return hk.Linear(32, with_bias=False)(x)


def forward(images, is_training, config):  # byol_experiment.py's _forward
    name, blocks, bottleneck, channels, stem = CONFIGS[config]  # name: Haiku's for ResNet50...
    embedding = ResNetTorso(blocks, 0, BN, False, bottleneck, channels, name=name,
                            initial_conv_config={"output_channels": stem})(images, is_training)
    MLP(name="predictor")(MLP(name="projector")(embedding, is_training), is_training)
    return embedding, hk.Linear(1000, name="classifier")(embedding)


def frozen(x):  # mappings -> Haiku 0.0.2's frozendicts, as the official run's Haiku made them
    if isinstance(x, dict):
        return frozendict({k: frozen(v) for k, v in x.items()})
    xs = tuple(map(frozen, x)) if isinstance(x, tuple) else x
    return type(x)(*xs) if hasattr(x, "_fields") else xs


def main(out_dir: str, config: str) -> None:
    net = hk.transform_with_state(lambda x, t: forward(x, t, config))
    apply, rng = jax.jit(net.apply, static_argnums=4), np.random.default_rng(0)
    last = "/~/batchnorm_2" if CONFIGS[config][2] else "/~/batchnorm_1"  # of a residual branch

    def images(size):  # dataset.normalize_images of [0, 1] images
        return ((rng.random((2, size, size, 3)) - MEAN) / STD).astype(np.float32)

    outputs, nets = {}, []
    for kind, seed in (("online", 0), ("target", 1)):
        params, state = net.init(jax.random.PRNGKey(seed), images(64), True)
        # away from Haiku's init (1, 0, 0); a residual branch's last BatchNorm small, as trained
        params = {m: {k: (rng.uniform(*(0.1, 0.5) if m.endswith(last) else (0.5, 1.5), v.shape)
                          if k == "scale" else rng.normal(0, 0.1, v.shape) if k in ("offset", "b")
                          else v).astype(np.float32) for k, v in p.items()}
                  for m, p in params.items()}
        for _ in range(2):  # training-mode steps: EMA statistics of real activations
            _, state = apply(params, state, None, images(96), True)
        nets += [params, state]
        for size in (224, 225):
            outputs[f"{kind}_images{size}"] = x = images(size)
            f64 = jax.tree.map(np.float64, (params, state, x))  # BatchNorm's int counters unused
            for suffix, (p, s, xs) in (("", (params, state, x)), ("_64", f64)):
                (outputs[f"{kind}_embedding{size}{suffix}"],
                 outputs[f"{kind}_logits{size}{suffix}"]), _ = apply(p, s, None, xs, False)
    np.savez(f"{out_dir}/outputs.npz", **outputs)
    opt = LARS[0](), LARS[1](jax.tree.map(jnp.zeros_like, nets[0])), LARS[2]()  # pmap's arrays:
    replicated = jax.tree.map(lambda a: jnp.asarray(a)[None], State(*nets[::2], *nets[1::2], opt))
    state = frozen(jax.tree.map(lambda a: jax.device_get(a[0]), replicated))  # checkpointing.py
    with open(f"{out_dir}/pretrain.pkl", "wb") as f:
        dill.dump(dict(experiment_state=state, step=1234, rng=jax.random.PRNGKey(0)), f, protocol=2)


if __name__ == "__main__":
    main(*sys.argv[1:])
