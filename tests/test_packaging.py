"""The distribution installs one import package, ``portspec``, laid out in the design card's
folders: spec/ is the package and impls/ its subpackage ``portspec.impls``."""

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"portspec": ROOT / "spec", "portspec.impls": ROOT / "impls"}


def _declared() -> list[str]:
    tomllib = pytest.importorskip("tomllib", reason="the standard library reads TOML from 3.11")
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["packages"]


def test_every_folder_with_an_init_is_a_declared_package():
    found = set()
    for package, folder in FOLDERS.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((package, *parts)))
    assert sorted(found) == sorted(_declared())


def test_the_wheel_holds_one_top_level_package(tmp_path):
    # Without build isolation where setuptools is at hand: no download of the build backend.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    # From a copy: setuptools leaves build/ behind, which must not reach the next build here.
    source = tmp_path / "source"
    junk = (".git", ".tox", ".venv*", ".asv", "build", "*.egg-info", "__pycache__", "reports")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*junk))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path),
         str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("portspec-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = z.read(next(n for n in names if n.endswith("top_level.txt"))).decode().split()
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"portspec"}
    assert top == ["portspec"]
    assert "portspec/vectors/FeatureMixing-expand.safetensors" in names
    assert "portspec/impls/torch/layers.py" in names
    assert "spec." not in entry_points.replace("portspec.", "")
    assert "impls." not in entry_points.replace("portspec.impls.", "")
