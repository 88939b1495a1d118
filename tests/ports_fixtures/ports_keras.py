"""Keras ports written with spec.ports.KerasPortAdapter, over the reference layers, on the
backend KERAS_BACKEND names.

``good-keras`` wraps impls/keras as a stranger would wrap their own layer;
``keras-epsilon-1e-5`` sets its BatchNorm epsilon to PyTorch's default.
"""

from __future__ import annotations

from portspec.impls.keras import layers as ref
from portspec.ports import KerasPortAdapter, identity

NAMES = {
    "FeatureMixing": [
        "norm.gamma",
        "norm.beta",
        "norm.moving_mean",
        "norm.moving_variance",
        "dense1.kernel",
        "dense1.bias",
        "dense2.kernel",
        "dense2.bias",
    ],
    "GatedFeatureFusion": ["gate.kernel", "gate.bias"],
}


class GoodKeras(KerasPortAdapter):
    name = "good-keras"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    low_precision = ("bfloat16", "float16")
    # the reference layers use the canonical names and layouts: every weight maps as it is
    weights = {layer: {n: (n, identity) for n in names} for layer, names in NAMES.items()}
    fm = ref.FeatureMixing

    def construct(self, layer, config, *, input_shapes, dtype):
        kwargs = {} if dtype is None else {"dtype": dtype}
        cls = self.fm if layer == "FeatureMixing" else ref.GatedFeatureFusion
        return cls(**config, **kwargs)


class _Epsilon5(ref.FeatureMixing):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm.epsilon = 1e-5


class KerasEpsilon5(GoodKeras):
    name = "keras-epsilon-1e-5"
    layers = ("FeatureMixing",)
    fm = _Epsilon5


ADAPTERS = [GoodKeras(), KerasEpsilon5()]
