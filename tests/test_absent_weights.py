"""A port that lacks canonical weights (``absent``) or holds them otherwise (``held_as``) is
still judged by every clause whose expected values do not depend on those weights.

The ports: a FeatureMixing written as the spec's but normalising with a LayerNorm over (L, N)
(no moving statistics; its scale and offset (L, N)), correct apart from that, and the same
layer with one more mistake each. Such a layer's residual, dropout, gradients and compiled
path are what FM-RESIDUAL, FM-DROPOUT-*, FM-GRAD and FM-COMPILE judge, whatever the norm holds
(``set_held_weights``); the clauses that compare with the spec's BatchNorm do not apply,
with the reason stated once.
"""

from __future__ import annotations

import numpy as np
import pytest

from portspec.adapter import MissingWeight, set_held_weights
from portspec.suite.checks import work_items
from portspec.suite.runner import run_clause

torch = pytest.importorskip("torch")
nn = torch.nn

from portspec.ports import (  # noqa: E402
    TorchPortAdapter,
    absent,
    held_as,
    torch_names,
    transpose,
)

ITEMS = {clause.id: (spec, clause, fn) for spec, clause, fn in work_items(None)}
CONFIG = {"n_series": 3, "input_size": 4, "dropout": 0.1, "ff_dim": 5}
SHAPES = [(2, 4, 3)]
NO_STATISTICS = "LayerNorm keeps no moving statistics"


class LayerNormBefore(nn.Module):
    """x + drop(dense2(drop(relu(dense1(LayerNorm(x)))))): the spec's layer, LayerNorm for
    BatchNorm."""

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__()
        if min(n_series, input_size, ff_dim) < 1 or not 0 <= dropout <= 1:
            raise ValueError(f"n_series, input_size, ff_dim must be >= 1 and dropout in "
                             f"[0, 1]: {n_series}, {input_size}, {ff_dim}, {dropout}")
        self.n_series, self.input_size, self.ff_dim = n_series, input_size, ff_dim
        self.dropout = dropout
        self.norm = nn.LayerNorm((input_size, n_series), eps=1e-3)
        self.dense1, self.dense2 = nn.Linear(n_series, ff_dim), nn.Linear(ff_dim, n_series)

    def drop(self, x):
        return nn.functional.dropout(x, self.dropout, self.training)

    def branch(self, x):
        return self.drop(self.dense2(self.drop(torch.relu(self.dense1(self.norm(x))))))

    def forward(self, x):
        return x + self.branch(x)


class NoResidual(LayerNormBefore):
    def forward(self, x):
        return self.branch(x)


class NotInverted(LayerNormBefore):
    def drop(self, x):  # drops at the rate, but kept units are not scaled by 1 / (1 - p)
        return nn.functional.dropout(x, self.dropout, self.training) * (1 - self.dropout)


class ActiveInInference(LayerNormBefore):
    def drop(self, x):  # drops whatever the mode
        return nn.functional.dropout(x, self.dropout, True)


class DividesByKeep(LayerNormBefore):
    def drop(self, x):  # inverted by hand: at rate 1 it divides 0 by 0
        if not self.training:
            return x
        return x * (torch.rand_like(x) >= self.dropout) / (1 - self.dropout)


class CompiledWithoutResidual(LayerNormBefore):
    def forward(self, x):  # the compiled graph leaves out the residual; eager is right
        return self.branch(x) if torch.compiler.is_compiling() else x + self.branch(x)


class _Doubled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


class GradientDoubled(LayerNormBefore):
    def forward(self, x):  # the branch's gradient reaches the input twice over
        return x + self.branch(_Doubled.apply(x))


class TrainingGradientDoubled(LayerNormBefore):
    def forward(self, x):  # as GradientDoubled, in training only: the spec's hypotheses about
        # the batch statistics (FM-GRAD's diagnoses) cannot be computed with a LayerNorm's
        return x + self.branch(_Doubled.apply(x) if self.training else x)


def _per_element(config):
    return (config["input_size"], config["n_series"])


def _port(module):
    class Port(TorchPortAdapter):
        name = f"layernorm-{module.__name__}"
        layers = ("FeatureMixing",)
        weights = {"FeatureMixing": {
            "norm.gamma": held_as("norm.weight", _per_element, why="a LayerNorm (L, N) scale"),
            "norm.beta": held_as("norm.bias", _per_element, why="a LayerNorm (L, N) offset"),
            "norm.moving_mean": absent(NO_STATISTICS),
            "norm.moving_variance": absent(NO_STATISTICS),
            **{n: torch_names(n) for n in ("dense1.kernel", "dense1.bias", "dense2.kernel",
                                           "dense2.bias")},
        }}

        def construct(self, layer, config, *, input_shapes, dtype):
            return module(**config)

    return Port()


