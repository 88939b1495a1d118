"""Every diagnosis is produced by a deliberately wrong implementation.

Each row names a diagnosis (a phrase of its text), the mutant port that commits the mistake
(tests/ports_fixtures, written with spec.ports) and the clause that must fail with that
diagnosis. Each fixture file runs in one worker, each mutant only against its clauses.
Files whose framework is not installed are skipped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from portspec import diagnose
from portspec.layers import LAYERS
from portspec.verify import verify

FIXTURES = Path(__file__).parent / "ports_fixtures"
TORCH, FLAX, KERAS = "diagnosis_mutants_torch.py", "ports_flax.py", "ports_keras.py"
KERAS_BN = "keras_batchnorm.py"
NEEDS = {TORCH: "torch", FLAX: "flax", KERAS: "keras", KERAS_BN: "keras"}

# (diagnosis, file, mutant, clause, phrase the diagnosis must contain)
CASES = [
    ("momentum sense", TORCH, "momentum-flipped", "FM-BN-UPDATE", "keeps 0.99 of its old value"),
    ("momentum sense", TORCH, "torch-batchnorm1d", "FM-BN-UPDATE", "in the PyTorch sense"),
    ("momentum sense", FLAX, "flax-batchnorm-defaults", "FM-BN-UPDATE", "keeps 0.99"),
    ("unbiased moving variance", TORCH, "unbiased-moving-variance", "FM-BN-UPDATE", "n/(n-1)"),
    ("unbiased moving variance", TORCH, "torch-batchnorm1d", "FM-BN-UPDATE", "off by n/(n-1)"),
    ("no moving update", TORCH, "no-moving-update", "FM-BN-UPDATE", "did not change"),
    ("epsilon fitted", TORCH, "epsilon-1e-5", "FM-BN-EPSILON", "epsilon 1e-05 instead of 1e-3"),
    ("epsilon fitted", TORCH, "epsilon-1e-5", "FM-INFERENCE", "epsilon 1e-05"),
    ("epsilon fitted", FLAX, "flax-batchnorm-defaults", "FM-BN-EPSILON", "epsilon 1e-05"),
    ("epsilon fitted", KERAS, "keras-epsilon-1e-5", "FM-BN-EPSILON", "epsilon 1e-05"),
    ("class not registered", KERAS, "keras-not-registered", "FM-SAVE-NATIVE",
     "is not registered with Keras"),
    ("batch renormalisation", KERAS_BN, "keras-batch-renorm", "FM-WEIGHTS",
     "norm is a Keras BatchNormalization built with renorm=True"),
    ("batch renormalisation", KERAS_BN, "keras-batch-renorm", "FM-PARAMS",
     "norm is a Keras BatchNormalization built with renorm=True"),
    ("config without the base layer's", KERAS, "keras-config-without-base", "FM-SAVE-NATIVE",
     "get_config leaves out the base layer's config"),
    ("masks from a shared generator", KERAS_BN, "keras-global-dropout", "FM-DETERMINISM",
     "drawn from a generator every layer shares"),
    ("flatten order", TORCH, "flatten-time-last", "FM-INFERENCE", "flattened time-last"),
    (
        "batch stats in inference",
        TORCH,
        "batch-stats-in-inference",
        "FM-INFERENCE",
        "batch statistics used in inference",
    ),
    (
        "moving stats updated in inference",
        TORCH,
        "batch-stats-in-inference",
        "FM-BN-FROZEN",
        "update outside training",
    ),
    (
        "moving stats in training",
        TORCH,
        "moving-stats-in-training",
        "FM-TRAINING",
        "moving statistics used in training",
    ),
    (
        "unbiased normalisation",
        TORCH,
        "unbiased-normalisation",
        "FM-TRAINING",
        "unbiased batch variance in the normalisation",
    ),
    ("no residual", TORCH, "no-residual", "FM-RESIDUAL", "no residual connection"),
    ("no residual", TORCH, "no-residual", "FM-INFERENCE", "no residual connection"),
    (
        "residual of the normalised input",
        TORCH,
        "residual-normalised",
        "FM-RESIDUAL",
        "normalised input",
    ),
    (
        "residual of the normalised input",
        TORCH,
        "residual-normalised",
        "FM-INFERENCE",
        "residual adding the BatchNorm output",
    ),
    (
        "dropout in inference",
        TORCH,
        "dropout-in-inference",
        "FM-DROPOUT-INFERENCE",
        "dropout active in inference",
    ),
    # FM-SHAPE's repeated call differs because a dropout draws in inference, not because the
    # layer keeps a shape from its first call
    ("dropout in inference", TORCH, "dropout-in-inference", "FM-SHAPE",
     "| FeatureMixing: dropout active in inference"),
    ("dropout not inverted", TORCH, "dropout-not-inverted", "FM-DROPOUT-SITES", "not inverted"),
    (
        "rate as keep probability",
        TORCH,
        "dropout-rate-as-keep",
        "FM-DROPOUT-SITES",
        "used as the keep probability",
    ),
    (
        "dropout site missing",
        TORCH,
        "one-dropout-site",
        "FM-DROPOUT-SITES",
        "second dropout site",
    ),
    (
        "dropout site missing",
        TORCH,
        "first-dropout-site-missing",
        "FM-DROPOUT-SITES",
        "first dropout site",
    ),
    ("dropout masks repeat", TORCH, "dropout-same-masks", "FM-DROPOUT-SITES", "reused"),
    # torch.manual_seed(0) in the call: every layer and every call draws alike, one design
    ("constant seed", TORCH, "dropout-same-masks", "FM-DROPOUT-SITES",
     "drawn from a constant seed of the port's, the same in every layer and on every call"),
    ("constant seed", TORCH, "dropout-same-masks", "FM-DETERMINISM",
     "drawn from a constant seed of the port's, the same in every layer and on every call"),
    # one decision per sample and time step (nn.Dropout1d on (batch, time, channel)): the
    # channel axis is broadcast, and along the batch axis each decision counts once
    ("dropout mask broadcast", TORCH, "dropout1d-second-site", "FM-DROPOUT-SITES",
     "one dropout mask broadcast along the channel axis: "),
    ("dropout mask broadcast", TORCH, "dropout1d-both-sites", "FM-DROPOUT-SITES",
     "one decision per sample and time step shared by every hidden unit"),
    (
        "dropout 1 divides by 0",
        TORCH,
        "dropout-divides-by-keep",
        "FM-DROPOUT-ONE",
        "divides by the keep probability",
    ),
    ("PyTorch init", TORCH, "torch-init", "FM-INIT", "PyTorch's default Linear initialisation"),
    ("detached statistics", TORCH, "detached-batch-stats", "FM-GRAD", "treated as constants"),
    # a random forward's gradients and compiled call cannot be judged: not "the backward
    # is wrong", not "the compiler is"
    ("random forward", TORCH, "dropout-rate-fixed", "FM-GRAD",
     "the forward is random at dropout 0.0"),
    ("random forward", TORCH, "dropout-rate-fixed", "FM-COMPILE",
     "the forward is random at dropout 0.0"),
    ("random forward", TORCH, "gate-output-dropped", "GFF-GRAD",
     "the forward is random: two calls with the same weights and input differ (a dropout or "
     "noise the layer adds, where the spec has none)"),
    ("kernel layout", TORCH, "kernel-not-transposed", "FM-WEIGHTS", "(out, in) layout"),
    ("kernel layout", TORCH, "kernel-not-transposed", "GFF-WEIGHTS", "(out, in) layout"),
    ("batch counter", TORCH, "batch-counter", "FM-PARAMS", "num_batches_tracked"),
    ("batch counter", TORCH, "torch-batchnorm1d", "FM-PARAMS", "num_batches_tracked"),
    (
        "statistics trainable",
        TORCH,
        "stats-as-parameters",
        "FM-PARAMS",
        "moving statistics are counted as trainable",
    ),
    (
        "gamma and beta not trainable",
        TORCH,
        "bn-affine-frozen",
        "FM-PARAMS",
        "gamma and beta are held non-trainable (a frozen normalisation",
    ),
    (
        "statistics not weights",
        TORCH,
        "stats-not-buffers",
        "FM-PARAMS",
        "keeps moving_mean, moving_var as plain tensor attributes, not registered buffers",
    ),
    (
        "float32 weight promotes under autocast",
        TORCH,
        "bias-added-by-hand",
        "FM-DTYPE",
        "float32 weight lin2.bias meets a bfloat16 value in add(bfloat16, float32)",
    ),
    ("skip connection detached", TORCH, "skip-detached", "FM-GRAD",
     "the residual's own gradient is missing"),
    (
        "batch of one refused",
        TORCH,
        "torch-batchnorm1d",
        "FM-BN-BATCH1",
        "refuses a training batch of one",
    ),
    (
        "float64 held in float32",
        TORCH,
        "float32-inside",
        "FM-INFERENCE",
        "holds all its weights in float32",
    ),
    ("float64 held in float32", TORCH, "float32-inside", "FM-GRAD", "not computed in float64"),
    ("gate roles", TORCH, "gate-roles-swapped", "GFF-FORWARD", "gate roles swapped"),
    ("gate roles", TORCH, "gate-roles-swapped", "GFF-GATE-ORDER", "gate roles swapped"),
    ("concat order", TORCH, "concat-swapped", "GFF-GATE-ORDER", "concatenation order swapped"),
    ("gate on both", TORCH, "gate-on-both", "GFF-FORWARD", "gate multiplying both inputs"),
    ("not convex", TORCH, "gate-on-both", "GFF-CONVEX", "does not form a convex combination"),
    ("softmax axis", TORCH, "softmax-first-axis", "GFF-ACTIVATIONS", "softmax over the first"),
    (
        "activation ignored",
        TORCH,
        "activation-ignored",
        "GFF-ACTIVATIONS",
        "activation parameter ignored",
    ),
]


@pytest.fixture(scope="module")
def verdicts():
    """Run each fixture file once, every mutant against its clauses only."""
    found = {}

    def get(file):
        if file not in found:
            if importlib.util.find_spec(NEEDS[file]) is None:
                pytest.skip(f"{NEEDS[file]} is not installed")
            tasks = sorted({(m, c) for _, f, m, c, _ in CASES if f == file})
            results = verify([str(FIXTURES / file)], tasks=tasks, timeout=300)
            found[file] = {(r.impl, r.clause): r for r in results}
        return found[file]

    return get


@pytest.mark.parametrize(
    "file, mutant, clause, phrase",
    [pytest.param(f, m, c, p, id=f"{d}: {m} {c}") for d, f, m, c, p in CASES],
)
def test_the_mutant_is_diagnosed(verdicts, file, mutant, clause, phrase):
    """The clause's own diagnosis or the root cause the root-cause stage gave it."""
    result = verdicts(file)[(mutant, clause)]
    assert result.status == "failed", f"{mutant} passes {clause}"
    said = f"{result.diagnosis or ''} | {result.cause or ''}"
    assert phrase in said, (
        f"{mutant} {clause}: diagnosis {result.diagnosis!r}, root cause {result.cause!r}, "
        f"message {result.message!r}"
    )


