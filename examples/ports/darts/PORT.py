"""darts 0.48.1: ``darts.models.forecasting.tsmixer_model._FeatureMixing``, as ``TSMixerModel``
builds it, with each of two of its normalisations.

The module is read off its source (darts/models/forecasting/tsmixer_model.py):
``fc1`` / ``fc2`` are ``nn.Linear`` (weights stored (out, in), hence ``transpose``), two
``MonteCarloDropout`` modules (plain dropout outside Monte-Carlo prediction), and a residual
that is the identity when input and output widths are equal. ``TSMixerModel``'s defaults are
``norm_type="LayerNorm"`` and ``normalize_before=False``: the norm sits in ``norm_after``,
applied to the sum of the input and the branch.

- ``darts``: the default, ``LayerNorm((L, N))`` (darts' subclass of ``nn.LayerNorm``): a scale
  and an offset per (time step, channel), statistics of each sample over its own L*N values,
  torch's epsilon 1e-5, no moving statistics.
- ``darts-timebatchnorm``: ``norm_type="TimeBatchNorm2d"``, a ``BatchNorm2d(num_features=1)``
  over the input seen as (batch, 1, L, N): one scalar mean, variance, scale and offset for all
  L*N features (torch's defaults: epsilon 1e-5, momentum 0.1 of the new value).

Neither holds the spec's per-feature BatchNorm weights, so the map declares what they are:
the LayerNorm's (L, N) scale and offset and the scalar statistics are ``held_as`` their own
shape, the LayerNorm's moving statistics ``absent``. The adapter maps names, layouts and
config only; clauses that need weights the port does not have do not apply, with the reason.

Constructor names: ``sequence_length`` is ``input_size``, ``input_dim`` (and ``output_dim``)
``n_series``, ``ff_size`` ``ff_dim``; the activation is ``nn.ReLU()`` (what ``TSMixerModel``
builds from its default ``activation="ReLU"``), a fixed extra argument like the norm.
"""

from __future__ import annotations

from darts.models.components.layer_norm_variants import LayerNorm
from darts.models.forecasting.tsmixer_model import TimeBatchNorm2d, _FeatureMixing
from torch import nn

from portspec.ports import TorchPortAdapter, absent, held_as, identity, transpose

LINEAR = {
    "dense1.kernel": ("fc1.weight", transpose),
    "dense1.bias": ("fc1.bias", identity),
    "dense2.kernel": ("fc2.weight", transpose),
    "dense2.bias": ("fc2.bias", identity),
}


SCALE = "a LayerNorm (L, N) scale, after the residual"
OFFSET = "a LayerNorm (L, N) offset, after the residual"


def _per_element(config):
    return (config["input_size"], config["n_series"])


class Darts(TorchPortAdapter):
    name = "darts"
    package = "darts"
    layers = ("FeatureMixing",)
    low_precision = ("bfloat16", "float16")  # torch.autocast, open to any module
    config_names = {"input_size": "sequence_length", "n_series": "input_dim", "ff_dim": "ff_size"}
    extra_args = {
        "FeatureMixing": {
            "activation": nn.ReLU(),
            "normalize_before": False,
            "norm_type": LayerNorm,
        }
    }
    weights = {
        "FeatureMixing": {
            "norm.gamma": held_as("norm_after.weight", _per_element, why=SCALE),
            "norm.beta": held_as("norm_after.bias", _per_element, why=OFFSET),
            "norm.moving_mean": absent("LayerNorm keeps no moving statistics"),
            "norm.moving_variance": absent("LayerNorm keeps no moving statistics"),
            **LINEAR,
        }
    }

    def construct(self, layer, config, *, input_shapes, dtype):
        return _FeatureMixing(**config, output_dim=config["input_dim"])

    def config_of(self, layer, module):
        return {
            "input_dim": module.fc1.in_features,
            "sequence_length": module.norm_after.normalized_shape[0]
            if isinstance(module.norm_after, nn.LayerNorm)
            else None,
            "dropout": module.dropout1.p,
            "ff_size": module.fc1.out_features,
        }


class DartsTimeBatchNorm(Darts):
    name = "darts-timebatchnorm"
    extra_args = {
        "FeatureMixing": {
            "activation": nn.ReLU(),
            "normalize_before": False,
            "norm_type": TimeBatchNorm2d,
        }
    }
    _one = "one BatchNorm statistic for all L*N features, after the residual"
    weights = {
        "FeatureMixing": {
            "norm.gamma": held_as("norm_after.weight", (1,), why=_one),
            "norm.beta": held_as("norm_after.bias", (1,), why=_one),
            "norm.moving_mean": held_as("norm_after.running_mean", (1,), why=_one),
            "norm.moving_variance": held_as("norm_after.running_var", (1,), why=_one),
            **LINEAR,
        }
    }

    def config_of(self, layer, module):
        # TimeBatchNorm2d keeps no (L, N): the sequence length is not recoverable
        config = super().config_of(layer, module)
        config.pop("sequence_length")
        return config
