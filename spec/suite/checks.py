"""The registry of checks and the context a check receives.

A check is a function ``check(ctx)`` registered for a clause family. It raises ``ClauseFailure``
(an AssertionError) when the clause does not hold and ``NotApplicable`` when it cannot apply.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from portspec.adapter import Adapter, Handle, HeldAtNeutral
from portspec.clauses import Clause, ClauseFailure
from portspec.layers import LAYERS, Case, LayerSpec
from portspec.tolerances import max_violation

CHECKS: dict[str, Callable] = {}


def check(*families: str):
    def register(fn):
        for family in families:
            if family in CHECKS:
                raise RuntimeError(f"two checks for family {family!r}")
            CHECKS[family] = fn
        return fn

    return register


def load_areas() -> dict[str, str]:
    """Import every area module; return family -> area module name."""
    from portspec.suite import areas

    for info in pkgutil.iter_modules(areas.__path__):
        importlib.import_module(f"{areas.__name__}.{info.name}")
    return {fam: fn.__module__.rsplit(".", 1)[-1] for fam, fn in CHECKS.items()}


@dataclass
class Context:
    spec: LayerSpec
    clause: Clause
    adapter: Adapter
    # What a passing check wants in the report (the portability pairs, say).
    details: dict = field(default_factory=dict)

    # The HeldAtNeutral handles built: what the port lacks of the weights the spec's layer can
    # do without (``LayerSpec.neutral``), learned from each layer built.
    _held: list = field(default_factory=list)
    # (exception, config) of the last build that raised
    build_raised: tuple | None = None

    def build(
        self, case: Case, *, seed: int = 0, dtype: str | None = "float32", config=None
    ) -> Handle:
        """The port's layer for ``case``. Where the port lacks a weight the spec's layer can do
        without (a bias, a BatchNorm scale or offset: ``LayerSpec.neutral``), the handle holds
        it at its neutral value (``HeldAtNeutral``), and ``random_weights`` draws it there: the
        numeric clauses judge the rest of the port against the spec's layer without that
        weight. FM/GFF-WEIGHTS and -PARAMS fail for the weight itself, once."""
        config = dict(config if config is not None else case.config)
        try:
            handle = self.adapter.build(self.spec.name, dict(config),
                                        input_shapes=case.input_shapes, seed=seed, dtype=dtype)
        except Exception as exc:
            # the exception a clause lets through is then said to be the build's
            # (``runner.run_clause``), with the config built
            self.build_raised = (exc, config)
            raise
        try:
            layout = handle.weight_layout()
        except Exception:  # noqa: BLE001 - no layout: the clauses meet the port as it is
            return handle
        lacked = {n: w.reason for n, w in layout.items()
                  if w.kind == "absent" and n in self.spec.neutral}
        if not lacked:
            return handle
        self._held.append(HeldAtNeutral(handle, {n: self.spec.neutral[n] for n in lacked},
                                        lacked))
        return self._held[-1]

    def random_weights(self, config, input_shapes, rng) -> dict[str, np.ndarray]:
        """``spec.random_weights``, with the weights the port lacks (known from a layer built
        first) at their neutral values; the same draws from ``rng`` either way."""
        weights = self.spec.random_weights(config, input_shapes, rng)
        for name in {n for h in self._held for n in h.lacked}:
            weights[name] = np.full_like(weights[name], self.spec.neutral[name])
        return weights

    def held_at_neutral(self) -> str:
        """The words a failing numeric clause adds where it held weights at their neutral
        values ("" where it held none)."""
        lacked = sorted({n for h in self._held if h.used for n in h.lacked})
        if not lacked:
            return ""
        held = ", ".join(f"{n} at {self.spec.neutral[n]:g}" for n in lacked)
        return f" [judged with {held}: the port holds none]"

    def inputs(self, case: Case, rng: np.random.Generator, dtype: str = "float32"):
        return cast(self.spec.make_inputs(case, rng), dtype)

    def expect_close(self, what: str, actual, expected, tol: float, diagnosis=None):
        actual = np.asarray(actual)
        expected = np.asarray(expected)
        if actual.shape != expected.shape:
            raise ClauseFailure(f"{what}: shape {actual.shape}, expected {expected.shape}")
        err, ratio = max_violation(actual, expected, tol)
        if ratio > 1.0:
            # how far past the bound, where that is news: an error of the output's own size
            # is plain from the figures, and "1e12x the bound" only adds noise
            near = f" (worst element at {ratio:.3g}x the bound)" if ratio < 1e3 else ""
            raise ClauseFailure(
                f"{what}: max |error| {err:.3g} exceeds tolerance {tol:g}*(1+|expected|){near}",
                diagnosis=diagnosis(actual, expected) if callable(diagnosis) else diagnosis,
                details={"max_abs_error": err},
            )
        return err


def cast(inputs, dtype: str):
    """Round arrays, lists of arrays or weight dicts to ``dtype``."""
    if isinstance(inputs, dict):
        return {k: cast(v, dtype) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [cast(v, dtype) for v in inputs]
    return np.asarray(inputs).astype(numpy_dtype(dtype))


def numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def work_items(adapters) -> list[tuple[LayerSpec, Clause, Callable]]:
    """Every (layer, clause, check) the suite knows, in spec order."""
    load_areas()
    items = []
    for spec in LAYERS.values():
        for clause in spec.clauses:
            fn = CHECKS.get(clause.family)
            if fn is None:
                raise RuntimeError(f"{clause.id}: no check registered for family {clause.family!r}")
            items.append((spec, clause, fn))
    return items
