"""kerasfactory 0.1.1 (the KMR package the seeds document): FeatureMixing and GatedFeatureFusion.

Keras 3 layers; they run on whichever backend KERAS_BACKEND names. Importing the package also
needs plotly and pandas (< 3), which it does not declare. It declares pytest < 9 as a runtime
dependency (it never imports it), which conflicts with the project's pins, so it is installed
with ``pip install --no-deps kerasfactory==0.1.1 keras loguru plotly "pandas<3"``.

The weight map is read off the layers' source (kerasfactory/layers/FeatureMixing.py and
GatedFeatureFusion.py): BatchNormalization ``feature_norm`` over the flattened L*N features,
Dense ``feature_lin_1`` / ``feature_lin_2`` and Dense ``fusion_gate`` (kernel (2F, F)), all in
Keras's (in, out) layout, so every weight maps as it is. The sublayers are made in ``build``
and create their weights on their first call; the base class makes that call.
"""

from __future__ import annotations

from kerasfactory import layers as kf

from portspec.ports import KerasPortAdapter, identity


class KerasFactory(KerasPortAdapter):
    name = "kerasfactory"
    package = "kerasfactory"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    # Keras layers take a dtype policy, so mixed bfloat16 / float16 is the framework's offer.
    low_precision = ("bfloat16", "float16")
    weights = {
        "FeatureMixing": {
            "norm.gamma": ("feature_norm.gamma", identity),
            "norm.beta": ("feature_norm.beta", identity),
            "norm.moving_mean": ("feature_norm.moving_mean", identity),
            "norm.moving_variance": ("feature_norm.moving_variance", identity),
            "dense1.kernel": ("feature_lin_1.kernel", identity),
            "dense1.bias": ("feature_lin_1.bias", identity),
            "dense2.kernel": ("feature_lin_2.kernel", identity),
            "dense2.bias": ("feature_lin_2.bias", identity),
        },
        "GatedFeatureFusion": {
            "gate.kernel": ("fusion_gate.kernel", identity),
            "gate.bias": ("fusion_gate.bias", identity),
        },
    }

    def construct(self, layer, config, *, input_shapes, dtype):
        kwargs = {} if dtype is None else {"dtype": dtype}
        return getattr(kf, layer)(**config, **kwargs)
