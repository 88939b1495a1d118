"""The layers a single-mistake port of the root-cause measure (tests/test_rootcause.py) runs."""

from __future__ import annotations


def mistaken(fm, gff, both) -> tuple[str, ...]:
    """The layer the port's one mistake is in (``fm`` or ``gff``: the overridden members of
    one of its layers); both where it overrides both or ``both`` (a weight map, which covers
    both layers). The other layer is the fixture's Conforming one, whose own port in the
    measure shows it conforms: measured again for every port, it would add only time."""
    if both or (fm is None) == (gff is None):
        return ("FeatureMixing", "GatedFeatureFusion")
    return ("FeatureMixing",) if fm is not None else ("GatedFeatureFusion",)
