"""The staged probe (``portspec.localise``): where no variant of the oracle reproduces a port, each
part of the layer is read back through weights that isolate it, and a named alternative is said
only where it reproduces that part. Each statement has a port here that triggers it and a near
miss that must not get its name; the measure's ports (tests/ports_fixtures/single_mistakes_*.py,
the patterns after "outside the variant space") are the rest. Also the refusals worded from the
framework's own error: an in-place operation autograd refuses, float32 meeting float64, and two
inputs concatenated along another axis than the last."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from portspec import localise, rootcause
from portspec.layers import LAYERS

torch = pytest.importorskip("torch")
F = torch.nn.functional
sys.path.insert(0, str(Path(__file__).parent / "ports_fixtures"))

from single_mistakes_torch import FM, GFF, Conforming, _weights  # noqa: E402

FM_SPEC, GFF_SPEC = LAYERS["FeatureMixing"], LAYERS["GatedFeatureFusion"]


def _found(fm=None, gff=None):
    """The finding of the root-cause search for a port whose FM or GFF module is the fixture's
    with the members ``fm`` / ``gff`` replaced."""
    fm_class, gff_class = type("FMx", (FM,), fm or {}), type("GFFx", (GFF,), gff or {})
    adapter = type("Port", (Conforming,), {"name": "port", "fm": fm_class, "gff": gff_class,
                                           "weights": _weights(fm_class)})()
    spec = FM_SPEC if fm is not None else GFF_SPEC
    torch.manual_seed(0)
    # as verify hands the records over: through JSON, each array an object of its own
    records = rootcause._from_json(rootcause._jsonable(rootcause.probe(adapter, spec)))
    return rootcause.search(spec, records)


def _fm_branch(scale=1.0, bias1=1.0):
    def branch(self, z):
        h = F.relu(z @ self.lin1.weight.T + bias1 * self.lin1.bias)
        return scale * (h @ self.lin2.weight.T) + scale * self.lin2.bias
    return branch


def _moving_first(self, v):
    """Training: the moving statistics updated first, then used to normalise."""
    if not self.training:
        return FM.normalise(self, v)
    with torch.no_grad():
        self.moving_mean.copy_(0.01 * self.moving_mean + 0.99 * v.mean(0).reshape(-1))
        self.moving_var.copy_(0.01 * self.moving_var + 0.99 * v.var(0, correction=0).reshape(-1))
    mean, var = self._as_grid(self.moving_mean), self._as_grid(self.moving_var)
    return self._as_grid(self.gamma) * (v - mean) / torch.sqrt(var + 1e-3) + self._as_grid(
        self.beta)


def _offset_first(self, v):
    """gamma (z + beta): the offset added before the scale."""
    mean, var = (v.mean(0, keepdim=True), v.var(0, keepdim=True, correction=0)) if (
        self.training) else (self._as_grid(self.moving_mean), self._as_grid(self.moving_var))
    if self.training:
        with torch.no_grad():
            self.moving_mean.copy_(0.01 * self.moving_mean + 0.99 * mean[0].reshape(-1))
            self.moving_var.copy_(0.01 * self.moving_var + 0.99 * var[0].reshape(-1))
    z = (v - mean) / torch.sqrt(var + 1e-3)
    return self._as_grid(self.gamma) * (z + self._as_grid(self.beta))


def _input_dropped(self, x):
    """The residual adds the input dropped out in training (dropout on the skip path)."""
    y = self.branch(self.normalise(x))
    return F.dropout(x, self.dropout, self.training) + y


def _gate(transform):
    """A GFF forward whose gate is ``transform(g)`` of the spec's sigmoid gate g."""
    def forward(self, a, b):
        g = transform(torch.sigmoid(torch.cat([a, b], -1) @ self.gate.weight.T
                                    + self.gate.bias))
        return g * a + (1 - g) * b
    return forward


