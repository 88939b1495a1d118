"""Bad configs and malformed calls: a clear ValueError or TypeError that names the culprit."""

from __future__ import annotations

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.suite.checks import check


def _verdict(what: str, call, names, shown=()) -> tuple[str, str] | None:
    """None when ``call`` raises ValueError/TypeError naming one of ``names`` (and showing one
    of ``shown``, the offending shapes, when given), else (how it got through, the problem):
    how is "accepted", the name of another exception type, or "unnamed" (a ValueError or
    TypeError whose message does not name the culprit)."""
    try:
        call()
    except (ValueError, TypeError) as exc:
        if not any(n in str(exc) for n in names):
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


def _fail(failed, tried, what, culprit):
    """``failed``: (label, how, problem) of each bad input that got through. The diagnosis is
    the evidence itself, grouped by how each got through, so it is checked: the port does not
    validate its {what}s as the spec requires."""
    if not failed:
        return
    problems = [problem for _, _, problem in failed]
    raise ClauseFailure(
        f"{len(problems)} of {tried} bad inputs not rejected as the spec requires: "
        + " | ".join(problems[:4]),
        diagnosis=_not_validated(failed, tried, what, culprit),
        details={"problems": problems},
        checked=True,
    )


def _not_validated(failed, tried, what, culprit) -> str:
    """One line: how many invalid ``what``s were not rejected as the spec requires, and which,
    grouped by what happened: accepted (no error raised), another exception type raised instead, or
    a ValueError/TypeError that does not name the culprit."""
    groups: dict[str, list[str]] = {}
    for label, how, _ in failed:
        groups.setdefault(how, []).append(label)
    order = sorted(groups, key=lambda how: (how != "accepted", how == "unnamed", how))

    def happened(how):
        if how == "accepted":
            return "accepted"
        if how == "unnamed":
            return f"raised a ValueError or TypeError that does not name {culprit}"
        return f"raised {how} instead"

    parts = [f"{len(groups[how])} {happened(how)}: {_some(groups[how])}" for how in order]
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


@check("config-errors")
def config_errors(ctx):
    case = ctx.spec.cases()[0]
    bad = ctx.spec.invalid_configs()
    failed = []
    for config, param in bad:
        shown = {k: v for k, v in config.items() if k == param} or f"without {param}"
        label = f"{param}={config[param]!r}" if param in config else f"without {param}"
        built = []
        # the port's own name for the parameter (Adapter.config_names) names it too
        got = _verdict(f"config {shown}",
                       lambda c=config, b=built: b.append(ctx.build(case, config=c)),
                       (param, ctx.adapter.config_names.get(param, param)))
        if got:
            failed.append((label + _built_as(built, config, param), *got))
    _fail(failed, len(bad), "config", "the parameter")


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
    _fail(failed, len(bad_calls), "call", "the shape, dtype or inputs at fault")
