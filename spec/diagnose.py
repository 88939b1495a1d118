"""Diagnoses: what the evidence of a failed clause points to.

A failing comparison says *that* an implementation differs; a diagnosis says *why*, by fitting
the evidence to the porting mistakes the spec knows of. Each layer spec lists its known
mistakes as alternative oracles (``LayerSpec.alternatives``); a failed numeric clause reports
every alternative that reproduces the implementation's output.
"""

from __future__ import annotations

import numpy as np

from spec.tolerances import close


def explain_output(spec, config, weights, inputs, actual, *, training, tol) -> str | None:
    """Name the known mistakes whose alternative oracle reproduces ``actual``."""
    hits = []
    for name, alternative in spec.alternatives():
        try:
            expected = alternative(config, weights, inputs, training=training)
        except Exception:  # an alternative that does not apply to this case
            continue
        if (
            expected is not None
            and np.shape(expected) == np.shape(actual)
            and close(actual, expected, tol)
        ):
            hits.append(name)
    if not hits:
        return None
    return "output matches the spec with " + " / ".join(hits)


def fit_momentum(old, batch_stat, new) -> float | None:
    """Least-squares share of the old value in ``new = a*old + (1-a)*batch_stat``."""
    d_old = np.ravel(old) - np.ravel(batch_stat)
    d_new = np.ravel(new) - np.ravel(batch_stat)
    denom = float(d_old @ d_old)
    if denom == 0.0:
        return None
    return float(d_old @ d_new) / denom


def bn_update(momentum, old_mean, old_var, flat, new_mean, new_var, tol) -> str | None:
    """Explain a wrong moving-statistics update: momentum sense, unbiased variance, no update."""
    n = flat.shape[0]
    mean = flat.mean(axis=0)
    biased = flat.var(axis=0)
    findings = []
    if np.array_equal(new_mean, old_mean) and np.array_equal(new_var, old_var):
        return "the moving statistics did not change in a training call"
    a = fit_momentum(old_mean, mean, new_mean)
    if a is not None and abs(a - momentum) > 1e-3:
        if abs(a - (1 - momentum)) < 1e-3:
            findings.append(
                f"the moving mean keeps {a:.4g} of its old value: momentum is read in the "
                f"PyTorch convention (1 - {momentum}) instead of the Keras one"
            )
        else:
            findings.append(f"the moving mean keeps {a:.4g} of its old value, not {momentum}")
    a_mean = a if a is not None else momentum
    if n > 1:
        unbiased = biased * n / (n - 1)
        if close(new_var, a_mean * old_var + (1 - a_mean) * unbiased, tol) and not close(
            new_var, a_mean * old_var + (1 - a_mean) * biased, tol
        ):
            findings.append(
                f"the moving variance was updated with the unbiased batch variance "
                f"(off by n/(n-1) = {n}/{n - 1})"
            )
    return "; ".join(findings) or None


def fit_candidates(candidates, actual, tol) -> str | None:
    """``candidates``: (label, expected array) pairs; return the labels that fit ``actual``."""
    hits = [label for label, expected in candidates if close(actual, expected, tol)]
    return " / ".join(hits) if hits else None
