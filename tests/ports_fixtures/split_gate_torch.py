"""PyTorch GatedFeatureFusion ports whose gate is two Linear layers, ``gate_a(a) + gate_b(b)``:
the spec's (2F, F) kernel held as two (F, F) halves (``portspec.ports.concat``), the rows
that see ``a`` first. ``gate_b`` has no bias: the two would add up to the one bias.

- ``split-gate``: the spec's layer; each half drawn from the whole kernel's Glorot-uniform.
- ``split-gate-own-init``: each half Glorot-uniform over its own (F, F) shape.
- ``split-gate-b-default-init``: ``gate_b`` left at torch's Linear default.
- ``split-gate-b-unseen``: ``gate_b(a)``, a typo, so ``b`` never reaches the gate.
- ``split-gate-one-mapped``: the layer is right, its weight map names ``gate_a`` alone.
- ``split-gate-held-as``: the same, the half declared ``held_as`` the kernel.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from portspec.layers import LAYERS
from portspec.ports import TorchPortAdapter, concat, held_as, identity, transpose

GFF_SPEC = LAYERS["GatedFeatureFusion"]


class SplitGate(nn.Module):
    own_init, b_unseen, b_default, both_default = False, False, False, False
    b_bias = False  # gate_b keeps nn.Linear's bias: two biases where the spec adds one

    def __init__(self, features, activation="sigmoid"):
        super().__init__()
        self.features, self.activation = features, activation
        self.gate_a = nn.Linear(features, features)
        self.gate_b = nn.Linear(features, features, bias=self.b_bias)
        if self.b_bias:
            nn.init.zeros_(self.gate_b.bias)
        limit = math.sqrt(6.0 / (3 * features))  # Glorot-uniform of the (2F, F) whole
        for layer in (self.gate_a, self.gate_b):
            if (self.b_default and layer is self.gate_b) or self.both_default:
                continue  # torch's Linear default kept: U(±1/sqrt(fan_in))
            if self.own_init:
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.uniform_(layer.weight, -limit, limit)
        nn.init.zeros_(self.gate_a.bias)

    def forward(self, a, b):
        z = self.gate_a(a) + self.gate_b(a if self.b_unseen else b)
        g = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
             "softmax": lambda v: torch.softmax(v, dim=-1)}[self.activation](z)
        return g * a + (1 - g) * b


class OwnInit(SplitGate):
    own_init = True


class BothDefault(SplitGate):
    both_default = True


class BBias(SplitGate):
    b_bias = True


class BUnseen(SplitGate):
    b_unseen = True


class BDefault(SplitGate):
    b_default = True


SPLIT = {"gate.kernel": concat(("gate_a.weight", transpose), ("gate_b.weight", transpose),
                               axis=0),
         "gate.bias": ("gate_a.bias", identity)}


class Split(TorchPortAdapter):
    name = "split-gate"
    layers = ("GatedFeatureFusion",)
    module = SplitGate
    weights = {"GatedFeatureFusion": SPLIT}

    def construct(self, layer, config, *, input_shapes, dtype):
        config = GFF_SPEC.validate_config(config)
        GFF_SPEC.check_call(config, [tuple(s) for s in input_shapes], ["float32"] * 2)
        return self.module(input_shapes[0][-1], **config)


class SplitOwnInit(Split):
    name = "split-gate-own-init"
    module = OwnInit


class SplitBDefault(Split):
    name = "split-gate-b-default-init"
    module = BDefault


class SplitBothDefault(Split):
    name = "split-gate-both-default-init"
    module = BothDefault


class SplitBBias(Split):
    name = "split-gate-two-biases"
    module = BBias


class SplitBUnseen(Split):
    name = "split-gate-b-unseen"
    module = BUnseen


class SplitOneMapped(Split):
    name = "split-gate-one-mapped"
    weights = {"GatedFeatureFusion": {"gate.kernel": ("gate_a.weight", transpose),
                                      "gate.bias": ("gate_a.bias", identity)}}


class SplitHeldAs(Split):
    name = "split-gate-held-as"
    weights = {"GatedFeatureFusion": {
        "gate.kernel": held_as("gate_a.weight", transform=transpose, why="the half that sees a"),
        "gate.bias": ("gate_a.bias", identity)}}
