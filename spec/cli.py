"""The ``portspec`` command.

    portspec matrix [--impl NAME_OR_FILE ...]    every available implementation, clause by clause
    portspec verify PORT.py [PORT.py ...]        a third-party port through its adapter file
    portspec vectors [--out DIR]                 regenerate the golden vectors
    portspec test [pytest args]                  the clause suite under pytest
    portspec docs                                regenerate docs/spec.md

``matrix`` and ``verify`` print a progress line per clause (stderr), then the table (stdout),
write the reports asked for, and exit 0 only when every applicable clause passed. With
``--expect FILE`` verify exits 0 when the verdicts equal the recorded ones instead: the way
to keep a known-failing port's verdict under test without calling it a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from portspec import report
from portspec.isolation import DEFAULT_TIMEOUT


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
    parser.add_argument("--clause", action="append", metavar="ID", help="clause ID or ID prefix")
    parser.add_argument("--layer", action="append", metavar="NAME", help="FeatureMixing or FM")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"seconds one clause may take before it fails (default {DEFAULT_TIMEOUT:g})",
    )
    for fmt in ("json", "markdown", "junit", "html"):
        parser.add_argument(f"--{fmt}", metavar="FILE", help=f"write a {fmt} report to FILE")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portspec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    matrix = sub.add_parser("matrix", help="check every available implementation")
    matrix.add_argument(
        "--impl",
        action="append",
        metavar="NAME_OR_FILE",
        help="a built-in (keras-jax, torch, ...) or an adapter file; repeatable; default: every "
        "built-in that can run here, Keras on each importable backend",
    )
    _selection(matrix)

    verify = sub.add_parser("verify", help="check a port through its adapter file")
    verify.add_argument("ports", nargs="+", metavar="PORT.py", help="adapter file or built-in")
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

    vectors = sub.add_parser("vectors", help="regenerate the golden vectors")
    vectors.add_argument("--out", type=Path, metavar="DIR", help="default: spec/vectors")

    test = sub.add_parser("test", help="run the clause suite under pytest")
    test.add_argument("pytest_args", nargs="*", help="passed on to pytest (--impl, -k, ...)")

    sub.add_parser("docs", help="regenerate docs/spec.md")
    return parser


def _progress(result) -> None:
    mark = report.SYMBOL[result.status]
    line = f"  {mark:4} {result.clause} [{result.impl}] {result.seconds:.1f}s"
    if result.status != "passed":
        line += f"  {result.message[:100]}"
    print(line, file=sys.stderr, flush=True)


def _finish(results, args) -> bool:
    print(report.terminal(results))
    paths = {fmt: getattr(args, fmt) for fmt in report.WRITERS}
    for path in report.write(results, paths):
        print(f"wrote {path}", file=sys.stderr)
    return report.ok(results)


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["test"]:  # everything after "test" is pytest's, options included
        import pytest

        return int(pytest.main(["--pyargs", "portspec.suite.areas", *argv[1:]]))
    args = _parser().parse_args(argv)
    if args.command == "matrix":
        from portspec.verify import matrix

        results = matrix(
            args.impl,
            clauses=args.clause,
            layers=args.layer,
            timeout=args.timeout,
            on_result=_progress,
            on_export=_progress,
        )
        return 0 if _finish(results, args) else 1
    if args.command == "verify":
        from portspec.verify import verify

        try:
            results = verify(
                args.ports,
                clauses=args.clause,
                layers=args.layer,
                timeout=args.timeout,
                isolate=not args.no_isolation,
                on_result=_progress,
                exchange=args.exchange,
            )
        except (ValueError, OSError) as exc:
            print(f"portspec verify: {exc}", file=sys.stderr)
            return 2
        passed = _finish(results, args)
        if args.save_verdicts:
            with open(args.save_verdicts, "w") as f:
                json.dump(report.verdicts(results), f, indent=1, sort_keys=True)
                f.write("\n")
        if args.expect:
            return 0 if _compare(results, args.expect) else 1
        return 0 if passed else 1
    if args.command == "vectors":
        from portspec import golden

        for path in golden.generate(*([args.out] if args.out else [])):
            print(path)
        return 0
    if args.command == "docs":
        from portspec import docs  # written separately; imported only when asked for

        print(docs.write())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
