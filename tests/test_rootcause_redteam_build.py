"""Root causes of build mistakes that ports written outside the project made, each as a kind:

- initial weights drawn by another framework's default initialiser (Flax's LeCun normal, torch's
  U(±1/sqrt(fan_in)), He, Glorot normal, ...): named from the draws' moments, or said to fit none;
- get_config() leaving a parameter out: the message says what it returned (a Keras layer's name,
  trainable, dtype), and the native save that loses the parameter the same way is the same root
  cause;
- bad inputs that raise the wrong error are said to raise it, not to "get through";
- a canonical weight the port does not hold, while its weight map names it: one root cause,
  whether the counts or the refused weights show it.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from portspec.clauses import ClauseFailure
from portspec.layers import LAYERS
from portspec.report import _across_layers
from portspec.suite.areas import errors, serialization, structure
from portspec.suite.areas import init as init_area

GFF = LAYERS["GatedFeatureFusion"]
FIXTURES = Path(__file__).parent / "ports_fixtures"
PORTS = FIXTURES / "redteam_build.py"
KERAS_PORT = FIXTURES / "redteam_build_keras.py"
FAN_IN, FAN_OUT = 128, 64


# -- FM/GFF-INIT: which default initialiser the draws fit ----------------------------------------

def _truncated(rng, var, shape):
    """jax's and Keras's variance_scaling 'truncated_normal': N(0, 1) kept within ±2, times
    sqrt(var) / 0.8796 (the sd of N(0, 1) truncated at ±2)."""
    z = rng.standard_normal(4 * int(np.prod(shape)))
    z = z[np.abs(z) < 2][: int(np.prod(shape))]
    return (z * np.sqrt(var) / 0.87962566103423978).reshape(shape)


DRAWS = [
    ("LeCun-normal truncated", lambda r, s: _truncated(r, 1 / FAN_IN, s)),
    ("He-normal truncated", lambda r, s: _truncated(r, 2 / FAN_IN, s)),
    ("Glorot-normal truncated", lambda r, s: _truncated(r, 2 / (FAN_IN + FAN_OUT), s)),
    ("He/Kaiming-normal, untruncated", lambda r, s: r.normal(0, np.sqrt(2 / FAN_IN), s)),
    ("Glorot-normal, untruncated", lambda r, s: r.normal(0, np.sqrt(2 / (FAN_IN + FAN_OUT)), s)),
    ("LeCun-uniform", lambda r, s: r.uniform(-np.sqrt(3 / FAN_IN), np.sqrt(3 / FAN_IN), s)),
    ("He/Kaiming-uniform", lambda r, s: r.uniform(-np.sqrt(6 / FAN_IN), np.sqrt(6 / FAN_IN), s)),
    ("PyTorch's default Linear", lambda r, s: r.uniform(-1 / np.sqrt(FAN_IN),
                                                        1 / np.sqrt(FAN_IN), s)),
    ("the constant 0.5", lambda r, s: np.full(s, 0.5)),
]


@pytest.mark.parametrize("convention, fans", [("PyTorch's xavier_", (64 * 64, 2 * 64)),
                                               ("Keras's and jax's", (2 * 64, 2 * 64))])
def test_a_kernel_held_at_rank_3_is_named_by_the_fans_it_was_drawn_with(convention, fans):
    """A (128, 64) gate kernel held as (2, 64, 64) and drawn Glorot-uniform over that tensor:
    each framework counts its fans otherwise (PyTorch: dimensions past the second a receptive
    field; Keras and jax: those before the last two), and the reading names the one that
    fits. The spec's own Glorot-uniform over (128, 64) is not named."""
    from portspec.ports.base import identity

    entry = SimpleNamespace(pieces=(("kernel", identity),))
    handle = SimpleNamespace(held={"gate.kernel": entry},
                             _native=lambda: {"kernel": ((2, 64, 64), True)})
    rng = np.random.default_rng(0)
    limit = np.sqrt(6 / sum(fans))
    said = init_area._native_fans(handle, "gate.kernel", rng.uniform(-limit, limit, (128, 64)))
    assert said and f"fan_in {fans[0]} and fan_out {fans[1]} ({convention}" in said, said
    spec = np.sqrt(6 / (128 + 64))
    assert init_area._native_fans(handle, "gate.kernel",
                                  rng.uniform(-spec, spec, (128, 64))) is None


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name, draw", DRAWS, ids=[d[0] for d in DRAWS])
def test_each_default_initialiser_is_the_one_its_draws_fit(name, draw, seed):
    w = draw(np.random.default_rng(seed), (FAN_IN, FAN_OUT))
    assert init_area.glorot_uniform_problems(w), "the spec's own check must fail it first"
    fits = init_area.fitting(w, FAN_IN, FAN_OUT)
    assert [f for f, _ in fits if name in f] == [f for f, _ in fits], fits
    said, tails = init_area.identify([("gate.kernel", "glorot_uniform", fits)])
    verb = "set to" if name.startswith("the constant") else "drawn from"
    assert said.startswith(f"initial weights {verb} {name}") and not tails
    assert "instead of Glorot-uniform [gate.kernel: " in said


