"""Root causes of mistakes in what a layer does at run time that no oracle variant covers.

A compiled function, the gradients, seeding, the precision of a float64 call, a refused batch of
one or rate of 1, the moving statistics in inference and the dropout key: each clause re-runs
the port to test what it names (ClauseFailure(checked=True)), so its diagnosis is the root
cause. The zoo measure (tests/test_rootcause.py) holds the mutants that make these mistakes to
one root cause each; here, ports whose evidence contradicts each hypothesis must not get it,
and a mistake made in both layers gets the same words in each.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.home("keras-tensorflow")  # Keras ports (tests/conftest.py)
pytest.importorskip("keras")

from portspec import isolation, registry, rootcause  # noqa: E402
from portspec.suite.areas import determinism, gradients, numerics  # noqa: E402

ZOO = Path(__file__).parent / "mutants" / "keras_zoo.py"


@pytest.fixture(scope="module")
def zoo():
    """The Keras zoo's module (its mutants and helpers) and its adapters by name."""
    adapters = {a.name: a for a in registry.load_file(str(ZOO))}
    return sys.modules[type(next(iter(adapters.values()))).__module__], adapters


def _results(adapter, *clauses):
    """{clause: result} of ``clauses`` through the worker's diagnoses and the root-cause stage."""
    tasks = [(adapter.name, c) for c in clauses]
    return {r.clause: r for r in rootcause.attach(
        [run() for _, run in isolation.items_for(adapter, tasks=tasks)])}


def _mutant(module, name, base=None, **attrs):
    """An adapter of the zoo's kind, named ``name``, with ``attrs`` (layer classes, handle)."""
    cls = type(name, (base or module._KerasMutant,), {"catches": (), **attrs})
    return cls()


def test_a_float64_mistake_is_not_read_as_float32(zoo):
    """The precision re-run names a float64 call computed in float32 (Float64Ignored) and
    leaves a float64 port with another epsilon alone: its error is not rounding noise."""
    _, adapters = zoo
    ignored = _results(adapters["Float64Ignored"], "FM-INFERENCE")["FM-INFERENCE"]
    assert ignored.details.get("checked") and numerics.NOT_FLOAT64 in ignored.diagnosis
    epsilon = _results(adapters["FMEpsilonTorchDefault"], "FM-INFERENCE")["FM-INFERENCE"]
    assert epsilon.status == "failed"
    assert "not computed in float64" not in (epsilon.diagnosis or "")
    assert not epsilon.details.get("checked")


def test_only_the_mean_held_is_named_as_the_mean_held(zoo):
    """A BatchNorm that stops the gradient of its batch mean only: FM-GRAD fails, and the
    gradients are those of the spec with the mean held, not with both statistics held."""
    module, _ = zoo
    ref, ops = module.ref, module.ops

    class MeanOnlyNorm(ref.FlatBatchNorm):
        def call(self, inputs, training=None):
            if not training:
                return super().call(inputs, training)
            mean = ops.stop_gradient(ref._mean0(inputs))
            var = ref._mean0(ops.square(inputs - ref._mean0(inputs)))
            super().call(inputs, training)
            return (inputs - mean) * ops.rsqrt(var + self.epsilon) * self.gamma + self.beta

    class MeanOnlyFM(ref.FeatureMixing):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm = MeanOnlyNorm(dtype=self.dtype_policy, name="norm")

    found = _results(_mutant(module, "MeanOnlyHeld", fm=MeanOnlyFM), "FM-GRAD")["FM-GRAD"]
    assert found.status == "failed"
    assert found.diagnosis == gradients.ONE_STAT_HELD.format(held="mean", kept="variance")
    assert found.details.get("checked") and found.diagnosis in (found.cause or ""), found.cause


