"""The layer specs. Every module in this package that defines ``SPEC`` is a layer of the spec."""

from __future__ import annotations

import importlib
import pkgutil

from portspec.layers.base import BadCall, Case, LayerSpec, WeightSpec


def _discover() -> dict[str, LayerSpec]:
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, LayerSpec):
            found[spec.name] = spec
    return found


LAYERS: dict[str, LayerSpec] = _discover()

__all__ = ["LAYERS", "BadCall", "Case", "LayerSpec", "WeightSpec"]
