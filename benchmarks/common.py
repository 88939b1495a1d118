"""What the benchmark modules share: the parameter grid, one runner per framework, the floor.

A benchmark names an implementation, a mode, an execution, a size and a device.
:func:`make_case` turns that into a :class:`Case`: ``run()`` performs one call of the layer
and waits for its result, ``floor()`` performs the bare matrix multiplications that call
cannot avoid, in the same framework and on the same device.

Keras reads ``KERAS_BACKEND`` once, at import, so it is imported here inside ``setup`` (asv
runs every benchmark in a process of its own) and never at module level. Anything that cannot
run in this process (a framework or a peer package missing, no GPU, Keras already loaded with
another backend) raises ``NotImplementedError`` in ``setup``, which asv reports as skipped.
"""

from __future__ import annotations

import abc
import contextlib
import importlib.util
import inspect
import math
import os
import shutil
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up chatter

# JAX's and Inductor's persistent compilation caches, in portspec's cache folder, set before
# either framework is imported (portspec.cache; a user's own setting wins). A case's three
# methods run in three processes that compile the same programs, and JAX compiles every
# primitive an eager call dispatches: from the cache a process's setup takes a fraction of the
# CPU (Flax's six small FeatureMixing cases: 17.6 s cold, 4.1 s cached). Setup only: the
# measured calls follow the warm-up either way. A past commit's portspec may lack the module.
with contextlib.suppress(ImportError):
    from portspec.cache import enable_compilation_caches

    enable_compilation_caches()

# asv imports this module in two kinds of process: one that discovers the benchmarks
# (``asv/benchmark.py discover``, or ``check``), which reads only their names and parameters, and
# the forkserver whose forks run them. Each ``asv run`` discovers anew (six times in tox's bench
# env), and with the frameworks imported a discovery took 2.7-7.0 s of CPU instead of 0.3 s: the
# frameworks are preloaded for the forkserver only.
DISCOVERING = sys.argv[1:2] in (["discover"], ["check"])

# Imported at module level so that asv's forkserver (asv.conf.json) loads them once and every
# benchmark process inherits them; Keras and TensorFlow are not by default (importing
# TensorFlow imports Keras with its default backend, and Keras's backend is fixed at import).
if not DISCOVERING:
    with contextlib.suppress(ImportError):
        import torch  # noqa: F401
    with contextlib.suppress(ImportError):
        import jax  # noqa: F401
        from flax import nnx  # noqa: F401

# What a run loads in the forkserver beyond NumPy, PyTorch and JAX, so that its benchmark
# processes skip the import (tox's bench env runs asv once per such group):
# PORTSPEC_BENCH_KERAS=jax|torch|tensorflow loads Keras on that backend (TensorFlow's import
# alone is 2.3 s of CPU); PORTSPEC_BENCH_INDUCTOR=1 loads Dynamo and Inductor and runs
# Inductor's probe of the CPU's vector instruction sets, which starts programs of its own in
# every new process (a compiled torch case's setup: 3.7-4.4 s of CPU, 0.7-1.2 s preloaded).
# A run with either may hold only the benchmarks that load the same themselves
# (check_preloaded), so that none counts in its peak memory what it would not have loaded.
PRELOADED_KERAS = os.environ.get("PORTSPEC_BENCH_KERAS")
PRELOADED_INDUCTOR = os.environ.get("PORTSPEC_BENCH_INDUCTOR") == "1"
if PRELOADED_KERAS:
    os.environ["KERAS_BACKEND"] = PRELOADED_KERAS
if PRELOADED_KERAS and not DISCOVERING:
    import keras  # noqa: F401
if PRELOADED_INDUCTOR and not DISCOVERING:
    import torch._dynamo  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    from torch._inductor import cpu_vec_isa

    cpu_vec_isa.valid_vec_isa_list()  # cached for the process and the ones forked from it


def check_preloaded(runner: str, framework: str, execution: str):
    """A benchmark run by a server that preloaded what it would not load itself is an error,
    never a measurement or a skip (above)."""
    if PRELOADED_KERAS and (runner, framework) != ("keras", PRELOADED_KERAS):
        raise RuntimeError(f"PORTSPEC_BENCH_KERAS={PRELOADED_KERAS}: this run may hold only "
                           f"Keras benchmarks on {PRELOADED_KERAS}, not a {runner} one on "
                           f"{framework}")
    if PRELOADED_INDUCTOR and (framework, execution) != ("torch", "compiled"):
        raise RuntimeError("PORTSPEC_BENCH_INDUCTOR=1: this run may hold only compiled "
                           f"benchmarks on torch, not a {execution} one on {framework}")


