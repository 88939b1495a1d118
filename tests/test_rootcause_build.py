"""Root causes of mistakes in how a layer is built, configured, validated or saved.

The clauses of those areas test their own diagnosis against their evidence (``checked``), so
a port with one such mistake gets one root cause naming it. Here: each diagnosis is given only
where its hypothesis accounts for every observation, and is withheld where the evidence
contradicts it; and a port that validates nothing (the small torch port) gets root causes that
say which bad configs and calls are not rejected, and what each did instead.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from portspec.layers import LAYERS
from portspec.suite.areas import errors, serialization, structure

FM, GFF = LAYERS["FeatureMixing"], LAYERS["GatedFeatureFusion"]
PORT = Path(__file__).parent / "ports_fixtures" / "torch_fm_port.py"


# -- FM/GFF-SHAPE: the one reshape that predicts every call's shape ---------------------------

def test_a_squeeze_is_named_only_when_every_shape_fits_it():
    seen = [((1, 6, 5), (6, 5), "batch 1"), ((3, 6, 5), (3, 6, 5), "batch 3")]
    assert "squeezed" in structure._shape_diagnosis(seen)
    # a batch of three that also comes out wrong: no squeeze gives (3, 30)
    seen[1] = ((3, 6, 5), (3, 30), "batch 3")
    assert structure._shape_diagnosis(seen) is None


def test_a_flatten_is_named_only_when_the_rank_2_calls_are_right():
    seen = [((1, 6), (1, 6), "r2"), ((2, 3, 6), (6, 6), "r3"), ((2, 2, 3, 6), (12, 6), "r4")]
    assert "flattened to (-1, features)" in structure._shape_diagnosis(seen)
    seen[0] = ((1, 6), (6,), "r2")  # squeezed too: neither reshape alone fits every call
    assert structure._shape_diagnosis(seen) is None


# -- FM/GFF-WEIGHTS and -PARAMS: one wording, tested against the counts -----------------------

CASE = FM.cases()[0]


def _ctx_handle(counts, info=None):
    ctx = SimpleNamespace(spec=FM)
    handle = SimpleNamespace(param_counts=lambda: counts)
    return ctx, CASE, handle, info


def _info(**trainable):
    table = FM.weight_table(CASE.config, CASE.input_shapes)
    return {w.name: (tuple(w.shape), trainable.get(w.name.replace(".", "_"), w.trainable))
            for w in table}


def test_a_frozen_gamma_accounts_for_the_counts():
    t, n = FM.param_counts(CASE.config, CASE.input_shapes)
    size = int(np.prod(FM.weight_table(CASE.config, CASE.input_shapes)[0].shape))
    said = structure._holding(*_ctx_handle((t - size, n + size), _info(norm_gamma=False)))
    assert said.startswith("norm.gamma held non-trainable (the spec trains it)")
    # the same flip with counts it does not explain (a weight more besides): no diagnosis
    assert structure._holding(*_ctx_handle((t - size, n + size + 1),
                                           _info(norm_gamma=False))) is None


def test_a_missing_weight_is_named_only_when_one_set_of_weights_gives_the_counts():
    f = GFF.cases()[0].input_shapes[0][-1]
    ctx = SimpleNamespace(spec=GFF)
    case = GFF.cases()[0]
    handle = SimpleNamespace(param_counts=lambda: (2 * f * f, 0))
    assert "holds no gate.bias" in structure._holding(ctx, case, handle, None)
    # FeatureMixing's gamma and beta have one size: a count one of them short names neither
    t, n = FM.param_counts(CASE.config, CASE.input_shapes)
    flat = CASE.config["n_series"] * CASE.config["input_size"]
    assert structure._holding(*_ctx_handle((t - flat, n))) is None


# -- round trips --------------------------------------------------------------------------------

def test_a_config_value_swapped_for_another_parameters_is_named_as_such():
    want = {"n_series": 5, "input_size": 6, "dropout": 0.1, "ff_dim": 16}
    other = {"n_series": 7, "input_size": 4, "dropout": 0.0, "ff_dim": 3}
    reports = [({**want, "ff_dim": 5}, want), ({**other, "ff_dim": 7}, other)]
    said = serialization._config_lost({**want, "ff_dim": 5}, want, reports)
    assert said == ("reports ff_dim=5 for a layer built with ff_dim=16, the value of n_series "
                    "(so in each of the 2 configs tried)")
    # in the other config the value is not n_series's: the coincidence is not named
    reports[1] = ({**other, "ff_dim": 4}, other)
    said = serialization._config_lost({**want, "ff_dim": 5}, want, reports)
    assert said == "reports ff_dim=5 for a layer built with ff_dim=16"
    assert serialization._config_lost({}, {"activation": "tanh"}) == (
        "leaves out activation (built with 'tanh')")



def test_a_parameter_written_under_another_key_is_named_with_that_key():
    """get_config writing 'gate_activation' where the constructor takes 'activation': the
    port's own config holds the value under a key that names no parameter."""
    own = {"name": "gff", "trainable": True, "gate_activation": "tanh"}
    said = serialization._config_lost({}, {"activation": "tanh"}, own=own)
    assert said == ("writes activation under another key, 'gate_activation' (built with "
                    "'tanh'), which a layer rebuilt from it does not read as activation")
    # two keys holding the value, or none: which one is meant cannot be told
    two = {**own, "act": "tanh"}
    assert serialization._config_lost({}, {"activation": "tanh"}, own=two).startswith("leaves")
    other = {**own, "gate_activation": "relu"}
    assert serialization._config_lost({}, {"activation": "tanh"}, own=other).startswith("leaves")