def _run(adapter, *clause_ids):
    return {c: run_clause(adapter, *ITEMS[c]) for c in clause_ids}


HELD = ("FM-RESIDUAL", "FM-DROPOUT-SITES", "FM-DROPOUT-INFERENCE", "FM-DROPOUT-ONE", "FM-GRAD",
        "FM-WEIGHTS-ROUNDTRIP", "FM-SAVE-NATIVE")
NEEDS_STATISTICS = ("FM-INFERENCE", "FM-TRAINING", "FM-BN-UPDATE")


def test_the_spec_s_weights_cannot_be_set_on_a_layernorm_port():
    """What every clause met before: the spec's weights are refused, the reason named."""
    handle = _port(LayerNormBefore).build("FeatureMixing", CONFIG, input_shapes=SHAPES, seed=0)
    from portspec.layers import LAYERS

    weights = LAYERS["FeatureMixing"].random_weights(CONFIG, SHAPES, np.random.default_rng(0))
    with pytest.raises(MissingWeight, match="norm.moving_mean"):
        handle.set_weights(weights)
    held = set_held_weights(handle, weights)
    got = handle.get_weights()
    for name in ("dense1.kernel", "dense1.bias", "dense2.kernel", "dense2.bias"):
        np.testing.assert_array_equal(got[name], weights[name].astype(np.float32))
    assert np.array_equal(held["norm.gamma"], np.ones((4, 3)))  # the port's own, as built
    with pytest.raises(MissingWeight, match=NO_STATISTICS):
        held["norm.moving_mean"]


def test_a_correct_layernorm_port_passes_what_does_not_depend_on_the_norm():
    results = _run(_port(LayerNormBefore), *HELD, *NEEDS_STATISTICS)
    status = {c: r.status for c, r in results.items()}
    assert status == {**dict.fromkeys(HELD, "passed"),
                      **dict.fromkeys(NEEDS_STATISTICS, "skipped")}, results
    for clause in NEEDS_STATISTICS:  # the reason, once
        message = results[clause].message
        assert message.count(NO_STATISTICS) == 1 and "norm.moving_mean" in message, message


@pytest.mark.parametrize("module, clause, says", [
    (NoResidual, "FM-RESIDUAL", "output differs from the input"),
    (NotInverted, "FM-DROPOUT-SITES", "none of"),
    (DividesByKeep, "FM-DROPOUT-ONE", "dropout 1.0 in training"),
    (ActiveInInference, "FM-DROPOUT-INFERENCE", "not deterministic (with dropout 0 it is)"),
    (GradientDoubled, "FM-GRAD", "training=False: d/dinput 0: autodiff"),
    (TrainingGradientDoubled, "FM-GRAD", "training=True: d/dinput 0: autodiff"),
])
def test_a_layernorm_port_s_other_mistake_fails_the_clause_that_sees_it(module, clause, says):
    result = _run(_port(module), clause)[clause]
    assert result.status == "failed" and says in result.message, result


def test_a_layernorm_port_without_inverted_dropout_is_named():
    result = _run(_port(NotInverted), "FM-DROPOUT-SITES")["FM-DROPOUT-SITES"]
    assert "not inverted" in (result.diagnosis or ""), result


def test_a_compiled_path_unlike_the_eager_one_fails_fm_compile():
    correct = _run(_port(LayerNormBefore), "FM-COMPILE")["FM-COMPILE"]
    assert correct.status == "passed", correct
    wrong = _run(_port(CompiledWithoutResidual), "FM-COMPILE")["FM-COMPILE"]
    assert wrong.status == "failed" and "compiled vs eager" in wrong.message, wrong


