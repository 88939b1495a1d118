"""Keras ports on spec.ports.KerasPortAdapter, over the reference layers, on the backend
KERAS_BACKEND names.

``good-keras`` is the built-in adapter under a port's name; ``keras-epsilon-1e-5`` sets its
BatchNorm epsilon to PyTorch's default; ``keras-not-registered`` is the reference
FeatureMixing redefined without ``keras.saving.register_keras_serializable``;
``keras-config-without-base`` returns a get_config without ``super().get_config()``.
"""

from __future__ import annotations

import keras

from portspec.impls.keras import layers as ref
from portspec.impls.keras.adapter import KerasAdapter


class GoodKeras(KerasAdapter):
    name = "good-keras"


class _Epsilon5(ref.FeatureMixing):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm.epsilon = 1e-5


class KerasEpsilon5(GoodKeras):
    name = "keras-epsilon-1e-5"
    layers = ("FeatureMixing",)

    def __init__(self, variant=None):
        super().__init__(variant)
        self.classes = {**self.classes, "FeatureMixing": _Epsilon5}


class _Unregistered(ref.FeatureMixing):
    """The reference layer under a name the Keras registry does not know."""


class KerasNotRegistered(GoodKeras):
    name = "keras-not-registered"
    layers = ("FeatureMixing",)

    def __init__(self, variant=None):
        super().__init__(variant)
        self.classes = {**self.classes, "FeatureMixing": _Unregistered}


@keras.saving.register_keras_serializable(package="portspec_fixture")
class _ConfigWithoutBase(ref.FeatureMixing):
    """Its config is the spec's parameters alone: no name, trainable or dtype policy."""

    def get_config(self):
        full = super().get_config()
        return {k: full[k] for k in ("n_series", "input_size", "dropout", "ff_dim")}


class KerasConfigWithoutBase(GoodKeras):
    name = "keras-config-without-base"
    layers = ("FeatureMixing",)

    def __init__(self, variant=None):
        super().__init__(variant)
        self.classes = {**self.classes, "FeatureMixing": _ConfigWithoutBase}


ADAPTERS = [GoodKeras(), KerasEpsilon5(), KerasNotRegistered(), KerasConfigWithoutBase()]
