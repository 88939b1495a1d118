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

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from portspec import registry, rootcause
from portspec.layers import LAYERS
from portspec.suite.areas import errors, structure

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
    # the refusal says both shapes: the port's, and the spec's it was given
    assert swap["error"].startswith("ValueError: 'norm.gamma' maps to gamma of shape (96,) for "
                                    "the spec's (30,)"), swap["error"]
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


def test_a_nan_the_compiled_call_gives_as_the_eager_one_passes_fm_compile(ports):
    """Moving statistics exchanged in the map: the moving variance read from the mean's buffer
    is negative and the inference output NaN, compiled and eager alike. A NaN given again at
    the same place is the same result: FM-COMPILE passes (the compiler is not at fault) and
    the forward clauses fail on it, one root cause. A NaN on one side only still fails
    (tests/test_nan_readings.py)."""
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    port = ports["moving-stats-swapped-in-map"]
    items = {i[1].id: i for i in work_items(None)}
    assert run_clause(port, *items["FM-COMPILE"]).status == "passed"
    inference = run_clause(port, *items["FM-INFERENCE"])
    assert inference.status == "failed" and "nan" in inference.message, inference
    found = rootcause.search(FM, rootcause.probe(port, FM))
    assert found.diff == {"map_swap": "stats"}, found.line()
    assert rootcause.explains(FM, found, inference)


def _adapter_mistake(ports, mistake):
    """The conforming port with one adapter mistake: ``names`` (no config_names for a
    constructor of other names), ``map`` (a typo in a weight map path), ``call`` (a call that
    raises whatever the inputs)."""
    base = type(ports["conforming"])
    fm_class = base.fm
    body = {"name": f"adapter-{mistake}", "layers": ("FeatureMixing",)}
    if mistake == "names":
        def construct(self, layer, config, *, input_shapes, dtype):
            def renamed(channels, length, p, hidden):
                return fm_class(channels, length, p, hidden)
            return renamed(**config)
        body["construct"] = construct
    elif mistake == "map":
        fm_map = dict(base.weights["FeatureMixing"])
        fm_map["dense1.kernel"] = ("lin1.weigth", fm_map["dense1.kernel"][1])
        body["weights"] = {**base.weights, "FeatureMixing": fm_map}
    else:
        def call(self, module, inputs, *, training):
            return module(inputs, training)  # the module's forward takes one argument
        body["call"] = call
    return type(f"Adapter{mistake.title()}", (base,), body)()


@pytest.mark.parametrize("mistake, says, clauses", [
    ("names", "the adapter cannot build the layer (TypeError: ", ("FM-CONFIG", "FM-CALL")),
    ("map", "the adapter's weight map does not fit the port's weights (ValueError: the weight "
            "map names 'lin1.weigth'", ("FM-INFERENCE",)),
    ("call", "every call of the layer raises, in float32 as in float64 (TypeError: ",
     ("FM-CALL", "FM-INFERENCE")),
])
def test_an_adapter_that_cannot_build_set_or_call_is_one_cause_that_says_which(
        ports, mistake, says, clauses):
    """Where no call of the probe runs, the cause says at which step the port refused: the
    build (with what maps the spec's config names where the constructor names one), the weight
    map, or every call whatever its dtype; FM-CONFIG and FM-CALL, whose bad inputs meet the
    same refusal, say that the valid input is refused too, and are the same cause."""
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    port = _adapter_mistake(ports, mistake)
    found = rootcause.search(FM, rootcause.probe(port, FM))
    assert found.raised and found.raised.startswith(says), found.line()
    if mistake == "names":
        assert "config_names maps each of the spec's config names" in found.raised
    items = {i[1].id: i for i in work_items(None)}
    for clause in clauses:
        result = run_clause(port, *items[clause])
        assert result.status == "failed", result
        if clause == {"names": "FM-CONFIG", "call": "FM-CALL"}.get(mistake):  # bad inputs'
            assert "is refused as well" in result.message, result.message  # own errors
        assert rootcause.explains(FM, found, result), (clause, result.message, found.line())


