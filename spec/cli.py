"""The ``portspec`` command: check layer implementations against the executable spec.

    portspec list                                layers, clauses, implementations (installed?)
    portspec matrix [--impl NAME_OR_FILE ...]    every available implementation, clause by clause
    portspec verify PORT.py [PORT.py ...]        a third-party port through its adapter file
    portspec vectors [--out DIR]                 regenerate the golden vectors
    portspec test [pytest args]                  the clause suite under pytest
    portspec docs                                regenerate docs/spec.md

``matrix`` and ``verify`` print a progress line per clause (stderr), then the table (stdout),
write the reports asked for, and exit 0 only when every applicable clause passed. With
``--expect FILE`` verify exits 0 when the verdicts equal the recorded ones instead: the way
to keep a known-failing port's verdict under test without calling it a pass.

Every setup problem (a port file that cannot be loaded, an unknown name, a bad option, a report
path that cannot be written) is one line on stderr and exit code 2, before any clause runs.
Each subcommand is one ``cmd_*`` function registered by ``_parser``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from portspec import __version__, report
from portspec.isolation import DEFAULT_TIMEOUT

EXIT_CODES = """exit codes:
  0  every applicable clause passed (verify --expect: every verdict as recorded)
  1  a clause failed (verify --expect: a verdict changed)
  2  a usage or setup error: one line on stderr, before any clause runs
"""
DONE_CODES = """exit codes:
  0  done
  2  a usage error: one line on stderr
