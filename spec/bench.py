"""``portspec bench PORT.py``: how fast a port is, against our implementation in the same
framework and the public peers that are installed, measured with pytest-benchmark.

For every layer the port implements, at each size (BENCHMARKS.md's: FeatureMixing small
(32, 96, 7, 64), medium (32, 336, 321, 256), large (32, 512, 862, 512) as (batch, input_size,
n_series, ff_dim); GatedFeatureFusion small (1024, 64), medium (4096, 256), large
(16384, 512) per input), in each mode (``inference``: eval mode, no autograd;
``train-forward``: training mode, batch statistics, dropout 0.1, autograd recording;
``train-step``: the training forward, the loss ``mean(y**2)`` and the gradients of every
trainable weight) and each execution (``eager``, or ``compiled``: ``torch.compile``,
``nnx.jit``, and for Keras what its trainers compile with ``jit_compile=True`` on the
backend), three contenders are benchmarked one after the other:

- the port, built through its adapter;
- the reference: our implementation in the port's framework (PyTorch, Flax NNX, or Keras 3
  on the port's backend), built through its adapter the same way;
- the peers, when installed and not the port itself: ``neuralforecast`` (PyTorch,
  FeatureMixing) and ``kerasfactory`` (Keras), eager only, as in BENCHMARKS.md.

pytest-benchmark times each call (calibrated iterations per round, rounds up to its time
budget) and gives its statistics, ``--benchmark-json``, ``--benchmark-compare``,
``--benchmark-histogram`` and the rest: every ``--benchmark-*`` option passes through. Each
benchmark also records the peak resident memory one call adds (``peak_mib`` in the JSON's
``extra_info``: Linux's high-water mark, reset before the call through
``/proc/self/clear_refs``, minus the resident set before it).

The summary gives, per case, the port's time over the reference's as the ratio of the
medians, with the 10th-90th percentile range of the paired round ratios (round i of the port
over round i of the reference, the two benchmarks run back to back):

    1.31x (1.25-1.38) slower than the reference, torch eager, medium, train-step
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

SIZES = {
    "FeatureMixing": {
        "small": (32, 96, 7, 64),  # ETTh1
        "medium": (32, 336, 321, 256),  # Electricity
        "large": (32, 512, 862, 512),  # Traffic
    },
    "GatedFeatureFusion": {"small": (1024, 64), "medium": (4096, 256), "large": (16384, 512)},
}
# Not a benchmark size: a check that a bench runs end to end, in seconds.
SIZES["FeatureMixing"]["tiny"] = (2, 6, 5, 16)
SIZES["GatedFeatureFusion"]["tiny"] = (8, 4)
DEFAULT_SIZES = ("small", "medium")
MODES = ("inference", "train-forward", "train-step")
EXECUTIONS = ("eager", "compiled")
DROPOUT = 0.1  # TSMixer's usual rate, as BENCHMARKS.md
# The public peers: (name, framework, module holding the layer classes, layers it has).
PEERS = (
    ("neuralforecast", "torch", "neuralforecast.models.tsmixer", ("FeatureMixing",)),
    ("kerasfactory", "keras", "kerasfactory.layers", ("FeatureMixing", "GatedFeatureFusion")),
)
# Our built-in per framework (names tried in order; Flax's built-in is named flax or jax).
REFERENCES = {"torch": ("torch",), "flax": ("flax", "jax")}


# --- the ratios -------------------------------------------------------------------------------


def paired_ratios(ours: list[float], theirs: list[float]) -> list[float]:
    """Round i over round i, for the rounds both have."""
    n = min(len(ours), len(theirs))
    if n == 0:
        raise ValueError("paired_ratios needs at least one round on each side")
    return [a / b for a, b in zip(ours[:n], theirs[:n], strict=True)]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear between the closest ranks (NumPy's default)."""
    return float(np.percentile(np.asarray(values, float), q))


@dataclass
class Verdict:
    """The port against one contender: ``ratio`` is the port's median over theirs; ``low`` and
    ``high`` the 10th and 90th percentiles of the paired round ratios."""

    ratio: float
    low: float
    high: float

    @classmethod
    def of(cls, ours: list[float], theirs: list[float]) -> Verdict:
        paired = paired_ratios(ours, theirs)
        ratio = statistics.median(ours) / statistics.median(theirs)
        return cls(ratio, percentile(paired, 10), percentile(paired, 90))

    def sentence(self, whom: str, where: str) -> str:
        """``1.31x (1.25-1.38) slower than the reference, torch eager, medium, train-step``;
        a port that is faster reads the inverse, so the number is never below 1."""
        if self.ratio >= 1.0:
            return f"{self.ratio:.2f}x ({self.low:.2f}-{self.high:.2f}) slower than {whom}, {where}"
        return (
            f"{1 / self.ratio:.2f}x ({1 / self.high:.2f}-{1 / self.low:.2f}) faster than {whom}, "
            f"{where}"
        )