@pytest.mark.parametrize("seed", [0, 1])
def test_torch_s_linear_default_on_a_kernel_held_in_out_is_named_with_the_fan_it_read(seed):
    """nn.Linear's reset_parameters copied onto a raw (in, out) Parameter: torch.nn.init reads
    fan_in off the last axis, so the draw is U(±1/sqrt(fan_out)); named so, with the fan,
    where no default fits the kernel's own fans. At the kernel's real fan_in it is the plain
    default, not this."""
    rng = np.random.default_rng(seed)
    bound = 1 / np.sqrt(FAN_OUT)
    [(name, evidence)] = init_area.fitting(rng.uniform(-bound, bound, (FAN_IN, FAN_OUT)),
                                           FAN_IN, FAN_OUT)
    assert name.startswith("PyTorch's default Linear initialisation") and (
        f"fan_in read off the kernel's last axis ({FAN_OUT}, the output width" in name), name
    assert f"with fan_in {FAN_OUT}" in evidence
    bound = 1 / np.sqrt(FAN_IN)
    [(name, _)] = init_area.fitting(rng.uniform(-bound, bound, (FAN_IN, FAN_OUT)),
                                    FAN_IN, FAN_OUT)
    assert name == "PyTorch's default Linear initialisation U(±1/sqrt(fan_in))", name


@pytest.mark.parametrize("gain, said", [(np.sqrt(2), "sqrt(2), torch's calculate_gain('relu')"),
                                        (5 / 3, "5/3, torch's calculate_gain('tanh')")])
@pytest.mark.parametrize("shape", ["uniform", "normal"])
def test_glorot_times_a_gain_of_torch_s_is_named_with_its_gain(gain, said, shape):
    """torch's xavier_uniform_/xavier_normal_ with gain=calculate_gain(...): the shape's
    moments at gain^2 times Glorot's variance."""
    rng, sd = np.random.default_rng(3), gain * np.sqrt(2 / (FAN_IN + FAN_OUT))
    w = (rng.uniform(-np.sqrt(3) * sd, np.sqrt(3) * sd, (FAN_IN, FAN_OUT)) if shape == "uniform"
         else rng.normal(0, sd, (FAN_IN, FAN_OUT)))
    [(name, _)] = init_area.fitting(w, FAN_IN, FAN_OUT)
    glorot = "Glorot-uniform" if shape == "uniform" else "Glorot-normal, untruncated"
    assert name == f"{glorot} with gain {said}", name
    # at a gain torch does not name, nothing is
    assert init_area.fitting(w * 1.2, FAN_IN, FAN_OUT) == []