# -- diagnoses no mutant can reach through the suite, checked on the oracle ----------------


def _fm_case(label):
    spec = LAYERS["FeatureMixing"]
    case = next(c for c in spec.cases() if c.label == label)
    rng = np.random.default_rng(0)
    weights = spec.random_weights(case.config, case.input_shapes, rng)
    return spec, case, weights, spec.make_inputs(case, rng)


def test_transposed_square_kernels_are_recognised():
    # Only the square case computes with transposed kernels at all; FM-INFERENCE meets the
    # non-square ones first, where such a port fails on the shapes (FM-WEIGHTS diagnoses it).
    spec, case, w, x = _fm_case("square")
    swapped = {**w, "dense1.kernel": w["dense1.kernel"].T, "dense2.kernel": w["dense2.kernel"].T}
    actual, _ = spec.forward(case.config, swapped, x, training=False)
    found = diagnose.explain_output(spec, case.config, w, x, actual, training=False, tol=1e-12)
    assert "Dense kernels transposed" in found


def test_float32_precision_of_a_float64_output():
    # What the pytest plugin reports for a float64 layer computing in float32; under verify
    # the port's float32 storage is named instead (the float32-inside mutant above).
    spec, case, w, x = _fm_case("expand")
    actual = spec.forward(case.config, w, x, training=False)[0].astype(np.float32)
    found = diagnose.explain_output(spec, case.config, w, x, actual, training=False, tol=1e-12)
    assert found.startswith("the output agrees with the spec only to float32 precision")


