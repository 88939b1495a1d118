"""benchmarks.table's bookkeeping: which implementations share a process, how ratios to the
peer are formed and shown. No framework is run."""

import importlib
import pathlib
import sys

# benchmarks/ is not part of the installed package (asv loads it from the checkout). Appended,
# not prepended: spec and impls still come from the installed package under test.
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))
table = importlib.import_module("benchmarks.table")


def test_an_implementation_and_its_peer_share_a_process():
    asked = ["keras-jax", "torch", "kerasfactory-jax", "flax", "neuralforecast", "keras-torch"]
    assert table.groups(asked) == [
        ["keras-jax", "kerasfactory-jax"],
        ["torch", "neuralforecast"],
        ["flax"],
        ["keras-torch"],
    ]
    assert table.groups(["kerasfactory-tensorflow"]) == [["kerasfactory-tensorflow"]]


def test_peer_ratio_is_the_ratio_of_medians_with_the_range_of_paired_samples():
    ours = {"samples": [1.0, 2.0, 3.0]}
    peer = {"samples": [2.0, 2.0, 2.0]}
    assert table._peer_ratio(ours, peer) == "1.00 (0.50-1.50)"
    assert table._peer_ratio(ours, {"samples": [4.0]}) == "0.50"  # not taken side by side
    assert table._peer_ratio(ours, None) == "-"
    assert table._peer_ratio(ours, {"error": "ResourceExhaustedError: OOM"}) == "-"


def test_render_shows_errors_and_peer_columns():
    base = dict(layer="FeatureMixing", mode="train-step", execution="eager", size="large")
    rows = [
        dict(base, impl="torch", samples=[0.9, 1.1], floor=0.5),
        dict(base, impl="neuralforecast", samples=[1.0, 1.0], floor=0.5),
        dict(base, impl="keras-tensorflow", error="ResourceExhaustedError: OOM when allocating"),
    ]
    text = table.render(rows)
    lines = text.splitlines()
    row = "| large | train-step | {} |"
    assert row.format("torch | 1000 (900-1100) | - | 1.00 (0.90-1.10) | 2.00 | -") in lines
    assert row.format("keras-tensorflow | ResourceExhaustedError | - | - | - | -") in lines
    assert sum(line.startswith("| large") for line in lines) == 3
