"""Profiles: the oracle's moving update follows the active profile, the CLI and the plugin
select it, and the "other profile fits better" hint fires only on the other profile's momentum."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from portspec import profiles
from portspec.layers import LAYERS


@pytest.fixture
def profile(monkeypatch):
    def use(name):
        monkeypatch.setenv(profiles.ENV, name)

    monkeypatch.delenv(profiles.ENV, raising=False)
    return use


def _update(kept):
    rng = np.random.default_rng(0)
    old, batch = rng.normal(size=30), rng.normal(size=30)
    return old, batch, kept * old + (1 - kept) * batch


def test_the_default_is_the_seeds_momentum(profile):
    assert profiles.active().name == "kmr"
    assert profiles.active().momentum == 0.01


@pytest.mark.parametrize("name, kept", [("kmr", 0.01), ("tsmixer", 0.99)])
def test_the_oracle_keeps_the_profiles_share_of_the_old_statistic(profile, name, kept):
    profile(name)
    spec = LAYERS["FeatureMixing"]
    case = spec.cases()[0]
    rng = np.random.default_rng(1)
    weights = spec.random_weights(case.config, case.input_shapes, rng)
    x = spec.make_inputs(case, rng)
    _, new = spec.forward({**case.config, "dropout": 0.0}, weights, x, training=True)
    batch = x.reshape(x.shape[0], -1).mean(axis=0)
    want = kept * weights["norm.moving_mean"] + (1 - kept) * batch
    np.testing.assert_allclose(new["norm.moving_mean"], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "active, kept, hint",
    [("kmr", 0.99, "tsmixer"), ("tsmixer", 0.01, "kmr"), ("kmr", 0.01, None),
     ("tsmixer", 0.99, None), ("kmr", 0.9, None), ("kmr", 0.5, None)],
)
def test_the_other_profile_is_named_only_when_its_momentum_fits(profile, active, kept, hint):
    profile(active)
    found = profiles.better_fit(*_update(kept))
    assert (found.name if found else None) == hint


def test_an_unknown_profile_names_the_known_ones():
    with pytest.raises(ValueError, match="kmr, tsmixer"):
        profiles.get("keras")


def test_the_cli_refuses_an_unknown_profile_in_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "portspec.cli", "verify", "torch", "--profile", "keras"],
        capture_output=True, text=True,
    )
    assert run.returncode == 2
    assert "unknown profile 'keras'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_gated_fusion_run_names_the_profile_without_its_batchnorm_constants(tmp_path):
    """The profiles fix FeatureMixing's BatchNorm: a run of GatedFeatureFusion clauses names
    the profile but does not claim a momentum and epsilon it never judged by."""
    pytest.importorskip("torch")  # the built-in it verifies (the flax and keras-* envs lack it)
    out = subprocess.run(
        [sys.executable, "-m", "portspec.cli", "verify", "torch", "--clause", "GFF-SHAPE"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    ).stdout
    assert "judged by profile kmr (it sets FeatureMixing's BatchNorm, and no FeatureMixing " \
        "clause ran)" in out
    assert "momentum" not in out.splitlines()[0]


@pytest.mark.parametrize("name", ["kmr", "tsmixer"])
def test_a_share_is_called_a_power_of_the_spec_one_only_where_it_is(name, profile):
    """The spec's own share is never read as its own square: under tsmixer (0.99) a ratio test
    took 0.99 for 0.99^2 (within 2 %) and worded the spec's side as "the spec's update applied
    2 times"; a share that is the spec's squared or cubed still is."""
    from portspec import variants

    profile(name)
    m = profiles.active().momentum
    assert "power" not in variants._momentum_words(None)
    assert "power" not in variants._momentum_words(m)
    assert "to the power 2" in variants._momentum_words(m**2)
    assert "to the power 3" in variants._momentum_words(m**3)
