"""Profiles: the conventions a FeatureMixing port is judged by where sound implementations differ.

Two layers share the name FeatureMixing and one definition but for the BatchNorm momentum:

- ``kmr`` (the default): the seeds' layer, KMR's FeatureMixing (kerasfactory), whose
  ``BatchNormalization(momentum=0.01)`` keeps 0.01 of the old moving statistic
  (``moving = 0.01 * moving + 0.99 * batch``, Keras's convention).
- ``tsmixer``: the feature-mixing block of the TSMixer paper's reference code (Keras 2),
  ``BatchNormalization(axis=[-2, -1])`` at Keras's documented defaults: momentum 0.99, which
  keeps 0.99 of the old value, and epsilon 1e-3. neuralforecast's FeatureMixing keeps the same
  share (``nn.BatchNorm1d(momentum=0.01)``: PyTorch's momentum is the share of the new value).

Everything else the reference's defaults fix is the seeds' layer already: BatchNorm over the
(L, N) features before the MLP with the biased batch variance, epsilon 1e-3 inside the square
root, ReLU, inverted dropout after the ReLU and after the second Dense, Glorot-uniform kernels
and zero biases, the residual adding the raw input. So the profiles differ in ``momentum``
only; ``epsilon`` is listed so that a profile states every BatchNorm constant it fixes.

The active profile is read from the environment variable ``PORTSPEC_PROFILE`` (default
``kmr``), so the worker processes of ``portspec verify`` judge by the profile the command
line chose. ``--profile`` of ``verify``, ``matrix`` and ``test`` (and the pytest plugin) sets
it through :func:`select`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

ENV = "PORTSPEC_PROFILE"
DEFAULT = "kmr"


@dataclass(frozen=True)
class Profile:
    name: str
    # Share of its old value a moving statistic keeps in a training call (Keras convention).
    momentum: float
    epsilon: float  # added to the variance inside the square root
    source: str

    def describe(self) -> str:
        return f"{self.name} ({self.source}: momentum {self.momentum:g}, epsilon {self.epsilon:g})"


PROFILES = {
    "kmr": Profile(
        "kmr",
        0.01,
        1e-3,
        "the seeds' layer, KMR's FeatureMixing",
    ),
    "tsmixer": Profile(
        "tsmixer",
        0.99,
        1e-3,
        "the TSMixer reference's Keras BatchNormalization defaults",
    ),
}


def get(name: str) -> Profile:
    """The profile called ``name``; ValueError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown profile {name!r}; profiles are {known}") from None


def active() -> Profile:
    """The profile this process judges by (``PORTSPEC_PROFILE``, default ``kmr``)."""
    return get(os.environ.get(ENV) or DEFAULT)


def select(name: str | None) -> Profile:
    """Judge by ``name`` from now on, in this process and the workers it starts; None keeps
    the active one. Raises ValueError for an unknown name."""
    if name is None:
        return active()
    profile = get(name)
    os.environ[ENV] = profile.name
    return profile


def fitting(momentum: float, tol: float = 1e-3) -> Profile | None:
    """The profile whose momentum a fitted share of the old value matches, if any."""
    for profile in PROFILES.values():
        if abs(momentum - profile.momentum) <= tol:
            return profile
    return None


def better_fit(old_mean, batch_mean, new_mean, tol: float = 1e-3) -> Profile | None:
    """Another profile than the active one whose momentum the evidence of one training call
    fits: the share of its old value the moving mean kept (least squares), within ``tol``.

    The cheap check behind "the other profile fits this port better": it reads the mean only,
    so a port that also updates its variance differently still gets the hint.
    """
    d_old = np.ravel(old_mean) - np.ravel(batch_mean)
    d_new = np.ravel(new_mean) - np.ravel(batch_mean)
    denom = float(d_old @ d_old)
    if denom == 0.0:
        return None
    kept = float(d_old @ d_new) / denom
    current = active()
    found = fitting(kept, tol)
    return found if found is not None and found.name != current.name else None
