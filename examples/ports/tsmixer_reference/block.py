"""The feature-mixing half of the TSMixer residual block, in Keras 2 (``tf_keras``), written from
the TSMixer paper's description of its reference code (Chen et al., "TSMixer: An All-MLP
Architecture for Time Series Forecasting", 2023; google-research/tsmixer, ``res_block``).

What the reference does, and so this layer: ``BatchNormalization(axis=[-2, -1])`` over the
(time, channel) axes at Keras's defaults (momentum 0.99, the share of the old moving statistic
kept; epsilon 1e-3; a scale and an offset per (time step, channel)); ``Dense(ff_dim,
activation="relu")``; ``Dropout``; ``Dense(n_channels)``; ``Dropout``; the block's input added
back. Dense layers at Keras's defaults: Glorot-uniform kernels, zero biases. The list axis is
why it is Keras 2: Keras 3's BatchNormalization takes one axis only.

Unlike the reference, which builds the block inside a functional model, this is a layer with a
config, so that it can be saved and checked; it validates nothing the reference does not.
"""

from __future__ import annotations

import tf_keras
from tf_keras import layers


@tf_keras.saving.register_keras_serializable(package="tsmixer_reference")
class FeatureMixingBlock(layers.Layer):
    """Input and output shape (batch, input_size, n_series).

    Args:
        n_series: channels N, the last axis.
        input_size: time steps L, the middle axis.
        ff_dim: width of the hidden Dense layer.
        dropout: rate of both dropout layers.
    """

    def __init__(self, n_series, input_size, ff_dim, dropout, **kwargs):
        super().__init__(**kwargs)
        self.n_series, self.input_size = n_series, input_size
        self.ff_dim, self.dropout = ff_dim, dropout
        policy = self.dtype_policy  # the sublayers compute in the block's dtype
        self.norm = layers.BatchNormalization(axis=[-2, -1], dtype=policy)
        self.dense1 = layers.Dense(ff_dim, activation="relu", dtype=policy)
        self.dropout1 = layers.Dropout(dropout, dtype=policy)
        self.dense2 = layers.Dense(n_series, dtype=policy)
        self.dropout2 = layers.Dropout(dropout, dtype=policy)

    def call(self, inputs, training=None):
        x = self.norm(inputs, training=training)
        x = self.dropout1(self.dense1(x), training=training)
        x = self.dropout2(self.dense2(x), training=training)
        return inputs + x

    def get_config(self):
        return {
            **super().get_config(),
            "n_series": self.n_series,
            "input_size": self.input_size,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
        }
