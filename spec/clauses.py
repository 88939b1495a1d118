"""A clause is one normative sentence of the spec with a stable ID.

The ID (``FM-BN-UPDATE``) names the sentence everywhere: test IDs, reports and the docs page.
``family`` names the check in :mod:`portspec.suite.areas` that decides it, so one check serves the
same kind of clause in every layer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Clause:
    id: str
    family: str
    text: str
    # Why the clause is stated the way it is, where the seeds are vague or wrong.
    rationale: str = ""


class NotApplicable(Exception):  # noqa: N818 - reads as a verdict, like pytest's Skipped
    """Raised by an adapter or a check when a clause cannot apply to an implementation."""


class ClauseFailure(AssertionError):
    """A clause does not hold. ``diagnosis`` says what the evidence points to, when known.

    ``checked=True`` says the clause has tested its diagnosis against evidence of its own (it
    re-ran the port, or the failure is the mistake itself: a config accepted, a value lost in
    a round trip) so that it names the mistake, not a guess. The root-cause stage
    (``portspec.rootcause``) then makes it the failure's root cause where no variant of the
    computation explains it; an unchecked diagnosis stays a hint beside "unexplained". The
    flag travels as ``details["checked"]``. One mistake failing several clauses should be
    worded identically in each, so that it is one root cause."""

    def __init__(self, message: str, diagnosis: str | None = None, details: dict | None = None,
                 checked: bool = False):
        super().__init__(message)
        self.diagnosis = diagnosis
        self.details = details or {}
        if checked and diagnosis:
            self.details = {**self.details, "checked": True}


def serialization_clauses(prefix: str) -> list[Clause]:
    """The round-trip clauses, worded the same for every layer."""
    return [
        Clause(f"{prefix}-CONFIG-ROUNDTRIP", "config-roundtrip",
               "get_config returns the spec config, and a layer built from it has the same "
               "config and weight table."),
        Clause(f"{prefix}-SAVE-NATIVE", "save-native",
               "Saving with the framework's native format and loading gives bit-identical "
               "weights and outputs."),
        Clause(f"{prefix}-WEIGHTS-ROUNDTRIP", "weights-roundtrip",
               "Canonical weights set and read back are bit-identical; written to safetensors "
               "and read into a fresh layer they give bit-identical outputs."),
    ]
