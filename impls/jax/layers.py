"""FeatureMixing and GatedFeatureFusion as Flax NNX modules.

Written in the style of ``flax/nnx/nn/linear.py`` and ``normalization.py``: explicit ``rngs``,
weights as ``nnx.Param``, moving statistics as ``nnx.BatchStat``, ``dtype`` (computation) and
``param_dtype`` (storage) as in ``nnx.Linear``. Training and inference are switched the NNX way,
with ``model.train()`` / ``model.eval()`` (the ``deterministic`` and ``use_running_average``
attributes of the ``nnx.Dropout`` and ``nnx.BatchNorm`` submodules). The modules work under
``nnx.jit`` and through ``nnx.split`` / ``nnx.merge``.

The normative definitions are ``portspec.layers.feature_mixing`` and
``portspec.layers.gated_feature_fusion``; config and call validation are the spec's own functions,
so a malformed config or call raises the spec's ValueError / TypeError naming the parameter.
"""

from __future__ import annotations

import typing as tp

import jax
import jax.numpy as jnp
from flax import nnx
from flax.typing import Dtype, PrecisionLike

from portspec import validation
from portspec.layers import feature_mixing as fm_spec
from portspec.layers import gated_feature_fusion as gff_spec

glorot_uniform = nnx.initializers.glorot_uniform()
zeros = nnx.initializers.zeros_init()

ACTIVATIONS: dict[str, tp.Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    # Over the feature axis: the gate of each feature competes with the others.
    "softmax": lambda z: jax.nn.softmax(z, axis=-1),
}


def _compute_dtype(dtype: Dtype | None, *arrays) -> jnp.dtype:
    """``dtype`` if given, else the promoted dtype of the inputs and parameters (as nnx.Linear)."""
    if dtype is not None:
        return jnp.dtype(dtype)
    return jnp.result_type(*arrays)


