"""The mutant zoo: every clause catches a deliberately wrong implementation.

Each file in tests/mutants/ is an adapter file, loaded the way ``portspec verify`` loads a
port. Every mutant names the clauses that must catch it; this test fails when one of them
passes (the mutant survives), and when some clause of the spec is named by no mutant.
"""

from __future__ import annotations

import re
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


# Where each zoo runs under tox (tests/conftest.py): coverage_zoo's mutants, written with JAX,
# Keras and PyTorch at once, in the ports env (extras "all"); the others by their names. Every
# zoo goes through the measure below, which fails where a mutant survives a clause it names:
# that is this check, for the Keras mutants on TensorFlow. The Keras mutants on the other two
# backends, as the clauses reach them through Keras's adapter there, are checked here.
HOMES = {"coverage_zoo": pytest.mark.home("ports")}
ON_THE_OTHER_BACKENDS = pytest.mark.home("keras-jax", "keras-torch")


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=[ON_THE_OTHER_BACKENDS]) for p in ZOO
     if p.stem == "keras_zoo"],
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


# -- the measure on the mutant zoo --------------------------------------------------------------

# Here rather than in test_rootcause.py, whose root-cause measures hold one xdist worker under
# --dist loadscope. The Keras mutants' root causes are measured on TensorFlow (tests/conftest.py).
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, id=p.stem, marks=[HOMES["coverage_zoo"]] if "coverage" in p.stem else [])
     for p in ZOO],
)
def test_the_mutant_zoo_measure(path):
    """Each mutant's clauses and the probe, through the root-cause stage: every mutant killed;
    the root causes named and the share of failing clauses they explain are printed."""
    from portspec import isolation, registry, rootcause

    loaded = registry.load_file(str(path))
    if any(isinstance(a, registry.Unavailable) for a in loaded):
        pytest.skip(f"{path.name}: not available here")
    results = []
    for mutant in loaded:
        tasks = [(mutant.name, c) for c in mutant.catches]
        results += [run() for _, run in isolation.items_for(mutant, tasks=tasks)]
    results = rootcause.attach(results)
    failing = [r for r in results if r.status == "failed"]
    explained = [r for r in failing if r.cause and not r.cause.startswith("unexplained")]
    # the root causes as the verdict lists them (one mistake in both layers is one line)
    from portspec.report import root_causes

    lines = root_causes(results)
    causes = {m.name: {c for i, c, _ in lines if i == m.name and not c.startswith("unexplained")}
              for m in loaded}
    survivors = [f"{r.impl} {r.clause}" for r in results if r.status != "failed"]
    killed = len(loaded) - len({s.split()[0] for s in survivors})
    # a mutant's ``names`` (a regex) is what its one root cause must say: the mistake made
    judged = [m for m in loaded if getattr(m, "names", None)]
    misnamed = [f"{m.name}: {sorted(causes[m.name]) or 'no root cause'} (wanted /{m.names}/)"
                for m in judged if len(causes[m.name]) != 1
                or not re.search(m.names, next(iter(causes[m.name])), re.I)]
    print(f"\n{path.stem}: {len(loaded)} mutants, killed {killed}, "
          f"failing clauses {len(failing)}, explained {len(explained)}, "
          f"root causes per mutant {sum(map(len, causes.values())) / len(loaded):.2f}, "
          f"one root cause naming the mistake {len(judged) - len(misnamed)} of {len(loaded)}")
    for name, found in causes.items():
        print(f"  {name}: {' | '.join(found) or 'none'}")
    assert not survivors, survivors
    assert not misnamed, "\n".join(misnamed)
