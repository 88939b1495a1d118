"""The root-cause stage's NumPy layer (``rootcause.VariantHandle``): its gradient of a training
call with dropout. Framework-free."""

from __future__ import annotations

import numpy as np

from portspec import rootcause
from portspec.layers import LAYERS

RATE = 0.5


def test_a_training_gradient_with_dropout_differentiates_one_set_of_masks():
    # out = x + mask2 * (dense2 output) / (1 - rate), the second Dense's bias inside the
    # branch: d sum(out * cot) / d dense2.bias[j] = sum over (b, l) of cot * mask2 / (1 - rate).
    # With cot[b, l, j] = 2 ** (b * L + l), (1 - rate) times that gradient is an integer whose
    # binary digits are the mask of channel j: a gradient taken over masks drawn anew for each
    # evaluation of the central difference is no such integer (it differences two functions).
    spec = LAYERS["FeatureMixing"]
    config = {"n_series": 3, "input_size": 4, "dropout": RATE, "ff_dim": 4}
    shape = (2, 4, 3)
    handle = rootcause.VariantHandle(spec, config, [shape], seed=0, dtype="float64",
                                     choices={})
    x = np.random.default_rng(1).normal(size=shape)
    b, length, n = shape
    cot = np.broadcast_to(2.0 ** np.arange(b * length).reshape(b, length, 1), shape)
    _, grads = handle.grad(x, cot, training=True)
    scaled = grads["dense2.bias"] * (1 - RATE)
    # the bias enters linearly: the central difference is exact up to rounding (about 1e-7
    # here, sum(out * cot) being some 1e3 over a step of 1e-6)
    assert np.all((scaled > -1e-4) & (scaled < 2 ** (b * length) - 1 + 1e-4)), scaled
    np.testing.assert_allclose(scaled, np.round(scaled), rtol=0, atol=1e-4)
    kept = sum(bin(int(round(v))).count("1") for v in scaled)
    assert 0 < kept < b * length * n  # the masks drop some elements and keep others