class FeatureMixing(nnx.Module):
    """The channel-mixing block of TSMixer.

    BatchNorm over the flattened ``input_size * n_series`` features, then a two-layer MLP over
    the channel axis with dropout after each layer, added back to the input::

        z = reshape(BatchNorm(flatten(x)))           # feature index t * n_series + c
        y = Dropout(Linear(ff_dim -> n_series)(Dropout(relu(Linear(n_series -> ff_dim)(z)))))
        out = x + y

    BatchNorm follows the Keras convention pinned by the spec: ``epsilon = 1e-3`` and
    ``moving = 0.01 * moving + 0.99 * batch`` for the mean and the biased batch variance.
    Its statistics are computed in at least float32 (half-precision inputs are normalised in
    float32 and cast back, as Keras does); the moving statistics are stored in
    ``promote_types(param_dtype, float32)``.

    Example::

        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> layer = FeatureMixing(n_series=5, input_size=6, dropout=0.1, ff_dim=16,
        ...                       rngs=nnx.Rngs(0))
        >>> x = jnp.ones((8, 6, 5))
        >>> layer.train()   # batch statistics, dropout on, updates norm.mean / norm.var
        >>> layer(x).shape
        (8, 6, 5)
        >>> layer.eval()    # moving statistics, no dropout, no state change
        >>> layer(x).shape
        (8, 6, 5)

    Args:
        n_series: number of channels N, the last input axis.
        input_size: number of time steps L, the middle input axis.
        dropout: rate of both dropout sites, in [0, 1].
        ff_dim: hidden width H of the channel MLP.
        dtype: the dtype of the computation (default: inferred from input and params).
        param_dtype: the dtype in which the parameters are stored (default float32).
        precision: matmul precision of the two Linear layers (``jax.lax.Precision``).
        rngs: ``nnx.Rngs`` with a ``params`` stream (initialisation) and a ``dropout`` stream
            (or a ``default`` one).

    Input shape: ``(batch, input_size, n_series)``, floating dtype.
    Output shape: the same as the input.
    """

    def __init__(
        self,
        n_series: int,
        input_size: int,
        dropout: float,
        ff_dim: int,
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
    ):
        config = fm_spec.SPEC.validate_config(
            {"n_series": n_series, "input_size": input_size, "dropout": dropout,
             "ff_dim": ff_dim}
        )
        self.n_series = config["n_series"]
        self.input_size = config["input_size"]
        self.dropout = config["dropout"]
        self.ff_dim = config["ff_dim"]
        self.dtype = dtype
        self.param_dtype = param_dtype

        flat = self.input_size * self.n_series
        # nnx.BatchNorm matches the spec once configured: momentum is the share of the old
        # value (Keras sense), epsilon is added to the variance inside rsqrt, and
        # use_fast_variance=False takes the biased variance as mean((x - mean)^2), which is
        # exactly 0 for a batch of one and does not cancel catastrophically.
        self.norm = nnx.BatchNorm(
            flat,
            momentum=fm_spec.MOMENTUM,
            epsilon=fm_spec.EPSILON,
            use_fast_variance=False,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        # nnx.BatchNorm stores its moving statistics in float32 whatever param_dtype is; a
        # float64 layer must keep them in float64 to run end to end in float64.
        stat_dtype = jnp.promote_types(param_dtype, jnp.float32)
        self.norm.mean = nnx.BatchStat(jnp.zeros((flat,), stat_dtype))
        self.norm.var = nnx.BatchStat(jnp.ones((flat,), stat_dtype))

        linear = dict(
            dtype=dtype, param_dtype=param_dtype, precision=precision,
            kernel_init=glorot_uniform, bias_init=zeros, rngs=rngs,
        )
        self.dense1 = nnx.Linear(self.n_series, self.ff_dim, **linear)
        self.dropout1 = nnx.Dropout(self.dropout, rngs=rngs)
        self.dense2 = nnx.Linear(self.ff_dim, self.n_series, **linear)
        self.dropout2 = nnx.Dropout(self.dropout, rngs=rngs)

    @classmethod
    def from_config(cls, config: dict, **kwargs) -> FeatureMixing:
        """Build from a spec config dict (validated as a whole: unknown keys are rejected)."""
        return cls(**fm_spec.SPEC.validate_config(config), **kwargs)

    def get_config(self) -> dict:
        return {"n_series": self.n_series, "input_size": self.input_size,
                "dropout": self.dropout, "ff_dim": self.ff_dim}

    def __call__(self, x: jax.Array) -> jax.Array:
        fm_spec.SPEC.check_call(self.get_config(), tuple(x.shape), str(x.dtype))
        dtype = _compute_dtype(self.dtype, x, self.dense1.kernel[...])
        x = jnp.asarray(x, dtype)
        batch = x.shape[0]

        # BatchNorm statistics in at least float32, so half-precision runs stay accurate.
        stat_dtype = jnp.promote_types(dtype, jnp.float32)
        # One name for every intermediate, so that eager calls free each once the next exists
        # (as the PyTorch module does; under jit it makes no difference).
        y = x.reshape(batch, self.input_size * self.n_series).astype(stat_dtype)
        y = self.norm(y).astype(dtype).reshape(x.shape)
        y = self.dropout1(jax.nn.relu(self.dense1(y)))
        y = self.dropout2(self.dense2(y))
        return x + y.astype(dtype)


class GatedFeatureFusion(nnx.Module):
    """A learned gate between two feature representations of the same shape.

    ::

        gate = activation(concat([a, b], -1) @ kernel + bias)    # kernel (2F, F)
        out = gate * a + (1 - gate) * b

    The first input fills the first F rows of the kernel and is multiplied by the gate.

    Example::

        >>> from flax import nnx
        >>> import jax.numpy as jnp
        >>> fuse = GatedFeatureFusion(6, rngs=nnx.Rngs(0))
        >>> fuse([jnp.ones((4, 6)), jnp.zeros((4, 6))]).shape
        (4, 6)

    Args:
        features: F, the size of the last axis of both inputs.
        activation: one of 'sigmoid' (default), 'tanh', 'relu', 'softmax' (over the last axis).
        dtype: the dtype of the computation (default: inferred from inputs and params).
        param_dtype: the dtype in which the parameters are stored (default float32).
        precision: matmul precision of the gate (``jax.lax.Precision``).
        rngs: ``nnx.Rngs`` with a ``params`` stream (or a ``default`` one).

    Input: a list or tuple of exactly two arrays of identical shape ``(..., F)``, rank >= 2.
    Output shape: the same as each input.
    """

    def __init__(
        self,
        features: int,
        activation: str = "sigmoid",
        *,
        dtype: Dtype | None = None,
        param_dtype: Dtype = jnp.float32,
        precision: PrecisionLike = None,
        rngs: nnx.Rngs,
    ):
        self.features = validation.positive_int("features", features)
        self.activation = gff_spec.SPEC.validate_config({"activation": activation})["activation"]
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.gate = nnx.Linear(
            2 * self.features, self.features, dtype=dtype, param_dtype=param_dtype,
            precision=precision, kernel_init=glorot_uniform, bias_init=zeros, rngs=rngs,
        )

    @classmethod
    def from_config(cls, config: dict, features: int, **kwargs) -> GatedFeatureFusion:
        """Build from a spec config dict; ``features`` comes from the input shape."""
        return cls(features, **gff_spec.SPEC.validate_config(config), **kwargs)

    def get_config(self) -> dict:
        return {"activation": self.activation}

    def __call__(self, inputs: tp.Sequence[jax.Array]) -> jax.Array:
        config = self.get_config()
        if not isinstance(inputs, (list, tuple)):
            # A bare array: the spec's check raises the TypeError that asks for a list.
            gff_spec.SPEC.check_call(config, tuple(jnp.shape(inputs)), [str(inputs.dtype)],
                                     features=self.features)
        gff_spec.SPEC.check_call(config, [tuple(t.shape) for t in inputs],
                                 [str(t.dtype) for t in inputs], features=self.features)
        a, b = inputs
        dtype = _compute_dtype(self.dtype, a, b, self.gate.kernel[...])
        a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
        gate = ACTIVATIONS[self.activation](self.gate(jnp.concatenate([a, b], axis=-1)))
        gate = gate.astype(dtype)
        return gate * a + (1 - gate) * b