def _pooled_gate(self, a, b):
    """At rank 3 and above, one gate per sample: the gate averaged over the middle axes."""
    g = self._act(torch.cat([a, b], -1) @ self.gate.weight.T + self.gate.bias)
    if g.dim() > 2:
        g = g.mean(dim=tuple(range(1, g.dim() - 1)), keepdim=True)
    return g * a + (1 - g) * b


def _bias_after_activation(self, a, b):
    g = self._act(torch.cat([a, b], -1) @ self.gate.weight.T) + self.gate.bias
    return g * a + (1 - g) * b


def _act_complement(self, a, b):
    z = torch.cat([a, b], -1) @ self.gate.weight.T + self.gate.bias
    return self._act(z) * a + self._act(-z) * b


def _extra_bias(self, a, b):
    g = torch.sigmoid(torch.cat([a, b], -1) @ self.gate.weight.T + self.gate.bias + 0.1)
    return g * a + (1 - g) * b


NAMED = [
    ("first Dense bias twice", {"branch": _fm_branch(bias1=2.0)}, None,
     r"the first Dense computes with its bias added twice \(the hidden units read back"),
    ("MLP output doubled", {"branch": _fm_branch(scale=2.0)}, None,
     r"the MLP's output is 2 times the spec's"),
    ("moving statistics updated, then used", {"normalise": _moving_first}, None,
     r"in training the normalisation subtracts the moving mean as this call updated it "
     r"\(updated first, then used\) and divides by sqrt\(the moving var as this call updated "
     r"it \+ epsilon\)"),
    ("offset before the scale", {"normalise": _offset_first}, None,
     r"the port computes gamma \(z \+ beta\): the offset added before the scale"),
    ("the input dropped on the skip path", {"forward": _input_dropped}, None,
     r"the dropout in training: with dropout 0\.3 the dropout probe's branch .* takes "),
    ("gate halved", None, {"forward": _gate(lambda g: 0.5 * g)},
     r"the gate is 0\.5 times the spec's"),
    ("gate ignored", None, {"forward": lambda self, a, b: a + 0 * b},
     r"is 1 everywhere: the output is a, b ignored"),
    ("a gate pooled at rank 3", None, {"forward": _pooled_gate},
     r"the inputs \(3, 5, 6\) and \(3, 5, 6\) differ from the spec oracle \(max \|error\| "
     r"[\d.]+; cases sigmoid, tanh, relu, softmax\), where the inputs \(16, 6\) and \(16, 6\) "
     r"match it"),
    ("the gate's bias after the activation", None, {"forward": _bias_after_activation},
     r"is sigmoid\(concat\(a, b\) @ kernel\) \+ bias: the bias added after the activation"),
    ("the complement as act(-z)", None, {"forward": _act_complement},
     r"the fusion computes act\(z\) a \+ act\(-z\) b"),
    ("a second gate bias", None, {"forward": _extra_bias},
     r"the gate's bias as used is the spec's plus \[0\.1, 0\.1, 0\.1, 0\.1, 0\.1, 0\.1\]"),
]


@pytest.mark.parametrize("fm, gff, pattern", [n[1:] for n in NAMED], ids=[n[0] for n in NAMED])
def test_the_staged_probe_names_the_part_that_differs(fm, gff, pattern):
    import re

    found = _found(fm, gff)
    assert not found.says and found.located, found.line()
    assert re.search(pattern, found.line()), found.line()


NEAR = [
    # between the named slopes 0.2 and 0.3: located, not named
    ("LeakyReLU(0.25)", {"activation": staticmethod(lambda v: F.leaky_relu(v, 0.25))},
     "the activation after the first Dense is not ReLU", "LeakyReLU("),
    # epsilon outside the square root in training, at twice the spec's epsilon: the scale is
    # measured against the spec's, not given the name
    # the hidden stage reads beta through the affine with gamma 0: an affine applied otherwise
    # is the affine's, not the first Dense's
    ("offset before the scale", {"normalise": _offset_first},
     "the offset added before the scale", "the first Dense"),
    ("epsilon 2e-3 outside the root", {"eps_outside_in_training": True, "eps": 2e-3},
     "in training the normalisation subtracts the batch mean and divides by",
     "sqrt(var) + epsilon"),
]