class OneStatistic(LayerNormBefore):
    """BatchNorm with one scalar statistic for all L*N features, before the MLP."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = nn.BatchNorm1d(1)

    def forward(self, x):
        z = self.norm(x.reshape(x.shape[0], 1, -1)).reshape(x.shape)
        return x + self.drop(self.dense2(self.drop(torch.relu(self.dense1(z)))))


class OneStatisticUpdatedInInference(OneStatistic):
    def forward(self, x):  # the norm left in training mode: inference moves the statistic
        self.norm.train(True)
        return super().forward(x)


def _one_statistic_port(module):
    port = _port(module)
    port.weights = {"FeatureMixing": {
        **{n: held_as(torch_names(n)[0], (1,), why="one statistic")
           for n in ("norm.gamma", "norm.beta", "norm.moving_mean", "norm.moving_variance")},
        **{n: torch_names(n) for n in ("dense1.kernel", "dense1.bias", "dense2.kernel",
                                       "dense2.bias")}}}
    return port


def test_held_as_weights_are_restored_as_built_after_a_training_call():
    """A scalar BatchNorm statistic (held_as (1,)) a training call moved is set back, as
    set_weights sets back the spec's moving statistics."""
    from portspec.layers import LAYERS

    handle = _one_statistic_port(OneStatistic).build("FeatureMixing", CONFIG,
                                                      input_shapes=SHAPES, seed=0)
    weights = LAYERS["FeatureMixing"].random_weights(CONFIG, SHAPES, np.random.default_rng(0))
    set_held_weights(handle, weights)
    handle.forward(np.full(SHAPES[0], 5.0, np.float32), training=True)
    assert handle.get_weights()["norm.moving_mean"][0] != 0.0  # moved
    set_held_weights(handle, weights)
    assert handle.get_weights()["norm.moving_mean"][0] == 0.0  # as built
    np.testing.assert_array_equal(handle.get_weights()["dense1.bias"],
                                  weights["dense1.bias"].astype(np.float32))


def test_fm_bn_frozen_judges_a_statistic_held_at_another_shape():
    """Inference must leave the moving statistics as they are, whatever their shape; a
    LayerNorm has none, so the clause does not apply to it."""
    right = _run(_one_statistic_port(OneStatistic), "FM-BN-FROZEN")["FM-BN-FROZEN"]
    assert right.status == "passed", right
    wrong = _run(_one_statistic_port(OneStatisticUpdatedInInference),
                 "FM-BN-FROZEN")["FM-BN-FROZEN"]
    assert wrong.status == "failed" and "changed in an inference call" in wrong.message, wrong
    none = _run(_port(LayerNormBefore), "FM-BN-FROZEN")["FM-BN-FROZEN"]
    assert none.status == "skipped" and none.message.count(NO_STATISTICS) == 1, none


def test_a_port_holding_every_weight_is_set_as_before():
    from portspec import registry
    from portspec.layers import LAYERS

    handle = registry.load("torch")[0].build("FeatureMixing", CONFIG, input_shapes=SHAPES,
                                             seed=0)
    weights = LAYERS["FeatureMixing"].random_weights(CONFIG, SHAPES, np.random.default_rng(1))
    held = set_held_weights(handle, weights)
    got = handle.get_weights()
    assert set(held) == set(weights) == set(got)
    for name, value in weights.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-6)  # float32 storage


class _OneUnitGate(nn.Module):
    """g * a + (1 - g) * b with g = act(Linear(2F, 1)(concat(a, b))): one gate per sample,
    broadcast over the features; ``act`` sigmoid (a convex combination) or tanh (not one)."""

    def __init__(self, features, activation="sigmoid", act=torch.sigmoid):
        super().__init__()
        self.gate, self.act = nn.Linear(2 * features, 1), act

    def forward(self, a, b):
        g = self.act(self.gate(torch.cat([a, b], -1)))
        return g * a + (1 - g) * b


def _one_unit_port(act):
    class Port(TorchPortAdapter):
        name = f"one-unit-gate-{act.__name__}"
        layers = ("GatedFeatureFusion",)
        weights = {"GatedFeatureFusion": {
            "gate.kernel": held_as("gate.weight", transform=transpose, why="a gate of one unit"),
            "gate.bias": held_as("gate.bias", why="a gate of one unit")}}

        def construct(self, layer, config, *, input_shapes, dtype):
            return _OneUnitGate(input_shapes[0][-1], config.get("activation", "sigmoid"), act)

    return Port()


def test_gff_convex_draws_a_gate_held_at_another_shape_at_its_own_shape():
    """The property holds for any gate weights, so a gate held (2F, 1) is drawn at (2F, 1):
    sigmoid keeps every output between the inputs, tanh does not; the root-cause stage, whose
    variant holds the gate as the port does, attributes the failure to the tanh."""
    from portspec import rootcause
    from portspec.layers import LAYERS

    right = _run(_one_unit_port(torch.sigmoid), "GFF-CONVEX")["GFF-CONVEX"]
    assert right.status == "passed", right
    wrong = _run(_one_unit_port(torch.tanh), "GFF-CONVEX")["GFF-CONVEX"]
    assert wrong.status == "failed" and "outside [" in wrong.message, wrong
    spec = LAYERS["GatedFeatureFusion"]
    found = rootcause.search(spec, rootcause.probe(_one_unit_port(torch.tanh), spec))
    assert found.diff.get("width") == "one" and found.diff.get("activation") == "tanh", (
        found.line())
    assert rootcause.explains(spec, found, wrong), (found.line(), wrong.message)