# --- peak memory ------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_mib(fn) -> float | None:
    """Resident memory (MiB) one call of ``fn`` adds at its peak: VmHWM, reset just before
    through ``/proc/self/clear_refs`` (Linux >= 4.0), minus VmRSS before the call. None where
    the kernel offers neither. VmRSS is read after the reset: memory another thread frees in
    between would otherwise count against the call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0.0, (peak - before) / 1024)


# --- the contenders and their calls -----------------------------------------------------------


@dataclass
class Contender:
    role: str  # "port", "reference", "peer"
    name: str
    make: object  # (layer, config, arrays) -> (framework, native object, call)
    eager_only: bool = False


@dataclass
class BenchCase:
    layer: str
    size: str
    mode: str
    execution: str
    contender: Contender
    key: tuple = field(init=False)

    def __post_init__(self):
        self.key = (self.layer, self.size, self.mode, self.execution)

    @property
    def id(self) -> str:
        return f"{self.layer}-{self.size}-{self.mode}-{self.execution}-{self.contender.name}"


def config_and_arrays(layer: str, size: str):
    """The layer's config and float32 inputs at ``size`` (seeded: every contender gets the
    same arrays)."""
    rng = np.random.default_rng(0)
    shape = SIZES[layer][size]
    if layer == "FeatureMixing":
        batch, length, n, h = shape
        config = dict(n_series=n, input_size=length, dropout=DROPOUT, ff_dim=h)
        return config, [rng.standard_normal((batch, length, n), np.float32)]
    return {}, [rng.standard_normal(shape, np.float32) for _ in range(2)]


def layer_name(name: str) -> str:
    """FeatureMixing from FeatureMixing or FM (any case); a ValueError names the known ones."""
    for layer, prefix in (("FeatureMixing", "fm"), ("GatedFeatureFusion", "gff")):
        if name.strip().lower() in (layer.lower(), prefix):
            return layer
    raise ValueError(f"unknown layer {name!r} (known: FeatureMixing (FM), GatedFeatureFusion "
                     "(GFF))")


def _input_shapes(layer, arrays):
    return [list(a.shape) for a in arrays]


def _native(handle):
    return getattr(handle, "obj", None) or handle.model


def framework_of(obj) -> str:
    """``torch``, ``flax`` or ``keras`` (any backend), from the object's type."""
    mro = {f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__}
    if "torch.nn.modules.module.Module" in mro:
        return "torch"
    if any(m.startswith("flax.nnx") for m in mro):
        return "flax"
    if any(m.startswith("keras.") for m in mro):
        return "keras"
    raise TypeError(f"cannot benchmark a {type(obj).__name__}: not a PyTorch, Flax NNX or "
                    "Keras 3 object")


def from_adapter(adapter):
    """A contender's ``make`` through an adapter's ``build`` (ports and our built-ins alike)."""

    def make(layer, config, arrays):
        handle = adapter.build(layer, config, input_shapes=_input_shapes(layer, arrays), seed=0,
                               dtype="float32")
        obj = _native(handle)
        call = getattr(adapter, "call", None) or _default_call
        return framework_of(obj), obj, call

    return make


def _default_call(obj, xs, *, training):
    if isinstance(xs, list):
        return obj(xs) if framework_of(obj) == "keras" else obj(*xs)
    return obj(xs, training=training) if framework_of(obj) == "keras" else obj(xs)


def _peer_make(module_name, layer_name):
    def make(layer, config, arrays):
        cls = getattr(importlib.import_module(module_name), layer_name)
        obj = cls(**config)
        return framework_of(obj), obj, _default_call

    return make


def contenders(port: str, layer: str) -> list[Contender]:
    """The port's adapters, our built-in in the port's framework, and the installed peers."""
    from portspec import registry

    found = [a for a in registry.load(port) if not isinstance(a, registry.Unavailable)]
    ports = [a for a in found if layer in a.layers]
    if not ports:
        return []
    config, arrays = config_and_arrays(layer, "small")
    framework, probe, _ = from_adapter(ports[0])(layer, config, arrays)
    port_class = type(probe)
    out = [Contender("port", a.name, from_adapter(a)) for a in ports]
    if framework == "keras":
        names = (f"keras-{sys.modules['keras'].backend.backend()}",)
    else:
        names = REFERENCES[framework]
    for name in names:
        ours = [a for a in registry.load(name) if not isinstance(a, registry.Unavailable)]
        if ours:
            out.append(Contender("reference", ours[0].name, from_adapter(ours[0])))
            break
    for name, peer_framework, module, layers in PEERS:
        if peer_framework != framework or layer not in layers:
            continue
        if importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        peer_class = getattr(importlib.import_module(module), layer)
        if peer_class is port_class:  # the port is this peer
            continue
        out.append(Contender("peer", name, _peer_make(module, layer), eager_only=True))
    return out


