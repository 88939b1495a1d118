"""A Keras 3 GatedFeatureFusion port whose get_config() returns only the base Layer's config
(name, trainable, dtype), leaving out activation: a layer rebuilt or natively loaded from it
is a sigmoid gate whatever it was built with. For tests/test_rootcause_redteam_build.py."""

from __future__ import annotations

import keras
from keras import layers, ops

from portspec.ports import KerasPortAdapter, identity

ACTIVATIONS = ("sigmoid", "tanh", "relu", "softmax")


@keras.saving.register_keras_serializable(package="portspec_tests_redteam_build")
class GatedFeatureFusion(layers.Layer):
    """[a, b], each (..., F) -> (..., F): gate * a + (1 - gate) * b."""

    def __init__(self, activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation

    def build(self, input_shape):
        features = int(input_shape[0][-1])
        self.gate = layers.Dense(features, activation=self.activation, name="gate",
                                 dtype=self.dtype_policy)
        self.gate.build((None, 2 * features))

    def call(self, inputs, training=None):
        a, b = inputs
        gate = self.gate(ops.concatenate([a, b], axis=-1))
        return gate * a + (1.0 - gate) * b

    def get_config(self):
        return super().get_config()  # the mistake: activation left out


class ConfigWithoutActivation(KerasPortAdapter):
    name = "config-without-activation"
    layers = ("GatedFeatureFusion",)
    weights = {"GatedFeatureFusion": {"gate.kernel": ("gate.kernel", identity),
                                      "gate.bias": ("gate.bias", identity)}}

    def construct(self, layer, config, *, input_shapes, dtype):
        return GatedFeatureFusion(**config, **({} if dtype is None else {"dtype": dtype}))
