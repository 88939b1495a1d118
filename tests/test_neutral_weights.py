"""A port without a weight the spec's layer can do without (a Dense bias, a BatchNorm offset
or scale: ``LayerSpec.neutral``) is judged by the numeric clauses against the spec's layer with
that weight at its neutral value, so a second mistake fails the clauses that see it and is a
root cause of its own; the missing weight is FM/GFF-WEIGHTS' and -PARAMS', once.

Before, every numeric clause of such a port was not applicable (the spec's weights could not
be set), and a hard sigmoid beside a bias-free gate failed no clause at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.home("torch")
pytest.importorskip("torch")

from portspec import isolation, registry, rootcause  # noqa: E402
from portspec.adapter import HeldAtNeutral, MissingWeight, set_held_weights  # noqa: E402
from portspec.layers import LAYERS  # noqa: E402

PORTS = {a.name: a for a in registry.load_file(
    str(Path(__file__).parent / "ports_fixtures" / "bias_free_torch.py"))}
GFF_NUMERIC = ("GFF-FORWARD", "GFF-GATE-ORDER", "GFF-ACTIVATIONS", "GFF-DTYPE", "GFF-GRAD")
FM_NUMERIC = ("FM-INFERENCE", "FM-TRAINING", "FM-BN-UPDATE", "FM-DROPOUT-INFERENCE", "FM-GRAD")


def _results(name, *clauses):
    """{clause: result}, through the worker's diagnoses and the root-cause stage."""
    adapter = PORTS[name]
    return {r.clause: r for r in rootcause.attach(
        [run() for _, run in isolation.items_for(adapter, tasks=[(name, c) for c in clauses])])}


def _causes(results):
    return {cause: sorted(ids) for _, cause, ids in rootcause.root_causes(results.values())}


def test_a_bias_free_gate_is_refused_any_other_bias():
    spec = LAYERS["GatedFeatureFusion"]
    handle = PORTS["gff-bias-free"].build(spec.name, {"activation": "sigmoid"},
                                          input_shapes=[(2, 3), (2, 3)], seed=0)
    held = HeldAtNeutral(handle, {"gate.bias": 0.0}, {"gate.bias": "no bias"})
    weights = spec.random_weights({"activation": "sigmoid"}, [(2, 3), (2, 3)],
                                  np.random.default_rng(0))
    with pytest.raises(MissingWeight, match="gate.bias"):
        held.set_weights(weights)  # a bias the port cannot hold
    assert not held.used
    weights["gate.bias"] = np.zeros(3)
    got = set_held_weights(held, weights)  # at 0: the port computes that
    assert held.used and set(got.absent) == {"gate.bias"}
    np.testing.assert_array_equal(handle.get_weights()["gate.kernel"],
                                  weights["gate.kernel"].astype(np.float32))


def test_a_bias_free_gate_passes_the_numeric_clauses():
    results = _results("gff-bias-free", "GFF-WEIGHTS", "GFF-PARAMS", *GFF_NUMERIC)
    assert {c: r.status for c, r in results.items()} == {
        "GFF-WEIGHTS": "failed", "GFF-PARAMS": "failed",
        **dict.fromkeys(GFF_NUMERIC, "passed")}, results
    assert _causes(results) == {
        "GatedFeatureFusion: no gate bias instead of a gate bias [the port holds no gate.bias]":
            ["GFF-PARAMS", "GFF-WEIGHTS"]}


def test_a_bias_free_gate_s_hard_sigmoid_is_a_root_cause_of_its_own():
    results = _results("gff-bias-free-hard-sigmoid", "GFF-WEIGHTS", "GFF-PARAMS", *GFF_NUMERIC)
    failed = sorted(c for c, r in results.items() if r.status == "failed")
    assert failed == ["GFF-ACTIVATIONS", "GFF-FORWARD", "GFF-GATE-ORDER", "GFF-PARAMS",
                      "GFF-WEIGHTS"], results
    assert results["GFF-FORWARD"].message.endswith(
        "[judged with gate.bias at 0: the port holds none]")
    causes = _causes(results)
    assert len(causes) == 2, causes
    hard = next(c for c in causes if "hard sigmoid" in c)
    assert "no gate bias" not in hard and causes[hard] == [
        "GFF-ACTIVATIONS", "GFF-FORWARD", "GFF-GATE-ORDER"], causes


def test_a_second_dense_without_a_bias_passes_the_numeric_clauses():
    results = _results("fm-dense2-bias-free", *FM_NUMERIC)
    assert {c: r.status for c, r in results.items()} == dict.fromkeys(FM_NUMERIC, "passed")


@pytest.mark.parametrize("name, says, clauses", [
    ("fm-dense2-bias-free-gelu", "gelu activation instead of relu activation",
     ["FM-INFERENCE", "FM-TRAINING"]),
    ("fm-no-offset-momentum", "moving statistics keep 0.99 of their old value",
     ["FM-BN-UPDATE"]),
])
def test_a_weight_free_port_s_other_mistake_is_a_root_cause_of_its_own(name, says, clauses):
    results = _results(name, "FM-WEIGHTS", *FM_NUMERIC)
    causes = _causes(results)
    other = [c for c in causes if says in c]
    assert len(other) == 1 and causes[other[0]] == clauses, causes
    assert "holds no" not in other[0] and " no " not in other[0].split(" instead of ")[0]
    assert [ids for c, ids in causes.items() if "holds no" in c] == [["FM-WEIGHTS"]], causes
