"""What a report checked: the metadata block every report format carries.

``collect`` answers "which code, judged by which suite, where": portspec's version and git
commit, each port file's path and sha256 (and the version of the package it wraps, when its
adapter names it with ``package = "..."``), the versions of the frameworks installed, Python,
the platform and the CPU's vector features, the profile and options of the run, each layer's
numeric cases (the labels the clauses' messages name: "expand", "rank2"), and the date.

Nothing here imports a framework: versions come from the installed distributions' metadata
(``importlib.metadata``), a port's ``package`` is read from its source without running it,
and CPU features from ``/proc/cpuinfo`` (NumPy's own dispatch table where there is none).
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import os
import platform
import subprocess
from importlib import metadata

import portspec

# Distributions whose versions decide a verdict; those not installed here are left out.
FRAMEWORKS = (
    "numpy", "ml_dtypes", "safetensors", "keras", "torch", "jax", "jaxlib", "flax",
    "tensorflow", "tensorflow-cpu", "tf_keras",
)
# The x86 features NumPy dispatches float64 kernels on (and /proc/cpuinfo names them so).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl")
DEFAULT_PROFILE = "kmr"


def collect(targets=(), options: dict | None = None, profile: str | None = None) -> dict:
    """The metadata block of one run over ``targets`` (built-in names or adapter files).

    ``options`` are the run's settings as given (clauses, layers, timeout, isolation, ...);
    ``profile`` the spec profile the verdicts were judged under (default ``kmr``).
    """
    return {
        "portspec": {"version": _version("portspec") or portspec.__version__,
                     "commit": git_commit()},
        "ports": [port_info(t) for t in targets],
        "frameworks": {name: v for name in FRAMEWORKS if (v := _version(name))},
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "profile": profile or DEFAULT_PROFILE,
        "cases": cases(),
        "options": {k: v for k, v in (options or {}).items() if v not in (None, [], False)},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def cases() -> dict[str, str]:
    """Layer -> what its numeric cases are, by the labels the clauses' messages use
    ("expand: n_series=5, input_size=6, dropout=0.1, ff_dim=16, input (8, 6, 5); ...")."""
    from portspec.layers import LAYERS

    return {name: "; ".join(f"{c.label}: {case_text(c)}" for c in spec.cases())
            for name, spec in LAYERS.items()}


def config_text(config) -> str:
    """A config as words: "n_series=5, input_size=6, ..."."""
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def case_text(case) -> str:
    """A case's config and input shapes: "n_series=5, ..., input (8, 6, 5)"."""
    shapes = " and ".join(str(tuple(s)) for s in case.input_shapes)
    return f"{config_text(case.config)}, input {shapes}"


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the checkout portspec runs from (``+dirty`` with local changes); None
    for an installed copy outside a git work tree."""
    here = os.path.dirname(os.path.abspath(portspec.__file__))

    def git(*args):
        return subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, timeout=10
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def port_info(target: str) -> dict:
    """What one ``--impl``/``verify`` target was: a file with its sha256 and declared package,
    or a built-in of this portspec."""
    if not os.path.isfile(target):
        return {"target": target, "builtin": True}
    path = os.path.abspath(target)
    with open(path, "rb") as f:
        source = f.read()
    info = {"target": target, "path": path, "sha256": hashlib.sha256(source).hexdigest()}
    package = declared_package(source)
    if package:
        info["package"] = package
        info["package_version"] = _version(package)
    return info


def declared_package(source: bytes) -> str | None:
    """The ``package = "name"`` an adapter class declares, read without running the file."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else (
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
                value = getattr(stmt, "value", None)
                if (any(isinstance(t, ast.Name) and t.id == "package" for t in targets)
                        and isinstance(value, ast.Constant) and isinstance(value.value, str)):
                    return value.value
    return None


def cpu_info() -> dict:
    """The CPU's model and which of CPU_FLAGS it has (True/False each)."""
    model, flags = None, None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and flags is None:
                    flags = set(value.split())
    except OSError:
        pass
    if flags is None:  # no /proc (macOS, Windows): NumPy's own view of the CPU
        features = _numpy_cpu_features()
        flags = {k.lower() for k, v in features.items() if v}
    model = model or platform.processor() or platform.machine()
    return {"model": model, "features": {flag: flag in flags for flag in CPU_FLAGS}}


def _numpy_cpu_features() -> dict:
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # NumPy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)