@pytest.mark.parametrize("fm, located, not_named", [n[1:] for n in NEAR],
                         ids=[n[0] for n in NEAR])
def test_a_near_miss_is_located_but_not_named(fm, located, not_named):
    found = _found(fm)
    line = found.line()
    assert located in line and not_named not in line, line


def test_a_conforming_port_has_no_staged_statement():
    for spec in (FM_SPEC, GFF_SPEC):
        records = rootcause.probe(Conforming(), spec)
        assert [r for r in records if r["label"].startswith(localise.STAGE)]
        assert localise.localise(spec, records) == []


def test_a_statement_fails_only_the_clauses_its_calls_can():
    """A difference in training alone explains no inference clause; one in the dropout probe
    alone, only the dropout clauses."""
    training = (("x", "training"),)
    assert localise.explains(FM_SPEC, training, "FM-TRAINING")
    assert not localise.explains(FM_SPEC, training, "FM-INFERENCE")
    assert not localise.explains(FM_SPEC, training, "FM-CONFIG")
    assert localise.explains(GFF_SPEC, training, "GFF-FORWARD")  # judges training too
    dropout = (("x", "dropout"),)
    assert localise.explains(FM_SPEC, dropout, "FM-DROPOUT-SITES")
    assert not localise.explains(FM_SPEC, dropout, "FM-TRAINING")


# -- refusals worded from the framework's own error ------------------------------------------


def _in_place(self, a, b):
    g = torch.sigmoid(torch.cat([a, b], -1) @ self.gate.weight.T + self.gate.bias)
    b.mul_(1 - g)  # the caller's b changed; autograd refuses it where b requires grad
    return g * a + b


def test_an_in_place_operation_autograd_refuses_is_the_root_cause_of_the_gradient(tmp_path):
    from portspec import diagnose
    from portspec.verify import verify

    fixtures = Path(__file__).parent / "ports_fixtures"
    (tmp_path / "PORT.py").write_text(
        f"import sys\nsys.path.insert(0, {str(fixtures)!r})\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_localise import _in_place\n"
        "from single_mistakes_torch import port\n"
        "ADAPTERS = [port('in-place', None, gff={'forward': _in_place})()]\n")
    results = verify([str(tmp_path / "PORT.py")], tasks=[("in-place", "GFF-GRAD")],
                     isolate=False)
    grad = next(r for r in results if r.clause == "GFF-GRAD")
    assert grad.status == "failed" and grad.diagnosis == diagnose.IN_PLACE, grad
    assert grad.cause and diagnose.IN_PLACE in grad.cause
    # another refusal of autograd's is not put down to an in-place operation
    assert not diagnose.IN_PLACE_ERROR.search(
        "raised RuntimeError: element 0 of tensors does not require grad and does not have a "
        "grad_fn")


def test_a_float_cast_meeting_float64_is_said():
    found = _found(gff={"forward": lambda self, a, b: GFF.forward(self, a.float(), b.float())})
    assert "float32 meets float64 inside the layer" in found.line(), found.line()
    # a float64 refusal in other words is not put down to a cast
    found = _found(gff={"forward": lambda self, a, b: (_ for _ in ()).throw(
        TypeError("float64 is not supported")) if a.dtype == torch.float64 else
        GFF.forward(self, a, b)})
    assert "float32 meets float64" not in found.line(), found.line()


def _cat_axis(axis):
    def forward(self, a, b):
        v = torch.cat([a, b], axis)
        g = torch.sigmoid(v @ self.gate.weight.T + self.gate.bias)
        return g * a + (1 - g) * b
    return forward


def test_inputs_concatenated_along_another_axis_are_said():
    found = _found(gff={"forward": _cat_axis(1)})
    assert "the inputs are concatenated along axis 0 or 1" in found.line(), found.line()
    # the last axis at every rank: runs, nothing to say of the axis
    found = _found(gff={"forward": _cat_axis(-1)})
    assert "concatenated along" not in found.line()


