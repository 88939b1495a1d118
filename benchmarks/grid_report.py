"""What one asv run of the grid says, as BENCHMARKS.md shows it: how many benchmarks ran, were
skipped or failed and in how long, and the peak memory of every case.

``benchmarks.table`` measures times outside asv; peak memory is asv's own ``peakmem_layer`` (the
resident set of the benchmark process at its highest), so it is read from asv's results file:

    asv run --python=same --quick --show-stderr --set-commit-hash HEAD   # the whole grid
    python -m benchmarks.grid_report                     # the newest results file under .asv
    python -m benchmarks.grid_report .asv/results/MACHINE/COMMIT-ENV.json
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import math
from pathlib import Path

from .common import EXECUTIONS, PARAM_NAMES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / ".asv" / "results"  # asv.conf.json's results_dir


def load(path: Path) -> tuple[dict[str, list[tuple[dict, float | None]]], dict[str, float]]:
    """The results file as ``{benchmark: [(params, value), ...]}`` and the seconds each
    benchmark took. asv stores a value per point of the parameter grid in the grid's order:
    a number, NaN for a skip (``NotImplementedError`` in setup), ``None`` for a failure."""
    data = json.loads(path.read_text())
    columns = data["result_columns"]
    results, seconds = {}, {}
    for name, row in data["results"].items():
        row = dict(zip(columns, row, strict=False))
        grid = itertools.product(*([ast.literal_eval(v) for v in values]
                                   for values in row["params"]))
        results[name] = [(dict(zip(PARAM_NAMES, point, strict=True)), value)
                         for point, value in zip(grid, row["result"], strict=True)]
        seconds[name] = row.get("duration")
    return results, seconds


def _skipped(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def status(results, seconds) -> str:
    """One row per benchmark: points of its grid that ran, were skipped, failed."""
    out = ["| benchmark | grid points | ran | skipped | failed | seconds |",
           "|---|---|---|---|---|---|"]
    for name, points in results.items():
        values = [v for _, v in points]
        failed = sum(v is None for v in values)
        skipped = sum(_skipped(v) for v in values)
        ran = len(values) - failed - skipped
        duration = seconds.get(name)
        out.append(f"| `{name}` | {len(values)} | {ran} | {skipped} | {failed} "
                   f"| {'-' if duration is None else round(duration)} |")
    return "\n".join(out)


def peakmem(results) -> str:
    """Per layer: a row per size, mode and device; a column per implementation; each cell
    ``eager / compiled`` in MiB."""
    out = []
    for name, points in results.items():
        if not name.endswith(".peakmem_layer"):
            continue
        by = {tuple(p[k] for k in PARAM_NAMES): v for p, v in points}
        # An implementation, size or device that nothing ran on (a peer not installed, a part
        # of the grid not selected, cuda without a GPU) gets no column or row.
        ran = [p for p, v in points if not _skipped(v)]
        impls, modes, sizes, devices = (list(dict.fromkeys(p[k] for p in ran))
                                        for k in ("implementation", "mode", "size", "device"))
        out += [f"#### {name.split('.')[1]}", "",
                "| size | mode | device | " + " | ".join(impls) + " |",
                "|---|---|---|" + "---|" * len(impls)]
        for size, mode, device in itertools.product(sizes, modes, devices):
            cells = [" / ".join(_mib(by.get((impl, mode, e, size, device))) for e in EXECUTIONS)
                     for impl in impls]
            out.append(f"| {size} | {mode} | {device} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _mib(value) -> str:
    if value is None:
        return "failed"
    if _skipped(value):
        return "-"
    return f"{value / 2**20:.0f}"


def newest() -> Path:
    files = [p for p in RESULTS.glob("*/*.json") if p.name != "machine.json"]
    if not files:
        raise SystemExit(f"no asv results under {RESULTS}: run `asv run` first")
    return max(files, key=lambda p: p.stat().st_mtime)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path, help="default: the newest")
    args = parser.parse_args(argv)
    path = args.results or newest()
    results, seconds = load(path)
    print(f"From `{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}`.\n")
    print(status(results, seconds))
    print()
    print(peakmem(results))


if __name__ == "__main__":
    main()