MODES = ("inference", "train-forward", "train-step")
EXECUTIONS = ("eager", "compiled")
DEVICES = ("cpu", "cuda")
DROPOUT = 0.1  # TSMixer's usual rate; the train modes pay for the masks

# implementation -> (runner, framework underneath). Peers sit next to ours.
IMPLS = {
    "keras-jax": ("keras", "jax"),
    "keras-torch": ("keras", "torch"),
    "keras-tensorflow": ("keras", "tensorflow"),
    "torch": ("torch", "torch"),
    "flax": ("nnx", "jax"),
    "neuralforecast": ("torch", "torch"),
    "kerasfactory-jax": ("keras", "jax"),
    "kerasfactory-torch": ("keras", "torch"),
    "kerasfactory-tensorflow": ("keras", "tensorflow"),
}
OURS = ("keras-jax", "keras-torch", "keras-tensorflow", "torch", "flax")


PARAM_NAMES = ("implementation", "mode", "execution", "size", "device")


def params(impls, sizes) -> tuple[list, ...]:
    """A layer's grid. To run part of it, select with asv's regex, which also matches the
    parameters: ``asv run -b "time_layer.*'small', 'cpu'"``."""
    return (list(impls), list(MODES), list(EXECUTIONS), list(sizes), list(DEVICES))


class LayerBenchmark(abc.ABC):
    """One layer call per measurement. A subclass gives ``params`` and ``spec``; being
    abstract, this class is not collected by asv itself."""

    param_names = PARAM_NAMES
    timeout = 600  # compiling a training step on 2 cores, then a large eager step

    @staticmethod
    @abc.abstractmethod
    def spec(impl: str, mode: str, size: str) -> Spec: ...

    def setup(self, impl, mode, execution, size, device):
        self.case = make_case(impl, mode, execution, device, lambda: self.spec(impl, mode, size))

    def time_layer(self, *params):
        self.case.run()

    def peakmem_layer(self, *params):
        self.case.run()

    def track_floor_ratio(self, *params):
        """Median time of one call over the median time of its bare matmuls (1.0: the floor)."""
        return self.case.floor_ratio()

    track_floor_ratio.unit = "ratio"


def skip(reason: str):
    """asv's documented skip: NotImplementedError raised in setup."""
    raise NotImplementedError(reason)


def require(module: str):
    """Import ``module`` or skip the benchmark when it, or a package it needs, is not installed
    (a peer left out, an implementation a past commit did not have yet). Any other import
    error is a broken benchmark and propagates."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        skip(f"{module} needs {exc.name}, which is not installed")


# Where each implementation's layers live: the part of its name before the backend.
HOMES = {
    "keras": "portspec.impls.keras.layers",
    "torch": "portspec.impls.torch.layers",
    "flax": "portspec.impls.jax.layers",
    "neuralforecast": "neuralforecast.models.tsmixer",
    "kerasfactory": "kerasfactory.layers",
}


def check_installed(impl: str):
    """Skip at once when a peer's package is absent, before a framework is loaded for it."""
    package = HOMES[impl.split("-")[0]].split(".")[0]
    if importlib.util.find_spec(package) is None:
        skip(f"{package} is not installed")


def layer_class(impl: str, name: str):
    return getattr(require(HOMES[impl.split("-")[0]]), name)


def import_keras(backend: str):
    """Keras with ``backend``, or a skip when this process already loaded another one."""
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != backend:
        skip(f"keras already imported with the {loaded.backend.backend()} backend")
    os.environ["KERAS_BACKEND"] = backend
    return require("keras")


def check_device(framework: str, device: str):
    if device == "cpu":
        return
    # Decided before any framework looks for a GPU, so the skip costs nothing on a CPU machine.
    if not (shutil.which("nvidia-smi") or os.path.exists("/dev/nvidia0")):
        skip("no CUDA device on this machine")
    if framework == "torch":
        present = require("torch").cuda.is_available()
    elif framework == "jax":
        present = any(d.platform == "gpu" for d in require("jax").devices())
    else:
        present = bool(require("tensorflow").config.list_physical_devices("GPU"))
    if not present:
        skip(f"{framework} sees no CUDA device")


# PORTSPEC_BENCH_QUICK=1 (tox's bench envs, with asv's --quick): checking that every benchmark
# runs, not measuring, so a track_floor_ratio times one call of each side instead of 5 loops of
# at least 50 ms (at the large sizes, seconds per benchmark). Its ratio is then only indicative.
QUICK = os.environ.get("PORTSPEC_BENCH_QUICK") == "1"


