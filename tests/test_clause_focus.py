"""One mistake, the clauses about it: FM-DROPOUT-SITES, FM-DROPOUT-INFERENCE, FM-BN-EPSILON,
FM-BN-BATCH1 and FM-DTYPE judge their property against the port itself where the property
allows it (the drop levels of the port's own activation; the same layer at dropout 0; its
moving variance 0 against 1 - epsilon with the scale divided by sqrt(epsilon); a batch of one
against an inference call whose moving mean is that sample; a low-precision call against its
own float32 call, a float64 call by whether it follows changes of 1e-9; a batch of one's
moving update against the port's update of a full batch), so a mistake elsewhere in the
layer (GELU for ReLU, a flipped momentum) fails the clauses of that part (FM-INFERENCE and
-TRAINING; FM-BN-UPDATE), not these. FM-DROPOUT-ONE compares dropout 1 with the same layer
with its second Dense zeroed, so a residual mistake fails FM-RESIDUAL, not it. Each still
fails for its own mistake. Before, the GELU failed all seven, a flipped momentum FM-BN-BATCH1
too, and a missing residual FM-DROPOUT-ONE.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.home("torch")
pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).parent / "ports_fixtures"))

import torch  # noqa: E402
from diagnosis_mutants_torch import FM, _Unbiased, mutant  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from portspec.suite.checks import work_items  # noqa: E402
from portspec.suite.runner import run_clause  # noqa: E402

ITEMS = {clause.id: (spec, clause, fn) for spec, clause, fn in work_items(None)}
FOCUSED = ("FM-DROPOUT-SITES", "FM-DROPOUT-INFERENCE", "FM-BN-EPSILON", "FM-BN-BATCH1",
           "FM-DTYPE")


def _status(port, *clauses):
    adapter = port()
    return {c: run_clause(adapter, *ITEMS[c]) for c in clauses}


class _Gelu(FM):
    def branch(self, z):
        return self.drop2(self.lin2(self.drop1(F.gelu(self.lin1(z)))))


class _UnguardedUnbiased(FM):
    def normalise(self, flat):  # the unbiased batch variance, NaN for a batch of one
        if not self.training:
            return super().normalise(flat)
        mean, var = flat.mean(0), flat.var(0, correction=1)
        return self.gamma * (flat - mean) / torch.sqrt(var + self.eps) + self.beta


class _ScaledInInference(FM):
    def branch(self, z):  # classic dropout's inference: the branch scaled by the keep rate
        out = super().branch(z)
        return out if self.training else out * (1 - self.dropout)


class _GeluNotInverted(_Gelu):
    def branch(self, z):  # GELU, and kept units not scaled by 1 / (1 - p) in training
        keep = 1 - self.dropout if self.training else 1.0
        h = self.drop1(F.gelu(self.lin1(z))) * keep
        return self.drop2(self.lin2(h)) * keep


class _Float32Inside(FM):
    def normalise(self, flat):  # a float64 layer normalising in float32
        return super().normalise(flat.float()).to(flat.dtype)


def test_a_mistake_in_the_mlp_fails_only_the_clauses_of_the_output():
    got = _status(mutant("fm-gelu", fm=_Gelu), "FM-INFERENCE", "FM-TRAINING", *FOCUSED)
    assert {c: r.status for c, r in got.items()} == {
        "FM-INFERENCE": "failed", "FM-TRAINING": "failed",
        **dict.fromkeys(FOCUSED, "passed")}, got


class _FirstSiteOnly(FM):
    def branch(self, z):  # no dropout after the second Dense: its bias survives dropout 1
        return self.lin2(self.drop1(F.relu(self.lin1(z))))


@pytest.mark.parametrize("residual", ["none", "normalised"])
def test_dropout_one_leaves_the_residual_to_its_own_clause(residual):
    got = _status(mutant(f"fm-residual-{residual}", fm={"residual": residual}),
                  "FM-RESIDUAL", "FM-DROPOUT-ONE")
    assert {c: r.status for c, r in got.items()} == {
        "FM-RESIDUAL": "failed", "FM-DROPOUT-ONE": "passed"}, got


class _FrozenAtBatchOne(FM):
    def normalise(self, flat):  # the moving statistics left as they are for a batch of one
        self.update = len(flat) > 1
        return super().normalise(flat)


@pytest.mark.parametrize("fm", [{"keep": 0.99}, {"keep": 0.1}, {"update": False}])
def test_a_batch_of_one_updates_as_the_ports_own_full_batch(fm):
    """Another momentum, or none, fails FM-BN-UPDATE; a batch of one that updates as the
    port's full batch does passes FM-BN-BATCH1."""
    got = _status(mutant("fm-keep", fm=fm), "FM-BN-UPDATE", "FM-BN-BATCH1")
    assert {c: r.status for c, r in got.items()} == {
        "FM-BN-UPDATE": "failed", "FM-BN-BATCH1": "passed"}, got


@pytest.mark.parametrize("fm, clause, says", [
    (_FrozenAtBatchOne, "FM-BN-BATCH1", "batch-1 norm.moving_mean"),
    (_FirstSiteOnly, "FM-DROPOUT-ONE", "output differs from the input"),
    (_Unbiased, "FM-BN-BATCH1", "batch-1 norm.moving_variance: max |error| nan"),
    ({"eps": 1e-5}, "FM-BN-EPSILON", "epsilon 1e-05"),
    (_UnguardedUnbiased, "FM-BN-BATCH1", "batch-1 training output"),
    (_Float32Inside, "FM-DTYPE", "not computed in float64"),
    (_GeluNotInverted, "FM-DROPOUT-SITES", "not inverted"),
    (_ScaledInInference, "FM-DROPOUT-INFERENCE", "against the same layer and weights at "
     "dropout 0"),
])
def test_each_focused_clause_still_fails_for_its_own_mistake(fm, clause, says):
    result = _status(mutant(f"fm-{clause.lower()}", fm=fm), clause)[clause]
    assert result.status == "failed", result
    assert says in (result.message + " " + (result.diagnosis or "")), result
