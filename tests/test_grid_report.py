"""benchmarks.grid_report reads asv's results file the way asv writes it: one value per point of
the parameter grid, in the grid's order; NaN for a skip, None for a failure. No framework is
run."""

import importlib
import itertools
import json
import math
import pathlib
import sys

# As in test_bench_table: benchmarks/ comes from the checkout, spec and impls from the package.
sys.path.append(str(pathlib.Path(__file__).resolve().parents[1]))
grid_report = importlib.import_module("benchmarks.grid_report")

MIB = 2**20
PARAMS = [["'torch'", "'neuralforecast'"], ["'inference'", "'train-step'"],
          ["'eager'", "'compiled'"], ["'small'", "'large'"], ["'cpu'", "'cuda'"]]


def _write(tmp_path, name, values, duration=12.3):
    columns = ["result", "params", "version", "started_at", "duration"]
    data = {"result_columns": columns,
            "results": {name: [values, PARAMS, "v", 0, duration]}}
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data))  # NaN as NaN, None as null: as asv writes them
    return path


def _values(fill):
    """A value for every grid point, from ``fill(impl, mode, execution, size, device)``."""
    points = itertools.product(*([v.strip("'") for v in values] for values in PARAMS))
    return [fill(*point) for point in points]


def test_points_are_matched_to_their_parameters_in_the_grids_order(tmp_path):
    def fill(impl, mode, execution, size, device):
        if device == "cuda" or (impl == "neuralforecast" and execution == "compiled"):
            return math.nan
        return (100 * (impl == "torch") + 10 * (mode == "train-step")
                + 2 * (execution == "compiled") + (size == "large")) * MIB

    path = _write(tmp_path, "feature_mixing.FeatureMixing.peakmem_layer", _values(fill))
    results, seconds = grid_report.load(path)
    points = results["feature_mixing.FeatureMixing.peakmem_layer"]
    assert len(points) == 32
    assert seconds == {"feature_mixing.FeatureMixing.peakmem_layer": 12.3}
    first, value = points[0]
    assert first == dict(implementation="torch", mode="inference", execution="eager",
                         size="small", device="cpu")
    assert value == 100 * MIB

    text = grid_report.peakmem(results)
    lines = text.splitlines()
    assert "| size | mode | device | torch | neuralforecast |" in lines
    assert "| large | train-step | cpu | 111 / 113 | 11 / - |" in lines
    assert "| small | inference | cpu | 100 / 102 | 0 / - |" in lines
    assert not any("cuda" in line for line in lines)  # nothing ran there: no rows


def test_status_counts_ran_skipped_and_failed(tmp_path):
    def fill(impl, mode, execution, size, device):
        if device == "cuda":
            return math.nan
        if impl == "neuralforecast" and size == "large" and mode == "train-step":
            return None  # failed (an out-of-memory, say)
        return MIB

    path = _write(tmp_path, "feature_mixing.FeatureMixing.peakmem_layer", _values(fill))
    results, seconds = grid_report.load(path)
    assert grid_report.status(results, seconds).splitlines()[2] == (
        "| `feature_mixing.FeatureMixing.peakmem_layer` | 32 | 14 | 16 | 2 | 12 |")
    assert "| large | train-step | cpu | 1 / 1 | failed / failed |" in (
        grid_report.peakmem(results).splitlines())
