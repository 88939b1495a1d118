"""Bad configs and malformed calls: a clear ValueError or TypeError that names the culprit."""

from __future__ import annotations

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.suite.checks import check


def _verdict(what: str, call, names, shown=()) -> str | None:
    """None when ``call`` raises ValueError/TypeError naming one of ``names`` (and showing one
    of ``shown``, the offending shapes, when given), else the problem."""
    try:
        call()
    except (ValueError, TypeError) as exc:
        if not any(n in str(exc) for n in names):
            return f"{what}: {type(exc).__name__} does not name {' or '.join(names)}: {exc}"
        if shown and not any(s in str(exc) for s in shown):
            return (f"{what}: {type(exc).__name__} does not show the input's shape "
                    f"{' or '.join(shown)}: {exc}")
        return None
    except Exception as exc:  # a backend error instead of the spec's clear message
        return f"{what}: raised {type(exc).__name__} (not ValueError/TypeError): {exc}"
    return f"{what}: accepted"


def _fail(problems, tried):
    if problems:
        raise ClauseFailure(
            f"{len(problems)} of {tried} bad inputs not rejected as the spec requires: "
            + " | ".join(problems[:4]),
            details={"problems": problems},
        )


@check("config-errors")
def config_errors(ctx):
    case = ctx.spec.cases()[0]
    bad = ctx.spec.invalid_configs()
    problems = []
    for config, param in bad:
        shown = {k: v for k, v in config.items() if k == param} or f"without {param}"
        problems.append(
            # the port's own name for the parameter (Adapter.config_names) names it too
            _verdict(f"config {shown}", lambda c=config: ctx.build(case, config=c),
                     (param, ctx.adapter.config_names.get(param, param)))
        )
    _fail([p for p in problems if p], len(bad))


@check("call-errors")
def call_errors(ctx):
    case = ctx.spec.cases()[0]
    handle = ctx.build(case)
    bad_calls = ctx.spec.bad_calls(case.config)
    problems = []
    for bad in bad_calls:
        if isinstance(bad.shapes, list):
            inputs = [np.ones(s, dtype=bad.dtype) for s in bad.shapes]
        else:
            inputs = np.ones(bad.shapes, dtype=bad.dtype)
        # A shape error must show the shape it got: a backend's own error that happens to
        # contain the word "shape" (jax's dot_general does) is not the spec's message.
        shapes = bad.shapes if isinstance(bad.shapes, list) else [bad.shapes]
        shown = [str(tuple(x)) for x in shapes] if "shape" in bad.names else []
        problems.append(
            _verdict(bad.description, lambda x=inputs: handle.forward(x, training=False),
                     bad.names, shown)
        )
    _fail([p for p in problems if p], len(bad_calls))
