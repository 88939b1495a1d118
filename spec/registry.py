"""Finding implementations: built-ins by entry-point name, ports by adapter file.

Our own implementations are found exactly like a stranger's: through the ``portspec.impls``
entry-point group, or through a Python file that defines ``Adapter`` subclasses. ``spec``
never imports ``impls``.

A port file is imported the way Python runs a script: its own folder comes first on
``sys.path``, so ``import mylayer`` next to ``PORT.py`` finds ``PORT.py``'s sibling, whatever
the current directory is, and a module of that name imported earlier from another folder (an
earlier port's sibling) is forgotten first.

Errors: a file or name that cannot be used at all raises :class:`LoadError`, whose message is
the one line to show (file, line and cause). A built-in whose framework is not installed here
is returned as :class:`Unavailable` with the reason; ``required=True`` (an implementation asked
for by name) turns that into a ``LoadError`` too.
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

# Variants of each built-in and the modules each needs, for ``portspec list`` (found with
# importlib.util.find_spec: nothing is imported). ``None`` is the plain name.
VARIANTS: dict[str, dict[str | None, tuple[str, ...]]] = {
    "keras": {
        None: ("keras",),  # on the backend KERAS_BACKEND names (jax when unset)
        "jax": ("keras", "jax"),
        "torch": ("keras", "torch"),
        "tensorflow": ("keras", "tensorflow"),
    },
    "torch": {None: ("torch",), "cuda": ("torch",)},
    "flax": {None: ("jax", "flax"), "gpu": ("jax", "flax")},
}


class LoadError(Exception):
    """An implementation that cannot be used as given: the message is the one line to show."""


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


def is_file(name: str) -> bool:
    """Is an ``--impl`` value a path (an adapter file) rather than a built-in name?"""
    return name.endswith(".py") or os.sep in name or (os.altsep or os.sep) in name


def load(name: str, required: bool = False) -> list[Adapter | Unavailable]:
    """Resolve one ``--impl`` value: a built-in name (``torch``, ``keras``, ``keras-jax``) or
    the path of an adapter file. Returns adapters, or ``Unavailable`` with the reason.

    Raises LoadError for an unknown name or a file that cannot be loaded; with ``required``
    also for an implementation that is not available here.
    """
    if is_file(name):
        found = load_file(name)
    else:
        found = _load_builtin(name)
    if required:
        for item in found:
            if isinstance(item, Unavailable):
                raise LoadError(f"{item.name} cannot be loaded here: {item.reason}")
    return found


def check_name(name: str):
    """The entry point of a built-in name (``torch``, ``keras-jax``), nothing imported; else
    LoadError listing the known names."""
    base, _, variant = name.partition("-")
    ep = _entry_point(base)
    if ep is None or (variant and variant not in VARIANTS.get(base, {variant: ()})):
        known = ", ".join(known_names()) or "none installed"
        raise LoadError(f"unknown implementation {name!r} (known: {known}; or a PORT.py file)")
    return ep


def _load_builtin(name: str) -> list[Adapter | Unavailable]:
    ep = check_name(name)
    variant = name.partition("-")[2]
    try:
        cls = ep.load()
        adapter = cls(variant=variant) if variant else cls()
    except (ImportError, RuntimeError) as exc:
        return [Unavailable(name, f"{type(exc).__name__}: {exc}")]
    return [adapter]


def known_names() -> list[str]:
    """Every built-in name with its variants: keras, keras-jax, ..., torch, torch-cuda, flax."""
    names = []
    for base in builtin_names():
        names += [f"{base}-{v}" if v else base for v in VARIANTS.get(base, {None: ()})]
    return names


def missing_modules(name: str) -> list[str]:
    """The modules a built-in (or variant) needs that are not installed here (find_spec only)."""
    base, _, variant = name.partition("-")
    needs = VARIANTS.get(base, {}).get(variant or None, ())
    return [m for m in needs if importlib.util.find_spec(m) is None]


def check_file(path: str) -> str:
    """The absolute path of a readable, non-empty Python file that compiles; else LoadError
    naming the file (and for a syntax error its line and the message)."""
    shown = path
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise LoadError(f"{shown}: no such file")
    if os.path.isdir(path):
        raise LoadError(f"{shown}: is a directory, not an adapter file (PORT.py)")
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise LoadError(f"{shown}: cannot be read ({exc.strerror})") from None
    if not source.strip():
        raise LoadError(f"{shown}: the file is empty (it must define an Adapter subclass)")
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise LoadError(f"{shown}:{exc.lineno}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # null bytes
        raise LoadError(f"{shown}: not a Python source file ({exc})") from None
    return path


def sibling_names(folder: str) -> set[str]:
    """Top-level module names that resolve inside ``folder``: x.py, x/ (packages)."""
    names = set()
    for entry in os.listdir(folder):
        stem, ext = os.path.splitext(entry)
        if ext in (".py", ".pyc") or (
            not ext and os.path.isdir(os.path.join(folder, entry))
        ):
            if stem.isidentifier():
                names.add(stem)
    return names


def _origin(module) -> str | None:
    where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
    return os.path.abspath(where) if where else None


def _prepare_path(folder: str) -> None:
    """Put ``folder`` first on sys.path and forget same-named modules loaded from elsewhere:
    another port's folder or the current directory. Installed packages (site-packages) and
    the standard library stay: a C extension cannot be imported twice."""
    protected = {"portspec", *sys.builtin_module_names, *getattr(sys, "stdlib_module_names", ())}
    siblings = sibling_names(folder) - protected
    for name in list(sys.modules):
        if name.partition(".")[0] not in siblings:
            continue
        where = _origin(sys.modules[name])
        installed = where is None or any(
            part in ("site-packages", "dist-packages") for part in where.split(os.sep)
        )
        if not installed and not where.startswith(folder + os.sep):
            del sys.modules[name]
    while folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    importlib.invalidate_caches()


def load_file(path: str) -> list[Adapter | Unavailable]:
    """Import an adapter file and instantiate its adapters (``ADAPTERS``, or every public
    ``Adapter`` subclass defined in it that names its layers).

    A module the port imports that is not installed anywhere (a framework missing here) gives
    ``Unavailable``; every other problem raises LoadError with one line.
    """
    shown = path
    path = check_file(path)
    folder = os.path.dirname(path)
    # the path's hash keeps two PORT.py files in one process apart
    stem = os.path.splitext(os.path.basename(path))[0]
    module_name = f"portspec_port_{stem}_{zlib.crc32(path.encode()):08x}"
    _prepare_path(folder)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        sys.modules.pop(module_name, None)
        top = (exc.name or "").partition(".")[0]
        where = _where(exc, path)
        if top and top not in sibling_names(folder) and importlib.util.find_spec(top) is None:
            return [Unavailable(shown, f"line {where[1:] or '?'} imports {exc.name!r}, which is "
                                       "not installed here")]
        raise LoadError(f"{shown}{where}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise LoadError(f"{shown}{_where(exc, path)}: {type(exc).__name__}: {exc}") from None
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
        raise LoadError(
            f"{shown}: defines no Adapter subclass (a class deriving from "
            "portspec.adapter.Adapter, or one of portspec.ports' bases, with its layers named)"
        )
    for adapter in found:  # a malformed weight map: one line now, not every clause failing
        try:
            getattr(adapter, "check_weights", lambda: None)()
        except TypeError as exc:
            raise LoadError(f"{shown}: {exc}") from None
    return list(found)


def _where(exc: BaseException, path: str) -> str:
    """':LINE' of the innermost frame of the port file itself in ``exc``'s traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line else ""


def default() -> list[Adapter | Unavailable]:
    """Every built-in, as importable here (keras on the KERAS_BACKEND of this process)."""
    out: list[Adapter | Unavailable] = []
    for name in builtin_names():
        out.extend(load(name))
    return out


def resolve(names: list[str] | None) -> list[Adapter | Unavailable]:
    """Adapters for the names given (each required: LoadError when one cannot be loaded), or
    every built-in when none is given (those missing here as Unavailable)."""
    if not names:
        return default()
    out: list[Adapter | Unavailable] = []
    for name in names:
        out.extend(load(name, required=True))
    return out
