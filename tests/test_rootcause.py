"""Root causes: the oracle variants, the search over them, and the measure on single-mistake ports.

The variants at their defaults are the spec's oracle to the bit; a port that makes one mistake
of the variant space gets exactly that one root cause; a mistake outside it gets the staged
probe's reading of the part that differs (``portspec.localise``, a pattern the one cause must
match), never a wrong name.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
from pathlib import Path

import numpy as np
import pytest

from portspec import rootcause, variants
from portspec.layers import LAYERS


def _masks(spec, case, rng):
    if spec.multi_input or case.config["dropout"] == 0.0:
        return None
    b, length, n = case.input_shapes[0]
    p = case.config["dropout"]
    return {
        "dropout1": rng.random((b, length, case.config["ff_dim"])) >= p,
        "dropout2": rng.random((b, length, n)) >= p,
    }


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("training", [False, True])
def test_the_default_variant_is_the_spec_to_the_bit(name, training):
    spec, space = LAYERS[name], variants.SPACES[name]
    for case in spec.cases() + spec.config_cases():
        rng = np.random.default_rng(0)
        weights = spec.random_weights(case.config, case.input_shapes, rng)
        x = spec.make_inputs(case, rng)
        masks = _masks(spec, case, rng) if training else None
        want, want_state = spec.forward(case.config, weights, x, training=training, masks=masks)
        got, state = space.forward(case.config, weights, x, training=training, masks=masks)
        assert np.array_equal(got, want), case.label
        assert all(np.array_equal(state[k], want_state[k]) for k in want_state), case.label
        fast, _ = space.forward(
            case.config, weights, x, training=training, masks=masks, ops=variants.FAST
        )
        np.testing.assert_allclose(fast, want, rtol=1e-14, atol=1e-14)


def test_every_alternative_changes_the_output_somewhere():
    """A choice whose alternatives compute the spec on every probe would be unfalsifiable."""
    from portspec import rootcause

    for name, space in variants.SPACES.items():
        records = rootcause.oracle_records(LAYERS[name])
        for choice, values in space.alternatives.items():
            for value in values:
                if value == "fit":
                    continue
                assert rootcause.distinguishable(LAYERS[name], records, {choice: value}), (
                    f"{name} {choice}={value!r} reproduces the spec on every probe"
                )


def test_every_report_opens_with_the_root_causes():
    from portspec import report
    from portspec.suite.runner import Result

    cause = "FeatureMixing: epsilon 1e-05 instead of epsilon 0.001 [max error vs the spec 1]"
    results = [
        Result("FM-INFERENCE", "port", "failed", "max |error| 0.1", cause=cause),
        Result("FM-BN-EPSILON", "port", "failed", "max |error| 956", cause=cause),
        Result("FM-INIT", "port", "failed", "kernel not Glorot", cause="unexplained"),
        Result("FM-SHAPE", "port", "passed"),
    ]
    text = report.terminal(results, color=False)
    assert text.startswith("Root causes:\n(1) [port] " + cause + ": FM-INFERENCE, FM-BN-EPSILON")
    assert "(2) [port] unexplained: FM-INIT" in text
    assert text.count(cause) == 1  # once as a finding; each clause it explains refers to it
    assert text.count("    root cause: (1) above") == 2
    for fmt in ("markdown", "html", "junit", "json"):
        out = report.WRITERS[fmt](results)
        first = out.find("epsilon 1e-05")
        assert first != -1 and first < out.find("FM-SHAPE" if fmt != "json" else "results"), fmt
    assert '"root_causes"' in report.to_json(results)


def test_the_root_cause_explaining_most_clauses_comes_first():
    from portspec.suite.runner import Result

    calls = "FeatureMixing: calls not validated"
    block = "FeatureMixing: the port's module holds weights outside the layer's table"
    results = [Result("FM-CALL", "port", "failed", "accepted", cause=calls),
               Result("FM-SHAPE", "other", "failed", "shape", cause=calls),
               Result("FM-INFERENCE", "port", "failed", "max |error| 7", cause=block),
               Result("FM-TRAINING", "port", "failed", "max |error| 3", cause=block),
               Result("FM-INIT", "port", "failed", "not Glorot", cause="unexplained")]
    assert [(i, c) for i, c, _ in rootcause.root_causes(results)] == [
        ("port", block), ("port", calls), ("other", calls), ("port", "unexplained")]


def test_a_failed_export_gets_the_cause_of_its_layers_portability_failure():
    """export:<Layer> is the writing half of <prefix>-PORTABLE: the weight map that refuses
    the one refuses the other. Without a named cause there, it is left without one."""
    from portspec.suite.runner import Result

    cause = "FeatureMixing: the port holds dense1.kernel (6, 16) for the spec's (5, 16)"
    export = Result("export:FeatureMixing", "port", "failed", "raised ValueError")
    portable = Result("FM-PORTABLE", "port", "failed", "reading raised", cause=cause)
    other = Result("export:FeatureMixing", "other", "failed", "raised ValueError")
    out = rootcause._export_cause([export, portable, other], {})
    assert [r.cause for r in out] == [cause, cause, None]
    unexplained = Result("FM-PORTABLE", "port", "failed", "x", cause="unexplained")
    assert rootcause._export_cause([export, unexplained], {})[0].cause is None


# -- the measure: single-mistake ports ---------------------------------------------------------

FIXTURES = Path(__file__).parent / "ports_fixtures"
FIXTURE = FIXTURES / "single_mistakes_torch.py"


def _torch_fixture(monkeypatch):
    """The torch single-mistake fixture as a module, its folder on ``sys.path`` for the modules
    it imports from there (measure_layers), as ``registry.load_file`` puts it: a test run alone
    must not depend on another having loaded a port from that folder first."""
    import importlib.util

    monkeypatch.syspath_prepend(str(FIXTURES))
    spec_file = importlib.util.spec_from_file_location("single_mistakes_torch_module", FIXTURE)
    fixture = importlib.util.module_from_spec(spec_file)
    spec_file.loader.exec_module(fixture)
    return fixture
# the single-mistake ports of each framework, and the module each needs
MEASURED = {"torch": "torch", "keras": "keras", "flax": "flax"}
# torch.compile and the other frameworks' portable writers take minutes and name no variant
SLOW = ("-COMPILE", "-PORTABLE")


def _matches(expected: dict, variant: dict) -> bool:
    """Is the variant found the one the port was written with (fitted constants to 1 %)?
    ``expected["precision"]`` is the dtype a float64 call is partly computed in, if any."""
    expected = dict(expected)
    if variant["precision"] != expected.pop("precision", None):
        return False
    diff = variant["diff"]
    if set(diff) != set(expected):
        return False
    for key, want in expected.items():
        got = diff[key]
        if isinstance(want, float):
            if abs(got / want - 1) > 0.01:
                return False
        elif (list(want) if isinstance(want, tuple) else want) != got:
            return False
    return True


_MEASURES: dict = {}


def _measure(framework):
    """{port: (expected, its results)} for every port of a fixture, through verify (once per
    test session)."""
    if framework not in _MEASURES:
        _MEASURES[framework] = _verify(framework)
    return _MEASURES[framework]


# Every test reading a measure is in this module, which tox runs with ``--dist loadscope``: one
# xdist worker runs the module and computes each measure once (under ``--dist load``, each
# worker would compute it again).
@pytest.fixture(scope="module", params=list(MEASURED))
def measured(request):
    return _measure(request.param)


@pytest.fixture(scope="module")
def torch_measured():
    return _measure("torch")


def _verify(framework):
    """Every port of the fixture through verify, on one process per CPU (a Keras port takes
    some 7 s on the TensorFlow backend, and this measure would otherwise hold one xdist worker
    for minutes while the other ran out of tests)."""
    pytest.importorskip(MEASURED[framework])
    from portspec import registry

    path = FIXTURES / f"single_mistakes_{framework}.py"
    adapters = registry.load_file(str(path))
    backend = getattr(adapters[0], "backend", "tensorflow")
    if backend != "tensorflow":
        pytest.skip(f"the Keras ports' expectations are the TensorFlow backend's (Keras "
                    f"{backend!r} computes BatchNormalization's float64 moments in float32)")
    names = [a.name for a in adapters]
    jobs = min(len(os.sched_getaffinity(0)), 4)
    # spawn: the parent may hold TensorFlow's or JAX's threads, which fork would not copy. One
    # port per task, so that a process that finishes early takes the next port.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        parts = pool.map(_verify_ports, [str(path)] * len(names), [[n] for n in names])
        results = [r for part in parts for r in part]
    return {a.name: (a.expected, [r for r in results if r.impl == a.name]) for a in adapters}


def _verify_ports(path: str, names: list[str]):
    """verify in this process, of the named ports of the adapter file ``path``, every clause
    but the slow ones."""
    from portspec.verify import verify

    ids = [c.id for s in LAYERS.values() for c in s.clauses if not c.id.endswith(SLOW)]
    return verify([path], tasks=[(n, c) for n in names for c in ids], isolate=False)


def _causes(results):
    return [r for r in results if r.status == "failed" and r.cause
            and not r.cause.startswith("unexplained")]


def _named(results):
    """The distinct root causes of a port's failures: one mistake showing in both layers (a
    kernel layout, say) is one root cause."""
    import json

    return {json.dumps([r.details["variant"]["diff"], r.details["variant"]["precision"],
                        r.details["variant"]["raised"]], sort_keys=True)
            if "variant" in r.details and r.details["variant"]["fits"] else r.cause
            for r in _causes(results)}


def _right(expected, results) -> bool:
    named, causes = _named(results), _causes(results)
    if expected is None:
        return not named
    if isinstance(expected, str):  # a pattern the one root cause must match
        return len(named) == 1 and bool(re.search(expected, causes[0].cause))
    if not expected:  # conforming: nothing fails
        return not [r for r in results if r.status == "failed"]
    return len(named) == 1 and "variant" in causes[0].details and _matches(
        expected, causes[0].details["variant"])


def figures(measured) -> dict:
    ports = {k: v for k, v in measured.items() if k != "conforming"}
    covered = {k: v for k, v in ports.items() if v[0] is not None}
    right, wrong = [], []
    for name, (expected, results) in ports.items():
        if _right(expected, results):
            right.append(name)
        else:
            wrong.append(f"{name}: {sorted(_named(results)) or 'no cause'}")
    failing = [r for _, rs in covered.values() for r in rs if r.status == "failed"]
    explained = [r for r in failing if r.cause and not r.cause.startswith("unexplained")]
    unexplained = [f"{r.impl} {r.clause}" for r in failing if r not in explained]
    return {
        "ports": len(ports),
        "covered": len(covered),
        "right": right,
        "wrong": wrong,
        "causes_per_covered_port": sum(len(_named(rs)) for _, rs in covered.values())
        / max(len(covered), 1),
        "failing_clauses": len(failing),
        "attributed": len(explained) / max(len(failing), 1),  # of the covered ports
        "unexplained_of_covered": unexplained,
        # of the mistaken ports: a port expected to conform ({}) is none
        "killed": sum(any(r.status == "failed" for r in rs) for e, rs in ports.values()
                      if e != {}) / sum(e != {} for e, _ in ports.values()),
    }


def test_single_mistake_ports_get_exactly_their_root_cause(measured):
    found = figures(measured)
    print("\nroot-cause measure:", {k: v for k, v in found.items() if k != "right"})
    for name, (_, results) in measured.items():
        print(f"  {name}: {' | '.join(sorted({r.cause for r in _causes(results)})) or 'none'}")
    assert not found["wrong"], "\n".join(found["wrong"])
    assert found["killed"] == 1.0


def test_the_conforming_port_has_no_root_cause(measured):
    _, results = measured["conforming"]
    assert not [r.clause for r in results if r.status == "failed"]


def test_a_kernel_layout_is_judged_by_the_computation(measured):
    """A kernel mapped (out, in) that the port holds (in, out), or the other way round, is
    named by what the port computes with the weights as read back, not by their shape alone."""
    ports = [p for p in ("kernels-not-transposed", "kernels-read-as-torch") if p in measured]
    causes = {r.cause for p in ports for r in _causes(measured[p][1])}
    assert ports and causes and all("transposed" in c and "vs this variant" in c
                                    for c in causes), causes


def test_most_failing_clauses_point_to_their_root_cause(measured):
    assert figures(measured)["attributed"] >= 0.8


# -- diagnoses the evidence contradicted (issue 9, item 4): each shown by a port --------------

EVIDENCE = Path(__file__).parent / "ports_fixtures" / "evidence_torch.py"


def _of(measured, port, clause):
    return next(r for r in measured[port][1] if r.clause == clause)



@pytest.mark.parametrize(
    "port, clause, wrong",
    [
        # deterministic inference that differs is not dropout in inference
        ("post-norm", "FM-DROPOUT-INFERENCE", "dropout is active"),
        ("epsilon-1e-5", "FM-DROPOUT-INFERENCE", "dropout is active"),
        # values among the probe's levels at the wrong frequencies are not a scaling
        ("post-norm", "FM-DROPOUT-SITES", "not inverted"),
        # epsilon outside the square root reads as its square when the variance is 0
        ("epsilon-outside-sqrt", "FM-BN-EPSILON", "epsilon 1e-06"),
        # kept units scaled by 1/p drop at rate p: not the rate used as keep probability
        ("dropout-scaled-by-1-over-p", "FM-DROPOUT-SITES", "keep probability"),
        # a channel-major flatten moves the statistics, not the momentum
        ("flatten-channel-major", "FM-BN-UPDATE", "keeps"),
        # float32 arithmetic makes central differences noise, not detached statistics
        ("float32-inside", "FM-GRAD", "treated as constants"),
    ],
)
def test_no_diagnosis_the_evidence_contradicts(torch_measured, port, clause, wrong):
    result = _of(torch_measured, port, clause)
    assert wrong not in (result.diagnosis or ""), (port, clause, result.diagnosis)


@pytest.mark.parametrize(
    "port, clause, right",
    [
        ("dropout-scaled-by-1-over-p", "FM-DROPOUT-SITES", "scaled by 1/p"),
        ("dropout-rate-as-keep", "FM-DROPOUT-SITES", "keep probability"),
        ("dropout-not-inverted", "FM-DROPOUT-SITES", "not inverted"),
        ("float32-inside", "FM-GRAD", "not computed in float64"),
        ("momentum-0.1", "FM-BN-UPDATE", "keeps 0.1 of its old value"),
    ],
)
def test_diagnoses_the_evidence_supports(torch_measured, port, clause, right):
    result = _of(torch_measured, port, clause)
    assert right in (result.diagnosis or ""), (port, clause, result.diagnosis, result.message)


@pytest.fixture(scope="module")
def evidence():
    pytest.importorskip("torch")
    from portspec.verify import verify

    tasks = [
        ("nan-output", "FM-INFERENCE"),
        ("batch1-refused", "FM-BN-BATCH1"),
        ("float64-refused", "FM-INFERENCE"),
        ("gff-float32-bf16", "GFF-DTYPE"),
        ("own-export-fails", "FM-PORTABLE"),
        ("float32-stored-epsilon", "FM-INFERENCE"),
    ]
    return {(r.impl, r.clause): r for r in verify([str(EVIDENCE)], tasks=tasks, isolate=False)}


def test_a_nan_is_printed_as_nan(evidence):
    message = evidence[("nan-output", "FM-INFERENCE")].message
    assert "max |error| nan" in message and "inf" not in message.split("exceeds")[0]


def test_refusals_are_explained_by_evidence_not_wording(evidence):
    batch1 = evidence[("batch1-refused", "FM-BN-BATCH1")]
    assert "refuses a training batch of one" in (batch1.diagnosis or ""), batch1
    wide = evidence[("float64-refused", "FM-INFERENCE")]
    assert "a float64 call raises where the same call in float32 runs" in (wide.diagnosis or "")


def test_dtype_checks_every_dtype_after_a_float64_difference(evidence):
    message = evidence[("gff-float32-bf16", "GFF-DTYPE")].message
    assert "float64" in message and "bfloat16" in message, message


def test_the_ports_own_export_failing_is_said_and_keeps_its_column(evidence):
    result = evidence[("own-export-fails", "FM-PORTABLE")]
    pairs = result.details.get("pairs", {})
    assert "this port's own export raised" in pairs.get("own-export-fails -> own-export-fails", "")


def test_a_large_error_is_not_put_down_to_float32_storage(evidence):
    result = evidence[("float32-stored-epsilon", "FM-INFERENCE")]
    assert result.details["max_abs_error"] > 1e-3
    assert "float32 rounding" not in (result.diagnosis or ""), result.diagnosis


def test_a_checked_diagnosis_of_how_the_layer_is_built_is_its_root_cause():
    """FM-INIT judges the initial weights, which no variant of the computation explains; the
    clause's own diagnosis (the draws fit PyTorch's Linear default) is then the root cause, and
    the clauses of the computation, which pass, get none."""
    pytest.importorskip("torch")
    from portspec.verify import verify

    zoo = Path(__file__).parent / "mutants" / "torch_zoo.py"
    tasks = [("LinearDefaultInit", c) for c in ("FM-INIT", "FM-INFERENCE", "FM-TRAINING")]
    results = {r.clause: r for r in verify([str(zoo)], tasks=tasks, isolate=False)}
    init = results["FM-INIT"]
    assert init.status == "failed" and init.diagnosis
    assert init.cause == f"FeatureMixing: {init.diagnosis}"
    assert "PyTorch's default Linear initialisation" in init.cause
    assert results["FM-INFERENCE"].status == results["FM-TRAINING"].status == "passed"


def test_five_choices_of_one_design_are_found_together(monkeypatch):
    """torch's BatchNorm2d(1) at its defaults after the residual (darts' TimeBatchNorm2d): one
    statistic, epsilon 1e-5, momentum 0.1, unbiased update, post-norm; five choices, one root
    cause. A sixth, unrelated change (a ReLU after the second Dense, outside the space) must
    not fit."""
    pytest.importorskip("torch")
    from portspec import rootcause

    fixture = _torch_fixture(monkeypatch)
    design = {"norm": "scalar", "position": "after", "eps": 1e-5, "update_ddof": 1, "keep": 0.9}
    spec = LAYERS["FeatureMixing"]
    found = rootcause.search(spec, rootcause.probe(fixture.port("deep", None, fm=design)(), spec))
    assert found.fits and not found.precision
    assert _matches({"norm": "batch-scalar", "position": "after", "eps": 1e-5,
                     "update_ddof": 1, "momentum": 0.9}, found.summary())
    unbiased = fixture.port("deep-relu", None, fm={**design, "relu_after_dense2": True})()
    assert not rootcause.search(spec, rootcause.probe(unbiased, spec)).fits


def test_independent_mistakes_are_separate_root_causes(monkeypatch):
    """Two mistakes in different parts of the layer (PyTorch's epsilon in the BatchNorm, exact
    GELU in the MLP) are two root causes, each failing clause attributed to the one that
    fails it alone; the evidence names the variant with both."""
    pytest.importorskip("torch")
    import torch.nn.functional as F

    from portspec import rootcause
    from portspec.isolation import items_for

    fixture = _torch_fixture(monkeypatch)
    two = fixture.port("two-mistakes", None,
                       fm={"eps": 1e-5, "activation": staticmethod(F.gelu)})()
    clauses = ("FM-BN-EPSILON", "FM-INFERENCE", "FM-TRAINING")
    tasks = [(two.name, c) for c in clauses]
    results = rootcause.attach([run() for _, run in items_for(two, tasks=tasks)])
    failing = {r.clause: r.cause for r in results if r.status == "failed"}
    causes = set(failing.values())
    assert not [c for c in causes if c.startswith("unexplained")], failing
    eps = [c for c in causes if "epsilon 1e-05" in c and "gelu" not in c]
    gelu = [c for c in causes if "gelu activation" in c and "epsilon" not in c.split("[")[0]]
    assert len(eps) == 1 and len(gelu) == 1, failing
    assert "all 2 independent differences" in eps[0]


@pytest.mark.parametrize("normalisation", [{"update_ddof": 1}, {}], ids=["unbiased", "spec"])
def test_a_refused_batch_of_one_is_the_normalisations_not_the_mlps(normalisation, monkeypatch):
    """A port with torch.nn.BatchNorm's refusal of a training batch of one and GELU in its MLP:
    the refusal goes with the normalisation's own difference (an unbiased moving update, as
    nn.BatchNorm1d computes it) or, where the normalisation computes as the spec's, is a root
    cause of its own; the GELU is another, and the clauses each fails alone are its own."""
    pytest.importorskip("torch")
    import torch.nn.functional as F

    from portspec import rootcause
    from portspec.diagnose import BATCH_OF_ONE
    from portspec.isolation import items_for

    fixture = _torch_fixture(monkeypatch)

    def forward(self, x):
        if self.training and x.shape[0] == 1:  # nn.BatchNorm1d's words
            raise ValueError("Expected more than 1 value per channel when training, got "
                             f"input size torch.Size([1, {x.shape[1] * x.shape[2]}])")
        return fixture.FM.forward(self, x)

    port = fixture.port("refusing-gelu", None, fm={
        **normalisation, "activation": staticmethod(F.gelu), "forward": forward})()
    clauses = ("FM-BN-BATCH1", "FM-BN-UPDATE", "FM-INFERENCE", "FM-TRAINING")
    tasks = [(port.name, c) for c in clauses]
    results = rootcause.attach([run() for _, run in items_for(port, tasks=tasks)])
    cause = {r.clause: r.cause for r in results if r.status == "failed"}
    refusal, gelu = cause["FM-BN-BATCH1"], cause["FM-INFERENCE"]
    assert BATCH_OF_ONE in refusal and "gelu" not in refusal.split("[")[0], cause
    assert "gelu activation" in gelu and BATCH_OF_ONE not in gelu, cause
    assert cause["FM-TRAINING"] == gelu
    if normalisation:
        assert "unbiased batch variance in the moving update" in refusal
        assert cause["FM-BN-UPDATE"] == refusal
    else:
        assert refusal.startswith(f"FeatureMixing: {BATCH_OF_ONE}"), refusal
        assert "FM-BN-UPDATE" not in cause


@pytest.mark.parametrize("mistake, expected", [
    ({}, {"biases": ("dense1",)}),
    ({"rate_as_keep": True}, {"biases": ("dense1",), "dropout_rate": "keep"}),
])
def test_a_port_without_the_second_dense_bias_is_found_and_its_dropout_still_read(
        mistake, expected, monkeypatch):
    """The dropout probe tells the two sites apart by the second Dense's bias (a unit dropped
    at the first site still carries it): a port declared without it (``absent``) gives 0 for
    either site's drop. Its rates are then read off every element, not off the elements one
    site's decision shows (a biased sample: only the kept ones): the layer is found as it is,
    a wrong rate still shows, and FM-GRAD judges the gradients it has."""
    pytest.importorskip("torch")
    from portspec import rootcause
    from portspec.ports import absent
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    fixture = _torch_fixture(monkeypatch)

    def init(self, **config):
        fixture.FM.__init__(self, **config)
        self.lin2.register_parameter("bias", None)

    port_class = fixture.port("no-dense2-bias", None, fm={**mistake, "__init__": init})
    port_class.weights = {**port_class.weights, "FeatureMixing": {
        **port_class.weights["FeatureMixing"], "dense2.bias": absent("nn.Linear(bias=False)")}}
    port = port_class()
    spec = LAYERS["FeatureMixing"]
    found = rootcause.search(spec, rootcause.probe(port, spec))
    assert found.fits and found.diff == expected and not found.precision, found.line()
    # the part without the bias says so, whatever other part the port gets wrong
    mlp = [p for p in rootcause.independent(found) if "biases" in p.diff]
    assert [p.line().endswith("[the port holds no dense2.bias]") for p in mlp] == [True], [
        p.line() for p in mlp]
    items = {c.id: (s, c, fn) for s, c, fn in work_items(None)}
    grad = run_clause(port, *items["FM-GRAD"])
    assert grad.status == "passed", grad.message


def test_a_keras_gate_without_its_bias_is_judged_on_the_gradients_it_has():
    """GFF-GRAD of a Keras port whose gate is Dense(use_bias=False), its bias ``absent``: the
    gradients it has agree with its central differences, and the saturated gate's are finite
    (set without the bias); the missing bias is GFF-WEIGHTS' and -PARAMS' to say, not a
    gradient failure or a skip."""
    pytest.importorskip("keras")
    from portspec import registry
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    path = FIXTURES / "single_mistakes_keras.py"
    port = next(a for a in registry.load_file(str(path)) if a.name == "gff-no-bias")
    items = {c.id: (s, c, fn) for s, c, fn in work_items(None)}
    result = run_clause(port, *items["GFF-GRAD"])
    assert result.status == "passed", result.message


@pytest.mark.parametrize("design, expected", [
    # nn.BatchNorm1d(L*N) as it comes: epsilon 1e-5, momentum 0.1 (keeps 0.9), unbiased update;
    # its batch of one gives an undefined (NaN) unbiased variance the fit must step over
    ({"eps": 1e-5, "keep": 0.9, "update_ddof": 1},
     {"eps": 1e-5, "momentum": 0.9, "update_ddof": 1}),
    # a hand-written LayerNorm over the channels: (x - mean) / (std + eps), torch.std unbiased
    ({"norm": "layer-N", "eps_outside": True, "ddof": 1, "eps": 1e-6},
     {"norm": "layer-N", "eps_where": "outside", "var_ddof": 1, "eps": 1e-6}),
])
def test_a_normalisation_written_from_another_framework_is_one_root_cause(design, expected,
                                                                             monkeypatch):
    pytest.importorskip("torch")
    from portspec import rootcause

    fixture = _torch_fixture(monkeypatch)
    spec = LAYERS["FeatureMixing"]
    found = rootcause.search(spec, rootcause.probe(fixture.port("design", None, fm=design)(),
                                                   spec))
    assert found.fits and _matches(expected, found.summary()), found.line()
    assert len(rootcause.independent(found)) == 1  # one part of the layer: one root cause


@pytest.mark.parametrize("choices", [
    {"eps": "fit"},  # normalisation before the branch: the branch runs once per epsilon
    {"eps": "fit", "position": "after", "norm": "layer-N", "eps_where": "outside"},
])
def test_the_epsilon_losses_at_once_are_each_epsilons_loss_alone(choices, monkeypatch):
    """The epsilon fit evaluates its grid as one array of epsilons: each loss is the one a
    forward with that epsilon alone gives (to rounding: a stacked matmul may sum in another
    order), before and after the residual, and on the NaN an unbiased variance of one sample
    gives."""
    pytest.importorskip("torch")
    from portspec import rootcause

    fixture = _torch_fixture(monkeypatch)
    spec = LAYERS["FeatureMixing"]
    design = {"eps": 1e-5, "keep": 0.9, "update_ddof": 1}
    records = [r for r in rootcause.probe(fixture.port("eps", None, fm=design)(), spec)
               if r["out"] is not None and not r["label"].endswith(rootcause.INPUT_DROP)]
    for r in records:
        r["weights"] = rootcause._fill(spec, r)
    space = variants.SPACES["FeatureMixing"]
    choices = {k: v for k, v in choices.items() if k != "eps"}
    log_eps = np.linspace(-12, 0, 25)
    together = rootcause._eps_losses(spec, space, records, choices, log_eps)
    alone = []
    for v in log_eps:
        total = 0.0
        for r in records:
            if r["label"] == "dropout":
                continue
            out, _ = rootcause._predict(spec, space, r, {**choices, "eps": 10.0**v})
            total += float(np.mean((out - r["out"]) ** 2))
        alone.append(total)
    assert together.shape == (25,)
    np.testing.assert_allclose(together, alone, rtol=1e-9, atol=1e-300)
    assert len(set(np.round(np.log10(np.asarray(alone) + 1e-300), 6))) > 1  # epsilon shows


@pytest.mark.parametrize("name", ["FeatureMixing", "GatedFeatureFusion"])
def test_float32_is_said_only_of_errors_float32_arithmetic_makes(name):
    """Outputs met at the float32 tolerance alone: rounded to float32, they are a float64
    call computed partly in float32; off by 5e-9 relative (Keras's float64 gelu on
    TensorFlow errs by 9e-9), they are float64 arithmetic a little off the oracle's, which
    float32 arithmetic, erring by its unit roundoff of 6e-8 or more, cannot be."""
    from portspec import rootcause

    spec = LAYERS[name]

    def with_outputs(change):
        records = rootcause.oracle_records(spec)
        for r in records:
            if r["out"] is not None and r["label"] != "dropout":
                r["out"] = [change(np.asarray(o)) for o in r["out"]] if isinstance(
                    r["out"], list) else change(np.asarray(r["out"]))
        return records

    rounded = rootcause.search(spec, with_outputs(lambda o: o.astype(np.float32).astype(float)))
    assert rounded.precision == "float32" and not rounded.close
    assert "computed partly in float32" in rounded.line()
    nudged = rootcause.search(spec, with_outputs(lambda o: o * (1 + 5e-9)))
    assert nudged.precision == "float32" and nudged.close
    assert "so not float32" in nudged.line() and "computed partly" not in nudged.line()


def test_a_refused_call_is_told_apart_by_what_differs_from_the_calls_that_ran():
    """The probe calls in float64. Where some of its calls run, the refused one differs from
    them by its inputs' shape or its config, not by its dtype, and the finding says which."""
    ok = np.zeros(1)

    def rec(label, config, shapes, error=None):
        x = [np.zeros(s) for s in shapes]
        return rootcause._record(label, config, x, {}, False, None if error else ok, error,
                                 "float64")

    rank2 = rec("rank2", {"activation": "sigmoid"}, [(16, 6), (16, 6)])
    rank3 = rec("sigmoid", {"activation": "sigmoid"}, [(3, 5, 6)] * 2, "RuntimeError: shapes")
    said = rootcause._raised([rank2, rank3])
    assert said == ("a call on inputs (3, 5, 6) and (3, 5, 6) raises (RuntimeError: shapes), "
                    "where (16, 6) and (16, 6) run"), said
    softmax = rec("softmax", {"activation": "softmax"}, [(16, 6)] * 2, "ValueError: axis")
    said = rootcause._raised([rank2, softmax])
    assert said == "a call with activation='softmax' raises (ValueError: axis), where others run"
    assert rootcause._raised([rank3]) == "a float64 call raises (RuntimeError: shapes)"


def test_a_refusal_elsewhere_is_not_put_down_to_a_batch_of_one():
    """FM-BN-BATCH1 raised, but a batch of one runs (here the port is the oracle): the
    refusal came from elsewhere (setting weights, say), so no batch-of-one diagnosis."""
    from portspec import diagnose, registry
    from portspec.suite.runner import Result

    adapter = registry.load_file(str(FIXTURES / "numpy_port.py"))[0]
    spec = LAYERS["FeatureMixing"]
    clause = spec.clause("BN-BATCH1")
    raised = Result(clause.id, adapter.name, "failed", "raised ValueError: 'dense1.kernel' maps "
                    "to dense1.weight of shape (16, 5)")
    assert diagnose.explain_refusal(raised, clause, adapter, spec).diagnosis is None
