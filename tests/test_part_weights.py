"""Canonical weights held as parts of one of the port's weights (``portspec.ports.part``): a
BatchNorm whose scale and offset are one (2, L*N) parameter. Mapped, the port passes the
clauses that read, write and differentiate them; its mistake is still named through the map.
Fixtures: tests/ports_fixtures/fused_affine_torch.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portspec import registry
from portspec.ports import part

torch = pytest.importorskip("torch")

PORTS = Path(__file__).parent / "ports_fixtures" / "fused_affine_torch.py"
CONFIG = {"n_series": 3, "input_size": 4, "dropout": 0.0, "ff_dim": 5}
SHAPES = [(6, 4, 3)]
CLAUSES = ["FM-WEIGHTS", "FM-PARAMS", "FM-INIT", "FM-INFERENCE", "FM-TRAINING", "FM-GRAD",
           "FM-WEIGHTS-ROUNDTRIP", "FM-SAVE-NATIVE", "FM-BN-UPDATE"]


@pytest.fixture(scope="module")
def ports():
    return {a.name: a for a in registry.load_file(str(PORTS))}


def test_parts_are_written_alone_read_and_differentiated(ports):
    handle = ports["fused-affine"].build("FeatureMixing", CONFIG, input_shapes=SHAPES, seed=0)
    gamma, beta = np.arange(12.0) / 8, -np.arange(12.0) / 4  # exact in float32
    handle.set_weights({"norm.gamma": gamma})
    # a part written alone: the other row keeps its value (beta's initial zeros)
    assert np.array_equal(handle.obj.affine.detach().numpy(), np.stack([gamma, np.zeros(12)]))
    handle.set_weights({"norm.beta": beta, "norm.gamma": 2 * gamma})
    assert np.array_equal(handle.obj.affine.detach().numpy(), np.stack([2 * gamma, beta]))
    read = handle.get_weights()
    assert np.array_equal(read["norm.gamma"], 2 * gamma) and np.array_equal(read["norm.beta"],
                                                                            beta)
    assert handle.weight_info()["norm.beta"] == ((12,), True)
    rng = np.random.default_rng(0)
    x, cot = (rng.standard_normal((6, 4, 3)).astype(np.float32) for _ in range(2))
    _, grads = handle.grad(x, cot, training=False)
    # the fused parameter's gradient by torch's autograd, row by row
    handle.obj.eval()
    handle.obj.zero_grad()
    (handle.obj(torch.tensor(x)) * torch.tensor(cot)).sum().backward()
    rows = handle.obj.affine.grad.numpy()
    np.testing.assert_array_equal(grads["norm.gamma"], rows[0])
    np.testing.assert_array_equal(grads["norm.beta"], rows[1])


def test_a_fused_affine_to_the_spec_passes(ports):
    from portspec.verify import verify

    results = verify([str(PORTS)], tasks=[("fused-affine", c) for c in CLAUSES], isolate=False)
    assert {r.clause: r.status for r in results} == dict.fromkeys(CLAUSES, "passed"), [
        (r.clause, r.message) for r in results if r.status != "passed"]


def test_its_mistake_is_named_through_the_parts():
    from portspec.report import root_causes
    from portspec.verify import verify

    clauses = ["FM-INFERENCE", "FM-TRAINING", "FM-INIT"]
    results = verify([str(PORTS)], tasks=[("fused-affine-exchanged", c) for c in clauses],
                     isolate=False)
    [(_, cause, ids)] = root_causes(results)
    # the rows read the other way round: the layer's, or the map's, which computes the same
    assert "gamma and beta exchanged" in cause, cause
    assert sorted(ids) == ["FM-INFERENCE", "FM-TRAINING"]  # its initial values are the spec's


def test_part_refuses_what_is_not_an_index():
    assert part("affine", (0, slice(1, None))).index == (0, slice(1, None))
    for bad in ("0", 1.0, True, ()):
        with pytest.raises(TypeError, match="part's index is an int, a slice or a tuple"):
            part("affine", bad)
