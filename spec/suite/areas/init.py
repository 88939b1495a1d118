"""Initialisation: exact constants, and Glorot-uniform checked as a distribution.

For n draws from U(-l, l): mean 0 with sd l/sqrt(3n); variance l^2/3 with sd
l^2 sqrt(4/(45 n)); kurtosis 1.8 with sd sqrt(1.34/n) (a normal's is 3). Every moment is
tested at 6 sd, and the largest |w| must lie in [l(1 - 20/n), l]: a narrower uniform
(PyTorch's Kaiming default), a normal or a truncated normal (Keras's GlorotNormal) fails one
of them.
"""

from __future__ import annotations

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.suite.checks import check


def glorot_uniform_problems(w: np.ndarray) -> list[str]:
    fan_in, fan_out = w.shape
    n = w.size
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    v = w.astype(np.float64).ravel()
    problems = []
    if np.abs(v).max() > limit * (1 + 1e-6):
        problems.append(f"max |w| {np.abs(v).max():.4g} exceeds the Glorot limit {limit:.4g}")
    if np.abs(v).max() < limit * (1 - 20.0 / n):
        problems.append(f"max |w| {np.abs(v).max():.4g} falls short of the limit {limit:.4g}")
    if abs(v.mean()) > 6 * limit / np.sqrt(3 * n):
        problems.append(f"mean {v.mean():.4g} is not 0")
    var = v.var()
    if abs(var - limit**2 / 3) > 6 * limit**2 * np.sqrt(4 / (45 * n)):
        problems.append(f"variance {var:.4g}, Glorot-uniform gives {limit**2 / 3:.4g}")
    kurt = np.mean(v**4) / var**2
    # sd of the sample kurtosis of a uniform: sqrt(1.34/n) (measured over 2000 draws of 8192)
    if abs(kurt - 1.8) > 6 * np.sqrt(1.34 / n):
        problems.append(f"kurtosis {kurt:.3g}, a uniform has 1.8")
    return problems


def _explain(w: np.ndarray) -> str | None:
    fan_in, fan_out = w.shape
    bound = 1 / np.sqrt(fan_in)
    if np.abs(w).max() <= bound * (1 + 1e-6) and np.abs(w).max() > bound * 0.98:
        return (
            "values are U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default Linear "
            "initialisation instead of Glorot-uniform"
        )
    return None


@check("init")
def init(ctx):
    case = ctx.spec.init_case()
    weights = ctx.build(case, seed=11).get_weights()
    problems, diagnoses = [], []
    for spec_w in ctx.spec.weight_table(case.config, case.input_shapes):
        if spec_w.name in getattr(weights, "absent", {}):
            continue  # declared absent by the port: the weight table reports it, once
        if spec_w.name not in weights:
            problems.append(f"{spec_w.name} missing")
            continue
        w = np.asarray(weights[spec_w.name], dtype=np.float64)
        if spec_w.init in ("zeros", "ones"):
            want = 0.0 if spec_w.init == "zeros" else 1.0
            if not np.all(w == want):
                problems.append(
                    f"{spec_w.name} is not all {want:g} (range {w.min():.3g}..{w.max():.3g})"
                )
        else:
            found = glorot_uniform_problems(w)
            problems += [f"{spec_w.name}: {p}" for p in found]
            if found and _explain(w):
                diagnoses.append(f"{spec_w.name}: {_explain(w)}")
    if problems:
        raise ClauseFailure("; ".join(problems), diagnosis="; ".join(diagnoses) or None)