def median_time(fn: Callable[[], object], repeat: int = 5, loop: float = 0.05) -> float:
    """Median seconds per call over ``repeat`` loops of at least ``loop`` seconds each: the
    median shrugs off the odd slow loop on a busy machine. ``fn`` is already warm."""
    once = timeit.timeit(fn, number=1)
    if QUICK:
        return once
    number = max(1, math.ceil(loop / once))
    return statistics.median(timeit.repeat(fn, repeat=repeat, number=number)) / number


@dataclass
class Case:
    run: Callable[[], object]
    make_floor: Callable[[], Callable[[], object]]

    def floor_ratio(self) -> float:
        # The floor's operands are made here, not in setup, so peakmem_* does not count them.
        floor = self.make_floor()
        floor()  # warm-up: first dispatch, jax.jit's compile
        return median_time(self.run) / median_time(floor)


@dataclass
class Spec:
    """What a layer module tells the runners.

    ``build`` makes the layer (``build(rngs)`` for Flax NNX, ``build()`` otherwise); ``arrays``
    are the float32 inputs; ``listed`` says whether the layer takes them as a list;
    ``matmuls`` are the ``(m, k, n)`` products of the floor for the mode at hand.
    """

    build: Callable
    arrays: list[np.ndarray]
    listed: bool
    matmuls: list[tuple[int, int, int]]


def make_case(impl: str, mode: str, execution: str, device: str, spec: Callable[[], Spec]) -> Case:
    runner, framework = IMPLS[impl]
    if impl not in OURS and execution == "compiled":
        # Compiling a peer measures the compiler more than the peer; the targets compare
        # eager with eager, and every compile costs seconds of the quick run.
        skip("peers are benchmarked eager only")
    check_installed(impl)
    check_preloaded(runner, framework, execution)
    check_device(framework, device)
    if runner == "keras":
        _place_keras(framework, device)
        keras = import_keras(framework)
        spec = spec()
        run = _keras_run(keras, framework, spec, mode, execution)
    else:
        require({"torch": "torch", "jax": "flax.nnx"}[framework])
        spec = spec()
        run = {"torch": _torch_run, "nnx": _nnx_run}[runner](spec, mode, execution, device)
    run()  # warm-up, outside the measurement: builds, traces, compiles
    return Case(run, lambda: _FLOORS[framework](spec.matmuls, device))


def _loss(y):
    return (y * y).mean()


def _keras_loss(y):
    import keras

    return keras.ops.mean(keras.ops.square(y))


# --- PyTorch modules (ours, neuralforecast) ------------------------------------------------


def _torch_run(spec: Spec, mode: str, execution: str, device: str):
    import torch

    model = spec.build().to(device)
    model.train(mode != "inference")
    xs = [torch.from_numpy(a).to(device) for a in spec.arrays]
    args = (xs,) if spec.listed else tuple(xs)
    forward = model
    if mode == "train-step":

        def forward(*args):  # the loss is compiled with the layer, as under jax.jit/tf.function
            return _loss(model(*args))

    fn = torch.compile(forward) if execution == "compiled" else forward
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    if mode == "inference":

        def run():
            with torch.inference_mode():
                fn(*args)
            sync()

    elif mode == "train-forward":

        def run():
            fn(*args)  # records the autograd graph, as a training forward does
            sync()

    else:

        def run():
            fn(*args).backward()
            model.zero_grad(set_to_none=True)
            sync()

    return run


# --- Flax NNX (ours) -------------------------------------------------------------------------


def _nnx_run(spec: Spec, mode: str, execution: str, device: str):
    import jax
    from flax import nnx

    jax.config.update("jax_default_device", _jax_device(device))
    model = spec.build(nnx.Rngs(0))
    model.train() if mode != "inference" else model.eval()
    xs = [jax.device_put(a) for a in spec.arrays]
    args = (xs,) if spec.listed else tuple(xs)

    if mode == "train-step":

        def fn(m, *args):
            return nnx.grad(lambda m: _loss(m(*args)))(m)

    else:

        def fn(m, *args):
            return m(*args)

    if execution == "compiled":
        fn = nnx.jit(fn)
    return lambda: jax.block_until_ready(fn(model, *args))


def _jax_device(device: str):
    import jax

    return jax.devices("gpu" if device == "cuda" else "cpu")[0]


# --- Keras 3 layers (ours, kerasfactory), on each backend --------------------------------------
# The compiled variants are what Keras's own trainers do with jit_compile=True: jax.jit of the
# stateless call, tf.function(jit_compile=True), torch.compile.


