"""The table of BENCHMARKS.md, measured with the suite's own cases.

asv answers "did this commit get slower?"; this answers "how fast is each implementation on
this machine, against its peer and against its matmul floor?" in one sitting. asv would pay
Python, framework and Keras start-up once per benchmark and parameter (some 600 processes for
the CPU grid); here it is once per implementation: one child process per implementation (Keras's
backend is fixed per process) sets up every case of both layers through the benchmark classes,
takes ``--repeat`` samples of the call and the median of its floor, and prints JSON lines. The
parent collects them and prints Markdown.

    python -m benchmarks.table --json .asv/table.jsonl > table.md   # everything, CPU
    python -m benchmarks.table --impl torch --impl neuralforecast --size small --layer FeatureMixing
    python -m benchmarks.table --from-json .asv/table.jsonl          # re-render only
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import timeit

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


def measure(impl: str, layers: list[str], sizes: list[str], modes: list[str],
            executions: list[str], repeat: int):
    """Child: every case of ``impl``, one JSON line each."""
    for layer, cls in ((name, LAYERS[name]) for name in layers):
        impls, all_modes, all_executions, all_sizes, _ = cls.params
        for size in [s for s in all_sizes if s in sizes] if impl in impls else []:
            for mode in [m for m in all_modes if m in modes]:
                for execution in [e for e in all_executions if e in executions]:
                    row = dict(layer=layer, impl=impl, mode=mode, execution=execution, size=size)
                    try:
                        row.update(_measure_case(cls, row, repeat))
                    except NotImplementedError:
                        continue
                    except Exception as exc:  # a failing case is a result too (an OOM, say)
                        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    print(json.dumps(row), flush=True)
                    _forget()


def _measure_case(cls, row: dict, repeat: int) -> dict:
    bench = cls()
    bench.setup(row["impl"], row["mode"], row["execution"], row["size"], "cpu")
    run = bench.case.run
    number = max(1, math.ceil(0.05 / timeit.timeit(run, number=1)))
    samples = [t / number for t in timeit.repeat(run, number=number, repeat=repeat)]
    floor = bench.case.make_floor()
    floor()
    return dict(samples=samples, floor=common.median_time(floor))


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
                "| compiled ms: median (min-max) | eager / peer eager | eager / floor "
                "| compiled / floor |",
                "|---|---|---|---|---|---|---|---|"]
        for size in sizes:
            for mode in modes:
                for impl in impls:
                    eager, compiled = (by.get((layer, impl, mode, e, size)) for e in executions)
                    if eager is None and compiled is None:
                        continue
                    peer = by.get((layer, PEERS.get(impl), mode, "eager", size))
                    ratio = _median(eager) and _median(peer) and _median(eager) / _median(peer)
                    out.append(
                        f"| {size} | {mode} | {impl} | {_cell(eager)} | {_cell(compiled)} "
                        f"| {_num(ratio)} | {_num(_floor(eager))} | {_num(_floor(compiled))} |"
                    )
        out.append("")
    return "\n".join(out)


def _median(row):
    return statistics.median(row["samples"]) if row and "samples" in row else None


def _floor(row):
    return _median(row) and _median(row) / row["floor"]


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", action="append", choices=list(common.IMPLS))
    parser.add_argument("--layer", action="append", choices=list(LAYERS))
    parser.add_argument("--size", action="append", help="default: every size")
    parser.add_argument("--mode", action="append", choices=list(common.MODES))
    parser.add_argument("--execution", action="append", choices=list(common.EXECUTIONS))
    parser.add_argument("--repeat", type=int, default=5, help="samples per case")
    parser.add_argument("--json", help="also append the rows to this JSON-lines file")
    parser.add_argument("--from-json", help="render rows measured before")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.size or sorted({s for cls in LAYERS.values() for s in cls.params[3]})
    args.layer = args.layer or list(LAYERS)
    args.mode = args.mode or list(common.MODES)
    args.execution = args.execution or list(common.EXECUTIONS)
    if args.child:
        return measure(args.child, args.layer, sizes, args.mode, args.execution, args.repeat)
    if args.from_json:
        with open(args.from_json) as f:
            rows = [json.loads(line) for line in f]
    else:
        rows = []
        for impl in args.impl or common.IMPLS:
            rows += _run_child(impl, sizes, args)
    print(render(rows))


def _run_child(impl: str, sizes: list[str], args) -> list[dict]:
    """One implementation's rows; each is appended to ``--json`` as soon as it is measured,
    so a long run that dies keeps what it has."""
    cmd = [sys.executable, "-m", "benchmarks.table", "--child", impl,
           "--repeat", str(args.repeat), *(f"--size={s}" for s in sizes),
           *(f"--layer={name}" for name in args.layer), *(f"--mode={m}" for m in args.mode),
           *(f"--execution={e}" for e in args.execution)]
    print(f"measuring {impl}", file=sys.stderr, flush=True)
    rows = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            if line.startswith("{"):
                rows.append(json.loads(line))
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(line)
    if child.returncode:
        print(f"{impl}: the child exited with {child.returncode}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
