"""Root causes that no variant of the oracle computes, each checked against the probe:

- an output of another shape than the spec's (``Finding.misshaped``): the probe's calls show
  it, worded as FM/GFF-SHAPE words it, and every clause that meets a wrong shape (a shape
  compared, an error quoting one) is that cause;
- a compiled path unlike the eager one, where every eager call of the probe is the spec's
  (``rootcause.COMPILED_ONLY``): FM/GFF-COMPILE's comparison alone fails.

The measure's port of the first is ``gff-output-flattened`` in
tests/ports_fixtures/single_mistakes_torch.py.
"""

from __future__ import annotations

import pytest

from portspec import rootcause
from portspec.layers import LAYERS
from portspec.suite.checks import work_items
from portspec.suite.runner import Result, run_clause

torch = pytest.importorskip("torch")

from portspec.ports import TorchPortAdapter, identity, transpose  # noqa: E402

GFF = LAYERS["GatedFeatureFusion"]
ITEMS = {i[1].id: i for i in work_items(None)}


class Fusion(torch.nn.Module):
    """g * a + (1 - g) * b; ``compiled``: a hard sigmoid under torch.compile only;
    ``flat``: the output reshaped to (batch, -1)."""

    def __init__(self, features, activation="sigmoid", compiled=False, flat=False):
        super().__init__()
        self.gate = torch.nn.Linear(2 * features, features)
        self.activation, self.compiled, self.flat = activation, compiled, flat

    def forward(self, a, b):
        z = self.gate(torch.cat([a, b], -1))
        act = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
               "softmax": lambda v: torch.softmax(v, -1)}[self.activation]
        if self.compiled and torch.compiler.is_compiling():
            act = torch.nn.functional.hardsigmoid
        g = act(z)
        out = g * a + (1 - g) * b
        return out.reshape(a.shape[0], -1) if self.flat else out


def _port(**mistake):
    class Port(TorchPortAdapter):
        name = "-".join(mistake) or "fusion"
        layers = ("GatedFeatureFusion",)
        weights = {"GatedFeatureFusion": {"gate.kernel": ("gate.weight", transpose),
                                          "gate.bias": ("gate.bias", identity)}}

        def construct(self, layer, config, *, input_shapes, dtype):
            return Fusion(input_shapes[0][-1], config.get("activation", "sigmoid"), **mistake)

    return Port()


def test_an_output_of_another_shape_is_one_cause_for_every_clause_that_meets_it():
    port = _port(flat=True)
    found = rootcause.search(GFF, rootcause.probe(port, GFF))
    assert found.misshaped.startswith("inputs of rank > 2 come out flattened to (batch, -1)")
    assert found.wrong_shapes == ("(3, 30)",) and not found.diff, found
    for clause in ("GFF-SHAPE", "GFF-FORWARD", "GFF-GRAD"):
        result = run_clause(port, *ITEMS[clause])
        assert result.status == "failed", result
        assert rootcause.explains(GFF, found, result), (clause, result.message)
    # a failure that shows no shape is not that cause
    other = Result("GFF-INIT", port.name, "failed", "gate.bias is not all 0")
    assert not rootcause.explains(GFF, found, other)


def test_a_compiled_only_path_is_named_where_the_eager_calls_are_the_spec_s():
    port = _port(compiled=True)
    records = rootcause.probe(port, GFF)
    found = rootcause.search(GFF, records)
    assert found.fits and not found.diff, found.line()
    result = run_clause(port, *ITEMS["GFF-COMPILE"])
    assert result.status == "failed" and result.message.startswith("compiled vs eager"), result
    probe = Result(f"{rootcause.PROBE}GatedFeatureFusion", port.name, "passed", "",
                   details={"records": [rootcause._jsonable(r) for r in records]})
    [attached] = rootcause.attach([result, probe])
    assert rootcause.COMPILED_ONLY in attached.cause, attached.cause
    # where the probe finds the eager computation wrong, that is the cause to look at first
    wrong = rootcause.Finding("GatedFeatureFusion", diff={"activation": "tanh"})
    assert not rootcause._compiled_only(wrong, result)
