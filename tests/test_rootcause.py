"""Root causes: the oracle variants, the search over them, and the measure on single-mistake ports.

The variants at their defaults are the spec's oracle to the bit; a port that makes one mistake
of the variant space gets exactly that one root cause; a mistake outside it gets none ("no
variant fits"), never a wrong name.
"""

from __future__ import annotations

import numpy as np
import pytest

from portspec import variants
from portspec.layers import LAYERS


def _masks(spec, case, rng):
    if spec.multi_input or case.config["dropout"] == 0.0:
        return None
    b, length, n = case.input_shapes[0]
    p = case.config["dropout"]
    return {
        "dropout1": rng.random((b, length, case.config["ff_dim"])) >= p,
        "dropout2": rng.random((b, length, n)) >= p,
    }


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("training", [False, True])
def test_the_default_variant_is_the_spec_to_the_bit(name, training):
    spec, space = LAYERS[name], variants.SPACES[name]
    for case in spec.cases() + spec.config_cases():
        rng = np.random.default_rng(0)
        weights = spec.random_weights(case.config, case.input_shapes, rng)
        x = spec.make_inputs(case, rng)
        masks = _masks(spec, case, rng) if training else None
        want, want_state = spec.forward(case.config, weights, x, training=training, masks=masks)
        got, state = space.forward(case.config, weights, x, training=training, masks=masks)
        assert np.array_equal(got, want), case.label
        assert all(np.array_equal(state[k], want_state[k]) for k in want_state), case.label
        fast, _ = space.forward(
            case.config, weights, x, training=training, masks=masks, ops=variants.FAST
        )
        np.testing.assert_allclose(fast, want, rtol=1e-14, atol=1e-14)


def test_every_alternative_changes_the_output_somewhere():
    """A choice whose alternatives compute the spec on every probe would be unfalsifiable."""
    from portspec import rootcause

    for name, space in variants.SPACES.items():
        records = rootcause.oracle_records(LAYERS[name])
        for choice, values in space.alternatives.items():
            for value in values:
                if value == "fit":
                    continue
                assert rootcause.distinguishable(LAYERS[name], records, {choice: value}), (
                    f"{name} {choice}={value!r} reproduces the spec on every probe"
                )


def test_every_report_opens_with_the_root_causes():
    from portspec import report
    from portspec.suite.runner import Result

    cause = "FeatureMixing: epsilon 1e-05 instead of epsilon 0.001 [max error vs the spec 1]"
    results = [
        Result("FM-INFERENCE", "port", "failed", "max |error| 0.1", cause=cause),
        Result("FM-BN-EPSILON", "port", "failed", "max |error| 956", cause=cause),
        Result("FM-INIT", "port", "failed", "kernel not Glorot", cause="unexplained"),
        Result("FM-SHAPE", "port", "passed"),
    ]
    text = report.terminal(results, color=False)
    assert text.startswith("Root causes:\n[port] " + cause + ": FM-INFERENCE, FM-BN-EPSILON")
    assert "[port] unexplained: FM-INIT" in text
    assert text.count(cause) == 1 + 2  # once as a finding, once per clause it explains
    for fmt in ("markdown", "html", "junit", "json"):
        out = report.WRITERS[fmt](results)
        first = out.find("epsilon 1e-05")
        assert first != -1 and first < out.find("FM-SHAPE" if fmt != "json" else "results"), fmt
    assert '"root_causes"' in report.to_json(results)