def test_a_refusal_met_at_another_weight_is_the_same_refusal():
    """FM-VECTORS sets the weights in the file's order and meets the map's refusal at another
    weight than the probe did: the same error, another quoted name."""
    raised = ("the adapter's weight map does not fit the port's weights (ValueError: the weight "
              "map names 'norm.gamma' for 'norm.gamma', but the port has only ['a', 'b'])")
    assert rootcause._same_error("ValueError: the weight map names 'dense1.bias' for "
                                 "'dense1.bias', but the port has only ['a', 'b']", raised)
    assert not rootcause._same_error("ValueError: weight 'x' has shape (3,), got (4,)", raised)
    assert not rootcause._same_error("TypeError: the weight map names 'x' for 'x'", raised)
    # an apostrophe is no quote: the split refusal, quoted after "the spec's", still matches
    split = ("the spec's weights refused (ValueError: 'gate.kernel' maps to gate_a.weight of "
             "shape (6, 6); ...)")
    assert rootcause._same_error("ValueError: 'gate.kernel' maps to gate_a.weight of shape (6, "
                                 "6)", split)


def test_a_misspelt_path_in_the_weight_map_is_shown_the_path_it_likely_meant():
    """A weight map naming a path the port lacks: the refusal names the nearest of the port's
    paths the map leaves unnamed (a typo, 'running_variance' for 'running_var'), and none
    where every other path is another weight's (the port holds no such weight)."""
    torch = pytest.importorskip("torch")
    from portspec.ports import TorchPortAdapter, identity, transpose

    class Norm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(4)
            self.fc = torch.nn.Linear(2, 3)

    def adapter(weights):
        class Port(TorchPortAdapter):
            name, layers = "typo", ("FeatureMixing",)

            def construct(self, layer, config, *, input_shapes, dtype):
                return Norm()
        Port.weights = {"FeatureMixing": weights}
        return Port()

    case = FM.cases()[0]

    def refusal(weights):
        handle = adapter(weights).build("FeatureMixing", case.config,
                                        input_shapes=case.input_shapes, seed=0)
        with pytest.raises(ValueError) as info:
            handle._entry("norm.moving_variance")
        return str(info.value)

    both = {"norm.gamma": ("bn.weight", identity), "dense1.kernel": ("fc.weight", transpose)}
    said = refusal({**both, "norm.moving_variance": ("bn.running_variance", identity)})
    assert ("the port has no 'bn.running_variance' (did you mean 'bn.running_var'?): it has "
            "only [") in said, said
    # 'bn.weight' is near 'bn.weights' but the map names it for norm.gamma: no guess
    said = refusal({**both, "norm.moving_variance": ("bn.weights", identity)})
    assert "did you mean" not in said and "but the port has only [" in said, said
    assert structure._MAP_REFUSAL.search(said) and structure._MAP_REFUSAL.search(
        refusal({**both, "norm.moving_variance": ("bn.running_variance", identity)}))


