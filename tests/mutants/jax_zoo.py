"""Flax NNX mutants: the porting mistakes Flax invites, each an adapter ``portspec verify`` loads.

``catches`` names the clauses that must fail for each.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from portspec.impls.jax import layers as ref
from portspec.impls.jax.adapter import FlaxAdapter


class _FlaxMutant(FlaxAdapter):
    catches: tuple[str, ...] = ()
    mistake = ""
    layers = ("FeatureMixing",)
    fm = ref.FeatureMixing

    def __init__(self, variant=None):
        super().__init__(variant)
        self.name = type(self).__name__
        self.classes = {**self.classes, "FeatureMixing": self.fm}


def _norm(**overrides):
    """A FeatureMixing whose nnx.BatchNorm is built with ``overrides`` instead of the spec's."""

    class Mutated(ref.FeatureMixing):
        def __init__(self, *args, rngs, **kwargs):
            super().__init__(*args, rngs=rngs, **kwargs)
            options = {"use_fast_variance": False, **overrides}
            stats = (self.norm.mean, self.norm.var)
            self.norm = nnx.BatchNorm(self.input_size * self.n_series,
                                      param_dtype=self.param_dtype, rngs=rngs, **options)
            if not overrides.get("float32_stats"):
                self.norm.mean, self.norm.var = stats
    return Mutated


class BatchNormFlaxDefaults(_FlaxMutant):
    mistake = "nnx.BatchNorm with Flax's defaults: momentum 0.99, epsilon 1e-5"
    catches = ("FM-BN-UPDATE", "FM-BN-EPSILON")
    names = r"epsilon 1e-05.*keep 0\.99 of their old value"
    fm = _norm()


class BatchNormTorchMomentumSense(_FlaxMutant):
    mistake = ("nnx.BatchNorm(momentum=0.99): the spec's 0.01 'converted' as if Flax used "
               "PyTorch's sense; Flax already uses Keras's")
    catches = ("FM-BN-UPDATE",)
    names = r"keep 0\.99 of their old value"
    fm = _norm(momentum=0.99, epsilon=1e-3)


class _Float32Stats(ref.FeatureMixing):
    def __init__(self, *args, rngs, **kwargs):
        super().__init__(*args, rngs=rngs, **kwargs)
        flat = self.input_size * self.n_series
        self.norm.mean = nnx.BatchStat(jnp.zeros((flat,), jnp.float32))
        self.norm.var = nnx.BatchStat(jnp.ones((flat,), jnp.float32))


class BatchStatsAlwaysFloat32(_FlaxMutant):
    mistake = "nnx.BatchNorm's float32 moving statistics kept in a float64 layer"
    catches = ("FM-DTYPE",)
    # the clause's own finding, or the variant's once the precision re-run ties them
    names = (r"holds \['norm\.moving_mean', 'norm\.moving_variance'\] in float32"
             r"|moving statistics stored in float32")
    fm = _Float32Stats


class _SameKeyDropout(ref.FeatureMixing):
    def __call__(self, x):
        # a fresh Rngs with a fixed seed on every call: the same masks forever
        for site in (self.dropout1, self.dropout2):
            site.rngs = nnx.Rngs(dropout=0).dropout
        return super().__call__(x)


class DropoutKeyReused(_FlaxMutant):
    mistake = "the dropout PRNG key is recreated from a constant each call instead of split"
    catches = ("FM-DROPOUT-SITES",)
    names = r"every training call draws the same dropout masks"
    fm = _SameKeyDropout
