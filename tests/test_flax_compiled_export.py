"""The built-in Flax layers write their portable-weights export compiled (``nnx.jit``), a
port's export stays eager: ``portspec.adapter.Adapter.export_compiled``."""

from __future__ import annotations

import numpy as np
import pytest

from portspec import registry
from portspec.layers import LAYERS
from portspec.suite.areas import portability
from portspec.tolerances import FORWARD, max_violation

pytest.importorskip("flax")

SPEC = LAYERS["FeatureMixing"]
CASE = SPEC.cases()[0]
CONFIG = {**CASE.config, "dropout": 0.0}


def _flax():
    return next(a for a in registry.load("flax") if a.name == "flax")


def _build(adapter):
    return adapter.build(SPEC.name, CONFIG, input_shapes=CASE.input_shapes, seed=3,
                         dtype="float32")


def test_the_flax_compiled_gradient_and_moving_statistics_are_the_eager_ones():
    rng = np.random.default_rng(0)
    x = SPEC.make_inputs(CASE, rng).astype(np.float32)
    cot = rng.standard_normal(CASE.input_shapes[0]).astype(np.float32)
    eager, compiled = _build(_flax()), _build(_flax())
    gx, grads = eager.grad(x, cot, training=True)
    cgx, cgrads = compiled.grad_compiled(x, cot, training=True)
    assert set(cgrads) == set(grads)
    # the same float32 operations, fused and ordered by XLA: the float32 forward bound
    for name, got, want in [("x", cgx, gx)] + [(n, cgrads[n], grads[n]) for n in grads]:
        assert max_violation(got, want, FORWARD["float32"])[1] <= 1, name
    moved, cmoved = eager.get_weights(), compiled.get_weights()
    for name in ("norm.moving_mean", "norm.moving_variance"):  # the training call's update
        assert not np.array_equal(moved[name], _build(_flax()).get_weights()[name]), name
        assert max_violation(cmoved[name], moved[name], FORWARD["float32"])[1] <= 1, name


def _spied(adapter, monkeypatch):
    calls = []
    handle_class = type(_build(adapter))
    for method in ("forward", "forward_compiled", "grad", "grad_compiled"):
        real = getattr(handle_class, method)
        monkeypatch.setattr(handle_class, method,
                            lambda self, *a, _m=method, _r=real, **k: calls.append(_m)
                            or _r(self, *a, **k))
    return calls


def test_the_builtin_flax_export_is_compiled_and_a_flax_port_s_is_eager(tmp_path, monkeypatch):
    builtin = _flax()
    port = type("FlaxPort", (type(builtin),), {"name": "flax-port", "export_compiled": False})()
    calls = _spied(builtin, monkeypatch)
    portability.export(builtin, SPEC, tmp_path)
    assert calls == ["forward_compiled", "grad_compiled", "forward_compiled"]
    calls.clear()
    portability.export(port, SPEC, tmp_path)
    assert calls == ["forward", "grad", "forward"]
