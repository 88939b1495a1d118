"""neuralforecast 3.3.0: ``neuralforecast.models.tsmixer.FeatureMixing``, the PyTorch origin of
KMR's FeatureMixing. It brings ray and lightning along: install it in its own environment.

The weight map is read off the module's source: ``feature_norm`` is
``nn.BatchNorm1d(n_series * input_size, eps=0.001, momentum=0.01)`` over the flattened
features, ``feature_lin_1`` / ``feature_lin_2`` are ``nn.Linear`` (weights stored (out, in),
hence ``transpose``). The module keeps no config attributes; ``config_of`` reads the config
back from the submodules it built.
"""

from __future__ import annotations

from neuralforecast.models.tsmixer import FeatureMixing

from portspec.ports import TorchPortAdapter, identity, transpose


class NeuralForecast(TorchPortAdapter):
    name = "neuralforecast"
    package = "neuralforecast"
    layers = ("FeatureMixing",)
    # torch.autocast is the framework's mixed precision, open to any module.
    low_precision = ("bfloat16", "float16")
    weights = {
        "FeatureMixing": {
            "norm.gamma": ("feature_norm.weight", identity),
            "norm.beta": ("feature_norm.bias", identity),
            "norm.moving_mean": ("feature_norm.running_mean", identity),
            "norm.moving_variance": ("feature_norm.running_var", identity),
            "dense1.kernel": ("feature_lin_1.weight", transpose),
            "dense1.bias": ("feature_lin_1.bias", identity),
            "dense2.kernel": ("feature_lin_2.weight", transpose),
            "dense2.bias": ("feature_lin_2.bias", identity),
        }
    }

    def construct(self, layer, config, *, input_shapes, dtype):
        return FeatureMixing(**config)

    def config_of(self, layer, module):
        n = module.feature_lin_1.in_features
        return {
            "n_series": n,
            "input_size": module.feature_norm.num_features // n,
            "dropout": module.feature_drop_1.p,
            "ff_dim": module.feature_lin_1.out_features,
        }
