"""One small FeatureMixing PyTorch port: the diagnosis fixtures' conforming FeatureMixing alone
(tests/test_bench.py benchmarks it at the tiny size)."""

from __future__ import annotations

from diagnosis_mutants_torch import FM, WEIGHTS

from portspec.ports import TorchPortAdapter


class SmallTorchPort(TorchPortAdapter):
    name = "small-torch-port"
    layers = ("FeatureMixing",)
    weights = {"FeatureMixing": WEIGHTS["FeatureMixing"]}

    def construct(self, layer, config, *, input_shapes, dtype):
        return FM(**config)
