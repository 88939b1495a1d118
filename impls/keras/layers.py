"""FeatureMixing and GatedFeatureFusion as Keras 3 layers (any backend).

Written in the style of ``keras/src/layers/core/dense.py``: ``__init__`` stores the config,
``build`` creates the weights, ``call`` uses ``keras.ops`` only, ``get_config`` mirrors
``__init__``. Config and call validation come from the spec, so error messages match it.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from portspec.layers.feature_mixing import EPSILON, MOMENTUM
from portspec.layers.feature_mixing import SPEC as FM_SPEC
from portspec.layers.gated_feature_fusion import SPEC as GFF_SPEC


@keras.saving.register_keras_serializable(package="portspec")
class Linear(layers.Layer):
    """``keras.layers.Dense`` without activation, float64-exact on every backend.

    Dense calls ``ops.matmul``, which Keras 3.15's torch backend evaluates in float32 even for
    float64 operands (error 1e-5 where float64 gives 1e-14); there, float64 goes through
    einsum, which keeps the dtype. Weights, names and initialisers are Dense's:
    Glorot-uniform kernel (in, out), zero bias.

    Args:
        units: output width.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        float64 = keras.backend.standardize_dtype(inputs.dtype) == "float64"
        if float64 and keras.backend.backend() == "torch":
            return ops.einsum("...i,io->...o", inputs, self.kernel) + self.bias
        # Elsewhere matmul: TensorFlow's gradient of "...i,io->...o" materialises a
        # [..., i, o] tensor (27 GiB for the large FeatureMixing benchmark).
        return ops.matmul(inputs, self.kernel) + self.bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _mean0(x):
    # ops.mean promotes float64 to float32 on the jax and torch backends of Keras 3.15.
    return ops.sum(x, axis=0) / ops.cast(ops.shape(x)[0], x.dtype)


def _activation(name, z):
    if name == "softmax":
        return ops.softmax(z, axis=-1)
    if name == "tanh":
        # ops.tanh loses float64 on Keras 3.15's jax backend; sigmoid does not.
        return 2.0 * ops.sigmoid(2.0 * z) - 1.0
    return keras.activations.get(name)(z)


@keras.saving.register_keras_serializable(package="portspec")
class FlatBatchNorm(layers.Layer):
    """BatchNorm over the last axis of a rank-2 input, in the Keras momentum convention.

    ``keras.layers.BatchNormalization`` would do, except that it computes in
    ``result_type(dtype, "float32")``, which Keras 3 resolves to float32 even for a float64
    layer; the spec's float64 clauses need float64 throughout. Low-precision inputs are
    normalised in float32, as Keras does.

    Args:
        momentum: share of the old value kept by the moving statistics.
        epsilon: added to the variance.
    """

    def __init__(self, momentum=MOMENTUM, epsilon=EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.epsilon = epsilon

    def build(self, input_shape):
        shape = (input_shape[-1],)
        self.gamma = self.add_weight(shape=shape, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=shape, initializer="zeros", name="beta")
        # autocast=False, as keras.layers.BatchNormalization's: under a mixed policy a call
        # would read them in the compute dtype, and the update would start from a bfloat16
        # rounding of the old value (on the torch backend the assignment was lost outright)
        self.moving_mean = self.add_weight(
            shape=shape, initializer="zeros", trainable=False, name="moving_mean",
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            shape=shape, initializer="ones", trainable=False, name="moving_variance",
            autocast=False,
        )

    def call(self, inputs, training=None):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        stat_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
        x = ops.cast(inputs, stat_dtype)
        if training:
            mean = _mean0(x)
            variance = _mean0(ops.square(x - mean))  # biased
            m = self.momentum
            self.moving_mean.assign(ops.cast(self.moving_mean, stat_dtype) * m + mean * (1.0 - m))
            self.moving_variance.assign(
                ops.cast(self.moving_variance, stat_dtype) * m + variance * (1.0 - m)
            )
        else:
            mean = ops.cast(self.moving_mean, stat_dtype)
            variance = ops.cast(self.moving_variance, stat_dtype)
        # The backend's own normalisation, not (x - mean) * inv + beta written out: on torch
        # it works in place, on jax and TensorFlow it folds the mean into the offset; one or
        # two passes fewer over the (batch, L * N) tensor, which at the large benchmark size
        # made our Keras FeatureMixing 1.05-1.13x slower than the same layer built on
        # keras.layers.BatchNormalization (BENCHMARKS.md). It keeps float64.
        out = ops.batch_normalization(
            x, mean, variance, axis=-1, offset=ops.cast(self.beta, stat_dtype),
            scale=ops.cast(self.gamma, stat_dtype), epsilon=self.epsilon,
        )
        return ops.cast(out, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="portspec")
class Dropout(layers.Dropout):
    """``keras.layers.Dropout`` (inverted dropout) whose masks, on the TensorFlow backend, come
    from TensorFlow's Philox generator named explicitly.

    Keras 3.15 calls ``tf.nn.experimental.stateless_dropout`` with the default algorithm
    (``auto_select``), which XLA's CPU code draws some 30 times slower than Philox: for a
    (32, 336, 321) float32 input, 1035 against 30.5 ms under ``tf.function(jit_compile=True)``
    (20.6 against 45.1 ms eager). Same rate, same scaling, masks independent across elements
    and across the layer's two sites (each site its own seed generator); other backends keep
    Keras's own dropout.
    """

    def call(self, inputs, training=False):
        if not (training and 0.0 < self.rate < 1.0 and self.noise_shape is None
                and keras.backend.backend() == "tensorflow"):
            return super().call(inputs, training=training)
        import tensorflow as tf

        seed = self.seed_generator.next()
        # the int32 seed XLA's stateless ops take, as Keras's TensorFlow backend makes it
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), "int32")
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed,
                                                    rng_alg="philox")


