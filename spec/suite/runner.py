"""Run clauses against an adapter outside pytest (the CLI and its worker processes use this)."""

from __future__ import annotations

import difflib
import fnmatch
import re
import time
from dataclasses import asdict, dataclass, field

from portspec.clauses import ClauseFailure, NotApplicable
from portspec.suite.checks import Context, work_items
from portspec.suite.state import clause_state


@dataclass
class Result:
    clause: str
    impl: str
    status: str  # "passed", "failed", "skipped"
    message: str = ""
    diagnosis: str | None = None
    seconds: float = 0.0
    details: dict = field(default_factory=dict)
    # The root cause that explains a failure (portspec.rootcause), or "unexplained"
    cause: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def run_clause(adapter, spec, clause, fn) -> Result:
    start = time.perf_counter()
    ctx = Context(spec, clause, adapter)
    try:
        with clause_state():  # what a failing clause leaves behind never reaches the next
            fn(ctx)
    except NotApplicable as exc:
        return Result(clause.id, adapter.name, "skipped", str(exc), seconds=_since(start))
    except ClauseFailure as exc:
        return Result(clause.id, adapter.name, "failed", _plain(str(exc)) + ctx.held_at_neutral(),
                      exc.diagnosis and _plain(exc.diagnosis), _since(start), exc.details)
    except Exception as exc:  # a port that raises fails the clause; the run goes on
        built = ctx.build_raised  # raised by building the layer, not by a call: for the causes
        details = {}
        if built and built[0] is exc:
            from portspec.rootcause import _port_frame

            where = _port_frame(exc)
            details = {"raised_building": built[1],
                       **({"at": [where[0], where[1]]} if where else {})}
        return Result(clause.id, adapter.name, "failed",
                      f"raised {_describe(exc)}{ctx.held_at_neutral()}", seconds=_since(start),
                      details=details)
    return Result(clause.id, adapter.name, "passed", seconds=_since(start), details=ctx.details)


def clause_matches(clause_id: str, pattern: str) -> bool:
    """Is ``clause_id`` the ID ``pattern`` names: exactly, or as a shell glob (``FM-BN-*``,
    ``*-GRAD``), ignoring case? ``FM-CONFIG`` is FM-CONFIG alone, not FM-CONFIG-ROUNDTRIP."""
    return fnmatch.fnmatchcase(clause_id.upper(), pattern.strip().upper())


def layer_matches(spec, name: str) -> bool:
    """Is ``name`` the layer's name or its clause prefix (FeatureMixing, FM), ignoring case?"""
    return name.strip().lower() in (spec.name.lower(), spec.prefix.lower())


def layer_selected(spec, layers=None) -> bool:
    """Is the layer among the ``--layer`` names given (every layer when none is)?"""
    return not layers or any(layer_matches(spec, name) for name in layers)


def wanted(spec, clause, clauses=None, layers=None) -> bool:
    """Does the clause match one of the ``--clause`` IDs or globs and ``--layer`` names given?"""
    if not layer_selected(spec, layers):
        return False
    return not clauses or any(clause_matches(clause.id, c) for c in clauses)


def unknown_selection(clauses=None, layers=None) -> str | None:
    """The one-line complaint about a ``--clause`` or ``--layer`` that selects nothing, listing
    the known ones; None when every value names something."""
    from portspec.layers import LAYERS

    ids = [c.id for spec in LAYERS.values() for c in spec.clauses]
    for name in layers or ():
        if not any(layer_matches(spec, name) for spec in LAYERS.values()):
            known = ", ".join(f"{s.name} ({s.prefix})" for s in LAYERS.values())
            return f"unknown layer {name!r} (known: {known})"
    for pattern in clauses or ():
        if not any(clause_matches(i, pattern) for i in ids):
            family = pattern.strip().rstrip("-") + "-*"
            if any(clause_matches(i, family) for i in ids):  # the old prefix form, FM-BN
                return f"no clause is {pattern!r}: for the family, give the glob {family.upper()}"
            near = difflib.get_close_matches(pattern.strip().upper(), ids, n=1, cutoff=0.8)
            hint = f"did you mean {near[0]}? " if near else ""
            return f"no clause matches {pattern!r} ({hint}an ID or a glob such as FM-BN-*; " \
                f"known: {', '.join(ids)})"
    return None


def select(items, adapter, clauses=None, layers=None):
    """The work items that apply to ``adapter``, filtered by clause IDs or globs and layers."""
    return [
        (spec, clause, fn)
        for spec, clause, fn in items
        if spec.name in adapter.layers and wanted(spec, clause, clauses, layers)
    ]


def run_all(adapter, clauses=None, layers=None, on_result=None) -> list[Result]:
    results = []
    for spec, clause, fn in select(work_items([adapter]), adapter, clauses, layers):
        result = run_clause(adapter, spec, clause, fn)
        results.append(result)
        if on_result:
            on_result(result)
    return results


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 4)


def _plain(text: str) -> str:
    """A clause's words on one line, without terminal colours: a port's error quoted in them
    may carry both (Keras's messages do)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return " ".join(text.split()) if "\n" in text else text


def _describe(exc: BaseException, limit: int = 400) -> str:
    """``Type: message`` on one line: the message without notes (hypothesis adds some) or
    terminal colours (Keras adds them), shortened to ``limit`` characters."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = " ".join(text.split())
    said, listed, paths = text.partition(": it has only ")  # a weight map's error (ports.base):
    if listed and len(text) > limit:  # the list of the port's paths is cut before the rest
        text = said + listed + paths[: max(0, limit - len(said) - len(listed) - 3)] + "..."
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
