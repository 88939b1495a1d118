"""The table of BENCHMARKS.md, measured with the suite's own cases under pytest-benchmark.

asv answers "did this commit get slower?"; this answers "how fast is each implementation on
this machine, against its peer and against its matmul floor?" in one sitting. asv would pay
Python, framework and Keras start-up once per benchmark and parameter (some 600 processes for
the CPU grid); here it is once per implementation and its peer: one child process per group
(Keras's backend is fixed per process: ``keras-jax`` with ``kerasfactory-jax``, ``torch`` with
``neuralforecast``, ...) runs pytest with pytest-benchmark over every case of both layers, set
up through the benchmark classes. For each case the group's members, then their floor (the
same framework's bare matmuls), are benchmarks of their own, back to back: calibrated
iterations per round, rounds up to ``--benchmark-max-time`` and at least
``--benchmark-min-rounds``, pytest-benchmark's table and statistics. Every ``--benchmark-*``
option passes through to each group's run; each group is a pytest session of its own, so
``--benchmark-json`` and ``--benchmark-histogram`` get the group's name added to the path, and
``--benchmark-save``/``--benchmark-compare`` keep each group's runs in a storage folder of its
own (``.benchmarks/table-<group>``) unless ``--benchmark-storage`` says otherwise. The child
appends each benchmark's per-call round times to a JSON-lines file; the parent renders
Markdown.

*ours / peer* is a ratio taken in one run: the ratio of the medians, beside the range of the
round-by-round ratios (round i of ours over round i of the peer, over the rounds both have).
The rounds paired are taken back to back, seconds apart, not interleaved, because
pytest-benchmark cannot interleave two callables: a test gets one
``benchmark`` fixture, which may be called once, and that one call (``benchmark(fn)`` or
``benchmark.pedantic(fn, ...)``) runs every round of ``fn`` before it returns, the iterations
per round calibrated for ``fn``. The only code it runs between two rounds is pedantic's
``setup``, which it does not time, so a peer's round placed there would be timed by a loop of
our own again. A burst of load from elsewhere on the machine that lands on one side's rounds
therefore widens the paired range instead of landing on both sides: a range that straddles
1.0 is a difference the machine's noise can explain.

    python -m benchmarks.table --json .asv/table.jsonl > table.md   # everything, CPU
    python -m benchmarks.table --impl torch --impl neuralforecast --size small --layer FeatureMixing
    python -m benchmarks.table --size small --benchmark-max-time=0.2 --benchmark-json=table.json
    python -m benchmarks.table --from-json .asv/table.jsonl          # re-render only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from portspec.bench import paired_ratios

from . import common, feature_mixing, gated_feature_fusion

# Modules, not classes, are imported: asv collects every benchmark class a module holds.
LAYERS = {
    "FeatureMixing": feature_mixing.FeatureMixing,
    "GatedFeatureFusion": gated_feature_fusion.GatedFeatureFusion,
}
PEERS = {
    "keras-jax": "kerasfactory-jax",
    "keras-torch": "kerasfactory-torch",
    "keras-tensorflow": "kerasfactory-tensorflow",
    "torch": "neuralforecast",
}
FLOOR = "floor"  # the last benchmark of a case: the bare matmuls of its framework


def groups(impls: list[str]) -> list[list[str]]:
    """One child process per group: an implementation with its same-framework peer, so that
    the two are measured in one run (above). Order kept; a peer asked for alone is a group."""
    out, placed = [], set()
    for impl in impls:
        if impl in placed:
            continue
        group = [i for i in impls if i == impl or PEERS.get(i) == impl or PEERS.get(impl) == i]
        placed.update(group)
        out.append(group)
    return out


@dataclass(frozen=True)
class TableCase:
    layer: str
    impl: str  # a member of the group, or FLOOR
    mode: str
    execution: str
    size: str

    @property
    def key(self) -> tuple:
        return (self.layer, self.mode, self.execution, self.size)

    @property
    def id(self) -> str:
        return f"{self.layer}-{self.size}-{self.mode}-{self.execution}-{self.impl}"

    def row(self, **values) -> dict:
        return dict(layer=self.layer, impl=self.impl, mode=self.mode,
                    execution=self.execution, size=self.size, **values)


def cases(group: list[str], layers: list[str], sizes: list[str], modes: list[str],
          executions: list[str]) -> list[TableCase]:
    """Every case of the group's members, each case's members then its floor, in grid order."""
    out = []
    for layer in layers:
        impls, all_modes, all_executions, all_sizes, _ = LAYERS[layer].params
        members = [i for i in group if i in impls]
        for size in [s for s in all_sizes if s in sizes] if members else []:
            for mode in [m for m in all_modes if m in modes]:
                for execution in [e for e in all_executions if e in executions]:
                    out += [TableCase(layer, impl, mode, execution, size)
                            for impl in [*members, FLOOR]]
    return out


class TablePlugin:
    """Parametrises ``bench_case`` with a group's cases and appends each case's rows, the
    floor's median attached, to the rows file once its floor has run (or could not)."""

    def __init__(self, cases: list[TableCase], rows: str):
        self.cases, self.rows = cases, rows
        self.pending: dict[tuple, list[dict]] = {}  # rows of a case waiting for its floor
        self.floors: dict[tuple, object] = {}  # a case's make_floor, from a member set up

    def pytest_generate_tests(self, metafunc):
        if "table_case" in metafunc.fixturenames:
            metafunc.parametrize("table_case", self.cases, ids=[c.id for c in self.cases])

    @pytest.fixture
    def table(self):
        return self

    def add(self, case: TableCase, row: dict):
        self.pending.setdefault(case.key, []).append(row)

    def flush(self, key: tuple, floor: float | None = None):
        with open(self.rows, "a") as f:
            for row in self.pending.pop(key, []):
                if floor is not None and "samples" in row:
                    row["floor"] = floor
                f.write(json.dumps(row) + "\n")
        _forget()

    def pytest_sessionfinish(self):
        for key in list(self.pending):
            self.flush(key)


