"""Root causes that lie between the spec's config and the port's layer, each as a kind:

- a dropout rate written into the port, whatever the config's dropout: the dropout probe's
  training calls at two configured rates drop alike (``rootcause._fit_rate``);
- two integer config parameters exchanged by the adapter (``config_names`` or ``construct``):
  the probe's refused calls run once the two are swapped back, and FM-CONFIG's errors for each
  name the other; both are worded as one root cause.

The ports are in tests/ports_fixtures/single_mistakes_torch.py, whose whole measure
(tests/test_rootcause.py) checks their root causes end to end.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from portspec import registry, rootcause
from portspec.layers import LAYERS
from portspec.suite.areas import errors

pytest.importorskip("torch")

FM = LAYERS["FeatureMixing"]
FIXTURE = Path(__file__).parent / "ports_fixtures" / "single_mistakes_torch.py"


@pytest.fixture(scope="module")
def ports():
    return {a.name: a for a in registry.load_file(str(FIXTURE))}


def test_a_fixed_rate_is_fitted_from_the_probe_at_two_configured_rates(ports):
    records = rootcause.probe(ports["dropout-rate-hard-coded"], FM)
    rates = {r["config"]["dropout"] for r in records if r["label"] == "dropout" and r["training"]}
    assert rates == {rootcause.DROP_P, rootcause.DROP_P2}
    found = rootcause.search(FM, records)
    assert found.diff == {"dropout_rate": pytest.approx(0.2)}, found.line()
    assert "both drop 0.2 of the units" in found.line()
    # at one configured rate a fixed 0.2 cannot be told from the config's read otherwise
    one = [r for r in records if r["config"] is None or r["config"]["dropout"] != rootcause.DROP_P2]
    assert not isinstance(rootcause.search(FM, one).diff.get("dropout_rate", "rate"), float)


def test_a_port_that_drops_at_the_configured_rate_is_not_given_a_fixed_one(ports):
    found = rootcause.search(FM, rootcause.probe(ports["dropout-rate-as-keep"], FM))
    assert found.diff == {"dropout_rate": "keep"}, found.line()


def test_an_adapter_swapping_two_parameters_is_found_by_swapping_them_back(ports):
    records = rootcause.probe(ports["config-names-swapped"], FM)
    [swap] = [r for r in records if r["label"] == "config swap"]
    assert swap["state"]["swap"] == ["n_series", "ff_dim"]
    # what the swap made run: torch builds the weights first, gamma at L * ff_dim = 96
    assert swap["error"].startswith("ValueError: 'norm.gamma' maps to gamma of shape")
    found = rootcause.search(FM, records)
    assert found.swap == ("n_series", "ff_dim") and found.diff == {}
    assert found.line().startswith(
        "FeatureMixing: the port built with n_series and ff_dim swapped"), found.line()
    # the conforming port's probe runs as it is: no swap is tried or named
    plain = rootcause.probe(ports["conforming"], FM)
    assert not any(r["label"] == "config swap" for r in plain)
    assert rootcause.search(FM, plain).swap == ()


def _ctx(config_names=None):
    return SimpleNamespace(spec=FM, adapter=SimpleNamespace(config_names=config_names or {}))


def test_config_errors_naming_each_other_are_the_swap_and_worded_as_the_probe_words_it():
    unnamed = [("n_series", "ff_dim must be a positive int, got 0"),
               ("ff_dim", "n_series must be a positive int, got 0")]
    assert errors._swapped(_ctx(), unnamed) == ("n_series", "ff_dim")
    # the port's own names (config_names) name the parameter too
    assert errors._swapped(_ctx({"ff_dim": "hidden"}), [
        ("n_series", "hidden must be positive"), ("ff_dim", "n_series must be positive")]) == (
        "n_series", "ff_dim")
    said = errors.config_swap("n_series", "ff_dim", "x")
    line = rootcause.Finding("FeatureMixing", swap=("n_series", "ff_dim")).line()
    assert line.startswith(f"FeatureMixing: {said.split(' [')[0]} [")


@pytest.mark.parametrize("unnamed", [
    [("n_series", "ff_dim must be a positive int")],  # one way only
    [("n_series", "ff_dim or input_size must be positive"),
     ("ff_dim", "n_series must be a positive int")],  # two others named
    [("n_series", "ff_dim must be positive"), ("ff_dim", "input_size must be positive")],
    [("n_series", "a positive int is needed"), ("ff_dim", "n_series must be positive")],
])
def test_config_errors_that_do_not_name_each_other_are_no_swap(unnamed):
    assert errors._swapped(_ctx(), unnamed) is None


# -- a training step that differs because the gradient does ----------------------------------

GRAD_CAUSE = "GatedFeatureFusion: the gate is treated as a constant in backprop (...)"


def _portable(*verdicts):
    from portspec.suite.runner import Result

    pairs = {f"writer{i} -> p": v for i, v in enumerate(verdicts)}
    return Result("GFF-PORTABLE", "p", "failed", "; ".join(pairs), details={"pairs": pairs},
                  cause=rootcause.UNEXPLAINED)


@pytest.mark.parametrize("verdicts, finding, points", [
    (("gate.bias after the step differs by 0.08", "ok"), rootcause.Finding("GatedFeatureFusion"),
     True),
    # the writer's inference output read wrong: the forward, not the step
    (("gate.bias after the step differs by 0.08", "inference output differs by 2"),
     rootcause.Finding("GatedFeatureFusion"), False),
    # a forward that is some variant's: the step may differ by that alone
    (("gate.bias after the step differs by 0.08",),
     rootcause.Finding("GatedFeatureFusion", diff={"bias": False}), False),
])
def test_a_step_that_differs_points_to_the_gradient_only_where_the_forward_is_the_spec_s(
        verdicts, finding, points):
    from portspec.suite.runner import Result

    grad = Result("GFF-GRAD", "p", "failed", "x", cause=GRAD_CAUSE)
    out = rootcause._step_after_gradient([grad, _portable(*verdicts)], {("p", "GFF"): finding})
    assert (out[1].cause == GRAD_CAUSE) is points


def test_a_port_whose_map_lacks_a_weight_is_told_what_it_holds(ports):
    no_map = type("NoMap", (type(ports["conforming"]),), {"name": "no-map", "weights": {}})()
    case = FM.cases()[0]
    with pytest.raises(ValueError, match=r"maps no 'norm.gamma'; the port holds \['beta', "
                                         r"'gamma', 'lin1.bias', 'lin1.weight'"):
        no_map.build("FeatureMixing", case.config, input_shapes=case.input_shapes, seed=0)


def test_a_nan_output_fails_fm_compile_on_the_variant_as_on_the_port(ports):
    """Moving statistics exchanged in the map: the moving variance read from the mean's buffer
    is negative, the output NaN, and compiled vs eager fails on NaN. The variant's compiled
    call is its eager one, so it fails FM-COMPILE the same way; a deterministic variant whose
    output is finite passes it (no compiled path of the port's is blamed on it)."""
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    port = ports["moving-stats-swapped-in-map"]
    [item] = [i for i in work_items(None) if i[1].id == "FM-COMPILE"]
    result = run_clause(port, *item)
    assert result.status == "failed" and "nan" in result.message, result
    found = rootcause.search(FM, rootcause.probe(port, FM))
    assert found.diff == {"map_swap": "stats"}, found.line()
    assert rootcause.explains(FM, found, result)
    finite = rootcause.Finding(layer="FeatureMixing", diff={"eps_where": "outside"})
    again = run_clause(rootcause.variant_adapter(FM, finite), *item)
    assert again.status == "passed", again
