"""PyTorch ports whose weights are not the spec's, adapted as they are (spec.ports ``absent``,
``held_as``, ``config_names``, ``extra_args``).

``layernorm-after``: a LayerNorm over (L, N) applied to the sum of the input and the branch,
as darts' and neuralforecast's TSMixer blocks do. Its scale and offset are (L, N), it keeps no
moving statistics, its constructor calls ``input_size`` ``sequence_length`` and takes the
activation as a module. ``scalar-batchnorm``: ``nn.BatchNorm2d(1)`` over the input seen as
(batch, 1, L, N), one statistic for all L*N features, before the branch.
"""

from __future__ import annotations

from torch import nn

from portspec import validation
from portspec.ports import TorchPortAdapter, absent, held_as, torch_names


class LayerNormAfter(nn.Module):
    def __init__(self, n_series, sequence_length, dropout, ff_dim, activation):
        super().__init__()
        self.n_series = validation.positive_int("n_series", n_series)
        self.sequence_length = validation.positive_int("sequence_length", sequence_length)
        self.dropout = validation.rate("dropout", dropout)
        self.ff_dim = validation.positive_int("ff_dim", ff_dim)
        self.dense1, self.dense2 = nn.Linear(n_series, ff_dim), nn.Linear(ff_dim, n_series)
        self.drop, self.activation = nn.Dropout(dropout), activation
        self.norm = nn.LayerNorm((sequence_length, n_series), eps=1e-3)

    def forward(self, x):
        branch = self.drop(self.dense2(self.drop(self.activation(self.dense1(x)))))
        return self.norm(x + branch)


class ScalarBatchNorm(LayerNormAfter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = nn.BatchNorm2d(1, eps=1e-3, momentum=0.01)

    def forward(self, x):
        z = self.norm(x[:, None]).squeeze(1)
        return x + self.drop(self.dense2(self.drop(self.activation(self.dense1(z)))))


def _per_element(config):
    return (config["input_size"], config["n_series"])


class _AsIs(TorchPortAdapter):
    layers = ("FeatureMixing",)
    config_names = {"input_size": "sequence_length"}
    extra_args = {"FeatureMixing": {"activation": nn.ReLU()}}
    module = LayerNormAfter

    def weight_rule(self, name):
        return torch_names(name)  # the Linear weights keep torch's names and layout

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.module(**config)


class LayerNormAfterPort(_AsIs):
    name = "layernorm-after"
    weights = {"FeatureMixing": {
        "norm.gamma": held_as("norm.weight", _per_element, why="a LayerNorm (L, N) scale"),
        "norm.beta": held_as("norm.bias", _per_element, why="a LayerNorm (L, N) offset"),
        "norm.moving_mean": absent("LayerNorm keeps no moving statistics"),
        "norm.moving_variance": absent("LayerNorm keeps no moving statistics"),
        **{n: torch_names(n) for n in ("dense1.kernel", "dense1.bias", "dense2.kernel",
                                       "dense2.bias")},
    }}


class ScalarBatchNormPort(_AsIs):
    name = "scalar-batchnorm"
    module = ScalarBatchNorm
    weights = {"FeatureMixing": {
        **{n: held_as(torch_names(n)[0], (1,), why="one statistic for all L*N features")
           for n in ("norm.gamma", "norm.beta", "norm.moving_mean", "norm.moving_variance")},
        **{n: torch_names(n) for n in ("dense1.kernel", "dense1.bias", "dense2.kernel",
                                       "dense2.bias")},
    }}
