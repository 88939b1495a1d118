"""A PyTorch port built on lazy modules (``nn.LazyLinear``) is materialised at the build by one
call on zeros of the input shapes, as a Keras layer is built from its shapes: its weights
exist to be set, read and saved, and a port to the spec passes. Fixture:
tests/ports_fixtures/lazy_gate_torch.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portspec import registry
from portspec.layers import LAYERS

torch = pytest.importorskip("torch")

PORT = Path(__file__).parent / "ports_fixtures" / "lazy_gate_torch.py"


def test_the_lazy_weights_exist_after_the_build():
    (adapter,) = registry.load_file(str(PORT))
    handle = adapter.build("GatedFeatureFusion", {"activation": "sigmoid"},
                           input_shapes=[(2, 4), (2, 4)], seed=0, dtype="float64")
    weight = handle.obj.gate.weight
    assert not isinstance(weight, torch.nn.parameter.UninitializedParameter)
    assert tuple(weight.shape) == (4, 8) and weight.dtype == torch.float64
    kernel = np.arange(32.0).reshape(8, 4) / 64
    handle.set_weights({"gate.kernel": kernel, "gate.bias": np.zeros(4)})
    np.testing.assert_array_equal(handle.get_weights()["gate.kernel"], kernel)


def test_a_lazy_port_to_the_spec_passes():
    from portspec.verify import verify

    clauses = [c.id for c in LAYERS["GatedFeatureFusion"].clauses
               if c.id not in ("GFF-VECTORS", "GFF-PORTABLE")]
    results = verify([str(PORT)], tasks=[("lazy-gate", c) for c in clauses], isolate=False)
    assert [r.clause for r in results if r.status == "failed"] == [], [
        (r.clause, r.message) for r in results if r.status == "failed"]
    assert sum(r.status == "passed" for r in results) >= len(clauses) - 1  # COMPILE may skip