def bench_case(benchmark, table_case: TableCase, table: TablePlugin):
    """One benchmark: a member's call in the case's mode and execution, or the case's floor.
    A member that cannot run here skips (asv's NotImplementedError); one that fails (an OOM,
    say) is a row with its error and a failed test."""
    case = table_case
    benchmark.group = " ".join(case.key)
    if case.impl == FLOOR:
        make_floor = table.floors.pop(case.key, None)
        if make_floor is None:
            table.flush(case.key)
            pytest.skip("no member of the group ran this case")
        try:
            floor = make_floor()
            floor()  # warm-up: first dispatch, jax.jit's compile
            benchmark(floor)
        finally:
            rounds = getattr(getattr(benchmark, "stats", None), "stats", None)
            table.flush(case.key, statistics.median(rounds.data) if rounds else None)
        return
    bench = LAYERS[case.layer]()
    try:
        bench.setup(case.impl, case.mode, case.execution, case.size, "cpu")
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    except Exception as exc:
        table.add(case, case.row(error=_error(exc)))
        raise
    table.floors.setdefault(case.key, bench.case.make_floor)
    benchmark(bench.case.run)
    table.add(case, case.row(samples=list(benchmark.stats.stats.data)))


def measure(group: list[str], layers: list[str], sizes: list[str], modes: list[str],
            executions: list[str], rows: str, pytest_args: list[str]) -> int:
    """Child: the group's benchmarks under pytest-benchmark, one JSON line per member and case
    appended to the file ``rows`` as soon as the case's floor is measured; returns pytest's
    exit code."""
    plugin = TablePlugin(cases(group, layers, sizes, modes, executions), rows)
    if not plugin.cases:
        return 0
    # pytest-benchmark turns itself off wherever PYTEST_XDIST_WORKER is set; this is no worker.
    for name in [k for k in os.environ if k.startswith("PYTEST_XDIST_")]:
        del os.environ[name]
    # This file is the test module: bench_case is its one test function.
    return int(pytest.main(
        ["-p", "no:cacheprovider", "-p", "no:xdist", "--import-mode=importlib",
         "-W", "ignore::DeprecationWarning", "-o", "python_files=table.py",
         "-o", "python_functions=bench_*", "--rootdir", str(Path(__file__).parent),
         *pytest_args, __file__],
        plugins=[plugin]))


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _forget():
    """Drop compiled code between cases: torch.compile would otherwise mark the shapes that
    change from case to case as dynamic, then stop compiling at its cache limit."""
    gc.collect()
    if "torch" in sys.modules:
        sys.modules["torch"]._dynamo.reset()


def render(rows: list[dict]) -> str:
    by = {(r["layer"], r["impl"], r["mode"], r["execution"], r["size"]): r for r in rows}
    out = []
    for layer, cls in LAYERS.items():
        impls, modes, executions, sizes, _ = cls.params
        out += [f"### {layer}", "",
                "| size | mode | implementation | eager ms: median (min-max) "
                "| compiled ms: median (min-max) | eager / peer eager: ratio of medians "
                "(min-max of the paired samples) | eager / floor "
                "| compiled / floor |",
                "|---|---|---|---|---|---|---|---|"]
        for size in sizes:
            for mode in modes:
                for impl in impls:
                    eager, compiled = (by.get((layer, impl, mode, e, size)) for e in executions)
                    if eager is None and compiled is None:
                        continue
                    peer = by.get((layer, PEERS.get(impl), mode, "eager", size))
                    out.append(
                        f"| {size} | {mode} | {impl} | {_cell(eager)} | {_cell(compiled)} "
                        f"| {_peer_ratio(eager, peer)} | {_num(_floor(eager))} "
                        f"| {_num(_floor(compiled))} |"
                    )
        out.append("")
    return "\n".join(out)


