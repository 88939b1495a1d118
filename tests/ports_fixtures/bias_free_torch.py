"""PyTorch ports that lack weights the spec's layers can do without (``LayerSpec.neutral``),
each declared ``absent`` in its weight map, right apart from that or with one more mistake.

- ``gff-bias-free``: the gate is ``nn.Linear(2F, F, bias=False)``; the rest the spec's.
- ``gff-bias-free-hard-sigmoid``: the same with torch's Hardsigmoid for the sigmoid.
- ``fm-dense2-bias-free``: FeatureMixing whose second Linear has no bias.
- ``fm-dense2-bias-free-gelu``: the same with GELU for ReLU.
- ``fm-no-offset-momentum``: a BatchNorm without its offset (Keras's center=False) that keeps
  0.99 of the old moving statistic where the spec keeps 0.01 (the momentum flipped).
"""

from __future__ import annotations

import torch
from diagnosis_mutants_torch import FM, GFF, WEIGHTS
from torch import nn
from torch.nn import functional as F

from portspec.ports import TorchPortAdapter, absent


class BiasFreeGate(GFF):
    def __init__(self, features, activation="sigmoid"):
        super().__init__(features, activation)
        self.gate = nn.Linear(2 * features, features, bias=False)
        nn.init.xavier_uniform_(self.gate.weight)


class BiasFreeHardGate(BiasFreeGate):
    def forward(self, a, b):
        if self.activation != "sigmoid":
            return super().forward(a, b)
        g = F.hardsigmoid(self.gate(torch.cat([a, b], dim=-1)))
        return g * a + (1 - g) * b


class Dense2BiasFree(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lin2 = nn.Linear(self.ff_dim, self.n_series, bias=False)
        nn.init.xavier_uniform_(self.lin2.weight)

    def init(self):
        nn.init.xavier_uniform_(self.lin1.weight)
        nn.init.zeros_(self.lin1.bias)


class Dense2BiasFreeGelu(Dense2BiasFree):
    def branch(self, z):
        return self.drop2(self.lin2(self.drop1(F.gelu(self.lin1(z)))))


class NoOffsetMomentum(FM):
    keep = 0.99

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.beta
        self.beta = 0.0


NO_BIAS = absent("nn.Linear(bias=False)")


class GFFBiasFree(TorchPortAdapter):
    name = "gff-bias-free"
    layers = ("GatedFeatureFusion",)
    gff = BiasFreeGate
    weights = {"GatedFeatureFusion": {**WEIGHTS["GatedFeatureFusion"], "gate.bias": NO_BIAS}}

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.gff(input_shapes[0][-1], **config)


class GFFBiasFreeHardSigmoid(GFFBiasFree):
    name = "gff-bias-free-hard-sigmoid"
    gff = BiasFreeHardGate


class FMDense2BiasFree(TorchPortAdapter):
    name = "fm-dense2-bias-free"
    layers = ("FeatureMixing",)
    fm = Dense2BiasFree
    weights = {"FeatureMixing": {**WEIGHTS["FeatureMixing"], "dense2.bias": NO_BIAS}}

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.fm(**config)


class FMDense2BiasFreeGelu(FMDense2BiasFree):
    name = "fm-dense2-bias-free-gelu"
    fm = Dense2BiasFreeGelu


class FMNoOffsetMomentum(FMDense2BiasFree):
    name = "fm-no-offset-momentum"
    fm = NoOffsetMomentum
    weights = {"FeatureMixing": {**WEIGHTS["FeatureMixing"],
                                 "norm.beta": absent("no offset (Keras's center=False)")}}
