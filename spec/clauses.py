"""A clause is one normative sentence of the spec with a stable ID.

The ID (``FM-BN-UPDATE``) names the sentence everywhere: test IDs, reports and the docs page.
``family`` names the check in :mod:`spec.suite.areas` that decides it, so one check serves the
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
    """A clause does not hold. ``diagnosis`` says what the evidence points to, when known."""

    def __init__(self, message: str, diagnosis: str | None = None, details: dict | None = None):
        super().__init__(message)
        self.diagnosis = diagnosis
        self.details = details or {}
