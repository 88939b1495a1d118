"""A canonical weight the port holds as several (``portspec.ports.concat``): a
GatedFeatureFusion gate written as two Linear layers, ``gate_a(a) + gate_b(b)``, whose (2F, F)
kernel is two (F, F) halves. Mapped, every clause reads and writes the spec's kernel; mapped
to one half, one root cause names the ``concat`` call; the halves drawn Glorot-uniform over
their own shapes are named as such. Fixtures: tests/ports_fixtures/split_gate_torch.py.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from portspec import registry
from portspec.layers import LAYERS
from portspec.ports import concat, identity, transpose
from portspec.suite.areas import init as init_area
from portspec.suite.checks import work_items
from portspec.suite.runner import run_clause

torch = pytest.importorskip("torch")

PORTS = Path(__file__).parent / "ports_fixtures" / "split_gate_torch.py"
ITEMS = {clause.id: (spec, clause, fn) for spec, clause, fn in work_items(None)}
F = 3
SHAPES = [(2, F), (2, F)]


@pytest.fixture(scope="module")
def ports():
    return {a.name: a for a in registry.load_file(str(PORTS))}


def _build(port):
    return port.build("GatedFeatureFusion", {"activation": "sigmoid"}, input_shapes=SHAPES,
                      seed=0)


def test_the_spec_s_kernel_is_written_read_and_differentiated_across_the_halves(ports):
    handle = _build(ports["split-gate"])
    kernel = np.arange(2.0 * F * F).reshape(2 * F, F) / 8  # exact in float32
    handle.set_weights({"gate.kernel": kernel, "gate.bias": np.array([0.125, -0.25, 0.375])})
    # torch Linear holds (out, in): each half is its rows of the kernel, transposed
    assert np.array_equal(handle.obj.gate_a.weight.detach().numpy(), kernel[:F].T)
    assert np.array_equal(handle.obj.gate_b.weight.detach().numpy(), kernel[F:].T)
    assert np.array_equal(handle.get_weights()["gate.kernel"], kernel)
    assert handle.weight_info()["gate.kernel"] == ((2 * F, F), True)

    rng = np.random.default_rng(3)
    a, b, cot = (rng.standard_normal((2, F)).astype(np.float32) for _ in range(3))
    _, grads = handle.grad([a, b], cot, training=False)
    # the spec's computation on the one kernel, differentiated by torch's autograd
    k = torch.tensor(kernel, dtype=torch.float32, requires_grad=True)
    ta, tb = torch.tensor(a), torch.tensor(b)
    g = torch.sigmoid(torch.cat([ta, tb], -1) @ k + torch.tensor([0.125, -0.25, 0.375]))
    (torch.sum((g * ta + (1 - g) * tb) * torch.tensor(cot))).backward()
    # float32 both ways, the same products summed in another order: a few ulp of |grad|
    np.testing.assert_allclose(grads["gate.kernel"], k.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_a_split_gate_to_the_spec_passes_the_clauses_that_read_its_kernel(ports):
    clauses = ("GFF-WEIGHTS", "GFF-PARAMS", "GFF-INIT", "GFF-FORWARD", "GFF-GATE-ORDER",
               "GFF-GRAD", "GFF-WEIGHTS-ROUNDTRIP")
    results = {c: run_clause(ports["split-gate"], *ITEMS[c]) for c in clauses}
    assert {c: r.status for c, r in results.items()} == dict.fromkeys(clauses, "passed"), {
        c: r.message for c, r in results.items()}


def test_halves_drawn_glorot_uniform_over_their_own_shape_are_named(ports):
    result = run_clause(ports["split-gate-own-init"], *ITEMS["GFF-INIT"])
    assert result.status == "failed"
    assert result.diagnosis.startswith(
        "gate.kernel drawn Glorot-uniform over each of the port's weights that make it up"), (
        result.diagnosis)
    # limits sqrt(6/(F + F)) for each half, sqrt(6/(2F + F)) for the whole
    f = LAYERS["GatedFeatureFusion"].init_case().input_shapes[0][-1]
    assert f"{np.sqrt(6 / (2 * f)):.4g}, ({f}, {f}) {np.sqrt(6 / (2 * f)):.4g}, the spec's " \
           f"{np.sqrt(6 / (3 * f)):.4g}]" in result.diagnosis


def test_halves_each_left_at_one_framework_default_are_named_over_their_own_fans(ports):
    """Two Linear halves both at torch's default U(±1/sqrt(F)): named over each half's fans
    (F), not as whatever default the whole (2F, F) kernel's variance happens to match."""
    result = run_clause(ports["split-gate-both-default-init"], *ITEMS["GFF-INIT"])
    assert result.status == "failed"
    assert result.diagnosis.startswith(
        "gate.kernel drawn from PyTorch's default Linear initialisation U(±1/sqrt(fan_in)) over "
        "each of the port's weights that make it up (gate_a.weight, gate_b.weight), each over "
        "its own shape, instead of Glorot-uniform over the whole"), result.diagnosis
    # one half Glorot over the whole, the other at the default: that half alone is named
    result = run_clause(ports["split-gate-b-default-init"], *ITEMS["GFF-INIT"])
    assert "over each of the port's weights" not in result.diagnosis, result.diagnosis