def test_an_alternative_the_case_cannot_tell_from_the_spec_is_not_named():
    # in inference, "moving statistics used in training" is the spec itself
    spec, case, w, x = _fm_case("expand")
    actual = spec.forward(case.config, w, x, training=False)[0] + 1e-3
    found = diagnose.explain_output(spec, case.config, w, x, actual, training=False, tol=1e-12)
    assert found is None


def test_other_momentum_and_float32_only_updates():
    rng = np.random.default_rng(1)
    flat = rng.standard_normal((8, 30))
    old_mean, old_var = rng.standard_normal(30), rng.uniform(0.5, 2, 30)
    mean, var = flat.mean(0), flat.var(0)

    def explain(keep, dtype=np.float64):
        new_mean = (keep * old_mean + (1 - keep) * mean).astype(dtype)
        new_var = (keep * old_var + (1 - keep) * var).astype(dtype)
        return diagnose.bn_update(0.01, old_mean, old_var, flat, new_mean, new_var, 1e-12)

    assert "keeps 0.1 of its old value, not 0.01" in explain(0.1)
    assert "right to float32 precision only" in explain(0.01, np.float32)


def test_a_momentum_rounded_to_float32_is_told_from_another_momentum():
    """float32's nearest to the share kept (or to the share taken) is named, the other share in
    float64 or float32 arithmetic; a share off by as much, not float32's, is not."""
    rng = np.random.default_rng(2)
    flat = rng.standard_normal((8, 30))
    old_mean, old_var = rng.standard_normal(30), rng.uniform(0.5, 2, 30)
    mean, var = flat.mean(0), flat.var(0)
    f32 = np.float32

    def explain(keep, take):
        return diagnose.bn_update(0.01, old_mean, old_var, flat, keep * old_mean + take * mean,
                                  keep * old_var + take * var, 1e-12) or ""

    kept = float(f32(0.01))
    assert explain(kept, 1 - kept).startswith("the momentum is rounded to float32 (float32(0.01))")
    assert "takes 0.9900000095" in explain(kept, float(f32(1) - f32(0.01)))
    assert "(1 - float32(0.99))" in explain(1 - float(f32(0.99)), float(f32(0.99)))
    off = 0.01 + (0.01 - kept)  # as far from 0.01 as float32's rounding, the other way
    assert "rounded to float32" not in explain(off, 1 - off)
    assert "rounded to float32" not in explain(0.01, 0.99)


