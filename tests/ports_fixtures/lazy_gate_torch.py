"""A GatedFeatureFusion whose gate is an ``nn.LazyLinear``: its (F, 2F) weight is made at the
first call, Glorot-uniform, its bias zero. The adapter materialises it with one call on zeros
of the input shapes at the build, as a Keras layer is built from its input shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from portspec.layers import LAYERS
from portspec.ports import TorchPortAdapter, identity, transpose

SPEC = LAYERS["GatedFeatureFusion"]


class _GlorotLazyLinear(nn.LazyLinear):
    def reset_parameters(self):
        if not self.has_uninitialized_params() and self.in_features != 0:
            nn.init.xavier_uniform_(self.weight)
            nn.init.zeros_(self.bias)


class LazyGate(nn.Module):
    def __init__(self, features, activation="sigmoid"):
        super().__init__()
        self.features, self.activation = features, activation
        self.gate = _GlorotLazyLinear(features)

    def forward(self, a, b):
        SPEC.check_call({}, [tuple(a.shape), tuple(b.shape)],
                        [str(t.dtype).removeprefix("torch.") for t in (a, b)],
                        features=self.features)
        z = self.gate(torch.cat([a, b], -1))
        g = torch.softmax(z, -1) if self.activation == "softmax" else getattr(
            torch, self.activation)(z)
        return g * a + (1 - g) * b


class LazyGatePort(TorchPortAdapter):
    name, layers = "lazy-gate", ("GatedFeatureFusion",)
    weights = {"GatedFeatureFusion": {"gate.kernel": ("gate.weight", transpose),
                                      "gate.bias": ("gate.bias", identity)}}

    def construct(self, layer, config, *, input_shapes, dtype):
        return LazyGate(input_shapes[0][-1], **SPEC.validate_config(config))

    def call(self, module, inputs, *, training):
        if not isinstance(inputs, (list, tuple)):
            raise TypeError("GatedFeatureFusion inputs must be a list of two tensors")
        if len(inputs) != 2:
            raise ValueError(f"GatedFeatureFusion inputs must be two tensors, got {len(inputs)}")
        return module(*inputs)


ADAPTERS = [LazyGatePort()]
