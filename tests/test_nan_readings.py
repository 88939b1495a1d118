"""NaNs as evidence: a port's clauses that compare it with itself read a NaN it gives again at
the same place as the same result, and a variant whose NaNs are its computation's fits a port
only where the NaNs fall alike (portspec.tolerances, portspec.rootcause)."""

from __future__ import annotations

import numpy as np

from portspec import rootcause
from portspec.tolerances import same_nans_zeroed


def test_a_nan_both_results_give_at_one_place_is_the_same_result():
    a = np.array([1.0, np.nan, 3.0])
    b = np.array([1.0, np.nan, 3.5])
    x, y = same_nans_zeroed(a, b)
    assert x[1] == 0 and y[1] == 0
    assert y[2] == 3.5  # the values that differ still differ


def test_a_nan_on_one_side_only_stays_a_nan():
    x, y = same_nans_zeroed(np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert np.isnan(x[0]) and y[0] == 0.0


def test_a_variant_whose_nans_are_computed_fits_only_where_the_port_is_nan_alike():
    want = np.array([np.nan, 2.0, np.nan])
    # an undefined value (an unbiased variance of one sample): any value fits there
    assert rootcause._violation(np.array([5.0, 2.0, 7.0]), want, 1e-12)[1] == 0.0
    # a computed NaN (a square root of a negative mean): the port must be NaN there too
    assert rootcause._violation(np.array([5.0, 2.0, 7.0]), want, 1e-12, nan_exact=True)[1] \
        == float("inf")
    assert rootcause._violation(np.array([np.nan, 2.0, np.nan]), want, 1e-12,
                                nan_exact=True)[1] == 0.0
