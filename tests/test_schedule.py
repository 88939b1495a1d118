"""How verify and matrix share the built-ins' portable-weights exports through the cache."""

from __future__ import annotations

import pytest

from portspec import registry, schedule


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTSPEC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    return tmp_path


def _exchange(folder, names):
    folder.mkdir()
    for name in names:
        for layer in ("FeatureMixing", "GatedFeatureFusion"):
            for part in ("w0", "w1", "probe"):
                (folder / f"{name}.{layer}.{part}.safetensors").write_bytes(name.encode())
    return folder


def _verify_names():
    return ["keras-tensorflow" if n == "keras" else n for n in registry.builtin_names()]


def test_a_passing_matrix_fills_the_entry_verify_reads(cache):
    names = _verify_names() + ["keras-jax"]
    exchange = _exchange(cache / "x", names)
    schedule.keep_exports(names, str(exchange))
    entry = schedule._exports_entry(schedule.export_env())
    assert (entry / "COMPLETE").exists()
    kept = {p.name.split(".")[0] for p in entry.glob("*.safetensors")}
    assert kept == set(_verify_names())  # keras on the other backends stays out
    assert len(list(entry.glob("*.safetensors"))) == 6 * len(kept)


def test_a_matrix_without_every_builtin_verify_needs_fills_nothing(cache):
    names = _verify_names()[:-1]
    schedule.keep_exports(names, str(_exchange(cache / "x", names)))
    assert not schedule._exports_entry(schedule.export_env()).exists()


def test_the_keras_backend_of_the_exports_is_the_users_where_set(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert schedule.export_env() == {"KERAS_BACKEND": "jax"}
    monkeypatch.delenv("KERAS_BACKEND")
    assert schedule.export_env()["KERAS_BACKEND"] in ("tensorflow", "jax", "torch")