def make_run(case: BenchCase):
    """The benchmarked callable: one call of the layer in the case's mode and execution, its
    result waited for. Building, warm-up and compilation happen here, outside the timing."""
    config, arrays = config_and_arrays(case.layer, case.size)
    framework, obj, call = case.contender.make(case.layer, config, arrays)
    multi = len(arrays) > 1
    runner = {"torch": _torch_run, "flax": _flax_run, "keras": _keras_run}[framework]
    run = runner(obj, call, arrays, multi, case.mode, case.execution)
    run()  # warm-up: first dispatch, tracing, compilation
    return run


def _loss(y):
    return (y * y).mean()


def _torch_run(module, call, arrays, multi, mode, execution):
    import torch

    xs = [torch.from_numpy(a) for a in arrays]
    x = xs if multi else xs[0]
    training = mode != "inference"
    module.train(training)

    def forward():
        y = call(module, x, training=training)
        return _loss(y) if mode == "train-step" else y  # the loss compiles with the layer

    fn = torch.compile(forward) if execution == "compiled" else forward
    if mode == "inference":

        def run():
            with torch.inference_mode():
                fn()

    elif mode == "train-forward":
        run = fn
    else:

        def run():
            fn().backward()
            module.zero_grad(set_to_none=True)

    return run


def _flax_run(module, call, arrays, multi, mode, execution):
    import jax
    from flax import nnx

    xs = [jax.device_put(a) for a in arrays]
    x = xs if multi else xs[0]
    training = mode != "inference"
    module.train() if training else module.eval()

    if mode == "train-step":

        def fn(m, x):
            return nnx.grad(lambda m: _loss(call(m, x, training=True)))(m)

    else:

        def fn(m, x):
            return call(m, x, training=training)

    if execution == "compiled":
        fn = nnx.jit(fn)
    return lambda: jax.block_until_ready(fn(module, x))


def _keras_run(layer, call, arrays, multi, mode, execution):
    import keras

    backend = keras.backend.backend()
    xs = [keras.ops.convert_to_tensor(a) for a in arrays]
    x = xs if multi else xs[0]
    training = mode != "inference"

    def loss(y):
        return keras.ops.mean(keras.ops.square(y))

    if backend == "jax":
        return _keras_jax_run(layer, call, x, mode, execution, loss)
    if backend == "tensorflow":
        import tensorflow as tf

        if mode == "train-step":

            def fn():
                with tf.GradientTape() as tape:
                    value = loss(call(layer, x, training=True))
                return tape.gradient(value, layer.trainable_variables)

        else:

            def fn():
                return call(layer, x, training=training)

        return tf.function(fn, jit_compile=True) if execution == "compiled" else fn
    import torch

    def forward():
        y = call(layer, x, training=training)
        return loss(y) if mode == "train-step" else y

    fn = torch.compile(forward) if execution == "compiled" else forward
    if mode == "inference":

        def run():
            with torch.no_grad():
                fn()

        return run
    if mode == "train-forward":
        return fn
    weights = [v.value for v in layer.trainable_variables]

    def run():
        fn().backward()
        for w in weights:
            w.grad = None

    return run


def _keras_jax_run(layer, call, x, mode, execution, loss):
    import jax

    training = mode != "inference"
    if execution == "eager" and mode != "train-step":
        return lambda: jax.block_until_ready(call(layer, x, training=training))
    state = {
        "trainable": [v.value for v in layer.trainable_variables],
        "other": [v.value for v in layer.non_trainable_variables],
    }
    # stateless_call passes its keywords to call(); a two-input layer takes no `training`
    kwargs = {} if isinstance(x, list) else {"training": training}

    def forward(trainable, other):
        return layer.stateless_call(trainable, other, x, **kwargs)

    if mode == "train-step":

        def fn(trainable, other):
            def value(trainable):
                y, other_new = forward(trainable, other)
                return loss(y), other_new

            return jax.grad(value, has_aux=True)(trainable)

    else:
        fn = forward
    if execution == "compiled":
        fn = jax.jit(fn)

    def run():
        out, state["other"] = jax.block_until_ready(fn(state["trainable"], state["other"]))
        return out

    return run


# --- pytest ---------------------------------------------------------------------------------