def test_a_path_through_a_layer_keras_named_says_to_name_it():
    """A Keras port whose Dense layers are built without names inside TimeDistributed: Keras
    names them dense, dense_1, ... numbered anew in every build, and the map skipped that part.
    The refusal guesses the path under the same sublayer ('fc1.dense_N.kernel', not fc2's)
    and says to name the inner layer and map the path that name makes."""
    keras = pytest.importorskip("keras")

    from portspec.ports import KerasPortAdapter

    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.fc1 = keras.layers.TimeDistributed(keras.layers.Dense(3), name="fc1")
            self.fc2 = keras.layers.TimeDistributed(keras.layers.Dense(2), name="fc2")

        def build(self, input_shape):
            self.fc1.build((None, 4, 2))
            self.fc2.build((None, 4, 3))

        def call(self, x):
            return self.fc2(self.fc1(x))

    class Port(KerasPortAdapter):
        name, layers = "unnamed-inner", ("FeatureMixing",)
        weights = {"FeatureMixing": {"dense1.kernel": "fc1.kernel"}}

        def construct(self, layer, config, *, input_shapes, dtype):
            return Block()

    case = FM.cases()[0]
    said = []
    for _ in range(2):
        handle = Port().build("FeatureMixing", case.config, input_shapes=case.input_shapes,
                              seed=0)
        with pytest.raises(ValueError) as info:
            handle._entry("dense1.kernel")
        said.append(str(info.value))
    assert all(re.search(r"did you mean 'fc1\.dense(_\d+)?\.kernel'\? 'dense(_\d+)?' is "
                         r"Keras's name for a layer built without one, new in every build: "
                         r"name it \('dense'\) and map 'fc1\.dense\.kernel'\)", s) for s in said)
    assert said[0] != said[1]  # the number moved: the reason a map cannot name it

    class Named(Block):  # a name the port gave, though it reads like Keras's own
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.fc1 = keras.layers.TimeDistributed(keras.layers.Dense(3, name="dense_2"),
                                                    name="fc1")

    Port.construct = lambda self, layer, config, **kw: Named()
    handle = Port().build("FeatureMixing", case.config, input_shapes=case.input_shapes, seed=0)
    with pytest.raises(ValueError) as info:
        handle._entry("dense1.kernel")
    assert "(did you mean 'fc1.dense_2.kernel'?)" in str(info.value), str(info.value)