def _interleaved(self, a, b):
    v = torch.stack([a, b], -1).flatten(-2)  # a0, b0, a1, b1, ...
    g = self._act(v @ self.gate.weight.T + self.gate.bias)
    return g * a + (1 - g) * b


def _plus_a(self, a, b):
    return a + GFF.forward(self, a, b)


def _affine_in_training_only(self, v):
    """In inference the standardised input alone: gamma and beta left out."""
    if self.training:
        return FM.normalise(self, v)
    z = (v - self._as_grid(self.moving_mean)) / torch.sqrt(self._as_grid(self.moving_var) + 1e-3)
    return z


@pytest.mark.parametrize("fm, gff, pattern", [
    (None, {"forward": _interleaved}, r"the gate's input interleaves a and b \(a0, b0, a1, b1"),
    (None, {"forward": _plus_a}, r"the port returns g a \+ \(1 - g\) b \+ a: the first input "
     r"added back \(a residual around the fusion\)"),
    ({"normalise": _affine_in_training_only}, None, r"^FeatureMixing: in inference the "
     r"normalisation's scale and offset: the port computes z: neither gamma nor beta applied"),
], ids=["interleaved concat", "input added around the fusion", "affine left out in inference"])
def test_round_10s_kinds_are_named(fm, gff, pattern):
    import re

    line = _found(fm, gff).line()
    assert re.search(pattern, line), line


def test_a_drop_rate_drawn_out_of_bounds_does_not_hide_a_broadcast_mask():
    """Masks broadcast along time have fewer independent decisions: a site's measured rate may
    fall outside its bounds on the port and not on the variant. The finding that shows the
    broadcast decides; a finding the variant does not make still does."""
    from portspec.suite.runner import Result

    found = rootcause.Finding("FeatureMixing", {"mask_axis": "time"})
    variant = rootcause.variant_adapter(FM_SPEC, found)
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    item = next(i for i in work_items(None) if i[1].id == "FM-DROPOUT-SITES")
    own = run_clause(variant, *item).message
    assert "agree" in own
    parts = [p for p in own.split("; ") if not rootcause._DROP_RATE.match(p)]
    with_rate = "; ".join(["site 1 (after the ReLU) drops 0.255, p = 0.3", *parts])
    port = Result("FM-DROPOUT-SITES", "port", "failed", with_rate)
    assert rootcause.explains(FM_SPEC, found, port)
    other = Result("FM-DROPOUT-SITES", "port", "failed",
                   "site 1 (after the ReLU) drops 0.255, p = 0.3; kept units scaled by 1.00")
    assert not rootcause.explains(FM_SPEC, found, other)


def test_an_overflow_is_named_only_where_the_unguarded_formula_gives_the_same_nans():
    """The saturated activations' diagnosis is a hypothesis: the NaNs of the port's output
    must be exactly those of exp(z) / sum(exp(z)), and the rest the oracle's."""
    import numpy as np

    from portspec.layers.gated_feature_fusion import activate
    from portspec.suite.areas.numerics import _overflowed

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4, 3))
    z = rng.standard_normal((4, 3)) * 400.0
    z[0, 0] = 1000.0  # one row past exp's overflow
    gate = activate("softmax", z)
    expected = gate * a + (1 - gate) * b
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(z)
        naive = (e / e.sum(-1, keepdims=True)) * a + (1 - e / e.sum(-1, keepdims=True)) * b
    assert np.isnan(naive).any()
    assert "computed as exp(z) / sum(exp(z))" in _overflowed("softmax", z, (a, b), naive,
                                                             expected)
    elsewhere = expected.copy()
    elsewhere[3, 2] = np.nan  # a NaN the unguarded formula does not give
    assert _overflowed("softmax", z, (a, b), elsewhere, expected) is None
    assert _overflowed("softmax", z, (a, b), expected, expected) is None  # all finite
