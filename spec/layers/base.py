"""What every layer spec module provides, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from portspec.clauses import Clause


@dataclass(frozen=True)
class WeightSpec:
    """One row of a layer's weight table: canonical name, shape, trainability, initializer."""

    name: str
    shape: tuple[int, ...]
    trainable: bool
    init: str  # "glorot_uniform", "zeros" or "ones"

    def initial_value(self, rng: np.random.Generator) -> np.ndarray:
        if self.init == "zeros":
            return np.zeros(self.shape)
        if self.init == "ones":
            return np.ones(self.shape)
        if self.init == "glorot_uniform":
            fan_in, fan_out = self.shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, self.shape)
        raise ValueError(f"unknown initializer {self.init!r}")


@dataclass(frozen=True)
class Case:
    """A config plus the shapes of one call: what a clause builds and feeds."""

    config: dict
    input_shapes: tuple[tuple[int, ...], ...]
    label: str = ""

    def batch(self) -> int:
        return self.input_shapes[0][0]


@dataclass(frozen=True)
class BadCall:
    """A malformed call and the word its error message must contain."""

    description: str
    shapes: tuple  # shapes of the arrays passed; a bare shape for a single-tensor call
    dtype: str
    names: tuple[str, ...]  # the message must contain one of these


class LayerSpec:
    """The normative definition of one layer; each module in spec.layers defines one subclass.

    Everything here is framework-free: plain Python configs and NumPy float64 arrays.
    """

    name: str
    prefix: str
    summary: str
    multi_input: bool
    clauses: list[Clause]
    config_params: list[tuple[str, str]]  # (name, type and range), for the docs page
    # The weights the layer can do without, each at the value that makes it compute as it would
    # without the weight: a Dense bias at 0 is a Dense without a bias (Keras's use_bias=False);
    # a BatchNorm offset at 0 and scale at 1 are BatchNormalization(center=False) and
    # (scale=False), whose docs say beta, gamma "is ignored" / "not used". A port that declares
    # such a weight ``absent`` is judged by the numeric clauses with the spec's weight held there
    # (``portspec.suite.checks.Context.build``); a moving statistic or a kernel has no such value.
    neutral: dict[str, float] = {}

    # -- configuration -------------------------------------------------------------------
    def validate_config(self, config) -> dict:
        raise NotImplementedError

    def invalid_configs(self) -> list[tuple[dict, str]]:
        """Configs that must be rejected, each with the parameter the error must name."""
        raise NotImplementedError

    # -- weights -------------------------------------------------------------------------
    def weight_table(self, config: dict, input_shapes) -> list[WeightSpec]:
        raise NotImplementedError

    def param_counts(self, config: dict, input_shapes) -> tuple[int, int]:
        """(trainable, non-trainable) scalar counts."""
        raise NotImplementedError

    def initial_weights(self, config, input_shapes, rng) -> dict[str, np.ndarray]:
        return {w.name: w.initial_value(rng) for w in self.weight_table(config, input_shapes)}

    def random_weights(self, config, input_shapes, rng) -> dict[str, np.ndarray]:
        """Weights far from their initial values, so that every weight shows in the output."""
        raise NotImplementedError

    # -- calls ---------------------------------------------------------------------------
    def check_call(self, config: dict, shapes, dtypes) -> None:
        """Raise ValueError/TypeError for a malformed call; ``shapes`` may hold None dims."""
        raise NotImplementedError

    def bad_calls(self, config: dict) -> list[BadCall]:
        raise NotImplementedError

    def cases(self) -> list[Case]:
        """The configs and shapes that the numeric clauses run."""
        raise NotImplementedError

    def config_cases(self) -> list[Case]:
        """Cases that exercise every config value the layer distinguishes (round trips)."""
        return self.cases()

    def init_case(self) -> Case:
        """A case with weights large enough for statistical tests of the initialisers."""
        raise NotImplementedError

    def init_cases(self) -> list[Case]:
        """The cases whose initial weights the init clause checks: ``init_case`` first, then
        one per config value that must not change the initialiser."""
        return [self.init_case()]

    def make_inputs(self, case: Case, rng: np.random.Generator):
        """Float64 inputs for ``case``: one array, or a list for a multi-input layer."""
        raise NotImplementedError

    # -- the oracle ----------------------------------------------------------------------
    def forward(self, config, weights, inputs, *, training: bool, masks=None):
        """Return (output, new_weights). ``masks`` maps dropout site names to keep-masks."""
        raise NotImplementedError

    def alternatives(self):
        """Known porting mistakes as (description, oracle) pairs, for diagnoses.

        Each oracle takes (config, weights, inputs, training=...) and returns the output the
        mistaken implementation would give, or raises when the mistake cannot show in the case.
        """
        return []

    def clauses_of(self, family: str) -> list[Clause]:
        return [c for c in self.clauses if c.family == family]

    def clause(self, suffix: str) -> Clause:
        for c in self.clauses:
            if c.id == f"{self.prefix}-{suffix}":
                return c
        raise KeyError(suffix)


def glorot_limit(shape: tuple[int, int]) -> float:
    return float(np.sqrt(6.0 / (shape[0] + shape[1])))
