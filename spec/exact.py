"""The oracle's arithmetic: float64 results with the same bits on every CPU.

NumPy chooses its ``exp`` and ``tanh`` kernels at run time (AVX-512, AVX2 or the baseline code
path) and they differ in the last bit; BLAS chooses its dot-product kernel by CPU too, and with
it the order of the additions. The golden vectors in ``spec/vectors`` must come out the same
wherever ``portspec vectors`` runs, so the oracle never calls those kernels. It uses:

- IEEE 754 elementwise ``+ - * /`` and ``sqrt`` (NumPy ufuncs): correctly rounded on every CPU.
- Sums (dot products, means, variances): compensated summation in a fixed order (Ogita, Rump
  and Oishi's Sum2: each addition's rounding error, found exactly by Knuth's TwoSum, is
  carried along), vectorised over the outputs with elementwise additions only. The result is as
  accurate as a sum in twice the working precision rounded once to float64, and the same bits
  on every CPU.
- ``exp`` and ``tanh``: computed with Python's ``decimal`` module (libmpdec, pure software) to
  40 significant digits, then rounded to float64: correctly rounded except where the exact value
  lies within 1e-40 (relative) of a float64 rounding boundary, and the same bits everywhere.

Each result is at least as accurate as NumPy's. exp and tanh cost a Python call per element:
fine for the spec's cases, not for benchmarks, which never call the oracle.

Arrays in, float64 arrays out; shapes as the NumPy function of the same name.
"""

from __future__ import annotations

import math
from decimal import Context, Decimal

import numpy as np

_CONTEXT = Context(prec=40)
# |x| below this: tanh(x) rounds to x in float64 (the relative correction x^2/3 is under 2^-60).
_TANH_LINEAR = 1e-9


def _float64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _exp1(v: float) -> float:
    return float(_CONTEXT.exp(Decimal(v)))


def _tanh1(v: float) -> float:
    if abs(v) < _TANH_LINEAR or math.isnan(v):
        return v
    if abs(v) > 20.0:  # 1 - tanh(20) = 8.5e-18 < 2^-54: rounds to +-1
        return math.copysign(1.0, v)
    e = _CONTEXT.exp(Decimal(2.0 * v))  # 2.0 * v is exact
    return float(_CONTEXT.divide(e - 1, e + 1))


def _map(fn, x) -> np.ndarray:
    x = _float64(x)
    return np.fromiter(map(fn, x.ravel().tolist()), np.float64, x.size).reshape(x.shape)


def exp(x) -> np.ndarray:
    """Elementwise e**x, correctly rounded (see the module docstring)."""
    return _map(_exp1, x)


def tanh(x) -> np.ndarray:
    """Elementwise tanh(x), correctly rounded (see the module docstring)."""
    return _map(_tanh1, x)


def sigmoid(x) -> np.ndarray:
    """1 / (1 + exp(-x)): one correctly rounded exp, then two IEEE operations."""
    return 1.0 / (1.0 + exp(-_float64(x)))


def sum(x, axis: int, keepdims: bool = False) -> np.ndarray:  # noqa: A001 - numpy's name
    """The sum along ``axis``, terms in index order, compensated (Sum2; module docstring)."""
    terms = np.moveaxis(_float64(x), axis, 0)
    total = np.zeros(terms.shape[1:])
    error = np.zeros(terms.shape[1:])
    with np.errstate(invalid="ignore"):  # an infinite term: its error is NaN, dropped below
        for term in terms:
            new = total + term
            back = new - total  # TwoSum: (total - (new - back)) + (term - back) is exact
            error += (total - (new - back)) + (term - back)
            total = new
    out = np.where(np.isfinite(total), total + error, total)  # inf - inf would be NaN
    return np.expand_dims(out, axis) if keepdims else out


def mean(x, axis: int = 0) -> np.ndarray:
    """The compensated sum along ``axis`` divided by its length."""
    x = _float64(x)
    return sum(x, axis) / x.shape[axis]


def var(x, axis: int = 0, ddof: int = 0) -> np.ndarray:
    """sum((x - mean)^2) / (n - ddof) along ``axis``: the biased variance for ddof=0."""
    x = _float64(x)
    d = x - np.expand_dims(mean(x, axis), axis)
    return sum(d * d, axis) / (x.shape[axis] - ddof)


def matmul(a, b) -> np.ndarray:
    """``a @ b`` for ``a`` of shape (..., n) and a matrix ``b`` (n, m): each output is the
    compensated sum of the n rounded products."""
    a, b = _float64(a), _float64(b)
    if b.ndim != 2 or a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul needs shapes (..., n) and (n, m), got {a.shape} and {b.shape}")
    products = a[..., :, None] * b  # (..., n, m): IEEE multiplications
    return sum(products, axis=-2)


def softmax(x, axis: int = -1) -> np.ndarray:
    """exp(x - max) / sum(exp(x - max)) along ``axis`` (None: over every element)."""
    x = _float64(x)
    if axis is None:
        return softmax(x.reshape(-1), 0).reshape(x.shape)
    e = exp(x - x.max(axis=axis, keepdims=True))
    return e / sum(e, axis, keepdims=True)