@pytest.mark.parametrize("draw", [
    lambda r, s: r.laplace(0, 0.05, s),  # no framework's default
    lambda r, s: 1.3 * _truncated(r, 1 / FAN_IN, s),  # LeCun's shape, not its variance
    lambda r, s: 0.02 + r.uniform(-1 / np.sqrt(FAN_IN), 1 / np.sqrt(FAN_IN), s),  # off-centre
    lambda r, s: np.clip(r.normal(0, np.sqrt(2 / FAN_IN), s), -0.15, 0.15),  # clipped He
])
def test_no_initialiser_is_named_where_a_moment_contradicts_it(draw):
    w = draw(np.random.default_rng(5), (FAN_IN, FAN_OUT))
    said, tails = init_area.identify([("gate.kernel", "glorot_uniform",
                                       init_area.fitting(w, FAN_IN, FAN_OUT))])
    assert said is None
    assert tails == ["gate.kernel fits none of the frameworks' default initialisers (uniform, "
                     "normal and 2-sd truncated normal at LeCun, He, Glorot and PyTorch Linear "
                     "scales; Keras's and jax's fixed-scale defaults; a normal or uniform of "
                     "a round scale; a constant)"]


def test_a_uniform_not_centred_on_0_is_named_by_its_ends():
    """torch.rand(...) * limit (U(0, limit)) and 2 * limit * rand (U(0, 2 limit)) are named
    by their ends as multiples of the Glorot limit; Glorot-uniform itself, and a uniform whose
    ends are no such multiples, are not."""
    rng, limit = np.random.default_rng(7), np.sqrt(6 / (FAN_IN + FAN_OUT))
    for hi, words in ((1, "U(0, limit)"), (2, "U(0, 2 limit)")):
        [(name, evidence)] = init_area.fitting(rng.uniform(0, hi * limit, (FAN_IN, FAN_OUT)),
                                               FAN_IN, FAN_OUT)
        assert name.startswith(f"a uniform not centred on 0, {words} with the Glorot limit")
        assert f"limit {limit:.4g}" in evidence
    assert init_area._shifted(rng.uniform(-limit, limit, FAN_IN * FAN_OUT), FAN_IN,
                              FAN_OUT) == []
    assert init_area._shifted(rng.uniform(0.5 * limit, 1.3 * limit, FAN_IN * FAN_OUT), FAN_IN,
                              FAN_OUT) == []


def test_an_orthogonal_kernel_is_named_and_no_random_draw_is():
    """Orthonormal columns (torch's orthogonal_, Keras's Orthogonal) are named, with a gain
    where the norm is not 1; independent draws of the same variance are not orthogonal."""
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.standard_normal((FAN_IN, FAN_OUT)))
    [(name, _)] = init_area.fitting(q, FAN_IN, FAN_OUT)
    assert name.startswith("an orthogonal initialiser (torch's orthogonal_")
    [(name, _)] = init_area.fitting(2 * q.T, FAN_OUT, FAN_IN)
    assert name.startswith("an orthogonal initialiser with gain 2 ")
    normal = rng.normal(0, np.sqrt(1 / FAN_IN), (FAN_IN, FAN_OUT))
    assert init_area._orthogonal(normal) == []


def test_a_vector_left_at_keras_s_add_weight_default_is_named():
    """add_weight without an initializer draws glorot_uniform, and Keras counts a (n,) shape
    as fans (n, n): U(±sqrt(3/n)). Named for a vector of the spec's (no fans of a Dense), not
    for a kernel, and not for a vector of another scale."""
    rng, n = np.random.default_rng(9), 192
    vector = rng.uniform(-np.sqrt(3 / n), np.sqrt(3 / n), n)
    names = [name for name, _ in init_area.fitting(vector, None, None)]
    assert names == [f"Glorot-uniform over its own ({n},) shape, fans ({n}, {n}): Keras's "
                     "add_weight default initializer, where no initializer is given"]
    assert init_area.fitting(vector * 1.5, None, None) == []


def test_a_weight_too_short_to_tell_goes_to_its_framework_s_own_default():
    """Several defaults fit 64 bias values; a PyTorch port's nn.Linear leaves them U(±1/sqrt(
    fan_in)), so a torch port's is put down to that, and a port of no known framework's is
    left open."""
    rng, bound = np.random.default_rng(10), 1 / np.sqrt(FAN_IN)
    b = ("dense1.bias", "zeros", init_area.fitting(rng.uniform(-bound, bound, FAN_OUT),
                                                   FAN_IN, None))
    assert len(b[2]) > 1
    said, tails = init_area.identify([b], "torch")
    assert said.startswith("initial weights drawn from PyTorch's default Linear "
                           "initialisation U(±1/sqrt(fan_in)), the port's framework's default")
    assert not tails
    assert init_area.identify([b])[0] is None


