"""Finding implementations: built-ins by entry-point name, ports by adapter file.

Our own implementations are found exactly like a stranger's: through the ``portspec.impls``
entry-point group, or through a Python file that defines ``Adapter`` subclasses. ``spec``
never imports ``impls``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import zlib
from dataclasses import dataclass
from importlib.metadata import entry_points

from portspec.adapter import Adapter

GROUP = "portspec.impls"


@dataclass
class Unavailable:
    """An implementation that was asked for but cannot run here, and why."""

    name: str
    reason: str


def builtin_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def _entry_point(name: str):
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            return ep
    return None


def load(name: str) -> list[Adapter | Unavailable]:
    """Resolve one ``--impl`` value: a built-in name (``torch``, ``keras``, ``keras-jax``) or
    the path of an adapter file. Returns adapters, or ``Unavailable`` with the reason."""
    if name.endswith(".py") or os.sep in name:
        return load_file(name)
    base, _, variant = name.partition("-")
    ep = _entry_point(base)
    if ep is None:
        known = ", ".join(builtin_names()) or "none installed"
        return [Unavailable(name, f"no built-in implementation {base!r} (known: {known})")]
    try:
        cls = ep.load()
        adapter = cls(variant=variant) if variant else cls()
    except (ImportError, RuntimeError) as exc:
        return [Unavailable(name, f"{type(exc).__name__}: {exc}")]
    return [adapter]


def load_file(path: str) -> list[Adapter | Unavailable]:
    path = os.path.abspath(path)
    if not os.path.exists(path):
        return [Unavailable(path, "adapter file not found")]
    # the path's hash keeps two PORT.py files in one process apart
    stem = os.path.splitext(os.path.basename(path))[0]
    module_name = f"portspec_port_{stem}_{zlib.crc32(path.encode()):08x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        return [Unavailable(os.path.basename(path), f"{type(exc).__name__}: {exc}")]
    found = getattr(module, "ADAPTERS", None)
    if found is None:
        found = [
            obj()
            for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, Adapter)
            and obj.__module__ == module_name
            and not obj.__name__.startswith("_")  # helper bases in a port file are private
            and obj.layers
        ]
    if not found:
        return [Unavailable(os.path.basename(path), "the file defines no Adapter subclass")]
    return list(found)


def default() -> list[Adapter | Unavailable]:
    """Every built-in, as importable here (keras on the KERAS_BACKEND of this process)."""
    out: list[Adapter | Unavailable] = []
    for name in builtin_names():
        out.extend(load(name))
    return out


def resolve(names: list[str] | None) -> list[Adapter | Unavailable]:
    if not names:
        return default()
    out: list[Adapter | Unavailable] = []
    for name in names:
        out.extend(load(name))
    return out
