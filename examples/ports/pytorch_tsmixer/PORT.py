"""pytorch-tsmixer 0.2.0: ``torchtsmixer.layers.FeatureMixing``, in both of its placements.

The weight map is read off the module's source (torchtsmixer/layers.py). Its normalisation,
``TimeBatchNorm2d((sequence_length, channels))``, is an ``nn.BatchNorm1d`` over the
``L*N`` flattened features at torch's defaults; its parameters and buffers are flat (L*N,)
vectors, so they map as they are. ``fc1`` / ``fc2`` are ``nn.Linear`` (weights stored
(out, in), hence ``transpose``). With ``input_channels == output_channels`` its residual
``projection`` is ``nn.Identity``: no weights.

Two adapters, one per placement of the normalisation:

- ``pytorch-tsmixer``: ``normalize_before=True`` (the default), the norm in ``norm_before``.
- ``pytorch-tsmixer-after``: ``normalize_before=False``, the same norm in ``norm_after``,
  applied to the sum of the residual and the branch.

Constructor names: ``sequence_length`` is the spec's ``input_size``, ``input_channels`` and
``output_channels`` are ``n_series``, ``dropout_rate`` is ``dropout``. ``activation_fn`` stays
at its default (``F.relu``, the spec's activation); ``normalize_before`` is a fixed extra
argument. The module keeps no config attributes; ``config_of`` reads the config back from the
submodules it built.
"""

from __future__ import annotations

from torch.nn import Identity
from torchtsmixer.layers import FeatureMixing

from portspec.ports import TorchPortAdapter, identity, transpose


def _weights(norm: str) -> dict:
    return {
        "norm.gamma": (f"{norm}.weight", identity),
        "norm.beta": (f"{norm}.bias", identity),
        "norm.moving_mean": (f"{norm}.running_mean", identity),
        "norm.moving_variance": (f"{norm}.running_var", identity),
        "dense1.kernel": ("fc1.weight", transpose),
        "dense1.bias": ("fc1.bias", identity),
        "dense2.kernel": ("fc2.weight", transpose),
        "dense2.bias": ("fc2.bias", identity),
    }


class PyTorchTSMixer(TorchPortAdapter):
    name = "pytorch-tsmixer"
    package = "pytorch-tsmixer"
    layers = ("FeatureMixing",)
    low_precision = ("bfloat16", "float16")  # torch.autocast, open to any module
    config_names = {
        "input_size": "sequence_length",
        "n_series": "input_channels",
        "dropout": "dropout_rate",
    }
    extra_args = {"FeatureMixing": {"normalize_before": True}}
    weights = {"FeatureMixing": _weights("norm_before")}

    def construct(self, layer, config, *, input_shapes, dtype):
        # one channel count for both sides: the residual is the identity, as in the spec
        return FeatureMixing(**config, output_channels=config["input_channels"])

    def config_of(self, layer, module):
        norm = module.norm_before if isinstance(module.norm_after, Identity) else module.norm_after
        return {
            "input_channels": module.fc1.in_features,
            "sequence_length": norm.num_time_steps,
            "dropout_rate": module.dropout.p,
            "ff_dim": module.fc1.out_features,
        }


class PyTorchTSMixerAfter(PyTorchTSMixer):
    name = "pytorch-tsmixer-after"
    extra_args = {"FeatureMixing": {"normalize_before": False}}
    weights = {"FeatureMixing": _weights("norm_after")}
