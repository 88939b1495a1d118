"""Flax NNX ports on spec.ports.FlaxPortAdapter, over the reference modules.

``good-flax`` is the built-in adapter under a port's name; ``flax-batchnorm-defaults``
replaces its BatchNorm with ``nnx.BatchNorm`` left at its defaults (momentum 0.99 in the Keras
sense, epsilon 1e-5, float32 statistics), the mistake a Flax port invites.
"""

from __future__ import annotations

from flax import nnx

from portspec.impls.jax import layers as ref
from portspec.impls.jax.adapter import FlaxAdapter


class GoodFlax(FlaxAdapter):
    name = "good-flax"


class _DefaultBatchNorm(ref.FeatureMixing):
    def __init__(self, *args, rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        self.norm = nnx.BatchNorm(self.input_size * self.n_series, rngs=rngs)


class FlaxBatchNormDefaults(GoodFlax):
    name = "flax-batchnorm-defaults"
    layers = ("FeatureMixing",)
    classes = {**FlaxAdapter.classes, "FeatureMixing": _DefaultBatchNorm}


ADAPTERS = [GoodFlax(), FlaxBatchNormDefaults()]
