"""Bad configs and malformed calls: a clear ValueError or TypeError that names the culprit."""

from __future__ import annotations

import re

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.suite.checks import check


def _verdict(what: str, call, names, shown=(), said=None) -> tuple[str, str] | None:
    """None when ``call`` raises ValueError/TypeError naming one of ``names`` (and showing one
    of ``shown``, the offending shapes, when given), else (how it got through, the problem):
    how is "accepted", the name of another exception type, or "unnamed" (a ValueError or
    TypeError whose message does not name the culprit). ``said``: a list the message of an
    unnamed one is appended to."""
    try:
        call()
    except (ValueError, TypeError) as exc:
        if not any(n in str(exc) for n in names):
            if said is not None:
                said.append(str(exc))
            return "unnamed", (f"{what}: {type(exc).__name__} does not name "
                               f"{' or '.join(names)}: {exc}")
        if shown and not any(s in str(exc) for s in shown):
            return "unnamed", (f"{what}: {type(exc).__name__} does not show the input's shape "
                               f"{' or '.join(shown)}: {exc}")
        return None
    except Exception as exc:  # a backend error instead of the spec's clear message
        return (type(exc).__name__,
                f"{what}: raised {type(exc).__name__} (not ValueError/TypeError): {exc}")
    return "accepted", f"{what}: accepted"


def _fail(failed, tried, what, culprit, diagnosis=None):
    """``failed``: (label, how, problem) of each bad input that got through. The diagnosis is
    the evidence itself, grouped by how each got through, so it is checked: the port does not
    validate its {what}s as the spec requires; or ``diagnosis``, one its caller checked."""
    if not failed:
        return
    problems = [problem for _, _, problem in failed]
    raise ClauseFailure(
        f"{len(problems)} of {tried} bad inputs not rejected as the spec requires: "
        + " | ".join(problems[:4]),
        diagnosis=diagnosis or _not_validated(failed, tried, what, culprit),
        details={"problems": problems},
        checked=True,
    )


def _valid_too(failed, what: str, valid: str, call) -> None:
    """Where bad inputs got through, whether the valid one does: a port that refuses every
    {what}, the valid one as well, meets one error, which no clause of validation can judge.
    The failure then quotes that error (``raised ...``), the cause to fix first."""
    if not failed:
        return
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the port's refusal is the evidence
        from portspec.suite.runner import _describe

        raise ClauseFailure(
            f"the valid {what} ({valid}) is refused as well, so the {len(failed)} bad ones' "
            f"errors say nothing of validation: raised {_describe(exc, 300)}",
            diagnosis=f"every {what} is refused, the spec's valid one too: fix that refusal "
            "first",
            checked=True,
        ) from None


def _not_validated(failed, tried, what, culprit) -> str:
    """One line: how many invalid ``what``s were not rejected as the spec requires, and which,
    grouped by what happened: accepted (no error raised), another exception type raised instead, or
    a ValueError/TypeError that does not name the culprit."""
    groups: dict[str, list[str]] = {}
    first: dict[str, str] = {}
    for label, how, problem in failed:
        groups.setdefault(how, []).append(label)
        m = re.search(r"(\w+) does not name [\w ]+?: (.*)$", problem)
        first.setdefault(how, f"{m[1]}: {m[2]}" if m else "")
    order = sorted(groups, key=lambda how: (how != "accepted", how == "unnamed", how))

    def happened(how):
        if how == "accepted":
            return "accepted"
        if how == "unnamed":
            return f"raised a ValueError or TypeError that does not name {culprit}"
        return f"raised {how} instead"

    def quoted(how):  # the first such error: where it came from shows in its words
        said = first[how] if how == "unnamed" else ""
        return f" (the first: {said if len(said) <= 160 else said[:157] + '...'})" if said else ""

    parts = [f"{len(groups[how])} {happened(how)}: {_some(groups[how])}{quoted(how)}"
             for how in order]
    return (f"{what}s not validated (the spec: a ValueError or TypeError naming {culprit}): "
            f"of {tried} invalid {what}s, " + "; ".join(parts))


def _built_as(built, config, param) -> str:
    """`` (built as X)`` when an accepted bad value was replaced: the layer built from it
    reports another value for the parameter (an unknown activation falling back to sigmoid)."""
    if not built or param not in config:
        return ""
    try:
        reported = built[0].get_config()[param]
    except Exception:  # noqa: BLE001 - a port that cannot report it: nothing to add
        return ""
    same = reported == config[param] or (reported != reported and config[param] != config[param])
    return "" if same else f" (built as {reported!r})"