def test_a_native_load_refused_after_a_lost_parameter_is_the_round_trip_s_cause():
    """FM/GFF-SAVE-NATIVE's diagnosis where the load raises is worded as CONFIG-ROUNDTRIP's,
    its own evidence in brackets: the report gives the two clauses one root cause."""
    from portspec import report
    from portspec.suite.runner import Result

    lost = "GatedFeatureFusion: get_config leaves out activation (built with 'tanh')"
    results = [Result("GFF-CONFIG-ROUNDTRIP", "p", "failed", "x", cause=lost),
               Result("GFF-SAVE-NATIVE", "p", "failed", "y",
                      cause=lost + " [the native load rebuilds the layer from it: TypeError: "
                                   "could not be deserialized]")]
    [(impl, cause, ids)] = report.root_causes(results)
    assert ids == ["GFF-CONFIG-ROUNDTRIP", "GFF-SAVE-NATIVE"] and cause.startswith(lost), cause


def test_half_storage_is_named_only_when_every_difference_is_that_rounding():
    rng = np.random.default_rng(0)
    want = {"a": rng.normal(size=8).astype(np.float32), "b": rng.normal(size=3).astype(np.float32)}
    half = {k: v.astype(np.float16).astype(np.float32) for k, v in want.items()}
    assert "stored in float16: every weight" in serialization._rounded(want, half, ["a", "b"])
    off = {**half, "b": half["b"] + np.float32(1e-3)}  # one weight off by more than rounding
    assert serialization._rounded(want, off, ["a", "b"]) is None


def test_state_not_restored_is_named_only_when_the_values_are_a_fresh_layers():
    initial = {"built": {"k": np.full(3, 0.5)}, "constant": {"m": np.zeros(4)}}
    got = {"k": np.full(3, 0.5), "m": np.zeros(4)}
    assert "does not restore k, m" in serialization._not_restored(got, ["k", "m"], initial)
    got["m"] = np.full(4, 1e-7)  # not the initial zeros: restored wrongly, not left fresh
    assert serialization._not_restored(got, ["k", "m"], initial) is None


# -- FM/GFF-CONFIG and -CALL: what gets through, and how ----------------------------------------

def test_the_validation_diagnosis_groups_what_gets_through_by_how():
    failed = [("n_series=0", "accepted", ""), ("n_series=-2", "RuntimeError", ""),
              ("ff_dim=2.0", "unnamed", ""), ("dropout=1.5", "accepted", "")]
    said = errors._not_validated(failed, 26, "config", "the parameter")
    assert said == (
        "configs not validated (the spec: a ValueError or TypeError naming the parameter): "
        "of 26 invalid configs, 2 accepted: n_series=0, dropout=1.5; "
        "1 raised RuntimeError instead: n_series=-2; 1 raised a ValueError or TypeError that "
        "does not name the parameter: ff_dim=2.0")
    # the first unnamed error is quoted: a shape check reached at build says where it came from
    failed[2] = ("ff_dim=2.0", "unnamed", "config {'ff_dim': 2.0}: ValueError does not name "
                 "ff_dim: expected a (batch, 6, 5) input")
    said = errors._not_validated(failed, 26, "config", "the parameter")
    assert said.endswith("ff_dim=2.0 (the first: ValueError: expected a (batch, 6, 5) input)")


def test_an_accepted_value_is_said_to_be_replaced_only_when_the_layer_reports_another():
    def handle(reported):
        return SimpleNamespace(get_config=lambda: {"activation": reported})

    config = {"activation": "swish"}
    assert errors._built_as([handle("sigmoid")], config, "activation") == (
        " (built as 'sigmoid')")
    assert errors._built_as([handle("swish")], config, "activation") == ""
    assert errors._built_as([], config, "activation") == ""  # refused: nothing was built
    nan = {"dropout": float("nan")}
    assert errors._built_as([SimpleNamespace(get_config=lambda: nan)], nan, "dropout") == ""


def test_a_port_that_validates_nothing_gets_root_causes_saying_so():
    """The small torch port builds its layer from any config and lets torch's errors through:
    FM-CONFIG and FM-CALL each get a root cause with the counts and the bad inputs, no longer
    "unexplained"."""
    pytest.importorskip("torch")
    from portspec.verify import verify

    tasks = [("small-torch-port", c) for c in ("FM-CONFIG", "FM-CALL")]
    results = {r.clause: r for r in verify([str(PORT)], tasks=tasks, isolate=False)}
    config, call = results["FM-CONFIG"].cause, results["FM-CALL"].cause
    assert config.startswith("FeatureMixing: configs not validated"), config
    assert "of 26 invalid configs," in config
    assert "accepted: n_series=0" in config and "raised RuntimeError instead: n_series=-2" in config
    assert call.startswith("FeatureMixing: calls not validated"), call
    assert "of 5 invalid calls, " in call and "accepted: integer dtype" in call


def test_a_layer_without_a_variant_space_is_probed_for_nothing_and_searched_for_nothing():
    """docs/adding-a-layer.md: a new layer's failures keep their clauses' own diagnoses until
    it has a variant space; the root-cause stage neither probes it with another layer's probe
    nor fails on it."""
    from portspec import rootcause

    other = SimpleNamespace(name="OtherLayer", prefix="OL")
    assert rootcause.probe(object(), other) == []
    found = rootcause.search(other, [])
    assert not found.fits and not found.says
    assert "no variant space for OtherLayer" in found.line()