def test_one_input_held_in_the_gate_is_not_named_as_the_gate_input_held(zoo):
    """The gate sees stop_gradient(a) but b as it is: GFF-GRAD fails, and the gradients are
    not those of the spec with both inputs held inside the gate."""
    module, _ = zoo
    ref, ops = module.ref, module.ops

    class HalfHeld(ref.GatedFeatureFusion):
        def call(self, inputs):
            a, b = inputs
            z = self.gate(ops.concatenate([ops.stop_gradient(a), b], axis=-1))
            gate = ref._activation(self.activation, z)
            return gate * a + (1.0 - gate) * b

    found = _results(_mutant(module, "HalfHeld", gff=HalfHeld), "GFF-GRAD")["GFF-GRAD"]
    assert found.status == "failed"
    assert found.diagnosis not in (gradients.GATE_INPUT_HELD, gradients.GATE_HELD)
    assert not found.details.get("checked")


def test_a_gate_held_in_backprop_is_named_and_is_the_root_cause(zoo):
    """stop_gradient on the gate: the forward is the spec's, the gate's weights get no
    gradient, and a and b get gate and 1 - gate only: the spec with the gate held fixed."""
    module, _ = zoo
    ref, ops = module.ref, module.ops

    class GateHeld(ref.GatedFeatureFusion):
        def call(self, inputs):
            a, b = inputs
            z = self.gate(ops.concatenate([a, b], axis=-1))
            gate = ops.stop_gradient(ref._activation(self.activation, z))
            return gate * a + (1.0 - gate) * b

    found = _results(_mutant(module, "GateHeld", gff=GateHeld), "GFF-GRAD")["GFF-GRAD"]
    assert found.status == "failed" and found.details.get("checked")
    assert found.diagnosis == gradients.GATE_HELD
    assert found.cause == f"GatedFeatureFusion: {gradients.GATE_HELD}"


def test_a_compiled_function_that_is_merely_wrong_gets_no_name(zoo):
    """Compiled outputs 1 % off are neither the other training flag's nor the built weights'."""
    module, _ = zoo

    class Scaled(module.KerasPortHandle):
        def forward_compiled(self, inputs, *, training):
            return 1.01 * np.asarray(super().forward_compiled(inputs, training=training))

    adapter = _mutant(module, "CompiledScaled", handle_class=Scaled,
                      layers=("GatedFeatureFusion",))
    found = _results(adapter, "GFF-COMPILE")["GFF-COMPILE"]
    assert found.status == "failed" and not found.details.get("checked")
    assert found.diagnosis is None


def test_a_compiled_function_fixed_to_inference_is_named(zoo):
    """The other sense of FMCompiledTrainingFlag: a compiled training call that runs the
    inference path (from the moving statistics the eager training call left)."""
    module, _ = zoo

    class Inference(module.KerasPortHandle):
        def forward_compiled(self, inputs, *, training):
            return super().forward_compiled(inputs, training=False)

    adapter = _mutant(module, "CompiledInference", handle_class=Inference,
                      layers=("FeatureMixing",))
    found = _results(adapter, "FM-COMPILE")["FM-COMPILE"]
    assert found.message.startswith("compiled vs eager, training=True")
    assert found.details.get("checked") and found.diagnosis == numerics.flag_fixed(False)
    assert found.cause == f"FeatureMixing: {numerics.flag_fixed(False)}"


def test_statistics_overwritten_in_inference_are_not_an_update(zoo):
    """An inference call that zeroes the moving mean changes it, but not as a training update
    with the batch's statistics does: FM-BN-FROZEN fails without that name."""
    module, _ = zoo
    ref = module.ref

    class Zeroing(ref.FeatureMixing):
        def call(self, inputs, training=None):
            if not training:
                self.norm.moving_mean.assign(self.norm.moving_mean * 0.0)
            return super().call(inputs, training)

    found = _results(_mutant(module, "StatsZeroed", fm=Zeroing), "FM-BN-FROZEN")
    found = found["FM-BN-FROZEN"]
    assert found.status == "failed" and not found.details.get("checked")
    assert "as a training call does" not in (found.diagnosis or "")


