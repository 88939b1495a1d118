"""Ports as they are: weights a port lacks or holds at another shape, renamed config
parameters, fixed constructor arguments and a Keras 2 (tf_keras) block, through spec.ports.

The fixtures are in tests/ports_fixtures (ports_asis.py: PyTorch; ports_tf_keras.py: Keras 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from portspec import registry
from portspec.adapter import MissingWeight
from portspec.suite.checks import work_items
from portspec.suite.runner import run_clause

pytest.importorskip("torch")

FIXTURES = Path(__file__).parent / "ports_fixtures"
ITEMS = {clause.id: (spec, clause, fn) for spec, clause, fn in work_items(None)}
CONFIG = {"n_series": 3, "input_size": 4, "dropout": 0.1, "ff_dim": 5}
SHAPES = [(2, 4, 3)]


def _ports(name):
    loaded = registry.load_file(str(FIXTURES / name))
    missing = [a for a in loaded if isinstance(a, registry.Unavailable)]
    if missing:
        pytest.skip(missing[0].reason)
    return {a.name: a for a in loaded}


def _run(adapter, *clause_ids):
    return {c: run_clause(adapter, *ITEMS[c]) for c in clause_ids}


@pytest.fixture(scope="module")
def layernorm():
    return _ports("ports_asis.py")["layernorm-after"]


def test_weight_layout_says_what_the_port_holds(layernorm):
    handle = layernorm.build("FeatureMixing", CONFIG, input_shapes=SHAPES, seed=0)
    layout = handle.weight_layout()
    assert {n: (w.kind, w.shape) for n, w in layout.items() if w.kind != "canonical"} == {
        "norm.gamma": ("held_as", (4, 3)),
        "norm.beta": ("held_as", (4, 3)),
        "norm.moving_mean": ("absent", None),
        "norm.moving_variance": ("absent", None),
    }
    assert layout["norm.gamma"].canonical_shape == (12,)
    assert layout["norm.moving_mean"].reason == "LayerNorm keeps no moving statistics"
    assert layout["dense1.kernel"].shape == layout["dense1.kernel"].canonical_shape == (3, 5)
    weights = handle.get_weights()
    assert "norm.moving_mean" not in weights and weights["norm.gamma"].shape == (4, 3)
    with pytest.raises(MissingWeight, match="norm.moving_mean.*no moving statistics"):
        weights["norm.moving_mean"]
    info = handle.weight_info()
    assert info["norm.gamma"] == ((4, 3), True) and "norm.moving_mean" not in info
    assert handle.get_config() == CONFIG  # sequence_length read back as input_size


def test_held_as_weights_are_set_at_their_own_shape_and_refused_at_the_spec_s(layernorm):
    handle = layernorm.build("FeatureMixing", CONFIG, input_shapes=SHAPES, seed=0)
    scale = np.arange(12.0).reshape(4, 3)
    handle.set_weights({"norm.gamma": scale})
    assert np.array_equal(handle.get_weights()["norm.gamma"], scale)
    before = handle.get_weights()
    canonical = {"norm.gamma": np.ones(12), "norm.moving_mean": np.zeros(12),
                 "dense1.bias": np.full(5, 7.0)}
    with pytest.raises(MissingWeight) as refused:
        handle.set_weights(canonical)
    assert refused.value.name == "norm.gamma, norm.moving_mean"  # both named, once
    after = handle.get_weights()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # nothing written
    _, grads = handle.grad(np.ones((2, 4, 3), np.float32), np.ones((2, 4, 3)), training=True)
    assert grads["norm.gamma"].shape == (4, 3) and "norm.moving_mean" not in grads


def test_only_the_clauses_touching_a_missing_weight_do_not_apply(layernorm):
    results = _run(layernorm, "FM-SHAPE", "FM-CONFIG", "FM-CONFIG-ROUNDTRIP", "FM-BN-UPDATE",
                   "FM-INFERENCE", "FM-WEIGHTS", "FM-INIT")
    status = {c: r.status for c, r in results.items()}
    assert status == {"FM-SHAPE": "passed", "FM-CONFIG": "passed",
                      "FM-CONFIG-ROUNDTRIP": "passed", "FM-BN-UPDATE": "skipped",
                      "FM-INFERENCE": "skipped", "FM-WEIGHTS": "failed", "FM-INIT": "failed"}
    assert "norm.moving_mean" in results["FM-BN-UPDATE"].message
    assert "no moving statistics" in results["FM-BN-UPDATE"].message
    assert "missing norm.moving_mean" in results["FM-WEIGHTS"].message
    # nn.Linear's own initialisation fails FM-INIT; the absent statistics are not repeated
    assert "moving" not in results["FM-INIT"].message and "dense1" in results["FM-INIT"].message


def test_a_layernorm_held_at_its_own_shape_is_the_root_cause_of_the_clauses_it_fails():
    """The root-cause stage re-runs a failed clause on the variant it found; that variant
    holds the LayerNorm's scale and offset at the port's own (L, N) shape, so a clause that
    leaves such weights at their own values (FM-RESIDUAL) leaves the variant's too, and the
    variant fails it the same way. Before, the variant took the spec's random flat weights
    there, and FM-RESIDUAL and FM-WEIGHTS read "unexplained" or a cause of their own. The
    dropout probe's branch values, normalised after the residual, are draws of the masks: the
    variant's differ from the port's, and FM-DROPOUT-SITES is the same failure where the
    words and the levels agree."""
    from portspec.verify import verify

    clauses = ("FM-RESIDUAL", "FM-WEIGHTS", "FM-PARAMS", "FM-DROPOUT-SITES")
    results = verify([str(FIXTURES / "ports_asis.py")],
                     tasks=[("layernorm-after", c) for c in clauses], isolate=False)
    causes = {r.clause: r.cause for r in results if r.status == "failed"}
    assert set(causes) == set(clauses), causes
    assert len(set(causes.values())) == 1, causes
    assert causes["FM-RESIDUAL"].startswith("FeatureMixing: LayerNorm over (L, N) instead of "
                                            "BatchNorm"), causes


def test_a_config_error_naming_the_port_s_own_parameter_is_the_spec_s_error(layernorm):
    bad = {**CONFIG, "input_size": 0}
    with pytest.raises(ValueError, match="sequence_length") as raised:
        layernorm.build("FeatureMixing", bad, input_shapes=SHAPES, seed=0)
    assert "input_size" not in str(raised.value)  # FM-CONFIG passed on the port's name alone


def test_one_scalar_statistic_is_held_as_shape_one():
    port = _ports("ports_asis.py")["scalar-batchnorm"]
    handle = port.build("FeatureMixing", CONFIG, input_shapes=SHAPES, seed=0)
    assert {n: w.shape for n, w in handle.weight_layout().items() if w.kind == "held_as"} == {
        n: (1,) for n in ("norm.gamma", "norm.beta", "norm.moving_mean", "norm.moving_variance")
    }
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    handle.forward(x, training=True)
    assert handle.get_weights()["norm.moving_mean"] == pytest.approx(0.01 * x.mean(), rel=1e-5)
    result = _run(port, "FM-INFERENCE")["FM-INFERENCE"]
    assert result.status == "skipped" and "one statistic for all" in result.message


@pytest.mark.home("ports")  # tf_keras is one of the peers only that env installs
def test_a_keras_2_block_with_a_list_axis_runs_on_tf_keras():
    pytest.importorskip("tf_keras")
    port = _ports("ports_tf_keras.py")["tf-keras-reference"]
    handle = port.build("FeatureMixing", CONFIG, input_shapes=SHAPES, seed=0)
    assert handle.weight_info()["norm.moving_mean"] == ((12,), False)  # (1, L, N) reshaped
    results = _run(port, "FM-WEIGHTS", "FM-INFERENCE", "FM-SAVE-NATIVE", "FM-BN-UPDATE")
    status = {c: r.status for c, r in results.items()}
    # Keras's default momentum 0.99 keeps 0.99 of the old statistic; the spec keeps 0.01
    assert status == {"FM-WEIGHTS": "passed", "FM-INFERENCE": "passed",
                      "FM-SAVE-NATIVE": "passed", "FM-BN-UPDATE": "failed"}, results


def test_a_compiled_call_the_cpp_compiler_refuses_is_made_again_with_inductors_probe(monkeypatch):
    """portspec lets Inductor take the CPU's vector instruction set without its per-process
    probe programs (portspec.ports.torch); where the C++ compiler then refuses the kernels,
    the call is compiled again once, with the probe, and gives the eager result."""
    import torch
    import torch._inductor.config as inductor
    from torch._inductor import cpu_vec_isa
    from torch._inductor.exc import CppCompileError

    from portspec.ports import torch as torch_ports

    port = registry.load("torch")[0]
    handle = port.build("FeatureMixing", {**CONFIG, "dropout": 0.0}, input_shapes=SHAPES, seed=0)
    x = np.random.default_rng(0).standard_normal(SHAPES[0]).astype(np.float32)
    made, probes = [], []

    def compile_(module, **kwargs):
        made.append(inductor.cpp.vec_isa_ok)
        # the extensions' probe programs (AVX-512 BF16, VNNI, AMX) are skipped, then restored
        probes.append({"check_build" in vars(isa) for isa in cpu_vec_isa.supported_vec_isa_list})
        if len(made) == 1:
            def refused(*args, **kw):
                raise RuntimeError("backend failed") from CppCompileError(["g++"], "-mamx-tile")
            return refused
        return module  # the second compile: the module itself, eager

    monkeypatch.delenv("TORCHINDUCTOR_VEC_ISA_OK", raising=False)
    monkeypatch.setattr(torch_ports, "_ISA", {"assumed": None})
    monkeypatch.setattr(torch, "compile", compile_)
    with inductor.patch({"cpp.vec_isa_ok": inductor.cpp.vec_isa_ok}):  # restored after
        got = handle.forward_compiled(x, training=False)
    np.testing.assert_array_equal(got, handle.forward(x, training=False))
    assert made == [True, None]  # assumed first, then Inductor's own probe
    assert probes == [{True}, {False}]


def test_a_compiled_call_failing_otherwise_is_not_retried(monkeypatch):
    import torch

    from portspec.ports import torch as torch_ports

    port = registry.load("torch")[0]
    handle = port.build("FeatureMixing", {**CONFIG, "dropout": 0.0}, input_shapes=SHAPES, seed=0)
    calls = []

    def compile_(module, **kwargs):
        calls.append(1)

        def broken(*args, **kw):
            raise RuntimeError("a graph break the port caused")
        return broken

    import torch._inductor.config as inductor

    monkeypatch.setattr(torch_ports, "_ISA", {"assumed": None})
    monkeypatch.setattr(torch, "compile", compile_)
    with inductor.patch({"cpp.vec_isa_ok": inductor.cpp.vec_isa_ok}), \
            pytest.raises(RuntimeError, match="graph break"):
        handle.forward_compiled(np.zeros(SHAPES[0], np.float32), training=False)
    assert len(calls) == 1