def _some(labels, shown=6) -> str:
    more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
    return ", ".join(labels[:shown]) + more


def config_swap(a: str, b: str, evidence: str) -> str:
    """The one wording of a port built with config parameters ``a`` and ``b`` exchanged,
    whatever shows it (the errors here, the root-cause probe's calls): one root cause, the
    evidence in brackets, which the report merges."""
    return (f"the port built with {a} and {b} swapped (the adapter's config_names or "
            f"construct passes each to the other's parameter) [{evidence}]")


def _swapped(ctx, unnamed) -> tuple[str, str] | None:
    """The pair of config parameters whose errors name each other, (param, message) of each
    unnamed error: every such error of a names b alone of the other parameters (by the spec's
    name or the port's, ``config_names``), and one of b's names a. None otherwise."""
    names = {n: {n, ctx.adapter.config_names.get(n, n)} for n, _ in ctx.spec.config_params}
    named: dict = {}
    for param, message in unnamed:
        if param not in names:  # an unknown key the port happens to take: not the pair's
            continue
        others = {q for q, words in names.items() if q != param and any(
            re.search(rf"(?<![A-Za-z0-9_]){re.escape(w)}(?![A-Za-z0-9_])", message)
            for w in words)}
        if len(others) != 1:
            return None
        named.setdefault(param, set()).update(others)
    order = [n for n, _ in ctx.spec.config_params]  # the pair in the spec's order
    pairs = {tuple(sorted((p, *q), key=order.index)) for p, q in named.items() if len(q) == 1}
    if len(pairs) != 1 or any(len(q) != 1 for q in named.values()):
        return None
    a, b = pairs.pop()
    return (a, b) if named.get(a) == {b} and named.get(b) == {a} else None


@check("config-errors")
def config_errors(ctx):
    case = ctx.spec.cases()[0]
    bad = ctx.spec.invalid_configs()
    failed, unnamed = [], []
    for config, param in bad:
        shown = {k: v for k, v in config.items() if k == param} or f"without {param}"
        label = f"{param}={config[param]!r}" if param in config else f"without {param}"
        built, said = [], []
        # the port's own name for the parameter (Adapter.config_names) names it too
        got = _verdict(f"config {shown}",
                       lambda c=config, b=built: b.append(ctx.build(case, config=c)),
                       (param, ctx.adapter.config_names.get(param, param)), said=said)
        if got:
            failed.append((label + _built_as(built, config, param), *got))
            unnamed += [(param, m) for m in said]
    pair = _swapped(ctx, unnamed) if unnamed else None
    spec_params = {n for n, _ in ctx.spec.config_params}
    swap = None
    if pair and all(how == "unnamed" for label, how, _ in failed
                    if label.split("=")[0] in spec_params):
        a, b = pair
        said = "; ".join(f"{p}'s: {m}" for p, m in unnamed[:1] + [
            u for u in unnamed if u[0] != unnamed[0][0]][:1])
        swap = config_swap(a, b, f"the errors for bad {a} name {b} and those for bad {b} name "
                                 f"{a}: {said}")
    if swap is None:
        _valid_too(failed, "config", repr(case.config), lambda: ctx.build(case))
    _fail(failed, len(bad), "config", "the parameter", diagnosis=swap)


@check("call-errors")
def call_errors(ctx):
    case = ctx.spec.cases()[0]
    handle = ctx.build(case)
    bad_calls = ctx.spec.bad_calls(case.config)
    failed = []
    for bad in bad_calls:
        if isinstance(bad.shapes, list):
            inputs = [np.ones(s, dtype=bad.dtype) for s in bad.shapes]
        else:
            inputs = np.ones(bad.shapes, dtype=bad.dtype)
        # A shape error must show the shape it got: a backend's own error that happens to
        # contain the word "shape" (jax's dot_general does) is not the spec's message.
        shapes = bad.shapes if isinstance(bad.shapes, list) else [bad.shapes]
        shown = [str(tuple(x)) for x in shapes] if "shape" in bad.names else []
        got = _verdict(bad.description, lambda x=inputs: handle.forward(x, training=False),
                       bad.names, shown)
        if got:
            failed.append((bad.description, *got))
    valid = ctx.inputs(case, np.random.default_rng(0))
    _valid_too(failed, "call", f"on inputs of shape {_shapes(case.input_shapes)}",
               lambda: handle.forward(valid, training=False))
    _fail(failed, len(bad_calls), "call", "the shape, dtype or inputs at fault")


def _shapes(shapes) -> str:
    return " and ".join(str(tuple(s)) for s in shapes)