"""
REPORT_NAMES = {"json": "JSON", "markdown": "Markdown", "junit": "JUnit XML", "html": "HTML"}
CLAUSE_HELP = "only this clause: an exact ID (FM-BN-UPDATE) or a glob (FM-BN-*, *-GRAD), any case"


def golden_dir() -> str:
    """Where ``portspec vectors`` writes by default (portspec.golden), without importing it."""
    return str(Path(__file__).parent / "vectors")


class UsageError(Exception):
    """A bad command line or setup: the one line to print before exiting with 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``portspec verify: error: ...``), exit 2."""

    def error(self, message):
        # Python 3.11's argparse lists the choices but does not pick the nearest one
        wrong = re.match(
            r"(argument [^:]+: invalid choice: '([^']*)') \(choose from (.*)\)$", message
        )
        if wrong:
            choices = re.findall(r"'([^']*)'", wrong.group(3))
            near = difflib.get_close_matches(wrong.group(2), choices, n=1, cutoff=0.6)
            if near:
                message = f"{wrong.group(1)} (did you mean {near[0]!r}?)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _profile(name: str) -> str:
    """Select the profile the run judges by (its workers inherit it); argparse's error else."""
    from portspec import profiles

    try:
        return profiles.select(name).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _selection(parser):
    parser.add_argument(
        "--profile",
        type=_profile,
        default=os.environ.get("PORTSPEC_PROFILE") or "kmr",
        metavar="NAME",
        help="the conventions to judge by: kmr (default; the seeds' layer, the moving statistics "
        "keep 0.01 of their old value) or tsmixer (the TSMixer reference's Keras defaults, "
        "0.99); see portspec.profiles",
    )
    parser.add_argument(
        "--clause", action="append", metavar="ID", help=CLAUSE_HELP + "; repeatable"
    )
    parser.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="only this layer: FeatureMixing or FM, GatedFeatureFusion or GFF; repeatable",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds one clause may take before it fails (default {DEFAULT_TIMEOUT:g})",
    )
    for fmt in report.WRITERS:
        parser.add_argument(
            f"--{fmt}",
            metavar="FILE",
            help=f"write the report as {REPORT_NAMES[fmt]} to FILE, with what was checked "
            "(versions, commit, port files' sha256, CPU, options, date)",
        )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="portspec",
        description="Check implementations of FeatureMixing and GatedFeatureFusion against "
        "their executable spec.\nportspec COMMAND --help tells what a command does and takes.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"portspec {__version__}",
        help="print portspec's version and exit",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name, func, help, description=None, epilog=EXIT_CODES):
        p = sub.add_parser(
            name,
            help=help,
            description=textwrap.fill(description or help[:1].upper() + help[1:] + ".", 79),
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        parser.commands[name] = p
        return p

    parser.commands = {}

    command("list", cmd_list, "list the layers, their clauses and the implementations",
            epilog=DONE_CODES)

    matrix = command(
        "matrix",
        cmd_matrix,
        "check every available implementation",
        "Run every clause against every built-in that can run here (Keras once per importable "
        "backend), or against the --impl values given, after all have exported portable weights "
        "into one folder, so each reader sees every writer.",
    )
    matrix.add_argument(
        "--impl",
        action="append",
        metavar="NAME_OR_FILE",
        help="a built-in (keras-jax, torch, flax, ...: see `portspec list`) or an adapter file; "
        "repeatable; default: every built-in that can run here. One asked for by name that "
        "cannot be loaded is an error (exit 2)",
    )
    _selection(matrix)

    verify = command(
        "verify",
        cmd_verify,
        "check a port through its adapter file",
        "Run every clause against the adapters a port file defines, each file in a worker "
        "process of its own (a hang or crash fails one clause). A port file is a small Python "
        "file with an adapter class on portspec.ports' bases (TorchPortAdapter, "
        "KerasPortAdapter, ...) saying how to build the layer and where its weights are: see "
        "the README's 'Checking a port'. The port's sibling modules are imported from the port "
        "file's own folder, never from the current directory. The built-ins that can run here "
        "export their weights too, for the portability clauses (FM/GFF-PORTABLE).",
    )
    verify.add_argument(
        "ports", nargs="+", metavar="PORT.py",
        help="one or more port files (or built-ins' names: portspec list)",
    )
    _selection(verify)
    verify.add_argument(
        "--expect",
        metavar="FILE",
        help="recorded verdicts (as --save-verdicts writes): exit 0 iff every verdict is the same",
    )
    verify.add_argument("--save-verdicts", metavar="FILE", help="record the verdicts to FILE")
    verify.add_argument(
        "--exchange", metavar="DIR", help="portable weights of other writers for FM/GFF-PORTABLE"
    )
    verify.add_argument(
        "--no-isolation",
        action="store_true",
        help="run in this process: faster, but no timeout and no protection from crashes",
    )

    vectors = command(
        "vectors",
        cmd_vectors,
        "regenerate the golden vectors",
        "Write the golden vectors, one safetensors file per layer and case (the same bits on "
        f"every CPU), into the installed package's own folder {golden_dir()}, where FM-VECTORS "
        "and GFF-VECTORS read them, or into --out DIR; prints each file's path.",
        epilog=DONE_CODES,
    )
    vectors.add_argument("--out", type=Path, metavar="DIR",
                         help="write them here instead of the package's folder")

    test = command(
        "test",
        cmd_test,
        "run the clause suite under pytest",
        "Run the clause suite as pytest tests (IDs CLAUSE-ID[impl]). Everything after `test` "
        "is pytest's: --impl, --clause, --layer, -k, -q, ... (`portspec test --help` shows "
        "them). Exits with pytest's code, except a usage error, which is 2.",
    )
    test.add_argument("pytest_args", nargs="*", help="passed on to pytest (--impl, -k, ...)")

    command("docs", cmd_docs, "write the spec page, docs/spec.md",
            "Write the spec page (configs, weight tables, clauses) to docs/spec.md under the "
            "current folder; run it in the repository to regenerate the page checked in there.",
            epilog=DONE_CODES)

    bench = command(
        "bench",
        cmd_bench,
        "time a port against our implementation and the peers (pytest-benchmark)",
        "Time the port, our implementation in its framework and the installed peers (inference, "
        "training forward, training step; eager and compiled) and print the port's ratios with "
        "the spread of paired rounds. Options bench does not know go to pytest-benchmark "
        "(--benchmark-json FILE, --benchmark-compare, --benchmark-histogram, ...).",
    )
    bench.add_argument("port", metavar="PORT.py", help="adapter file")
    for flag, choices, default in (("size", ("tiny", "small", "medium", "large"), "small, medium"),
                                   ("mode", ("inference", "train-forward", "train-step"), "all"),
                                   ("execution", ("eager", "compiled"), "both")):
        bench.add_argument(f"--{flag}", action="append", choices=choices,
                           help=f"repeatable; default: {default}")
    bench.add_argument("--layer", action="append", metavar="NAME",
                       help="FeatureMixing or GatedFeatureFusion; default: those the port has")
    return parser


# -- checks made before anything runs ---------------------------------------------------------


def _check_output(path: str | None, what: str) -> None:
    """A report path must be a file that can be written: refused now, not after the run."""
    if not path:
        return
    if os.path.isdir(path):
        raise UsageError(f"{what} {path}: is a directory, not a file")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # report.write creates the missing folders
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{what} {path}: {parent} is not a directory")
    # Try it (access() says yes to root on a read-only mount): append to the file without
    # changing it, or create and delete a scratch file where it is to go.
    try:
        if os.path.exists(path):
            open(path, "a").close()
        else:
            tempfile.TemporaryFile(dir=parent).close()
    except OSError as exc:
        where = path if os.path.exists(path) else parent
        raise UsageError(f"{what} {path}: not writable ({where}: {exc.strerror})") from None


def _check_expect(path: str) -> None:
    try:
        with open(path) as f:
            recorded = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"--expect {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--expect {path}: is a directory, not a file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--expect {path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--expect {path}: not JSON (line {exc.lineno}: {exc.msg}); write it with "
            "--save-verdicts"
        ) from None
    if not isinstance(recorded, dict) or not all(isinstance(v, dict) for v in recorded.values()):
        raise UsageError(
            f"--expect {path}: not a verdicts file ({{impl: {{clause: status}}}}, as "
            "--save-verdicts writes)"
        )