def _place_keras(framework: str, device: str):
    """Make ``device`` the default of Keras's backend. Not with ``keras.device``: on the torch
    backend of Keras 3.15 that scope breaks Dropout's construction (an int seed made a
    Parameter)."""
    if framework == "torch":
        os.environ["KERAS_TORCH_DEVICE"] = device
    elif framework == "jax":
        require("jax").config.update("jax_default_device", _jax_device(device))
    elif device == "cpu":
        require("tensorflow").config.set_visible_devices([], "GPU")


def _keras_run(keras, framework: str, spec: Spec, mode: str, execution: str):
    layer = spec.build()
    xs = [keras.ops.convert_to_tensor(a) for a in spec.arrays]
    x = xs if spec.listed else xs[0]
    training = mode != "inference"
    layer(x, training=False)  # builds the weights
    if framework == "jax":
        return _keras_jax_run(layer, x, mode, execution)
    if framework == "tensorflow":
        return _keras_tf_run(layer, x, mode, execution)
    return _keras_torch_run(layer, x, mode, execution, training)


def _keras_jax_run(layer, x, mode: str, execution: str):
    import jax

    if execution == "eager" and mode != "train-step":
        return lambda: jax.block_until_ready(layer(x, training=mode == "train-forward"))

    state = {
        "trainable": [v.value for v in layer.trainable_variables],
        "other": [v.value for v in layer.non_trainable_variables],
    }

    # stateless_call hands its keywords to call() as they are; Layer.__call__ would drop a
    # `training` that call() does not take (GatedFeatureFusion's), so this does too.
    kwargs = {"training": mode != "inference"}
    if "training" not in inspect.signature(layer.call).parameters:
        kwargs = {}

    def forward(trainable, other):
        return layer.stateless_call(trainable, other, x, **kwargs)

    if mode == "train-step":

        def fn(trainable, other):
            def loss(trainable):
                y, other_new = forward(trainable, other)
                return _keras_loss(y), other_new

            return jax.grad(loss, has_aux=True)(trainable)

    else:
        fn = forward

    if execution == "compiled":
        fn = jax.jit(fn)

    def run():
        out, state["other"] = jax.block_until_ready(fn(state["trainable"], state["other"]))
        return out

    return run


def _keras_tf_run(layer, x, mode: str, execution: str):
    import tensorflow as tf

    if mode == "train-step":

        def fn():
            with tf.GradientTape() as tape:
                loss = _keras_loss(layer(x, training=True))
            return tape.gradient(loss, layer.trainable_variables)

    else:

        def fn():
            return layer(x, training=mode == "train-forward")

    if execution == "compiled":
        fn = tf.function(fn, jit_compile=True)
    # Eager TF runs synchronously on CPU; on a GPU, wait for the queue like the others do.
    sync = tf.test.experimental.sync_devices if tf.config.list_physical_devices("GPU") else None
    return fn if sync is None else (lambda: (fn(), sync()))


def _keras_torch_run(layer, x, mode: str, execution: str, training: bool):
    import torch

    def forward():
        y = layer(x, training=training)
        return _keras_loss(y) if mode == "train-step" else y  # the loss compiles with the layer

    fn = torch.compile(forward) if execution == "compiled" else forward
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    if mode == "inference":

        def run():
            with torch.no_grad():
                fn()
            sync()

    elif mode == "train-forward":

        def run():
            fn()
            sync()

    else:
        weights = [v.value for v in layer.trainable_variables]

        def run():
            fn().backward()
            for w in weights:
                w.grad = None
            sync()

    return run


# --- The floor: bare matmuls of the layer's shapes ---------------------------------------------


def _operands(matmuls):
    rng = np.random.default_rng(0)
    return [
        (rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
        for m, k, n in matmuls
    ]


def _torch_floor(matmuls, device):
    import torch

    pairs = [(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device))
             for a, b in _operands(matmuls)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def floor():
        with torch.inference_mode():
            for a, b in pairs:
                torch.mm(a, b)
        sync()

    return floor


def _jax_floor(matmuls, device):
    import jax

    pairs = jax.device_put(_operands(matmuls), _jax_device(device))
    # One jitted function: a dispatch for the whole set, as a compiled layer would have.
    products = jax.jit(lambda pairs: [a @ b for a, b in pairs])
    return lambda: jax.block_until_ready(products(pairs))


def _tf_floor(matmuls, device):
    import tensorflow as tf

    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        pairs = [(tf.constant(a), tf.constant(b)) for a, b in _operands(matmuls)]

    def floor():
        for a, b in pairs:
            tf.linalg.matmul(a, b)
        if device == "cuda":
            tf.test.experimental.sync_devices()

    return floor


_FLOORS = {"torch": _torch_floor, "jax": _jax_floor, "tensorflow": _tf_floor}