def test_a_bias_in_each_part_of_a_split_gate_is_named_and_checked(ports):
    """Both halves of a split gate keep their Linear's bias, the map reading gate.bias from
    one: the other is the weight outside the table, and writing to it moves the output as
    the spec's bias does, which the diagnosis says; without that evidence it says no such
    thing (the bias of a layer that is no part of a split weight)."""
    result = run_clause(ports["split-gate-two-biases"], *ITEMS["GFF-WEIGHTS"])
    assert result.status == "failed"
    assert ("a bias per part where the spec's layer adds one: gate_b.bias is the bias of "
            "gate_b, one of the layers that make up gate.kernel, whose bias (gate.bias) the "
            "map reads from gate_a.bias: the layer adds both") in result.diagnosis, (
        result.diagnosis)
    from portspec.suite.areas import structure

    assert structure._second_bias(None, SimpleNamespace(held={}), ["head.bias"],
                                  {"head.bias": ((3,), True)}) is None


def test_a_whole_kernel_drawn_otherwise_is_not_put_down_to_its_parts():
    rng = np.random.default_rng(0)
    held = SimpleNamespace(part_shapes=lambda name: (0, [(64, 64), (64, 64)]))
    # He-uniform over the whole: the halves' limit is the same, their draws are not uniform
    # over their own Glorot range alone (the max |w| exceeds it)
    wide = rng.uniform(-np.sqrt(6 / 64), np.sqrt(6 / 64), (128, 64))
    assert init_area._per_part(held, "gate.kernel", wide) is None
    own = np.concatenate([rng.uniform(-np.sqrt(6 / 128), np.sqrt(6 / 128), (64, 64))
                          for _ in range(2)])
    assert init_area._per_part(held, "gate.kernel", own) is not None
    # one weight held as one: no parts to put it down to
    assert init_area._per_part(SimpleNamespace(), "gate.kernel", own) is None


@pytest.mark.parametrize("port, clauses, words", [
    ("split-gate-one-mapped", ("GFF-WEIGHTS", "GFF-FORWARD", "GFF-GRAD"),
     "GatedFeatureFusion: the port holds gate.kernel as several weights and the weight map "
     "names one of them: join them with portspec.ports.concat(('gate_a.weight', transpose), "
     "('gate_b.weight', transpose), axis=0)"),
    ("split-gate-b-unseen", ("GFF-FORWARD", "GFF-ACTIVATIONS"), "concat([a, a])"),
    # one half kept at its framework's default: that half named, with what it fits
    ("split-gate-b-default-init", ("GFF-INIT",), "GatedFeatureFusion: gate.kernel's part "
     "gate_b.weight (64, 64) drawn from PyTorch"),
    # declared held_as: the other half is neither set nor saved, so a round trip loses it
    ("split-gate-held-as", ("GFF-WEIGHTS", "GFF-WEIGHTS-ROUNDTRIP"),
     "GatedFeatureFusion: the port holds gate.kernel as several weights and the weight map "
     "names one of them"),
])
def test_a_split_gate_s_mistake_is_one_root_cause(port, clauses, words):
    from portspec.report import root_causes
    from portspec.verify import verify

    results = verify([str(PORTS)], tasks=[(port, c) for c in clauses], isolate=False)
    assert all(r.status == "failed" for r in results), [(r.clause, r.message) for r in results]
    [(_, cause, ids)] = root_causes(results)
    assert words in cause, cause
    assert sorted(ids) == sorted(clauses)


def test_concat_refuses_what_is_not_parts(ports):
    with pytest.raises(ValueError, match="two or more parts"):
        concat("gate_a.weight")
    with pytest.raises(TypeError, match="a path or a \\(path, Transform\\) pair"):
        concat("gate_a.weight", ("gate_b.weight", "transpose"))
    sideways = type("Sideways", (type(ports["split-gate"]),), {"weights": {"GatedFeatureFusion": {
        "gate.kernel": concat(("gate_a.weight", transpose), ("gate_b.weight", transpose),
                              axis=1),
        "gate.bias": ("gate_a.bias", identity)}}})()
    handle = _build(sideways)
    with pytest.raises(ValueError, match=r"gate_a.weight \(3, 3\) \+ gate_b.weight \(3, 3\) "
                                         r"along axis 1, which do not add up"):
        handle.set_weights({"gate.kernel": np.zeros((2 * F, F))})