def _check_run(args) -> None:
    from portspec.layers import LAYERS
    from portspec.suite.runner import unknown_selection, wanted

    for pattern in args.clause or ():
        if "," in pattern:
            again = " ".join(f"--clause {p.strip()}" for p in pattern.split(",") if p.strip())
            raise UsageError(f"--clause {pattern}: one ID or glob per --clause; repeat it: {again}")
    problem = unknown_selection(args.clause, args.layer)
    if problem:
        raise UsageError(problem)
    if not any(wanted(spec, c, args.clause, args.layer)
               for spec in LAYERS.values() for c in spec.clauses):
        raise UsageError(
            f"--clause {' '.join(args.clause)} and --layer {' '.join(args.layer)} select no "
            "clause together (a clause's prefix names its layer: FM-, GFF-)"
        )
    for fmt in report.WRITERS:
        _check_output(getattr(args, fmt), f"--{fmt}")
    _check_output(getattr(args, "save_verdicts", None), "--save-verdicts")
    if getattr(args, "expect", None):
        _check_expect(args.expect)
    exchange = getattr(args, "exchange", None)
    if exchange and not os.path.isdir(exchange):
        raise UsageError(f"--exchange {exchange}: no such directory")


# -- progress ------------------------------------------------------------------------------


class Progress:
    """One stderr line per finished clause: done/total, verdict, clause, time, time left; the
    portable-weights exports and root-cause probes (export:, probe:) on lines without a number.

    The total is the sum of the workers' plans; a target not planned yet counts as
    ``per_target`` clauses until its plan arrives. Time left is the wall time per finished
    clause since the first one finished (before it, the run imports frameworks and loads
    ports, which no later clause repeats) times the clauses left, from the third clause on.
    """

    def __init__(self, targets: int, per_target: int, wanted: set[str] = frozenset()):
        self.wanted = set(wanted)  # the clause IDs the selection runs
        self.keys: set[tuple[str, str]] = set()  # (implementation, clause) planned
        self.unplanned, self.per_target = targets, per_target
        self.planned = self.done = 0
        self.first: float | None = None  # when the first clause finished

    def plan(self, tasks) -> None:
        """A worker's plan: its clauses (not export:/probe:), plus the portability clause of
        each of its layers that verify runs after the others have exported (not in the plan)."""
        self.unplanned = max(0, self.unplanned - 1)
        for impl, clause in map(tuple, tasks):
            if ":" not in clause:
                self.keys.add((impl, clause))
                portable = f"{clause.split('-')[0]}-PORTABLE"
                if portable in self.wanted:
                    self.keys.add((impl, portable))
        self.planned = len(self.keys)

    def __call__(self, result) -> None:
        if ":" in result.clause:  # export:<Layer>, probe:<Layer>: work around the clauses
            line = f"  {report.SYMBOL[result.status]:4} {result.clause} [{result.impl}] "
            line += f"{result.seconds:.1f}s"
            if result.status != "passed":
                line += f"  {report.one_line(result.message)[:100]}"
            print(line, file=sys.stderr, flush=True)
            return
        self.done += 1
        if self.first is None:
            self.first = time.monotonic()
        total = max(self.done, self.planned + self.unplanned * self.per_target)
        width = len(str(total))
        mark = report.SYMBOL[result.status]
        line = f"  [{self.done:>{width}}/{total}] {mark:4} {result.clause} [{result.impl}] "
        line += f"{result.seconds:.1f}s"
        if 3 <= self.done < total:
            rate = (time.monotonic() - self.first) / (self.done - 1)
            line += f", ~{_duration(rate * (total - self.done))} left"
        if result.status != "passed":
            line += f"  {report.one_line(result.message)[:100]}"
        print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress(args, targets: int) -> Progress:
    from portspec.layers import LAYERS
    from portspec.suite.runner import wanted

    ids = {
        clause.id
        for spec in LAYERS.values()
        for clause in spec.clauses
        if wanted(spec, clause, args.clause, args.layer)
    }
    return Progress(targets, len(ids), ids)


