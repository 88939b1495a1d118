"""docs/spec.md is generated from the clause list; a stale page fails here."""

from pathlib import Path

from portspec import docs
from portspec.layers import LAYERS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "spec.md"


def test_spec_page_is_current():
    assert docs.is_current(PAGE), "docs/spec.md is stale: run `portspec docs` and commit it"


def test_every_clause_and_bad_input_is_on_the_page():
    page = PAGE.read_text()
    for spec in LAYERS.values():
        for clause in spec.clauses:
            assert f"`{clause.id}`" in page
        for bad in spec.bad_calls(spec.cases()[0].config):
            assert bad.description in page