@keras.saving.register_keras_serializable(package="portspec")
class FeatureMixing(layers.Layer):
    """Channel mixing of TSMixer: BatchNorm over the flattened features, a two-layer MLP across
    channels with dropout, and a residual connection.

    Args:
        n_series: number of channels N (last input axis).
        input_size: number of time steps L (middle input axis).
        dropout: rate of both dropout sites, in [0, 1].
        ff_dim: hidden width H of the channel MLP.
        seed: optional seed of the dropout masks.

    Input shape:
        ``(batch, input_size, n_series)``, floating dtype.

    Output shape:
        Same as the input.

    Example:

    >>> layer = FeatureMixing(n_series=7, input_size=96, dropout=0.1, ff_dim=64)
    >>> y = layer(keras.random.normal((32, 96, 7)), training=True)
    """

    def __init__(self, n_series, input_size, dropout, ff_dim, seed=None, **kwargs):
        super().__init__(**kwargs)
        config = FM_SPEC.validate_config(
            {"n_series": n_series, "input_size": input_size, "dropout": dropout, "ff_dim": ff_dim}
        )
        self.n_series = config["n_series"]
        self.input_size = config["input_size"]
        self.dropout = config["dropout"]
        self.ff_dim = config["ff_dim"]
        self.seed = seed
        policy = self.dtype_policy
        self.norm = FlatBatchNorm(momentum=MOMENTUM, epsilon=EPSILON, dtype=policy, name="norm")
        self.dense1 = Linear(self.ff_dim, dtype=policy, name="dense1")
        self.dense2 = Linear(self.n_series, dtype=policy, name="dense2")
        self.dropout1 = Dropout(self.dropout, seed=seed, dtype=policy, name="dropout1")
        self.dropout2 = Dropout(
            self.dropout, seed=None if seed is None else seed + 1, dtype=policy, name="dropout2"
        )

    def _config(self):
        return {
            "n_series": self.n_series,
            "input_size": self.input_size,
            "dropout": self.dropout,
            "ff_dim": self.ff_dim,
        }

    def build(self, input_shape):
        FM_SPEC.check_call(self._config(), tuple(input_shape), "float32")
        flat = self.input_size * self.n_series
        self.norm.build((None, flat))
        self.dense1.build((None, self.input_size, self.n_series))
        self.dense2.build((None, self.input_size, self.ff_dim))

    def _drop(self, layer, x, training):
        # Keras's dropout divides by the keep probability: at rate 1 that is 0/0 in the
        # gradient, so the spec's "rate 1 zeroes the branch" is written out.
        if training and self.dropout >= 1.0:
            return x * 0.0  # not zeros_like: the weights stay in the graph, with gradient 0
        return layer(x, training=training)

    def call(self, inputs, training=None):
        FM_SPEC.check_call(
            self._config(), tuple(inputs.shape), keras.backend.standardize_dtype(inputs.dtype)
        )
        flat = ops.reshape(inputs, (-1, self.input_size * self.n_series))
        x = self.norm(flat, training=training)
        x = ops.reshape(x, (-1, self.input_size, self.n_series))
        x = self._drop(self.dropout1, ops.relu(self.dense1(x)), training)
        x = self._drop(self.dropout2, self.dense2(x), training)
        return inputs + x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(self._config())
        config["seed"] = self.seed
        return config


@keras.saving.register_keras_serializable(package="portspec")
class GatedFeatureFusion(layers.Layer):
    """Fuses two representations with a learned gate: ``g * a + (1 - g) * b``.

    ``g = activation(concat([a, b], -1) @ kernel + bias)``; the kernel is ``(2F, F)``.

    Args:
        activation: gate activation, one of ``sigmoid`` (default), ``tanh``, ``relu``,
            ``softmax`` (over the last axis).

    Input shape:
        A list of two tensors of identical shape ``(..., F)``, rank >= 2.

    Output shape:
        The inputs' shape.

    Example:

    >>> fusion = GatedFeatureFusion()
    >>> y = fusion([keras.random.normal((32, 10)), keras.random.normal((32, 10))])
    """

    def __init__(self, activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.activation = GFF_SPEC.validate_config({"activation": activation})["activation"]
        self.gate = None

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        GFF_SPEC.check_call(self._config(), shapes, ["float32"] * len(shapes))
        features = shapes[0][-1]
        self.gate = Linear(features, dtype=self.dtype_policy, name="gate")
        self.gate.build((None, 2 * features))

    def _config(self):
        return {"activation": self.activation}

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            GFF_SPEC.check_call(self._config(), tuple(inputs.shape), [])
        GFF_SPEC.check_call(
            self._config(),
            [tuple(t.shape) for t in inputs],
            [keras.backend.standardize_dtype(t.dtype) for t in inputs],
            features=self.gate.units,
        )
        a, b = inputs
        gate = _activation(self.activation, self.gate(ops.concatenate([a, b], axis=-1)))
        return gate * a + (1.0 - gate) * b

    def compute_output_shape(self, input_shape):
        return _shapes(input_shape)[0]

    def get_config(self):
        config = super().get_config()
        config.update(self._config())
        return config


def _shapes(input_shape):
    """Keras passes a list of shapes for list inputs and a bare shape otherwise."""
    if input_shape and isinstance(input_shape[0], (list, tuple)):
        return [tuple(s) for s in input_shape]
    return tuple(input_shape)