def test_a_kernel_the_map_transposes_where_the_port_holds_the_spec_layout_is_said_so():
    """The map says transpose for a kernel the port holds (in, out), the spec's layout: the
    refusal says to map it with identity, not with transpose."""
    torch = pytest.importorskip("torch")
    from portspec.ports import TorchPortAdapter, transpose

    class Held(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.k = torch.nn.Parameter(torch.zeros(5, 16))  # (in, out), as the spec

    class Port(TorchPortAdapter):
        name, layers = "transposed-twice", ("FeatureMixing",)
        weights = {"FeatureMixing": {"dense1.kernel": ("k", transpose)}}

        def construct(self, layer, config, *, input_shapes, dtype):
            return Held()

    case = next(c for c in FM.cases() if c.config["n_series"] == 5
                and c.config["ff_dim"] == 16)
    handle = Port().build("FeatureMixing", case.config, input_shapes=case.input_shapes, seed=0)
    with pytest.raises(ValueError) as info:
        handle.set_weights({"dense1.kernel": np.zeros((5, 16))})
    assert ("the port holds it at the spec's shape, and the map transposes it: map it with "
            "portspec.ports.identity") in str(info.value), str(info.value)


def test_a_layer_that_raises_when_built_is_found_at_its_line(ports):
    """The port's own layer raises in its constructor (a tf.keras habit Keras 3 refuses, say):
    the cause says the layer raises when built, and at which line of the port, not that the
    adapter cannot build it."""
    base = type(ports["conforming"])

    class Layer(base.fm):
        def __init__(self, *args, **kwargs):
            raise TypeError("int() argument must be a string, not 'list'")  # the line named

    port = type("RaisesWhenBuilt", (base,), {"name": "raises-when-built", "fm": Layer,
                                              "layers": ("FeatureMixing",)})()
    found = rootcause.search(FM, rootcause.probe(port, FM))
    line = Layer.__init__.__code__.co_firstlineno + 1
    assert found.raised.startswith("building the port's layer raises (TypeError: int() "), found
    assert found.raised.endswith(f"at the port's {Path(__file__).name}:{line} `raise TypeError("
                                 "\"int() argument must be a string, not 'list'\")`"), found.raised


def test_a_build_refused_for_one_config_value_is_said_to_be_the_build(ports):
    """A gate that refuses activation='softmax' in its constructor (torch's calculate_gain
    has no gain for it): the clauses that build at softmax fail, and their cause says that
    building at that config raises, not that a call does."""
    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    base = type(ports["conforming"])

    class Gate(base.gff):
        def __init__(self, features, activation="sigmoid"):
            if activation == "softmax":
                raise ValueError("Unsupported nonlinearity softmax")
            super().__init__(features, activation)

    port = type("RefusesSoftmax", (base,), {"name": "refuses-softmax", "gff": Gate,
                                            "layers": ("GatedFeatureFusion",)})()
    items = {i[1].id: i for i in work_items(None)}
    result = run_clause(port, *items["GFF-ACTIVATIONS"])
    line = Gate.__init__.__code__.co_firstlineno + 2  # the raise
    assert result.details == {"raised_building": {"activation": "softmax"},
                              "at": [str(Path(__file__).resolve()), line]}, result
    from portspec.isolation import items_for

    (said,) = rootcause.attach([run() for _, run in items_for(port, tasks=[
        (port.name, "GFF-ACTIVATIONS")])])
    assert said.cause == ("GatedFeatureFusion: building the layer with activation='softmax' "
                          f"raises ValueError at the port's {Path(__file__).name}:{line}, where "
                          "the spec's layer builds: the port's own error [Unsupported "
                          "nonlinearity softmax]"), said.cause
    # a call that raises after a build that raised and was caught is still a call's error
    assert run_clause(port, *items["GFF-INIT"]).status == "passed"


def test_a_call_returning_a_pair_is_said_to_return_two_values(ports):
    """An adapter whose call returns (output, gate): one cause saying so, not a stack of the
    two read as one output (a shape (2, ...)) and errors raised in portspec's own code."""
    base = type(ports["conforming"])

    def call(self, module, inputs, *, training):
        out = base.call(self, module, inputs, training=training)
        return out, out

    port = type("ReturnsPair", (base,), {"name": "returns-pair", "call": call,
                                         "layers": ("FeatureMixing",)})()
    found = rootcause.search(FM, rootcause.probe(port, FM))
    assert found.raised.startswith("every call of the layer raises, in float32 as in float64 "
                                   "(TypeError: the call returned a tuple of 2 ((8, 6, 5), "
                                   "(8, 6, 5)): the layer has one output, return it alone)"), \
        found.raised


def test_a_port_that_sets_torchs_default_dtype_is_said_to(ports):
    """A port module calling torch.set_default_dtype(torch.float64) at import: FM-DTYPE's
    default-dtype call finds float64 weights, and says why (checked: the process's default),
    where it was unexplained."""
    import torch

    from portspec.suite.checks import work_items
    from portspec.suite.runner import run_clause

    items = {i[1].id: i for i in work_items(None)}
    torch.set_default_dtype(torch.float64)
    try:
        result = run_clause(ports["conforming"], *items["FM-DTYPE"])
    finally:
        torch.set_default_dtype(torch.float32)
    assert result.status == "failed" and "dtype float64, expected float32" in result.message
    assert result.diagnosis.startswith("torch's default dtype is float64 in the port's process "
                                       "(torch.set_default_dtype(float64)"), result.diagnosis
    assert run_clause(ports["conforming"], *items["FM-DTYPE"]).status == "passed"


@pytest.mark.parametrize("port, says, cause", [
    ("moving-stats-updated-in-inference", "each inference call changes what the next computes",
     "FeatureMixing: moving statistics updated in inference calls too"),
    ("dropout-in-inference", "two inference calls with the same weights and input differ",
     "FeatureMixing: dropout active in inference"),
])
def test_a_repeated_call_that_differs_is_not_put_down_to_a_kept_shape(ports, port, says, cause):
    """FM-SHAPE calls one layer at batch 1, 3, then 1 again; where the last differs from the
    first, a layer that updates its state in inference, or draws a dropout there, is told from
    one that keeps a shape from its first call, and the failure points to that cause."""
    from portspec.isolation import items_for

    results = rootcause.attach([run() for _, run in items_for(ports[port], tasks=[
        (port, c) for c in ("FM-SHAPE", "FM-DROPOUT-INFERENCE", "FM-BN-FROZEN")])])
    shape = next(r for r in results if r.clause == "FM-SHAPE")
    assert shape.status == "failed" and says in shape.message, shape.message
    assert shape.cause.startswith(cause), shape.cause
