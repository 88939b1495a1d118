"""The table of BENCHMARKS.md, measured with the suite's own cases.

asv answers "did this commit get slower?"; this answers "how fast is each implementation on
this machine, against its peer and against its matmul floor?" in one sitting. asv would pay
Python, framework and Keras start-up once per benchmark and parameter (some 600 processes for
the CPU grid); here it is once per implementation and its peer: one child process per group
(Keras's backend is fixed per process: ``keras-jax`` with ``kerasfactory-jax``, ``torch`` with
``neuralforecast``, ...) sets up every case of both layers through the benchmark classes, takes
``--repeat`` samples of each call, alternating between the group's members, and the median of
their floor, and prints JSON lines. The parent collects them and prints Markdown.

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


def groups(impls: list[str]) -> list[list[str]]:
    """One child process per group: an implementation with its same-framework peer, so that
    their samples can alternate (below). Order kept; a peer asked for alone is a group."""
    out, placed = [], set()
    for impl in impls:
        if impl in placed:
            continue
        group = [i for i in impls if i == impl or PEERS.get(i) == impl or PEERS.get(impl) == i]
        placed.update(group)
        out.append(group)
    return out


def measure(group: list[str], layers: list[str], sizes: list[str], modes: list[str],
            executions: list[str], repeat: int):
    """Child: every case of the implementations in ``group``, one JSON line each.

    The implementations of a group are set up side by side and sampled in turn (ours, peer,
    ours, peer, ...), so a burst of load from elsewhere on the machine lands on both instead
    of on whichever ran at that moment: *ours / peer* is a ratio taken in one run. Their floor
    is the same framework's matmuls, timed once per case after the samples."""
    for layer, cls in ((name, LAYERS[name]) for name in layers):
        impls, all_modes, all_executions, all_sizes, _ = cls.params
        members = [i for i in group if i in impls]
        for size in [s for s in all_sizes if s in sizes] if members else []:
            for mode in [m for m in all_modes if m in modes]:
                for execution in [e for e in all_executions if e in executions]:
                    rows = [dict(layer=layer, impl=impl, mode=mode, execution=execution,
                                 size=size) for impl in members]
                    for row in _measure_case(cls, rows, repeat):
                        print(json.dumps(row), flush=True)
                    _forget()


def _measure_case(cls, rows: list[dict], repeat: int) -> list[dict]:
    """The rows that could be set up, with their samples (or the error they raised)."""
    ready, done = [], []
    for row in rows:
        bench = cls()
        try:
            bench.setup(row["impl"], row["mode"], row["execution"], row["size"], "cpu")
            run = bench.case.run
            number = max(1, math.ceil(0.05 / timeit.timeit(run, number=1)))
        except NotImplementedError:
            continue
        except Exception as exc:  # a failing case is a result too (an OOM, say)
            done.append(dict(row, error=_error(exc)))
            continue
        ready.append((dict(row, samples=[]), bench, run, number))
    for _ in range(repeat):
        for row, _, run, number in ready:
            row["samples"].append(timeit.timeit(run, number=number) / number)
    if ready:
        floor = ready[0][1].case.make_floor()
        floor()
        floor_time = common.median_time(floor)
        done += [dict(row, floor=floor_time) for row, *_ in ready]
    return done


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
    """Ratio of the medians, and the range of sample-by-sample ratios: the samples of a group
    alternate (``measure``), so the i-th of ours and the i-th of the peer's were taken side by
    side. A range that straddles 1.0 is a difference the machine's noise can explain."""
    if not (_median(ours) and _median(peer)):
        return "-"
    ratio = _median(ours) / _median(peer)
    if len(ours["samples"]) != len(peer["samples"]):
        return _num(ratio)
    paired = [a / b for a, b in zip(ours["samples"], peer["samples"], strict=True)]
    return f"{ratio:.2f} ({min(paired):.2f}-{max(paired):.2f})"


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
        return measure(args.child.split(","), args.layer, sizes, args.mode, args.execution,
                       args.repeat)
    if args.from_json:
        with open(args.from_json) as f:
            rows = [json.loads(line) for line in f]
    else:
        rows = []
        for group in groups(args.impl or list(common.IMPLS)):
            rows += _run_child(group, sizes, args)
    print(render(rows))


def _run_child(group: list[str], sizes: list[str], args) -> list[dict]:
    """One group's rows; each is appended to ``--json`` as soon as it is measured,
    so a long run that dies keeps what it has."""
    cmd = [sys.executable, "-m", "benchmarks.table", "--child", ",".join(group),
           "--repeat", str(args.repeat), *(f"--size={s}" for s in sizes),
           *(f"--layer={name}" for name in args.layer), *(f"--mode={m}" for m in args.mode),
           *(f"--execution={e}" for e in args.execution)]
    print(f"measuring {', '.join(group)}", file=sys.stderr, flush=True)
    rows = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as child:
        for line in child.stdout:
            if line.startswith("{"):
                rows.append(json.loads(line))
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(line)
    if child.returncode:
        print(f"{', '.join(group)}: the child exited with {child.returncode}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
