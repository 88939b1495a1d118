"""Comparison tolerances per dtype, from the error analysis of the layers' operations.

Both layers are short chains of dot products (length n <= 2F or H, at most 128 in the suite's
cases), elementwise maps and, for FeatureMixing, a batch mean/variance over B <= 64 rows. The
standard bound for a length-n dot product is |fl(x.y) - x.y| <= gamma_n |x|.|y| with
gamma_n = n*u/(1-n*u); summation in blocks or pairwise (what BLAS, XLA and oneDNN do) gives
~sqrt(n)*u in practice. The suite's inputs and weights are O(1), so the outputs are O(1) to O(10)
and an absolute term of the same size as the relative one is used.

    dtype     u (unit roundoff)   chosen (rtol = atol)   measured worst   why
    float64   1.1e-16             1e-12                  1.1e-15          ~ n*u = 1.4e-14 per dot;
                                                                          headroom for other
                                                                          summation orders
                                                                          (GPU, other BLAS)
    float32   6.0e-8              1e-5                   6.7e-7           n*u = 128 * 6e-8 =
                                                                          7.7e-6 per dot, two
                                                                          dots and rsqrt
    bfloat16  3.9e-3              6e-2                   3.2e-2           inputs, weights and
                                                                          each intermediate
                                                                          round to 8 bits:
                                                                          ~8u after the chain
    float16   4.9e-4              8e-3                   4.1e-3           the same chain with
                                                                          11 bits

"measured worst" is max |actual - oracle| / (1 + |oracle|) over the five implementations
(Keras on jax, torch and tensorflow; PyTorch; Flax), both layers, every case of the spec,
training and inference, three weight draws, on CPU. Every known porting mistake moves the
outputs by more than 1e-4 (see tests/mutants), far above the float32 bound.

Gradients are compared with central differences of the implementation's own float64 forward
with step h = 1e-6: truncation O(h^2 * f''') ~ 1e-12 and cancellation O(u/h) ~ 1e-10, hence
rtol = atol = 1e-6 for them (any wrong gradient formula is off by O(1)).
"""

from __future__ import annotations

import numpy as np

FORWARD = {
    "float64": 1e-12,
    "float32": 1e-5,
    "bfloat16": 6e-2,
    "float16": 8e-3,
}

GRADIENT = 1e-6
FD_STEP = 1e-6


def max_violation(actual: np.ndarray, expected: np.ndarray, tol: float) -> tuple[float, float]:
    """Return (largest |actual-expected|, largest ratio of that error to tol*(1+|expected|)).

    A non-finite ``actual`` gives ratio inf and error NaN when it holds a NaN, else inf."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise ValueError(f"shape {actual.shape} != expected shape {expected.shape}")
    err = np.abs(actual - expected)
    if not np.all(np.isfinite(actual)):
        # a NaN is reported as NaN, not as an infinite error
        worst = float("nan") if np.isnan(actual).any() else float("inf")
        return worst, float("inf")
    ratio = err / (tol * (1.0 + np.abs(expected)))
    return float(err.max(initial=0.0)), float(ratio.max(initial=0.0))


def same_nans_zeroed(a, b) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` with 0 where both are NaN, for comparing two results of one layer (a
    compiled call with its eager one): a NaN both give at one place is the same result."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return a, b
    both = np.isnan(a) & np.isnan(b)
    return (np.where(both, 0, a), np.where(both, 0, b)) if both.any() else (a, b)


def same_result(a, b, tol: float) -> bool:
    """Are ``a`` and ``b`` two results of one computation of a layer: the same shape, close
    to ``tol``, a NaN both give at one place the same (``same_nans_zeroed``)?"""
    return np.shape(a) == np.shape(b) and close(*same_nans_zeroed(a, b), tol)


def close(actual, expected, tol: float) -> bool:
    return max_violation(actual, expected, tol)[1] <= 1.0
