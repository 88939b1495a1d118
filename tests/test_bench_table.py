"""benchmarks.table's bookkeeping: which implementations share a process, the order of the
benchmarks, how ratios to the peer are formed and shown, which pytest-benchmark options a
group's run gets; and one end-to-end run of a small eager case (its rows' shape and
pytest-benchmark's JSON, never its timings)."""

import importlib
import json
import pathlib
import subprocess
import sys

import pytest

# benchmarks/ is not part of the installed package (asv loads it from the checkout). Appended,
# not prepended: spec and impls still come from the installed package under test.
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
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


def test_each_case_runs_its_members_then_their_floor():
    got = table.cases(["torch", "neuralforecast"], ["FeatureMixing", "GatedFeatureFusion"],
                      ["small"], ["inference"], ["eager", "compiled"])
    assert [c.id for c in got] == [
        "FeatureMixing-small-inference-eager-torch",
        "FeatureMixing-small-inference-eager-neuralforecast",
        "FeatureMixing-small-inference-eager-floor",
        "FeatureMixing-small-inference-compiled-torch",
        "FeatureMixing-small-inference-compiled-neuralforecast",
        "FeatureMixing-small-inference-compiled-floor",
        # neuralforecast has no GatedFeatureFusion
        "GatedFeatureFusion-small-inference-eager-torch",
        "GatedFeatureFusion-small-inference-eager-floor",
        "GatedFeatureFusion-small-inference-compiled-torch",
        "GatedFeatureFusion-small-inference-compiled-floor",
    ]
    assert table.cases(["neuralforecast"], ["GatedFeatureFusion"], ["small"], ["inference"],
                       ["eager"]) == []


def test_peer_ratio_is_the_ratio_of_medians_with_the_range_of_paired_rounds():
    ours = {"samples": [1.0, 2.0, 3.0]}
    peer = {"samples": [2.0, 2.0, 2.0]}
    assert table._peer_ratio(ours, peer) == "1.00 (0.50-1.50)"
    # calibrated runs differ in rounds: pairs over the rounds both have, 1/4 and 2/8
    assert table._peer_ratio(ours, {"samples": [4.0, 8.0]}) == "0.33 (0.25-0.25)"
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


def test_a_groups_run_gets_its_own_output_paths_and_storage():
    group = ["torch", "neuralforecast"]
    assert table.group_options(group, ["--benchmark-json=out/t.json",
                                       "--benchmark-histogram=h", "--benchmark-max-time=0.2"]) == [
        "--benchmark-json=out/t-torch-neuralforecast.json",
        "--benchmark-histogram=h-torch-neuralforecast", "--benchmark-max-time=0.2"]
    assert table.group_options(group, ["--benchmark-compare"]) == [
        "--benchmark-compare",
        "--benchmark-storage=file://./.benchmarks/table-torch-neuralforecast"]
    mine = ["--benchmark-save=x", "--benchmark-storage=file:///tmp/b"]
    assert table.group_options(group, mine) == mine


def test_an_option_that_is_neither_the_tables_nor_pytest_benchmarks_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        table.main(["--benchmark-max-time=0.1", "--repeat", "5"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --repeat 5" in capsys.readouterr().err


def test_a_small_eager_case_end_to_end(tmp_path):
    pytest.importorskip("torch")
    rows, bench_json = tmp_path / "rows.jsonl", tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.table", "--impl", "torch",
         "--layer", "GatedFeatureFusion", "--size", "small", "--mode", "inference",
         "--execution", "eager", "--json", str(rows), "--benchmark-min-rounds=3",
         "--benchmark-max-time=0.01", f"--benchmark-json={bench_json}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [row] = [json.loads(line) for line in rows.read_text().splitlines()]
    assert row["impl"] == "torch" and row["size"] == "small"
    assert len(row["samples"]) >= 3 and row["floor"] > 0
    assert "| small | inference | torch |" in done.stdout  # the Markdown, alone on stdout
    assert "bench_case[GatedFeatureFusion-small-inference-eager-torch]" in done.stderr
    saved = json.loads((tmp_path / "bench-torch.json").read_text())
    by_name = {b["name"]: b["stats"]["data"] for b in saved["benchmarks"]}
    assert by_name.keys() == {f"bench_case[GatedFeatureFusion-small-inference-eager-{who}]"
                              for who in ("torch", "floor")}
    assert by_name["bench_case[GatedFeatureFusion-small-inference-eager-torch]"] == row["samples"]


@pytest.mark.parametrize("command, preloads", [("discover", False), ("run_server", True)])
def test_asvs_discovery_imports_no_framework_and_its_forkserver_preloads(command, preloads):
    """benchmarks.common as asv's ``benchmark.py COMMAND`` imports it: discovery reads names
    and parameters only (each ``asv run`` discovers anew); the forkserver preloads PyTorch for
    the benchmark processes it forks."""
    pytest.importorskip("torch")
    probe = ("import sys; sys.argv = ['benchmark.py', sys.argv[1]]; "
             "import benchmarks.common; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, command], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(preloads)]
