"""Where a float64 call turns float32 (``portspec.ports.narrowing``): the first operation that
converts a float64 value to a narrower float, the library line that does it and the port's
line that reached it, and the root cause that names them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from portspec import registry
from portspec.layers import LAYERS

FIXTURES = Path(__file__).parent / "ports_fixtures"
FM = LAYERS["FeatureMixing"]
CASE = FM.cases()[0]
CONFIG = {**CASE.config, "dropout": 0.0}


def _adapters(name):
    return {a.name: a for a in registry.load_file(str(FIXTURES / name))}


def _narrowing(adapter, dtype="float64", training=False):
    handle = adapter.build("FeatureMixing", dict(CONFIG), input_shapes=CASE.input_shapes,
                           seed=0, dtype=dtype)
    x = FM.make_inputs(CASE, np.random.default_rng(0)).astype(dtype)
    return handle.narrowing(x, training=training)


def test_a_cast_written_in_a_torch_port_is_named_at_its_line():
    pytest.importorskip("torch")
    ports = _adapters("single_mistakes_torch.py")
    for training in (False, True):
        words = _narrowing(ports["float32-inside"], training=training)
        assert words is not None
        assert "converted to float32 in the port's own code" in words, words
        assert "single_mistakes_torch.py:" in words and "`z = z.float().to(x.dtype)`" in words


def test_a_torch_port_that_stays_float64_says_nothing():
    pytest.importorskip("torch")
    ports = _adapters("single_mistakes_torch.py")
    assert _narrowing(ports["conforming"]) is None
    assert _narrowing(ports["conforming"], training=True) is None
    # a float32 layer has nothing to narrow from
    assert _narrowing(ports["float32-inside"], dtype="float32") is None


@pytest.mark.home("keras-jax", "keras-torch")
def test_keras_batchnormalization_outside_tensorflow_is_named_with_the_ports_line():
    """Keras 3.15 computes result_type(float64, "float32") as float32 outside TensorFlow, and
    its BatchNormalization casts its input to that: the words name Keras's line and the
    port's call of its norm."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() == "tensorflow":
        pytest.skip("TensorFlow promotes float64 with float32 to float64: nothing narrows")
    words = _narrowing(_adapters("keras_batchnorm.py")["keras-builtin-bn"])
    assert words is not None
    assert "batch_normalization.py:" in words and "converted to float32 at keras" in words
    assert "reached from the port's keras_batchnorm.py:" in words and "self.norm(" in words


@pytest.mark.home("keras-tensorflow")
def test_a_cast_written_in_a_keras_port_on_tensorflow_is_named_at_its_line():
    """TensorFlow's graph of the call (tf.function, traced): the Cast's creation stack names
    the port's line; the conforming port, float64 throughout, has none."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow trace: KERAS_BACKEND=tensorflow")
    ports = _adapters("single_mistakes_keras.py")
    for training in (False, True):
        words = _narrowing(ports["activation-in-float32"], training=training)
        assert words is not None
        assert words.startswith("a float64 value is converted to float32 in the port's own "
                                "code, single_mistakes_keras.py:"), words
        assert '`return ops.cast(ops.relu(ops.cast(h, "float32")), h.dtype)`' in words, words
        assert _narrowing(ports["conforming"], training=training) is None


@pytest.mark.home("keras-tensorflow")
def test_a_tensorflow_trace_leaves_kerass_name_scopes_as_they_were():
    """A layer of a class named _Private is named "__private", which tf.name_scope refuses
    as a root scope inside a graph: the trace runs under a root scope of its own, and Keras's
    stack of name scopes is put back, so the layers built after it keep their own paths."""
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the TensorFlow trace: KERAS_BACKEND=tensorflow")
    adapter = _adapters("ports_keras.py")["keras-epsilon-1e-5"]
    _narrowing(adapter)
    _narrowing(adapter, training=True)
    after = adapter.build("FeatureMixing", dict(CONFIG), input_shapes=CASE.input_shapes,
                          seed=0, dtype="float64")
    paths = [v.path for v in after.obj.weights]
    assert paths and all(p.count("/") == 2 for p in paths), paths  # layer/sublayer/weight


def test_the_words_name_the_first_frame_past_the_casts():
    from portspec.ports.narrowing import describe

    port = os.path.abspath(__file__)
    frames = [("/x/site-packages/lib/core.py", 10, "convert_to_tensor"),
              ("/x/site-packages/lib/ops.py", 20, "cast"),
              ("/x/site-packages/lib/norm.py", 30, "Norm.call"),
              (port, 1, "Port.call")]
    words = describe(frames, [port], "float32", "convert_element_type")
    assert words.startswith("a float64 value is converted to float32 at lib/norm.py:30 in "
                            "Norm.call, reached from the port's test_narrowing.py:1 in "
                            "Port.call"), words
    # no frame at all: the operation alone
    assert describe([], [port], "float16", "_to_copy") == (
        "a float64 value is converted to float16 by _to_copy inside the call")


def test_the_root_cause_names_the_line_of_a_cast():
    pytest.importorskip("torch")
    from portspec import report
    from portspec.verify import verify

    path = str(FIXTURES / "single_mistakes_torch.py")
    results = verify([path], tasks=[("float32-inside", "FM-DTYPE")], isolate=False)
    (cause,) = [c for _, c, ids in report.root_causes(results) if "FM-DTYPE" in ids]
    assert "a value is converted to float32 inside the call" in cause, cause
    assert "`z = z.float().to(x.dtype)`" in cause, cause


@pytest.mark.home("keras-tensorflow", "keras-jax")
def test_a_compiled_call_that_raises_names_the_ports_line():
    """Eager runs, compiled raises: the cause names the tracer's refusal and the port's line
    the exception passed through (JAX's traceback; TensorFlow quotes it in its message)."""
    pytest.importorskip("keras")
    from portspec import report
    from portspec.verify import verify

    path = str(FIXTURES / "compile_raises_keras.py")
    results = verify([path], tasks=[("finite-check-in-python", "FM-COMPILE")], isolate=False)
    (cause,) = [c for _, c, ids in report.root_causes(results) if "FM-COMPILE" in ids]
    assert "the compiled call raises where the eager call runs: the port uses a traced value "\
        "as a Python value" in cause, cause
    assert "compile_raises_keras.py:" in cause and "`if not bool(ops.all(ops.isfinite(x))):`" \
        in cause, cause


@pytest.mark.home("flax")
def test_only_an_upcast_that_reaches_the_output_in_float32_is_named():
    """``widened_output``: a bfloat16 call normalised in float32 and cast back returns
    bfloat16, so that upcast is not named; an input upcast and added to the result is, at its
    own line."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from portspec.ports.narrowing import widened_output

    def cast_back(x):
        z = x.astype(jnp.float32)
        return (z - z.mean()).astype(x.dtype)

    def residual_upcast(x):
        z = (x.astype(jnp.float32) - x.mean()).astype(x.dtype)
        up = x.astype(jnp.float32)
        return up + z

    x = jnp.ones((4, 3), jnp.bfloat16)
    here = [__file__]
    assert widened_output(lambda: jax.make_jaxpr(cast_back)(x), here, "bfloat16") is None
    words = widened_output(lambda: jax.make_jaxpr(residual_upcast)(x), here, "bfloat16")
    assert words is not None and "converted to float32 in the port's own code" in words, words
    assert "`up = x.astype(jnp.float32)`" in words, words
