"""The mutant zoo: every clause catches a deliberately wrong implementation.

Each file in tests/mutants/ is an adapter file, loaded the way ``portspec verify`` loads a
port. Every mutant names the clauses that must catch it; this test fails when one of them
passes (the mutant survives), and when some clause of the spec is named by no mutant.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from portspec import registry
from portspec.layers import LAYERS
from portspec.suite.checks import work_items
from portspec.suite.runner import run_clause

ZOO = sorted((Path(__file__).parent / "mutants").glob("*_zoo.py"))
ITEMS = {clause.id: (spec, clause, fn) for spec, clause, fn in work_items(None)}


def _load(path: Path):
    loaded = registry.load_file(str(path))
    missing = [a for a in loaded if isinstance(a, registry.Unavailable)]
    if missing:
        pytest.skip(f"{path.name}: {missing[0].reason}")
    return loaded


# Where each zoo runs under tox (tests/conftest.py): the Keras mutants on each backend, as the
# clauses reach them through its adapter; coverage_zoo's, written with JAX, in the flax env.
HOMES = {
    "keras_zoo": pytest.mark.home("keras-tensorflow", "keras-jax", "keras-torch"),
    "coverage_zoo": pytest.mark.home("flax"),
}


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=[HOMES[p.stem]] if p.stem in HOMES else []) for p in ZOO],
)
def test_every_mutant_is_caught_by_its_clauses(path):
    survivors = []
    for mutant in _load(path):
        assert mutant.catches, f"{mutant.name} names no clause that catches it"
        for clause_id in mutant.catches:
            result = run_clause(mutant, *ITEMS[clause_id])
            if result.status != "failed":
                survivors.append(f"{mutant.name} ({mutant.mistake}) survives {clause_id}: "
                                 f"{result.status} {result.message}")
    assert not survivors, "\n".join(survivors)


def test_every_clause_has_a_mutant():
    """Static: the union of the zoo's ``catches`` covers the spec (read without importing)."""
    text = "".join(path.read_text() for path in ZOO)
    uncovered = [c.id for spec in LAYERS.values() for c in spec.clauses if f'"{c.id}"' not in text]
    assert not uncovered, f"clauses no mutant is named for: {uncovered}"