# -- the subcommands -----------------------------------------------------------------------


def _options(args, *names) -> dict:
    return {name: getattr(args, name) for name in ("clause", "layer", "timeout", *names)}


def _finish(results, args, targets, options) -> bool:
    from portspec import meta, profiles

    if not results:  # a port of GatedFeatureFusion alone verified with --layer FM, say
        raise UsageError(
            "no clause applies: the implementations provide no layer that --layer/--clause "
            f"select ({', '.join(map(str, targets))}; `portspec list` names each clause's layer)"
        )
    profile = profiles.active()
    if any(r.clause.startswith("FM-") for r in results):
        print(f"judged by profile {profile.describe()}")
    else:  # the profiles fix FeatureMixing's BatchNorm alone
        print(f"judged by profile {profile.name} (it sets FeatureMixing's BatchNorm, and no "
              "FeatureMixing clause ran)")
    paths = {fmt: getattr(args, fmt) for fmt in report.WRITERS}
    shown = [paths[fmt] for fmt in ("markdown", "html") if paths[fmt]]  # they hold whole lists
    print(report.terminal(results, reports=shown))
    info = meta.collect(targets, options, getattr(args, "profile", None))
    for path in report.write(results, paths, meta=info):
        print(f"wrote {path}", file=sys.stderr)
    return report.ok(results)


def cmd_matrix(args) -> int:
    from portspec.verify import available_builtins, matrix

    _check_run(args)
    names = args.impl or available_builtins()
    progress = _progress(args, len(names))
    exports = Progress(len(names), len(args.layer or ()) or 2)  # export:<Layer> per target
    results = matrix(
        args.impl,
        clauses=args.clause,
        layers=args.layer,
        timeout=args.timeout,
        on_result=progress,
        on_export=exports,
        on_plan=progress.plan,
    )
    return 0 if _finish(results, args, names, _options(args, "impl")) else 1


def cmd_verify(args) -> int:
    from portspec.verify import verify

    _check_run(args)
    for port in args.ports:  # 'PORT' for PORT.py would read as an unknown built-in's name
        if not os.path.exists(port) and os.path.isfile(port + ".py"):
            raise UsageError(f"{port}: no such file or built-in; did you mean {port}.py?")
    progress = _progress(args, len(args.ports))
    results = verify(
        args.ports,
        clauses=args.clause,
        layers=args.layer,
        timeout=args.timeout,
        isolate=not args.no_isolation,
        on_result=progress,
        exchange=args.exchange,
        on_plan=progress.plan,
    )
    options = _options(args, "no_isolation", "exchange", "expect")
    passed = _finish(results, args, args.ports, options)
    if args.save_verdicts:
        with open(args.save_verdicts, "w") as f:
            json.dump(report.verdicts(results), f, indent=1, sort_keys=True)
            f.write("\n")
    if args.expect:
        return 0 if _compare(results, args.expect) else 1
    return 0 if passed else 1


def _compare(results, path: str) -> bool:
    with open(path) as f:
        want = json.load(f)
    got = report.verdicts(results)
    changed = [
        f"  {clause} [{impl}]: recorded {want.get(impl, {}).get(clause, 'absent')}, "
        f"now {got.get(impl, {}).get(clause, 'absent')}"
        for impl in sorted(set(want) | set(got))
        for clause in sorted(set(want.get(impl, {})) | set(got.get(impl, {})))
        if want.get(impl, {}).get(clause) != got.get(impl, {}).get(clause)
    ]
    if changed:
        print(f"verdicts differ from {path}:", *changed, sep="\n", file=sys.stderr)
    else:
        print(f"verdicts as recorded in {path}", file=sys.stderr)
    return not changed


