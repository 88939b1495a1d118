"""neuralforecast 3.3.0: ``neuralforecast.models.tsmixerx.FeatureMixing`` (TSMixerx, the
exogenous-input TSMixer), on torch.

Read off the module's source (neuralforecast/models/tsmixerx.py): ``feature_lin_1`` /
``feature_lin_2`` are ``nn.Linear`` (weights stored (out, in), hence ``transpose``), two
dropout modules, a residual that is the identity when ``in_features == out_features``, and
``feature_norm = nn.LayerNorm((h, out_features))`` applied to the sum of the input and the
branch: a scale and an offset per (time step, channel), each sample's statistics over its own
L*N values, epsilon 1e-5, no moving statistics. So the LayerNorm's scale and offset are
``held_as`` their own (L, N) shape and the moving statistics ``absent``; the adapter maps
names, layouts and config only.

Constructor names: ``in_features`` (and ``out_features``) is ``n_series``, ``h`` is
``input_size``. neuralforecast's other FeatureMixing (``models.tsmixer``, BatchNorm before the
MLP) is in ../neuralforecast.
"""

from __future__ import annotations

from neuralforecast.models.tsmixerx import FeatureMixing

from portspec.ports import TorchPortAdapter, absent, held_as, identity, transpose

SCALE = "a LayerNorm (L, N) scale, after the residual"
OFFSET = "a LayerNorm (L, N) offset, after the residual"


def _per_element(config):
    return (config["input_size"], config["n_series"])


class NeuralForecastTSMixerx(TorchPortAdapter):
    name = "neuralforecast-tsmixerx"
    package = "neuralforecast"
    layers = ("FeatureMixing",)
    low_precision = ("bfloat16", "float16")  # torch.autocast, open to any module
    config_names = {"n_series": "in_features", "input_size": "h"}
    weights = {
        "FeatureMixing": {
            "norm.gamma": held_as("feature_norm.weight", _per_element, why=SCALE),
            "norm.beta": held_as("feature_norm.bias", _per_element, why=OFFSET),
            "norm.moving_mean": absent("LayerNorm keeps no moving statistics"),
            "norm.moving_variance": absent("LayerNorm keeps no moving statistics"),
            "dense1.kernel": ("feature_lin_1.weight", transpose),
            "dense1.bias": ("feature_lin_1.bias", identity),
            "dense2.kernel": ("feature_lin_2.weight", transpose),
            "dense2.bias": ("feature_lin_2.bias", identity),
        }
    }

    def construct(self, layer, config, *, input_shapes, dtype):
        return FeatureMixing(**config, out_features=config["in_features"])

    def config_of(self, layer, module):
        return {
            "in_features": module.feature_lin_1.in_features,
            "h": module.feature_norm.normalized_shape[0],
            "dropout": module.feature_drop_1.p,
            "ff_dim": module.feature_lin_1.out_features,
        }
