"""Config and input validation shared by the spec, the oracle and the reference implementations.

Every rejection is a ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong
value) whose message starts with the parameter's name, so that a port's user sees which argument
is wrong instead of a backend stack trace.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence


def positive_int(name: str, value: object) -> int:
    # bool is a subclass of int in Python; a flag is never a size.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__} {value!r}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a float in [0, 1], got {value!r}")
    return value


def choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(allowed)}, got {type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


def config_keys(layer: str, config: Mapping, required: Sequence[str], optional: Sequence[str]):
    if not isinstance(config, Mapping):
        raise TypeError(f"{layer} config must be a mapping, got {type(config).__name__}")
    unknown = sorted(set(config) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{layer} got unknown parameter(s) {unknown}")
    missing = [k for k in required if k not in config]
    if missing:
        raise TypeError(f"{layer} is missing required parameter(s) {missing}")


def floating_dtype(name: str, dtype_name: str) -> None:
    """``dtype_name`` is the framework dtype's string form, e.g. ``float32`` or ``torch.int64``."""
    base = str(dtype_name).rsplit(".", 1)[-1]
    if base not in {"float16", "bfloat16", "float32", "float64", "half", "float", "double"}:
        raise TypeError(f"{name} must have a floating dtype, got dtype {dtype_name}")
