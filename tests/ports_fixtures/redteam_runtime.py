"""Flax NNX ports that each make one run-time mistake a Flax port invites.

- ``flax-stats-float32``: ``nnx.BatchNorm`` keeps its moving mean and variance in float32 even
  with ``param_dtype=float64`` (Flax makes them float32 whatever the parameters are); a float64
  FeatureMixing then reads its moving statistics, and updates them, in float32.
- ``flax-bn-flag-inverted``: the training flag passed to BatchNorm inverted
  (``use_running_average=train``): batch statistics and their update in inference, the moving
  statistics in training. Dropout follows the flag as it should.
- ``flax-dropout-flag-inverted``: the flag passed to Dropout inverted (``deterministic=train``):
  dropout in inference, none in training. BatchNorm follows the flag as it should.
- ``flax-bn-flag-ignored``: BatchNorm always in training mode (``use_running_average=False``):
  batch statistics in both modes, the contrast to the inverted flag.
- ``flax-dropout-always``: Dropout always on (``deterministic=False``): dropout in inference
  and in training, the contrast to dropout's inverted flag.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from portspec.impls.jax import layers as ref
from portspec.impls.jax.adapter import FlaxAdapter


class _StatsFloat32(ref.FeatureMixing):
    def __init__(self, *args, rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        flat = self.input_size * self.n_series
        self.norm.mean = nnx.BatchStat(jnp.zeros((flat,), jnp.float32))
        self.norm.var = nnx.BatchStat(jnp.ones((flat,), jnp.float32))


class _Flagged(ref.FeatureMixing):
    """FeatureMixing with an explicit flag; ``norm_flag`` and ``drop_flag`` map the
    training flag to BatchNorm's ``use_running_average`` and Dropout's ``deterministic``."""

    norm_flag = staticmethod(lambda train: not train)
    drop_flag = staticmethod(lambda train: not train)

    def __call__(self, x, train=False):
        y = x.reshape(x.shape[0], -1)
        y = self.norm(y, use_running_average=self.norm_flag(train)).reshape(x.shape)
        keep = self.drop_flag(train)
        y = self.dropout1(jax.nn.relu(self.dense1(y)), deterministic=keep)
        return x + self.dropout2(self.dense2(y), deterministic=keep)


class _BNFlagInverted(_Flagged):
    norm_flag = staticmethod(lambda train: train)


class _BNFlagIgnored(_Flagged):
    norm_flag = staticmethod(lambda train: False)


class _DropoutFlagInverted(_Flagged):
    drop_flag = staticmethod(lambda train: train)


class _DropoutAlways(_Flagged):
    drop_flag = staticmethod(lambda train: False)


class _FlaxFM(FlaxAdapter):
    layers = ("FeatureMixing",)


class FlaxStatsFloat32(_FlaxFM):
    name = "flax-stats-float32"
    classes = {**FlaxAdapter.classes, "FeatureMixing": _StatsFloat32}


class _Explicit(_FlaxFM):
    def call(self, module, inputs, *, training):
        return module(inputs, train=training)


class FlaxBNFlagInverted(_Explicit):
    name = "flax-bn-flag-inverted"
    classes = {**FlaxAdapter.classes, "FeatureMixing": _BNFlagInverted}


class FlaxBNFlagIgnored(_Explicit):
    name = "flax-bn-flag-ignored"
    classes = {**FlaxAdapter.classes, "FeatureMixing": _BNFlagIgnored}


class FlaxDropoutFlagInverted(_Explicit):
    name = "flax-dropout-flag-inverted"
    classes = {**FlaxAdapter.classes, "FeatureMixing": _DropoutFlagInverted}


class FlaxDropoutAlways(_Explicit):
    name = "flax-dropout-always"
    classes = {**FlaxAdapter.classes, "FeatureMixing": _DropoutAlways}


ADAPTERS = [FlaxStatsFloat32(), FlaxBNFlagInverted(), FlaxBNFlagIgnored(),
            FlaxDropoutFlagInverted(), FlaxDropoutAlways()]
