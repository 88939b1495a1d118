"""What portspec keeps between runs: the frameworks' compilation caches and the built-in
implementations' portable-weights exports.

The folder is ``$PORTSPEC_CACHE``, else ``$XDG_CACHE_HOME/portspec``, else
``~/.cache/portspec``. Deleting it costs time, never a verdict: every entry is a pure function
of its key.

- ``jax/``: JAX's persistent compilation cache (``jax_compilation_cache_dir``), every
  executable kept (minimum compile time and entry size 0: the suite's programs are small and
  many). Keras on the JAX backend and Flax use it too.
- ``inductor/``: PyTorch Inductor's FX graph and AOTAutograd caches (``TORCHINDUCTOR_CACHE_DIR``;
  torch keys them by graph, inputs, torch version and configuration).
- ``exchange/<key>/``: the built-ins' portable-weights exports that ``portspec verify`` hands to
  a port's FM/GFF-PORTABLE clause. The key hashes portspec's own source files, the installed
  versions of the frameworks and the Keras backend, so any change to them writes a new entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

CACHE = "PORTSPEC_CACHE"
FRAMEWORKS = ("numpy", "keras", "jax", "jaxlib", "flax", "torch", "tensorflow-cpu", "tensorflow")


def cache_dir() -> Path:
    """The cache folder (not created here)."""
    if os.environ.get(CACHE):
        return Path(os.environ[CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "portspec"


def compilation_env() -> dict[str, str]:
    """Environment variables that point JAX's and Inductor's persistent caches into the cache
    folder. Read by the frameworks at import, so set them before importing one."""
    root = cache_dir()
    return {
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
        "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
        "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
        "TORCHINDUCTOR_AUTOGRAD_CACHE": "1",
    }


def enable_compilation_caches(environ=None) -> dict:
    """Set the cache variables in ``environ`` (default ``os.environ``) where the user has not
    set them; returns ``environ``. A user's own setting always wins."""
    environ = os.environ if environ is None else environ
    for key, value in compilation_env().items():
        environ.setdefault(key, value)
    return environ


def source_key(extra: str = "") -> str:
    """A hash of portspec's Python sources and the installed framework versions (plus
    ``extra``): what a built-in's export is a function of."""
    digest = hashlib.sha256(extra.encode())
    for package in ("portspec", "portspec.impls"):
        found = importlib.util.find_spec(package)
        for folder in found.submodule_search_locations or ():
            for path in sorted(Path(folder).rglob("*.py")):
                digest.update(str(path.relative_to(folder)).encode())
                digest.update(path.read_bytes())
    for name in FRAMEWORKS:
        try:
            digest.update(f"{name}={version(name)}".encode())
        except PackageNotFoundError:
            digest.update(f"{name}=absent".encode())
    return digest.hexdigest()[:16]