class BenchPlugin:
    """Parametrises ``bench_layer`` with the cases, keeps each benchmark's round times and
    prints the ratios at the end of the session."""

    def __init__(self, port: str, layers=None, sizes=DEFAULT_SIZES, modes=MODES,
                 executions=EXECUTIONS):
        self.port, self.layers = port, layers
        self.sizes, self.modes, self.executions = list(sizes), list(modes), list(executions)
        self.rounds: dict[tuple, dict[str, list[float]]] = {}
        self.roles: dict[str, str] = {}
        self.load_at_start = _load()

    def cases(self) -> list[BenchCase]:
        out = []
        for layer in [layer_name(n) for n in self.layers or SIZES]:
            for contender in contenders(self.port, layer):
                self.roles[contender.name] = contender.role
                for size in self.sizes:
                    for mode in self.modes:
                        for execution in self.executions:
                            if execution == "compiled" and contender.eager_only:
                                continue
                            out.append(BenchCase(layer, size, mode, execution, contender))
        # A case's contenders back to back, so that their rounds pair up in time.
        order = {c.key: i for i, c in reversed(list(enumerate(out)))}
        return sorted(out, key=lambda c: order[c.key])

    def pytest_generate_tests(self, metafunc):
        if "bench_case" in metafunc.fixturenames:
            cases = self.cases()
            metafunc.parametrize("bench_case", cases, ids=[c.id for c in cases])

    @pytest.fixture
    def bench_record(self):
        return self.record

    def record(self, case: BenchCase, benchmark) -> None:
        stats = getattr(benchmark, "stats", None)
        if stats is None:  # --benchmark-disable
            return
        self.rounds.setdefault(case.key, {})[case.contender.name] = list(stats.stats.data)

    def summary(self) -> list[str]:
        lines = []
        for (layer, size, mode, execution), by_name in self.rounds.items():
            ports = [n for n in by_name if self.roles[n] == "port"]
            for port in ports:
                for other, rounds in by_name.items():
                    if other == port:
                        continue
                    whom = (f"the reference ({other})" if self.roles[other] == "reference"
                            else f"{other}")
                    verdict = Verdict.of(by_name[port], rounds)
                    where = f"{layer} {execution}, {size}, {mode}"
                    lines.append(f"{port}: {verdict.sentence(whom, where)}")
        return lines

    def pytest_terminal_summary(self, terminalreporter):
        lines = self.summary()
        if lines:
            terminalreporter.section("portspec bench: port / contender, median (10-90 % of "
                                     "paired rounds)")
            for line in lines:
                terminalreporter.write_line(line)
            terminalreporter.write_line(busy_note(self.load_at_start, _load(), os.cpu_count()))


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def busy_note(start: float | None, end: float | None, cpus: int | None) -> str:
    """The 1-minute load average at the start and the end; a warning when it exceeded the
    CPUs: other work then shares the cores, and a parallel kernel's threads wait on each
    other (an OpenMP barrier can make a small call hundreds of times slower)."""
    if start is None or end is None or not cpus:
        return "load average: unknown"
    note = f"load average {start:.1f} at the start, {end:.1f} at the end, on {cpus} CPUs"
    if max(start, end) > cpus:
        note += ": the machine was busy, so these ratios are not to be trusted; run again idle"
    return note


def bench_layer(benchmark, bench_case, bench_record):
    """One contender, one case: pytest-benchmark times ``run``; ``extra_info`` holds the
    contender's role and the peak memory of one call."""
    run = make_run(bench_case)
    benchmark.group = " ".join(bench_case.key)
    benchmark.extra_info.update(role=bench_case.contender.role,
                                contender=bench_case.contender.name, peak_mib=peak_mib(run))
    benchmark(run)
    bench_record(bench_case, benchmark)


def main(port: str, *, layers=None, sizes=DEFAULT_SIZES, modes=MODES, executions=EXECUTIONS,
         pytest_args=()) -> int:
    """Run the benchmarks under pytest; returns pytest's exit code."""
    if not os.path.isfile(port):
        print(f"portspec bench: {port}: no such adapter file", file=sys.stderr)
        return 2
    plugin = BenchPlugin(os.path.abspath(port), layers, sizes, modes, executions)
    # This file is the test module: bench_layer is its one test function.
    args = ["-p", "no:cacheprovider", "--import-mode=importlib", "-W", "ignore::DeprecationWarning",
            "-o", "python_files=bench.py", "-o", "python_functions=bench_*",
            "--rootdir", str(Path(__file__).parent), *pytest_args, __file__]
    # pytest-benchmark turns itself off, silently, wherever PYTEST_XDIST_WORKER is set (a bench
    # started from a test under pytest-xdist inherits it): this run is no xdist worker.
    inherited = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PYTEST_XDIST_")}
    try:
        return int(pytest.main([*args[:-1], "-p", "no:xdist", args[-1]], plugins=[plugin]))
    finally:
        os.environ.update(inherited)