def test_a_bias_too_short_to_tell_goes_with_its_kernel_or_is_left_open():
    """torch draws a Linear's bias from its kernel's U(±1/sqrt(fan_in)); 64 values fit several
    defaults, so the bias is put down to the one its kernel fits, and alone it is left open."""
    rng = np.random.default_rng(0)
    bound = 1 / np.sqrt(FAN_IN)
    kernel = rng.uniform(-bound, bound, (FAN_IN, FAN_OUT))
    bias = rng.uniform(-bound, bound, FAN_OUT)
    k = ("dense1.kernel", "glorot_uniform", init_area.fitting(kernel, FAN_IN, FAN_OUT))
    b = ("dense1.bias", "zeros", init_area.fitting(bias, FAN_IN, None))
    assert len(b[2]) > 1
    said, tails = init_area.identify([k, b])
    assert said.startswith("initial weights drawn from PyTorch's default Linear")
    assert "instead of Glorot-uniform / zeros [dense1.kernel: " in said and not tails
    assert "; dense1.bias: variance " in said
    # the same default kept in the other layer's Linear: one root cause for the port
    g = ("gate.kernel", "glorot_uniform", init_area.fitting(
        rng.uniform(-bound, bound, (FAN_IN, FAN_OUT)), FAN_IN, FAN_OUT))
    [(_, merged, ids)] = _across_layers([
        ("p", f"FeatureMixing: {said}", ["FM-INIT"]),
        ("p", f"GatedFeatureFusion: {init_area.identify([g, b])[0]}", ["GFF-INIT"])])
    assert merged.startswith("FeatureMixing and GatedFeatureFusion: initial weights drawn from "
                             "PyTorch's default Linear") and ids == ["FM-INIT", "GFF-INIT"]
    said, tails = init_area.identify([b])
    assert said is None and tails[0].startswith("dense1.bias fits ")
    assert "(too few values to tell)" in tails[0]


def test_a_keras_vector_too_short_to_tell_goes_to_add_weight_s_default():
    """A (64,) gate bias made by add_weight without an initializer (U(±sqrt(3/64))) fits
    several defaults, He-uniform over the kernel's fan_in 128 being the same distribution; a
    Keras port's is put down to add_weight's default, a torch port's is not."""
    rng, n = np.random.default_rng(11), 64
    b = ("gate.bias", "zeros", init_area.fitting(rng.uniform(-np.sqrt(3 / n), np.sqrt(3 / n), n),
                                                 2 * n, None))
    assert len(b[2]) > 1
    said, tails = init_area.identify([b], "keras")
    assert said.startswith(f"initial weights drawn from Glorot-uniform over its own ({n},) "
                           "shape, fans (64, 64): Keras's add_weight default initializer, where "
                           "no initializer is given, the port's framework's default instead of "
                           "zeros") and not tails, said
    assert init_area.identify([b], "torch")[0] is None


@pytest.mark.parametrize("draw, name", [
    (lambda r, s: r.normal(0, 0.02, s), "N(0, 0.02^2), a fixed standard deviation 0.02"),
    (lambda r, s: r.uniform(-0.1, 0.1, s), "U(±0.1), a fixed bound"),
    (lambda r, s: r.standard_normal(s), "N(0, 1^2), a fixed standard deviation 1"),
])
def test_a_round_scale_not_of_the_fans_is_named(draw, name):
    """normal_(std=0.02) (the transformers' initializer_range), uniform_(-0.1, 0.1), a bare
    randn: a scale the port's code fixes, which no fan gives; not named where the spread is
    a round scale's but the shape another's (a Laplace of sd 0.02)."""
    rng = np.random.default_rng(12)
    [(found, evidence)] = init_area.fitting(draw(rng, (FAN_IN, FAN_OUT)), FAN_IN, FAN_OUT)
    assert found.startswith(name) and "kurtosis" in evidence, found
    assert init_area.fitting(rng.laplace(0, 0.02 / np.sqrt(2), (FAN_IN, FAN_OUT)),
                             FAN_IN, FAN_OUT) == []


