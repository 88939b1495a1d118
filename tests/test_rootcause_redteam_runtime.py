"""Run-time hypotheses tested both ways on ports of the kinds a review found misjudged.

- Precision: a float64 call is called "not computed in float64" only when one of its parts
  (a weight, an input) fails to follow a change of 1e-9 that it follows, scaled, at 1e-3: the
  port is compared with itself, so a float64 port of another function (gelu for relu) is not
  float32, and float32 moving statistics (nnx.BatchNorm's, whatever param_dtype says) are.
  That one mistake is one root cause over every clause it fails.
- The training flag: "batch statistics in inference" and "moving statistics in training" are
  told apart as an inverted flag or an ignored one by re-running the port in the other mode.
- Dropout's flag: dropout in inference and none in training is an inverted flag.

Ports: tests/ports_fixtures/redteam_runtime.py (Flax NNX).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.home("flax")  # Flax ports (tests/conftest.py)
pytest.importorskip("flax")

from portspec import isolation, registry, rootcause  # noqa: E402
from portspec.suite.areas import dropout, numerics  # noqa: E402

PORTS = Path(__file__).parent / "ports_fixtures" / "redteam_runtime.py"


@pytest.fixture(scope="module")
def ports():
    return {a.name: a for a in registry.load_file(str(PORTS))}


def _results(adapter, *clauses, probe=False):
    """{clause: result} through the worker's diagnoses and the root-cause stage (with the
    probe the variant search fits, when ``probe``)."""
    tasks = [(adapter.name, c) for c in clauses]
    if probe:
        tasks.append((adapter.name, rootcause.PROBE + "FeatureMixing"))
    return {r.clause: r for r in rootcause.attach(
        [run() for _, run in isolation.items_for(adapter, tasks=tasks)])}


# -- the precision hypothesis, on plain functions --------------------------------------------

def _gelu(v):
    return 0.5 * v * (1.0 + np.tanh(0.7978845608 * (v + 0.044715 * v ** 3)))


def _layer(w, x, narrow=()):
    """A small float64 layer (gelu, not the spec's relu), ``narrow`` weights held in float32."""
    w = {k: (np.asarray(v, np.float32).astype(np.float64) if k in narrow else v)
         for k, v in w.items()}
    return _gelu(x @ w["kernel"] + w["bias"]) * w["scale"]


_RNG = np.random.default_rng(3)
_W = {"kernel": _RNG.standard_normal((5, 4)), "bias": _RNG.standard_normal(4),
      "scale": _RNG.standard_normal(4)}
_X = _RNG.standard_normal((8, 5))


def test_another_function_in_float64_is_float64():
    """No oracle enters: the gelu layer follows its own changes linearly at 1e-9."""
    figures = {}
    assert numerics.float32_parts(_layer, _W, _X, figures) == []
    assert max(f for f, _ in figures.values()) < 1e-3  # float64 roundoff and gelu's curvature


@pytest.mark.parametrize("spread", [3e-3, 1e-2, 3e-2])
def test_kinks_crossed_are_not_float32(spread):
    """|x @ k + b| with every pre-activation within ``spread`` of the kink: changes of 1e-3
    cross kinks that 1e-9 ones do not, in float64; that is not rounding noise."""
    rng = np.random.default_rng(1)
    k, x0 = rng.standard_normal((5, 4)), rng.standard_normal(5)
    x = x0 + spread * rng.standard_normal((64, 5))
    found = numerics.float32_parts(lambda w, v: np.abs(v @ w["kernel"] + w["bias"]),
                                   {"kernel": k, "bias": -(x0 @ k)}, x)
    assert not found


def test_a_weight_held_in_float32_is_named():
    found = numerics.float32_parts(lambda w, x: _layer(w, x, narrow=("scale",)), _W, _X)
    assert found == ["scale"]


def test_an_input_cast_to_float32_is_named():
    found = numerics.float32_parts(
        lambda w, x: _layer(w, np.asarray(x, np.float32).astype(np.float64)), _W, _X)
    assert found == ["input"]


def test_a_random_call_is_not_judged():
    rng = np.random.default_rng(0)
    assert numerics.float32_parts(
        lambda w, x: _layer(w, x) * rng.uniform(0.5, 1.5, (8, 4)), _W, _X) is None


# -- float32 moving statistics: one mistake, one root cause --------------------------------

F32_CLAUSES = ("FM-INFERENCE", "FM-BN-UPDATE", "FM-BN-BATCH1", "FM-BN-EPSILON", "FM-DTYPE")


def test_float32_moving_statistics_are_one_root_cause(ports):
    """nnx.BatchNorm's float32 statistics in a float64 layer fail five clauses; the precision
    re-run confirms it where the clause compares a float64 call (its moving statistics read
    back count, for a batch of one), and all five share one root cause. FM-DROPOUT-INFERENCE,
    which compares the layer with itself at dropout 0, passes."""
    found = _results(ports["flax-stats-float32"], *F32_CLAUSES, "FM-DROPOUT-INFERENCE",
                     probe=True)
    assert {c for c, r in found.items() if r.status == "failed"} == set(F32_CLAUSES)
    assert found["FM-DROPOUT-INFERENCE"].status == "passed"
    for clause in ("FM-INFERENCE", "FM-BN-BATCH1", "FM-BN-EPSILON", "FM-DTYPE"):
        assert found[clause].details.get("checked"), clause
        assert numerics.NOT_FLOAT64 in found[clause].diagnosis, clause
    causes = {r.cause for r in found.values() if r.status == "failed"}
    assert len(causes) == 1, causes
    (cause,) = causes
    assert "float32" in cause and not cause.startswith("unexplained")


# -- the training flag: inverted or ignored, tested both ways ------------------------------

def test_an_inverted_batchnorm_flag_is_named_inverted(ports):
    """use_running_average=train: batch statistics in inference, moving ones in training.
    Neither mode's failure says "ignored"; the re-run in both modes says "inverted"."""
    found = _results(ports["flax-bn-flag-inverted"], "FM-INFERENCE", "FM-TRAINING")
    for clause, result in found.items():
        assert result.status == "failed", clause
        assert result.diagnosis == numerics.FLAG_INVERTED, (clause, result.diagnosis)
        assert result.details.get("checked")
        assert "ignored" not in result.message + (result.cause or "")


def test_an_ignored_batchnorm_flag_is_named_ignored(ports):
    """use_running_average=False: batch statistics in both modes. Inference fails, training
    passes, and the re-run says the flag is ignored, not inverted."""
    found = _results(ports["flax-bn-flag-ignored"], "FM-INFERENCE", "FM-TRAINING")
    assert found["FM-TRAINING"].status == "passed"
    result = found["FM-INFERENCE"]
    assert result.status == "failed" and result.details.get("checked")
    assert result.diagnosis == numerics.FLAG_IGNORED[True]


def test_a_flag_right_for_batchnorm_is_not_blamed(ports):
    """Dropout's flag inverted, BatchNorm's right: at dropout 0 both modes are the spec's, so
    no BatchNorm flag finding (the inference clause fails on dropout alone, and says so)."""
    found = _results(ports["flax-dropout-flag-inverted"], "FM-INFERENCE", "FM-TRAINING")
    assert found["FM-TRAINING"].status == "passed"
    for result in found.values():
        assert result.diagnosis not in (numerics.FLAG_INVERTED, *numerics.FLAG_IGNORED.values())


# -- dropout's training flag inverted --------------------------------------------------------

DROPOUT_CLAUSES = ("FM-DROPOUT-SITES", "FM-DROPOUT-INFERENCE", "FM-DROPOUT-ONE")
# clauses that meet the random inference calls without looking for dropout
RANDOM_CLAUSES = ("FM-DETERMINISM", "FM-INFERENCE", "FM-DTYPE")


def test_an_inverted_dropout_flag_is_one_root_cause(ports):
    """deterministic=train: dropout in inference, none in training. The sites probe run in
    both modes shows it; the dropout clauses it fails, and those that find the inference
    calls random (the same layer at dropout 0 is not), say so in one wording."""
    found = _results(ports["flax-dropout-flag-inverted"], *DROPOUT_CLAUSES, *RANDOM_CLAUSES)
    for clause, result in found.items():
        assert result.status == "failed", clause
        assert result.diagnosis == dropout.FLAG_INVERTED, (clause, result.diagnosis)
        assert result.details.get("checked"), clause
    assert {r.cause for r in found.values()} == {f"FeatureMixing: {dropout.FLAG_INVERTED}"}


def test_dropout_in_both_modes_is_not_an_inverted_flag(ports):
    """deterministic=False: dropout in inference and in training. Inference is random as
    with the inverted flag, but training drops too: 'dropout is active in inference', and
    the flag is not said to be inverted; BatchNorm's inverted flag does not read as dropout's."""
    found = _results(ports["flax-dropout-always"], "FM-DROPOUT-INFERENCE")["FM-DROPOUT-INFERENCE"]
    assert found.status == "failed" and found.details.get("checked")
    assert found.diagnosis == "dropout is active in inference"
    for result in _results(ports["flax-bn-flag-inverted"], *DROPOUT_CLAUSES).values():
        assert dropout.FLAG_INVERTED != result.diagnosis