def cmd_list(args) -> int:
    from portspec import registry
    from portspec.layers import LAYERS

    lines = ["Layers and their clauses (select with --layer NAME and --clause ID or glob):"]
    for spec in LAYERS.values():
        lines += ["", f"{spec.name} ({spec.prefix})"]
        width = max(len(c.id) for c in spec.clauses)
        lines += [f"  {c.id.ljust(width)}  {c.text}" for c in spec.clauses]
    lines += ["", "Implementations (--impl NAME, or the path of an adapter file PORT.py):"]
    names = registry.known_names()
    width = max(map(len, names), default=0)
    for name in names:
        missing = registry.missing_modules(name)
        state = f"not installed here (needs {', '.join(missing)})" if missing else "installed here"
        if name == "keras" and not missing:
            state += f" (backend {os.environ.get('KERAS_BACKEND', 'jax')}, from KERAS_BACKEND)"
        elif name.endswith(("-cuda", "-gpu")) and not missing:
            state = "installed here; runs where the framework sees a GPU"
        lines.append(f"  {name.ljust(width)}  {state}")
    print("\n".join(lines))
    return 0


def cmd_vectors(args) -> int:
    from portspec import golden

    for path in golden.generate(*([args.out] if args.out else [])):
        print(path)
    return 0


def cmd_test(args) -> int:
    import pytest

    # The plugin's package is imported already (this module is in it); pytest would warn that
    # it cannot rewrite its asserts. The suite reports through ClauseFailure, not bare asserts.
    warning = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    with _one_line_usage_errors():
        code = int(pytest.main([*warning, "--pyargs", "portspec.suite.areas", *args.pytest_args]))
    return 2 if code == pytest.ExitCode.USAGE_ERROR else code


@contextlib.contextmanager
def _one_line_usage_errors():
    """pytest prints a usage error as 'ERROR: <message>' and a blank line, its own option
    errors with the usage, inifile and rootdir lines around them; ``portspec test`` prints
    'portspec test: error: <message>', one line, as the other commands do."""
    from _pytest import config  # print_usage_error: pytest 8 and 9; absent, pytest's own form

    def one_line(error, file):
        text = " ".join(map(str, error.args))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        said = [line.split(": error: ", 1)[1] for line in lines if ": error: " in line]
        message = said[0] + " (see portspec test --help)" if said else " ".join(lines)
        print(f"portspec test: error: {message}", file=file)

    original = getattr(config, "print_usage_error", None)
    if original is None:
        yield
        return
    config.print_usage_error = one_line
    try:
        yield
    finally:
        config.print_usage_error = original


def cmd_bench(args) -> int:
    from portspec import bench

    return bench.main(
        args.port,
        layers=args.layer,
        sizes=args.size or bench.DEFAULT_SIZES,
        modes=args.mode or bench.MODES,
        executions=args.execution or bench.EXECUTIONS,
        pytest_args=args.pytest_args,
    )


def cmd_docs(args) -> int:
    from portspec import docs  # written separately; imported only when asked for

    print(docs.write())
    return 0


def _unrecognized(parser, command: str, argv: list[str], extra: list[str]) -> None:
    """argparse's 'unrecognized arguments', from the parser they were given to (``portspec
    verify: error: ...`` after the command), with the closest option where one is near."""
    before = argv.index(extra[0]) < argv.index(command)
    owner = parser if before else parser.commands[command]
    message = f"unrecognized arguments: {' '.join(extra)}"
    near = difflib.get_close_matches(
        extra[0].split("=")[0], owner._option_string_actions, n=1, cutoff=0.75
    )
    if command == "verify" and extra[0].split("=")[0] == "--impl":
        message += " (verify takes port files and built-in names as arguments: " \
            "portspec verify PORT.py torch)"
    elif extra[0].startswith("-") and near:
        message += f" (did you mean {near[0]}?)"
    owner.error(message)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    if argv[:1] == ["test"]:  # everything after "test" is pytest's, options included
        args = argparse.Namespace(command="test", func=cmd_test, pytest_args=argv[1:])
    elif argv[:1] == ["bench"]:  # what bench does not know is pytest-benchmark's
        args, args.pytest_args = parser.parse_known_args(argv)
    else:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unrecognized(parser, args.command, argv, extra)
    from portspec import forkserver
    from portspec.registry import LoadError

    # a port file's worker comes from a process that keeps its framework imported, for this run
    # and the next (portspec.forkserver)
    forkserver.set_default(args.command in ("verify", "matrix"))
    try:
        return args.func(args)
    except BrokenPipeError:  # `portspec list | head`: the reader left; nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, LoadError, ValueError, OSError) as exc:
        print(f"portspec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