def test_dropout_at_another_rate():
    from portspec.suite.areas.dropout import _scaling_diagnosis

    rng = np.random.default_rng(0)
    m1, m2 = rng.random((2, 64, 8, 16)) >= 0.5  # both sites drop 0.5 and scale by 2
    branch = m2 * 2.0 * (m1 * 2.0 + 1.0)
    found = _scaling_diagnosis(branch)
    assert found.startswith("both sites drop 0.49") and found.endswith("scale kept units by 2")


def test_epsilon_near_zero():
    from portspec.layers.feature_mixing import _forward

    spec, case, w, x = _fm_case("expand")
    actual = _forward(case.config, w, x, training=False, eps=0.0)[0]
    found = diagnose.explain_output(spec, case.config, w, x, actual, training=False, tol=1e-12)
    assert "BatchNorm epsilon ~0 instead of 1e-3" in found


@pytest.mark.parametrize("eps", [1e-5, 2.5e-4, 0.02, 0.3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [False, True])
def test_the_epsilon_fitted_in_numpys_arithmetic_is_the_exact_oracles(eps, dtype, training):
    """The fit's evaluations run in NumPy's arithmetic (``Fitted.fast``); the value it finds
    is the one the exact oracle's evaluations find, to the digits the diagnosis prints, from
    an output in float64 and one rounded to float32."""
    from portspec.layers.feature_mixing import _forward

    spec, case, w, x = _fm_case("expand")
    config = {**case.config, "dropout": 0.0}
    fitted = next(a for _, a in spec.alternatives() if isinstance(a, diagnose.Fitted))
    actual = _forward(config, w, x, training=training, eps=eps)[0].astype(dtype)
    fast = fitted.fit(config, w, x, actual, training=training)
    exact = diagnose.Fitted(fitted.oracle, fitted.describe, fitted.spec_value).fit(
        config, w, x, actual, training=training)
    assert fitted.fast is not fitted.oracle
    assert f"{fast:.3g}" == f"{exact:.3g}" == f"{eps:.3g}", (fast, exact)


# Diagnoses checked by a mutant above, and those checked on the oracle or the evidence alone.
BY_MUTANT = 41
BY_EVIDENCE = 7  # transposed square kernels, float32 precision, another momentum, float32-only
# update, a momentum rounded to float32, another dropout rate, epsilon ~0 (a float64 call
# refused in any framework's words: tests/test_rootcause.py)


def test_the_count():
    assert len({d for d, *_ in CASES}) == BY_MUTANT


def test_counts_short_of_gamma_and_beta_say_where_they_went():
    """L*N = 30: gamma and beta are 60 values. Moved to the non-trainable count, they are a
    frozen normalisation; missing from both counts, they are not counted (the seed's own
    estimate counts the Dense layers alone); any other shortfall is not put down to them."""
    from portspec.diagnose import explain_counts

    frozen = explain_counts("expand: (trainable, non-trainable) = (181, 120), spec (241, 60)")
    assert frozen.startswith("BatchNorm's gamma and beta are held non-trainable"), frozen
    uncounted = explain_counts("expand: (trainable, non-trainable) = (181, 60), spec (241, 60)")
    assert uncounted.startswith("BatchNorm's gamma and beta are not counted at all"), uncounted
    assert explain_counts("expand: (trainable, non-trainable) = (181, 90), spec (241, 60)") is None
