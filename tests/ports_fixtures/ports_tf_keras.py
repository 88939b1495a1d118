"""A Keras 2 (tf_keras) FeatureMixing written from the TSMixer paper's description of its
reference code: ``BatchNormalization(axis=[-2, -1])`` at Keras's defaults (momentum 0.99,
epsilon 1e-3) over (L, N), then Dense, dropout, Dense, dropout and the residual. Keras 3
refuses the list axis. The statistics are (1, L, N): the spec's flat L*N vector in C order,
so ``reshape`` maps them.
"""

from __future__ import annotations

import tf_keras as keras

from portspec.ports import TfKerasPortAdapter, identity, reshape


@keras.saving.register_keras_serializable(package="portspec_tests")
class ReferenceBlock(keras.layers.Layer):
    def __init__(self, n_series, input_size, dropout, ff_dim, **kwargs):
        super().__init__(**kwargs)
        self.n_series, self.input_size, self.dropout, self.ff_dim = (
            n_series, input_size, dropout, ff_dim)
        policy = self.dtype_policy  # Keras 2 sublayers do not inherit it
        self.norm = keras.layers.BatchNormalization(axis=[-2, -1], dtype=policy)
        self.dense1 = keras.layers.Dense(ff_dim, activation="relu", dtype=policy)
        self.dense2 = keras.layers.Dense(n_series, dtype=policy)
        self.drop1 = keras.layers.Dropout(dropout, dtype=policy)
        self.drop2 = keras.layers.Dropout(dropout, dtype=policy)

    def call(self, inputs, training=None):
        x = self.norm(inputs, training=training)
        x = self.drop1(self.dense1(x), training=training)
        return inputs + self.drop2(self.dense2(x), training=training)

    def get_config(self):
        return {**super().get_config(), "n_series": self.n_series,
                "input_size": self.input_size, "dropout": self.dropout, "ff_dim": self.ff_dim}


class TfKerasReference(TfKerasPortAdapter):
    name = "tf-keras-reference"
    layers = ("FeatureMixing",)

    def weight_rule(self, name):
        return name, reshape() if name.startswith("norm.") else identity

    def construct(self, layer, config, *, input_shapes, dtype):
        return ReferenceBlock(**config, **({} if dtype is None else {"dtype": dtype}))
