"""Golden vectors: the same bits on every CPU, and exactly the oracle's output."""

import hashlib
import json
import math
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from portspec import exact, golden
from portspec.layers import LAYERS

# NumPy 2.4 dispatches exp, tanh, ... to AVX-512 or AVX2 kernels at run time; this holds it to
# its baseline code path. glibc's libm picks FMA variants likewise; the tunable turns them off.
BASELINE = {"NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4"}
NO_FMA_LIBM = {"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F,-AVX2,-FMA,-AVX"}
CODE_PATHS = {"dispatched": {}, "numpy-baseline": BASELINE, "libm-no-fma": NO_FMA_LIBM}
x86 = platform.machine() in ("x86_64", "AMD64")

PROBE = """
import hashlib, json, numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as f
x = np.linspace(-30.0, 30.0, 100001)
print(json.dumps({"avx2": f["AVX2"], "exp": hashlib.sha256(np.exp(x).tobytes()).hexdigest(),
                  "tanh": hashlib.sha256(np.tanh(x).tobytes()).hexdigest()}))
"""


def _run(args, env, **kw):
    # each path from the same start: a variable this process inherited would hold them all
    inherited = {k: v for k, v in os.environ.items() if k not in {*BASELINE, *NO_FMA_LIBM}}
    return subprocess.run(
        [sys.executable, *args], env={**inherited, **env}, capture_output=True, text=True,
        check=True, **kw,
    )


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


@pytest.mark.parametrize("path", CODE_PATHS)
def test_vectors_regenerate_bit_identically_on_every_code_path(path, tmp_path):
    if path != "dispatched" and not x86:
        pytest.skip(f"{path} is an x86-64 code path; this machine is {platform.machine()}")
    _run(["-m", "portspec.cli", "vectors", "--out", str(tmp_path)], CODE_PATHS[path])
    assert _digests(tmp_path) == _digests(golden.DIRECTORY)


@pytest.mark.skipif(not x86, reason="NPY_DISABLE_CPU_FEATURES names x86-64 feature groups")
def test_the_baseline_code_path_is_another_path():
    """The vectors test above proves something only if NumPy really ran other kernels. NumPy
    2.4 has float64 SIMD kernels for exp only on AVX-512 and for tanh on AVX2 too, so the probe
    asks both (on an AVX2 CPU without AVX-512 exp is the same scalar code on both paths)."""
    default = json.loads(_run(["-c", PROBE], {}).stdout)
    baseline = json.loads(_run(["-c", PROBE], BASELINE).stdout)
    if not default["avx2"]:
        pytest.skip("this CPU has no AVX2: NumPy runs its baseline kernels anyway")
    assert (default["exp"], default["tanh"]) != (baseline["exp"], baseline["tanh"]), (
        "np.exp and np.tanh gave the same bits on both code paths")


def test_every_layer_has_vectors_that_match_the_oracle():
    for name, spec in LAYERS.items():
        files = golden.files_for(name)
        assert files, name
        for path in files:
            v = golden.read(path)
            for training, expected in v.expected.items():
                out, state = spec.forward(v.config, v.weights, v.inputs, training=training)
                np.testing.assert_array_equal(out, expected)
            for key, value in v.state[True].items():
                np.testing.assert_array_equal(state[key], value)


def test_vectors_are_not_pickles():
    for path in golden.DIRECTORY.glob("*"):
        assert path.suffix == ".safetensors"
        assert path.read_bytes()[:1] != b"\x80"


# -- the oracle's arithmetic (portspec.exact) ---------------------------------------------


def test_exact_exp_and_tanh_are_within_half_an_ulp_of_the_true_value():
    from decimal import Context, Decimal

    ctx = Context(prec=60)
    xs = np.concatenate([np.linspace(-40, 40, 2001), [0.0, -0.0, 1e-300, 5e-10, -3e-9, 710.0]])
    for fn, ref in ((exact.exp, ctx.exp), (exact.tanh, None)):
        got = fn(xs)
        for x, g in zip(xs.tolist(), got.tolist(), strict=True):
            d = Decimal(x)
            if ref is not None:
                true = ref(d)
            elif abs(x) < 1e-5:  # the series: exp(2x) - 1 would cancel
                true = d - d**3 / 3 + 2 * d**5 / 15
            else:
                e = ctx.exp(Decimal(2 * x))
                true = ctx.divide(e - 1, e + 1)
            if math.isinf(g):
                assert true > Decimal(np.finfo(np.float64).max)
                continue
            ulp = Decimal(math.ulp(g))
            assert abs(Decimal(g) - true) <= ulp / 2, (fn.__name__, x)


def test_exact_sums_are_within_an_ulp_of_the_correctly_rounded_sum():
    rng = np.random.default_rng(0)
    # terms over 16 orders of magnitude, with cancellation: plain summation loses digits here
    a, b = rng.normal(size=(7, 50)) * 10.0 ** rng.integers(-8, 8, (7, 50)), rng.normal(size=(50, 3))
    out = exact.matmul(a, b)
    for i, j in np.ndindex(out.shape):
        true = math.fsum((a[i] * b[:, j]).tolist())
        assert abs(out[i, j] - true) <= math.ulp(true), (i, j)
    x = rng.normal(size=(9, 4))
    np.testing.assert_array_equal(exact.sum(x, 0), [math.fsum(c) for c in x.T.tolist()])
    np.testing.assert_allclose(exact.var(x, ddof=1), x.var(axis=0, ddof=1), rtol=1e-14)
    np.testing.assert_allclose(exact.softmax(x, axis=0).sum(axis=0), 1.0, rtol=1e-15)
    assert exact.sum(np.array([[np.inf], [1.0]]), 0)[0] == np.inf
