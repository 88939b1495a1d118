"""Mutants for the holes coverage once had: each passes every clause that ran before its check
existed, and is caught by the one named in ``catches``.

Written on the public port base classes (a stranger's port looks like this), over our own
layers with one thing changed:

- dropout whose rate is right but whose decisions are not independent: a mask shared along
  the batch, and one set of draws read by both sites (FM-DROPOUT-SITES);
- a dropout key drawn in Python, so that a compiled function holds one mask for ever while the
  eager layer draws a new one each call (FM-COMPILE);
- ``get_config`` that leaves out a parameter at a non-default value, so that a native save and
  load builds the default instead (GFF-SAVE-NATIVE).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import torch
import torch.nn.functional as F
from flax import nnx

from portspec.impls.jax import layers as flax_ref
from portspec.impls.keras import layers as keras_ref
from portspec.impls.torch import layers as torch_ref
from portspec.ports import (
    FlaxPortAdapter,
    KerasPortAdapter,
    TorchPortAdapter,
    identity,
    transpose,
)

# -- PyTorch: dropout decisions that are not independent ------------------------------------

TORCH_FM = {
    "norm.gamma": ("norm.weight", identity),
    "norm.beta": ("norm.bias", identity),
    "norm.moving_mean": ("norm.running_mean", identity),
    "norm.moving_variance": ("norm.running_var", identity),
    "dense1.kernel": ("dense1.weight", transpose),
    "dense1.bias": ("dense1.bias", identity),
    "dense2.kernel": ("dense2.weight", transpose),
    "dense2.bias": ("dense2.bias", identity),
}


class _TorchMutant(TorchPortAdapter):
    layers = ("FeatureMixing",)
    weights = {"FeatureMixing": TORCH_FM}
    module: type = torch_ref.FeatureMixing
    catches: tuple[str, ...] = ()
    mistake = ""

    def __init__(self, *variant):
        super().__init__(*variant)
        self.name = type(self).__name__

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.module(**config, dtype=dtype)

    def config_of(self, layer, module):
        return module._config()


def _inverted(v, keep, p):
    return torch.where(keep, v / (1 - p), torch.zeros_like(v))


class _MaskSharedOverBatch(torch_ref.FeatureMixing):
    def _drop(self, v):
        if not self.training or self.dropout == 0.0:
            return v
        # one decision per (time step, unit), broadcast over the batch
        keep = torch.rand((1, *v.shape[1:]), dtype=v.dtype) >= self.dropout
        return _inverted(v, keep, self.dropout)

    def forward(self, input):
        z = self.norm(input.reshape(input.shape[0], -1)).reshape(input.shape)
        return input + self._drop(self.dense2(self._drop(F.relu(self.dense1(z)))))


class DropoutMaskSharedOverBatch(_TorchMutant):
    mistake = "a dropout mask of shape (1, L, width) broadcast over the batch (right rate)"
    catches = ("FM-DROPOUT-SITES",)
    names = r"one dropout mask broadcast along the batch axis"
    module = _MaskSharedOverBatch


class _SitesShareDraws(torch_ref.FeatureMixing):
    def forward(self, input):
        z = self.norm(input.reshape(input.shape[0], -1)).reshape(input.shape)
        h = F.relu(self.dense1(z))
        p = self.dropout
        if not self.training or p == 0.0:
            return input + self.dense2(h)
        u = torch.rand(h.shape, dtype=h.dtype)
        y = self.dense2(_inverted(h, u >= p, p))
        # the second site reads the first site's draws (its first N units)
        return input + _inverted(y, u[..., : y.shape[-1]] >= p, p)


class DropoutSitesShareDraws(_TorchMutant):
    mistake = "both dropout sites read one set of uniform draws (right rate at each)"
    catches = ("FM-DROPOUT-SITES",)
    names = r"one mask shared by both dropout sites"
    module = _SitesShareDraws


# -- Flax NNX: a dropout mask frozen into the compiled function -----------------------------


class _PythonKeyDropout(nnx.Module):
    """Inverted dropout whose key comes from NumPy's global generator: a new key per eager
    call, but under jit it is drawn once, when the function is traced."""

    def __init__(self, rate):
        self.rate = rate
        self.deterministic = False  # set by Module.train() / eval()

    def __call__(self, x):
        if self.deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0:
            return jnp.zeros_like(x)
        key = jax.random.PRNGKey(np.random.randint(2**31))
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class _FrozenMaskFM(flax_ref.FeatureMixing):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropout1 = _PythonKeyDropout(self.dropout)
        self.dropout2 = _PythonKeyDropout(self.dropout)


class DropoutKeyDrawnAtTrace(FlaxPortAdapter):
    mistake = "the dropout key drawn in Python: jit bakes one mask into the compiled function"
    catches = ("FM-COMPILE",)
    names = r"dropout mask is frozen into the compiled function"
    layers = ("FeatureMixing",)
    weights = {
        "FeatureMixing": {
            "norm.gamma": ("norm.scale", identity),
            "norm.beta": ("norm.bias", identity),
            "norm.moving_mean": ("norm.mean", identity),
            "norm.moving_variance": ("norm.var", identity),
            "dense1.kernel": ("dense1.kernel", identity),
            "dense1.bias": ("dense1.bias", identity),
            "dense2.kernel": ("dense2.kernel", identity),
            "dense2.bias": ("dense2.bias", identity),
        }
    }

    def __init__(self, *variant):
        super().__init__(*variant)
        self.name = type(self).__name__

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        kwargs = {} if dtype is None else {"dtype": dtype, "param_dtype": dtype}
        return _FrozenMaskFM(**config, rngs=rngs, **kwargs)

    def config_of(self, layer, module):
        return module.get_config()


# -- Keras: get_config that leaves a non-default parameter out ------------------------------


@keras.saving.register_keras_serializable(package="portspec_coverage_zoo")
class _ForgetfulGFF(keras_ref.GatedFeatureFusion):
    def get_config(self):
        config = super().get_config()
        config.pop("activation")  # from_config then builds the default, sigmoid
        return config


class GetConfigDropsActivation(KerasPortAdapter):
    mistake = "get_config leaves out the activation: a saved tanh gate loads as sigmoid"
    names = r"native format does not keep activation='tanh'"
    catches = ("GFF-SAVE-NATIVE",)
    layers = ("GatedFeatureFusion",)
    weights = {
        "GatedFeatureFusion": {
            "gate.kernel": ("gate.kernel", identity),
            "gate.bias": ("gate.bias", identity),
        }
    }

    def __init__(self, *variant):
        super().__init__(*variant)
        self.name = type(self).__name__

    def construct(self, layer, config, *, input_shapes, dtype):
        kwargs = {} if dtype is None else {"dtype": dtype}
        return _ForgetfulGFF(**config, **kwargs)

    def config_of(self, layer, obj):
        # the round trip reads the config the layer was built with: the hole is in saving
        return {"activation": obj.activation}
