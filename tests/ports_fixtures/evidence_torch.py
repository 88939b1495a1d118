"""PyTorch ports whose evidence once drew a diagnosis it contradicts (issue 9, item 4).

Each is ``Conforming`` from single_mistakes_torch.py with one change; tests/test_rootcause.py
checks that what the verdict says of each is what the evidence shows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "single_mistakes_torch_base", Path(__file__).with_name("single_mistakes_torch.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


class _Float32OutsideAutocast(base.GFF):
    outside_autocast = True

    def forward(self, a, b):
        out = super().forward(a, b)
        return out.float().double() if out.dtype == torch.float64 else out


class _NaNOut(base.FM):
    def forward(self, x):
        return super().forward(x) * torch.nan


class _Batch1Refused(base.FM):
    def forward(self, x):
        if self.training and len(x) == 1:
            raise RuntimeError("cannot normalise a single sample")  # not torch's own words
        return super().forward(x)


class _Float64Refused(base.FM):
    def forward(self, x):
        if x.dtype == torch.float64:
            raise TypeError("unsupported operand precision: double")  # any wording
        return super().forward(x)


class _OwnExportFails(base.Conforming):
    name = "own-export-fails"

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        handle = super().build(layer, config, input_shapes=input_shapes, seed=seed, dtype=dtype)

        def refuse(path):
            raise OSError(f"cannot write {path}")

        handle.save_weights = refuse
        return handle


class _Float32Stored(base.Conforming):
    """Builds float32 whatever dtype is asked, and normalises with epsilon 1e-5."""

    name = "float32-stored-epsilon"
    fm = type("FM_eps", (base.FM,), {"eps": 1e-5})

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        handle = super().build(layer, config, input_shapes=input_shapes, seed=seed, dtype=None)
        handle.dtype = dtype
        return handle


PORTS = [
    type("NaNOutput", (base.Conforming,), {"name": "nan-output", "fm": _NaNOut}),
    type("Batch1Refused", (base.Conforming,), {"name": "batch1-refused", "fm": _Batch1Refused}),
    type("Float64Refused", (base.Conforming,), {"name": "float64-refused",
                                                "fm": _Float64Refused}),
    # a float64 difference (the output rounded to float32) and a bfloat16 one (under autocast
    # the gate is computed outside it, so the output stays float32)
    type("Float32AndLowPrecision", (base.Conforming,), {
        "name": "gff-float32-bf16", "low_precision": ("bfloat16",),
        "gff": _Float32OutsideAutocast}),
    _OwnExportFails,
    _Float32Stored,
]

ADAPTERS = [cls() for cls in PORTS]
