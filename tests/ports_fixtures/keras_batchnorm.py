"""A Keras 3 FeatureMixing on ``keras.layers.BatchNormalization`` over the flattened (time x
channel) features, as Keras users write it, on the backend KERAS_BACKEND names.

``keras-builtin-bn`` is that layer to the spec; ``keras-batch-renorm`` builds its
BatchNormalization with ``renorm=True`` (batch renormalisation: three more non-trainable
weights, and a training normalisation corrected by them); ``keras-global-dropout`` drops out
with ``keras.random.dropout(x, rate)`` and no seed, the masks drawn from Keras's global
generator.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from portspec.layers import LAYERS
from portspec.ports import KerasPortAdapter, identity

SPEC = LAYERS["FeatureMixing"]


@keras.saving.register_keras_serializable(package="portspec_fixture_bn")
class FeatureMixing(layers.Layer):
    """BN(flatten(x)) -> Dense(ff_dim) -> ReLU -> Dropout -> Dense(n_series) -> Dropout, plus
    the input."""

    renorm = False

    def __init__(self, n_series, input_size, dropout, ff_dim, **kwargs):
        super().__init__(**kwargs)
        config = SPEC.validate_config({"n_series": n_series, "input_size": input_size,
                                       "dropout": dropout, "ff_dim": ff_dim})
        self.n_series, self.input_size = config["n_series"], config["input_size"]
        self.dropout, self.ff_dim = config["dropout"], config["ff_dim"]
        policy = self.dtype_policy
        # Keras's momentum: the share of the old moving statistic kept
        self.norm = layers.BatchNormalization(momentum=0.01, epsilon=1e-3, renorm=self.renorm,
                                              dtype=policy, name="norm")
        self.dense1 = layers.Dense(self.ff_dim, dtype=policy, name="dense1")
        self.dropout1 = layers.Dropout(self.dropout, dtype=policy)
        self.dense2 = layers.Dense(self.n_series, dtype=policy, name="dense2")
        self.dropout2 = layers.Dropout(self.dropout, dtype=policy)

    def build(self, input_shape):
        self.norm.build((None, self.input_size * self.n_series))
        self.dense1.build((None, self.input_size, self.n_series))
        self.dense2.build((None, self.input_size, self.ff_dim))

    def call(self, inputs, training=None):
        SPEC.check_call({"input_size": self.input_size, "n_series": self.n_series},
                        tuple(inputs.shape), keras.backend.standardize_dtype(inputs.dtype))
        flat = ops.reshape(inputs, (-1, self.input_size * self.n_series))
        x = ops.reshape(self.norm(flat, training=training), (-1, self.input_size, self.n_series))
        x = self.dropout1(ops.relu(self.dense1(x)), training=training)
        return inputs + self.dropout2(self.dense2(x), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "n_series": self.n_series,
                "input_size": self.input_size, "dropout": self.dropout, "ff_dim": self.ff_dim}


@keras.saving.register_keras_serializable(package="portspec_fixture_bn")
class Renormalised(FeatureMixing):
    renorm = True


@keras.saving.register_keras_serializable(package="portspec_fixture_bn")
class GlobalDropout(FeatureMixing):
    def call(self, inputs, training=None):
        SPEC.check_call({"input_size": self.input_size, "n_series": self.n_series},
                        tuple(inputs.shape), keras.backend.standardize_dtype(inputs.dtype))
        flat = ops.reshape(inputs, (-1, self.input_size * self.n_series))
        x = ops.reshape(self.norm(flat, training=training), (-1, self.input_size, self.n_series))
        x = ops.relu(self.dense1(x))

        def drop(v):
            return keras.random.dropout(v, self.dropout) if training and self.dropout else v

        return inputs + drop(self.dense2(drop(x)))


class BuiltinBatchNorm(KerasPortAdapter):
    name = "keras-builtin-bn"
    layers = ("FeatureMixing",)
    cls = FeatureMixing
    weights = {"FeatureMixing": {
        **{f"norm.{k}": (f"norm.{k}", identity) for k in ("gamma", "beta", "moving_mean",
                                                             "moving_variance")},
        **{f"{d}.{k}": (f"{d}.{k}", identity) for d in ("dense1", "dense2")
           for k in ("kernel", "bias")}}}

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.cls(**config, **({} if dtype is None else {"dtype": dtype}))


class BatchRenorm(BuiltinBatchNorm):
    name, cls = "keras-batch-renorm", Renormalised


class GlobalDropoutPort(BuiltinBatchNorm):
    name, cls = "keras-global-dropout", GlobalDropout


ADAPTERS = [BuiltinBatchNorm(), BatchRenorm(), GlobalDropoutPort()]