def test_the_clause_makes_the_fit_its_checked_diagnosis():
    case = GFF.init_case()
    table = GFF.weight_table(case.config, case.input_shapes)
    shape = next(w.shape for w in table if w.name == "gate.kernel")
    weights = {"gate.kernel": _truncated(np.random.default_rng(3), 1 / shape[0], shape),
               "gate.bias": np.zeros(shape[1])}
    ctx = SimpleNamespace(spec=GFF, build=lambda c, seed: SimpleNamespace(
        get_weights=lambda: weights))
    with pytest.raises(ClauseFailure) as failed:
        init_area.init(ctx)
    assert failed.value.diagnosis.startswith(
        "initial weights drawn from LeCun-normal truncated at 2 sd")
    assert failed.value.details.get("checked") is True


def test_flax_default_kernel_init_is_the_root_cause():
    pytest.importorskip("flax")
    from portspec.verify import verify

    [r] = verify([str(PORTS)], tasks=[("lecun-init", "GFF-INIT")], isolate=False)
    assert r.status == "failed"
    assert r.cause.startswith("GatedFeatureFusion: initial weights drawn from LeCun-normal "
                              "truncated at 2 sd (Flax's nnx.Linear default"), r.cause
    assert r.cause.endswith("instead of Glorot-uniform [gate.kernel: variance 0.007722, "
                            "1/fan_in = 0.007812; kurtosis 2.38, a normal truncated at 2 sd "
                            "has 2.37]"), r.cause


# -- FM/GFF-CONFIG-ROUNDTRIP and -SAVE-NATIVE: what get_config() returned --------------------------

def test_the_message_says_what_get_config_returned():
    own = {"name": "gff", "trainable": True, "dtype": "float32"}
    handle = SimpleNamespace(layer="GatedFeatureFusion", obj=None,
                             adapter=SimpleNamespace(config_of=lambda layer, obj: own))
    assert serialization._returned(handle, {}, {"activation": "tanh"}) == (
        "the keys name, trainable, dtype: none of the spec's parameters (missing: activation)")
    own["activation"] = "tanh"
    assert serialization._returned(handle, {"activation": "tanh"}, {"activation": "tanh"}) == (
        "the keys name, trainable, dtype, activation: of the spec's parameters "
        "{'activation': 'tanh'}")
    # a handle that reports the spec's parameters only: what it returned, as it is
    bare = SimpleNamespace()
    assert serialization._returned(bare, {}, {"activation": "tanh"}) == (
        "{} (missing: activation)")


@pytest.mark.home("keras-tensorflow")  # a Keras port (tests/conftest.py)
def test_a_native_save_losing_what_get_config_leaves_out_is_that_root_cause():
    pytest.importorskip("keras")
    from portspec.report import root_causes
    from portspec.verify import verify

    tasks = [("config-without-activation", c)
             for c in ("GFF-CONFIG-ROUNDTRIP", "GFF-SAVE-NATIVE")]
    results = verify([str(KERAS_PORT)], tasks=tasks, isolate=False)
    failed = {r.clause: r for r in results if r.status == "failed"}
    assert set(failed) == {"GFF-CONFIG-ROUNDTRIP", "GFF-SAVE-NATIVE"}
    assert "it computes as a layer built from {'activation': 'sigmoid'}" in (
        failed["GFF-SAVE-NATIVE"].message)
    assert "get_config() returned the keys name, trainable, dtype: none of the spec's " \
           "parameters (missing: activation)" in failed["GFF-CONFIG-ROUNDTRIP"].message
    [(_, cause, ids)] = root_causes(results)
    assert cause.startswith("GatedFeatureFusion: get_config leaves out activation")
    assert sorted(ids) == ["GFF-CONFIG-ROUNDTRIP", "GFF-SAVE-NATIVE"]