def _peer_ratio(ours, peer) -> str:
    """Ratio of the medians, and the range of the round-by-round ratios over the rounds both
    have (``portspec.bench.paired_ratios``; round i of each, taken back to back in one run,
    see above). A range that straddles 1.0 is a difference the machine's noise can explain."""
    if not (_median(ours) and _median(peer)):
        return "-"
    ratio = _median(ours) / _median(peer)
    paired = paired_ratios(ours["samples"], peer["samples"])
    return f"{ratio:.2f} ({min(paired):.2f}-{max(paired):.2f})"


def _median(row):
    return statistics.median(row["samples"]) if row and "samples" in row else None


def _floor(row):
    return _median(row) and row.get("floor") and _median(row) / row["floor"]


def _cell(row):
    if row is None:
        return "-"
    if "error" in row:
        return row["error"].split(":")[0]
    ms = [1e3 * s for s in row["samples"]]
    return f"{_ms(statistics.median(ms))} ({_ms(min(ms))}-{_ms(max(ms))})"


def _ms(v):
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def _num(v):
    return "-" if v is None else f"{v:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Any --benchmark-* option is pytest-benchmark's, passed to each group's run.")
    parser.add_argument("--impl", action="append", choices=list(common.IMPLS))
    parser.add_argument("--layer", action="append", choices=list(LAYERS))
    parser.add_argument("--size", action="append", help="default: every size")
    parser.add_argument("--mode", action="append", choices=list(common.MODES))
    parser.add_argument("--execution", action="append", choices=list(common.EXECUTIONS))
    parser.add_argument("--json", help="also append the rows to this JSON-lines file")
    parser.add_argument("--from-json", help="render rows measured before")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--benchmark-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    sizes = args.size or sorted({s for cls in LAYERS.values() for s in cls.params[3]})
    args.layer = args.layer or list(LAYERS)
    args.mode = args.mode or list(common.MODES)
    args.execution = args.execution or list(common.EXECUTIONS)
    if args.child:
        return measure(args.child.split(","), args.layer, sizes, args.mode, args.execution,
                       args.rows, rest)
    if args.from_json:
        with open(args.from_json) as f:
            rows = [json.loads(line) for line in f]
    else:
        rows = []
        for group in groups(args.impl or list(common.IMPLS)):
            rows += _run_child(group, sizes, args, rest)
    print(render(rows))


def group_options(group: list[str], options: list[str]) -> list[str]:
    """pytest-benchmark's options for one group's run: the group's name added to the paths
    of --benchmark-json and --benchmark-histogram, and a storage folder of its own for
    --benchmark-save/--benchmark-compare unless --benchmark-storage is given."""
    name = "-".join(group)
    out = []
    for option in options:
        flag, eq, value = option.partition("=")
        if eq and flag == "--benchmark-json":
            path = Path(value)
            option = f"{flag}={path.with_name(f'{path.stem}-{name}{path.suffix}')}"
        elif eq and flag == "--benchmark-histogram":
            option = f"{flag}={value}-{name}"
        out.append(option)
    saves = ("--benchmark-save", "--benchmark-autosave", "--benchmark-compare")
    if any(o.startswith(saves) for o in options) and not any(
            o.startswith("--benchmark-storage") for o in options):
        out.append(f"--benchmark-storage=file://./.benchmarks/table-{name}")
    return out


def _run_child(group: list[str], sizes: list[str], args, options: list[str]) -> list[dict]:
    """One group's rows. The child appends them to ``--json`` (else a file of its own) as each
    case is measured, so a long run that dies keeps what it has. Its pytest report goes to
    stderr: stdout is the Markdown."""
    cmd = [sys.executable, "-m", "benchmarks.table", "--child", ",".join(group),
           *(f"--size={s}" for s in sizes), *(f"--layer={name}" for name in args.layer),
           *(f"--mode={m}" for m in args.mode), *(f"--execution={e}" for e in args.execution),
           *group_options(group, options)]
    print(f"measuring {', '.join(group)}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="portspec-table-") as tmp:
        path = Path(args.json or Path(tmp) / "rows.jsonl")
        start = path.stat().st_size if path.exists() else 0
        code = subprocess.run([*cmd, f"--rows={path}"], stdout=sys.stderr).returncode
        with open(path) if path.exists() else open(os.devnull) as f:
            f.seek(start)
            rows = [json.loads(line) for line in f if line.startswith("{")]
    if code:
        print(f"{', '.join(group)}: the child exited with {code}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    sys.exit(main())