def test_dropout_refused_at_every_rate_is_not_a_refused_rate_one(zoo):
    """A layer that refuses dropout 0.5 as well as 1.0 fails FM-DROPOUT-ONE on its refusal,
    which says nothing about the rate 1."""
    module, _ = zoo
    ref = module.ref

    class NoDropout(ref.FeatureMixing):
        def __init__(self, n_series, input_size, dropout, ff_dim, **kwargs):
            if dropout > 0.0:
                raise ValueError("this layer has no dropout")
            super().__init__(n_series, input_size, dropout, ff_dim, **kwargs)

    found = _results(_mutant(module, "NoDropout", fm=NoDropout), "FM-DROPOUT-ONE")
    found = found["FM-DROPOUT-ONE"]
    assert found.status == "failed" and found.message.startswith("raised ValueError")
    assert not found.details.get("checked")


def test_a_fixed_seed_and_unseeded_dropout_are_named(zoo):
    """Initialisers that always draw from seed 0, and dropout masks drawn from OS entropy:
    FM-DETERMINISM names each by the builds it compared."""
    module, _ = zoo
    ref, keras = module.ref, module.keras

    class FixedSeed(ref.FeatureMixing):
        def build(self, input_shape):
            keras.utils.set_random_seed(0)
            super().build(input_shape)

    class EntropyDropout(ref.FeatureMixing):
        def _drop(self, layer, x, training):
            if not training:
                return x
            seed = int.from_bytes(os.urandom(4), "little")
            return keras.random.dropout(x, self.dropout, seed=seed)

    fixed = _results(_mutant(module, "FixedSeed", fm=FixedSeed), "FM-DETERMINISM")
    assert fixed["FM-DETERMINISM"].cause == f"FeatureMixing: {determinism.SEED_IGNORED}"
    masks = _results(_mutant(module, "EntropyDropout", fm=EntropyDropout), "FM-DETERMINISM")
    assert masks["FM-DETERMINISM"].cause == f"FeatureMixing: {determinism.MASKS_UNSEEDED}"


def test_noise_in_inference_is_not_dropout_in_inference(zoo):
    """Inference that adds fresh noise at any dropout rate is not deterministic, but the
    control at dropout 0 is not either: FM-DROPOUT-INFERENCE does not blame dropout."""
    module, _ = zoo
    ref, keras = module.ref, module.keras

    class Noisy(ref.FeatureMixing):
        def call(self, inputs, training=None):
            out = super().call(inputs, training)
            seed = int.from_bytes(os.urandom(4), "little")
            return out + 1e-3 * keras.random.normal(out.shape, dtype=out.dtype, seed=seed)

    found = _results(_mutant(module, "Noisy", fm=Noisy), "FM-DROPOUT-INFERENCE")
    found = found["FM-DROPOUT-INFERENCE"]
    assert found.message == "inference with dropout 0.5 is not deterministic"
    assert found.diagnosis is None


@pytest.mark.parametrize("mutant, clause", [("Unseeded", "DETERMINISM"),
                                            ("Float64Ignored", "DTYPE")])
def test_one_mistake_in_both_layers_reads_alike(zoo, mutant, clause):
    """One mistake made in both layers: each layer gets one root cause, and the two say the
    same (the same words after the layer's name, or the same variant)."""
    _, adapters = zoo
    found = _results(adapters[mutant], f"FM-{clause}", f"GFF-{clause}")
    fm, gff = found[f"FM-{clause}"], found[f"GFF-{clause}"]
    assert fm.cause.startswith("FeatureMixing: ") and gff.cause.startswith("GatedFeatureFusion: ")
    if "variant" in fm.details and fm.details["variant"]["precision"]:
        assert fm.details["variant"]["precision"] == gff.details["variant"]["precision"]
    else:
        assert fm.cause.split(": ", 1)[1] == gff.cause.split(": ", 1)[1]