def test_a_loaded_layer_that_is_not_the_reported_configs_gets_no_such_diagnosis():
    """The hypothesis: the loaded layer computes what one built from the reported config does.
    Where it computes something else, get_config is not named."""
    out = {"sigmoid": np.zeros(3), "tanh": np.ones(3)}

    def build(case, config=None, **_):
        act = (config or case.config).get("activation", "sigmoid")
        return SimpleNamespace(forward=lambda x, training: out[act], set_weights=lambda w: None,
                               get_config=lambda: {}, get_weights=dict)

    ctx = SimpleNamespace(spec=GFF, build=build)
    case = next(c for c in GFF.config_cases() if c.config.get("activation") == "tanh")
    saved = build(case, {"activation": "tanh"})
    as_sigmoid = SimpleNamespace(forward=lambda x, training: out["sigmoid"])
    said = serialization._saved_as_reported(ctx, case, saved, as_sigmoid, None)
    assert said == ({"activation": "sigmoid"},
                    "get_config leaves out activation (built with 'sigmoid')")
    other = SimpleNamespace(forward=lambda x, training: np.full(3, 2.0))
    assert serialization._saved_as_reported(ctx, case, saved, other, None) is None


# -- FM/GFF-CONFIG and -CALL: what happened to each bad input -------------------------------------

def test_bad_inputs_that_raise_the_wrong_error_are_said_to_raise_it():
    failed = [("rank 1 inputs", "accepted", ""), ("mismatched shapes", "RuntimeError", ""),
              ("integer dtype", "RuntimeError", ""), ("one input", "unnamed", "")]
    said = errors._not_validated(failed, 8, "call", "the shape at fault")
    assert "get through" not in said
    assert said.endswith(
        "of 8 invalid calls, 1 accepted: rank 1 inputs; 2 raised RuntimeError instead: "
        "mismatched shapes, integer dtype; 1 raised a ValueError or TypeError that does not "
        "name the shape at fault: one input")


# -- a weight the port does not hold, its weight map naming it: one root cause ---------------------

REFUSAL = ("ValueError: the weight map names 'gate.bias' for 'gate.bias', but the port has "
           "only ['gate.kernel']")


def test_a_refusal_for_a_weight_the_port_lacks_is_worded_as_the_counts_word_it():
    by_refusal = structure.unheld(GFF, REFUSAL)
    ctx, case = SimpleNamespace(spec=GFF), GFF.cases()[0]
    f = case.input_shapes[0][-1]
    by_counts = structure._holding(ctx, case, SimpleNamespace(param_counts=lambda: (2 * f * f, 0)),
                                   None)
    what = "the port holds no gate.bias (where it really has none, the adapter's weight map "
    assert by_refusal.startswith(what) and by_counts.startswith(what)
    assert by_refusal.split(" [")[0] == by_counts.split(" [")[0]
    assert "(ValueError: the weight map names 'gate.bias'" in by_refusal
    # the port holds a path more: the weight may be held under another name, not missing
    assert structure.unheld(GFF, REFUSAL.replace("['gate.kernel']",
                                                 "['gate.b', 'gate.kernel']")) is None
    assert structure.unheld(GFF, "ValueError: shapes (3,) and (4,) do not match") is None


def test_one_layers_evidence_from_several_clauses_merges_into_one_root_cause():
    causes = [("p", "GatedFeatureFusion: the port holds no gate.bias (x) [counts]", ["A"]),
              ("p", "GatedFeatureFusion: the port holds no gate.bias (x) [refusal]", ["B", "C"])]
    assert _across_layers(causes) == [
        ("p", "GatedFeatureFusion: the port holds no gate.bias (x) [counts; refusal]",
         ["A", "B", "C"])]
    # other words: two root causes
    causes[1] = ("p", "GatedFeatureFusion: the port holds no gate.kernel (x) [refusal]", ["B"])
    assert len(_across_layers(causes)) == 2


@pytest.mark.home("flax")  # a Flax port (tests/conftest.py)
def test_a_gate_without_bias_named_in_the_weight_map_has_one_root_cause():
    pytest.importorskip("flax")
    from portspec.report import root_causes
    from portspec.verify import verify

    clauses = ("GFF-WEIGHTS", "GFF-PARAMS", "GFF-INIT", "GFF-FORWARD")
    results = verify([str(PORTS)], tasks=[("no-bias-mapped", c) for c in clauses],
                     isolate=False)
    assert all(r.status == "failed" for r in results)
    [(_, cause, ids)] = root_causes(results)
    assert cause.startswith("GatedFeatureFusion: the port holds no gate.bias"), cause
    assert "(trainable, non-trainable) = " in cause and "the spec's weights refused" in cause
    assert sorted(ids) == sorted(clauses)


# -- FM-WEIGHTS-ROUNDTRIP judged by outputs the layer itself does not repeat ----------------------

@pytest.mark.parametrize("port, words", [
    ("flax-dropout-flag-inverted", "the training flag is inverted for dropout"),
    ("flax-dropout-always", "active in inference"),
])
def test_a_round_trip_of_a_layer_random_in_inference_has_dropouts_root_cause(port, words):
    """Dropout in inference makes the outputs before and after a weights round trip differ;
    the clause tests why (two calls of the saved layer differ, at dropout 0 they agree) and
    words it as FM-DETERMINISM does: one root cause."""
    pytest.importorskip("flax")
    from portspec.report import root_causes
    from portspec.verify import verify

    runtime = FIXTURES / "redteam_runtime.py"
    results = verify([str(runtime)], tasks=[(port, c) for c in ("FM-WEIGHTS-ROUNDTRIP",
                                                                 "FM-DETERMINISM")],
                     isolate=False)
    assert all(r.status == "failed" for r in results)
    trip = next(r for r in results if r.clause == "FM-WEIGHTS-ROUNDTRIP")
    assert "two inference calls of the saved layer differ too" in trip.message
    [(_, cause, ids)] = root_causes(results)
    assert words in cause and sorted(ids) == ["FM-DETERMINISM", "FM-WEIGHTS-ROUNDTRIP"]


def test_a_round_trip_saves_before_an_inference_call_that_moves_the_statistics():
    """A BatchNorm that updates its moving statistics in inference fails FM-BN-FROZEN; the
    weights round trip saves what was set before any call, so it passes: before, it failed
    with "norm.moving_mean differs by up to 3.23", which read as a serialisation bug."""
    pytest.importorskip("torch")
    from portspec.verify import verify

    port = "moving-stats-updated-in-inference"
    results = {r.clause: r for r in verify(
        [str(FIXTURES / "single_mistakes_torch.py")],
        tasks=[(port, c) for c in ("FM-WEIGHTS-ROUNDTRIP", "FM-BN-FROZEN")], isolate=False)}
    assert results["FM-BN-FROZEN"].status == "failed", results
    assert results["FM-WEIGHTS-ROUNDTRIP"].status == "passed", results


def test_a_normalisation_vector_held_per_channel_or_per_step_is_read_as_such():
    """The spec's normalisation weights hold one value per flattened (time, channel) feature;
    held at (n_series,) or (input_size,) they are per-channel or per-step statistics; a
    config whose two sizes are equal names neither."""
    from portspec.suite.areas.structure import _dims

    config = {"n_series": 5, "input_size": 6, "dropout": 0.1, "ff_dim": 16}
    assert _dims((5,), (30,), config).startswith(" (one per channel (n_series): statistics "
                                                 "per channel over the batch and time")
    assert _dims((6,), (30,), config).startswith(" (one per time step (input_size)")
    assert _dims((7,), (30,), config) == ""
    assert _dims((5,), (25,), {**config, "input_size": 5}) == ""


def test_a_site_that_shows_no_decision_contradicts_no_rate():
    """Site 2 dropping every unit leaves site 1 no decision to count: no rate is read there,
    and no division by zero (a branch scaled by 0 as built shows that)."""
    from portspec.suite.areas import dropout

    assert dropout._rate_ok(0, 0, 0.3)
    labels = np.array(["site 2 dropped"] * 64)
    assert dropout._rate_problems(labels) == ["site 2 (after the second Dense) drops 1.000, "
                                              "p = 0.3"]
    assert dropout._rate_diagnosis(1.0, None) is None
