"""Base classes for the adapter of a third-party port: the author writes one small PORT.py.

The author says how to construct the port from a spec config, how to call it (when the
framework default does not fit) and where its weights live, as a declarative map from each
canonical name to the port's own parameter path and a transform::

    from portspec.ports import TorchPortAdapter, identity, transpose

    class TheirPort(TorchPortAdapter):
        name = "theirlib"
        layers = ("FeatureMixing",)
        weights = {"FeatureMixing": {
            "norm.gamma": ("bn.weight", identity),
            "dense1.kernel": ("fc1.weight", transpose),   # torch Linear is (out, in)
            ...
        }}

        def construct(self, layer, config, *, input_shapes, dtype):
            return theirlib.FeatureMixing(**config)

Everything else (forward, gradients, canonical get/set_weights, the weight table and parameter
counts as the framework reports them, compiled execution, native save/load) is generic. A
weight of the port that the map does not name shows under its own path, so the weight-table
clause reports it; nothing is hidden or corrected on the port's behalf.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from portspec.adapter import Adapter, Handle
from portspec.clauses import NotApplicable
from portspec.layers import LAYERS

# -- transforms between the port's layout and the canonical one ----------------------------


@dataclass(frozen=True)
class Transform:
    """``to_canonical(native, canonical_shape)`` and ``to_native(canonical, native_shape)``."""

    name: str
    to_canonical: Callable[[np.ndarray, tuple], np.ndarray]
    to_native: Callable[[np.ndarray, tuple], np.ndarray]


identity = Transform("identity", lambda v, shape: v, lambda v, shape: v)
# A 2-D kernel stored (out, in), as torch.nn.Linear.weight is.
transpose = Transform("transpose", lambda v, shape: v.T, lambda v, shape: v.T)


def reshape(order: str = "C") -> Transform:
    """Same values, another shape (a flat BatchNorm vector stored as (L, N), say)."""
    return Transform(
        f"reshape({order})",
        lambda v, shape: np.reshape(v, shape, order=order),
        lambda v, shape: np.reshape(v, shape, order=order),
    )


# -- the generic adapter and handle ---------------------------------------------------------


class PortAdapter(Adapter):
    """What a port author fills in; the framework subclasses below do the rest."""

    # layer -> {canonical name: (the port's parameter path, Transform)}
    weights: dict[str, dict[str, tuple[str, Transform]]] = {}

    def construct(self, layer: str, config: dict, *, input_shapes, dtype):
        """Return the port's layer object for a spec config; ``dtype`` as the framework names
        it (a Keras policy, a torch dtype, a JAX dtype name) or None for the default."""
        raise NotImplementedError

    def weight_map(self, layer: str, config: dict) -> dict[str, tuple[str, Transform]]:
        return self.weights[layer]

    def config_of(self, layer: str, obj) -> dict:
        """The config the port object reports; by default its attributes of the config's names."""
        keys = [name for name, _ in LAYERS[layer].config_params]
        missing = [k for k in keys if not hasattr(obj, k)]
        if missing:
            raise NotApplicable(f"the port keeps no {', '.join(missing)} to report its config by")
        return {k: getattr(obj, k) for k in keys}


class PortHandle(Handle):
    """Canonical weights over the framework's own: subclasses give ``_native``, ``_read``,
    ``_write`` and ``_native_grad``, all keyed by the port's parameter paths."""

    def __init__(self, adapter: PortAdapter, layer, obj, config, input_shapes, dtype):
        self.adapter, self.layer, self.obj = adapter, layer, obj
        self.config, self.input_shapes, self.dtype = dict(config), input_shapes, dtype
        self.spec = LAYERS[layer]
        self.map = adapter.weight_map(layer, config)
        try:
            table = self.spec.weight_table(config, input_shapes)
        except Exception:  # a malformed config the port accepted: the clause reports that
            table = []
        self.shapes = {w.name: w.shape for w in table}

    def _native(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Every floating weight of the port: path -> (shape, trainable), as the framework says."""
        raise NotImplementedError

    def _read(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _write(self, path: str, value: np.ndarray) -> None:
        raise NotImplementedError

    def _native_grad(self, inputs, cotangent, training, paths):
        """(input gradients, {path: gradient}) of sum(output * cotangent) for ``paths``."""
        raise NotImplementedError

    def _path(self, canonical: str) -> tuple[str, Transform]:
        path, transform = self.map[canonical]
        if path not in self._native():
            raise ValueError(
                f"the weight map names {path!r} for {canonical!r}, but the port has only "
                f"{sorted(self._native())}"
            )
        return path, transform

    def get_weights(self):
        native = self._read()
        out = {}
        for canonical in self.map:
            path, transform = self._path(canonical)
            out[canonical] = transform.to_canonical(native[path], self.shapes.get(canonical))
        return out

    def set_weights(self, weights):
        native = self._native()
        staged = []
        for canonical, value in weights.items():
            if canonical not in self.map:
                raise ValueError(f"unknown weight {canonical!r}; weights are {sorted(self.map)}")
            path, transform = self._path(canonical)
            value = np.asarray(value)
            if value.shape != tuple(self.shapes.get(canonical, value.shape)):
                raise ValueError(
                    f"weight {canonical!r} has shape {self.shapes[canonical]}, got {value.shape}"
                )
            value = transform.to_native(value, native[path][0])
            if tuple(value.shape) != tuple(native[path][0]):
                raise ValueError(f"{canonical!r} maps to {path} of shape {native[path][0]}")
            staged.append((path, value))
        for path, value in staged:  # all checked first: a refused call changes nothing
            self._write(path, value)

    def weight_info(self):
        native = self._native()
        info = {}
        for canonical in self.map:
            path, transform = self._path(canonical)
            shape, trainable = native[path]
            probe = transform.to_canonical(np.zeros(shape), self.shapes.get(canonical))
            info[canonical] = (tuple(np.shape(probe)), trainable)
        mapped = {path for path, _ in self.map.values()}
        info.update({path: v for path, v in native.items() if path not in mapped})
        return info

    def grad(self, inputs, cotangent, *, training):
        native = self._native()
        trainable = {c: pt for c in self.map if native[(pt := self._path(c))[0]][1]}
        gx, grads = self._native_grad(
            inputs, cotangent, training, [path for path, _ in trainable.values()]
        )
        return gx, {
            c: t.to_canonical(np.asarray(grads[p]), self.shapes.get(c))
            for c, (p, t) in trainable.items()
        }

    def get_config(self):
        config = self.adapter.config_of(self.layer, self.obj)
        keys = {name for name, _ in self.spec.config_params}
        return {k: v for k, v in config.items() if k in keys}

    def _meta(self) -> dict:
        return {
            "layer": self.layer,
            "config": json.dumps(self.config),
            "input_shapes": json.dumps([list(s) for s in self.input_shapes]),
            "dtype": json.dumps(self.dtype),
        }


def _load_meta(path: str, layer: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("layer") != layer:
        raise ValueError(f"{path} holds a {meta.get('layer')!r}, not a {layer!r}")
    return {
        "config": json.loads(meta["config"]),
        "input_shapes": [tuple(s) for s in json.loads(meta["input_shapes"])],
        "dtype": json.loads(meta["dtype"]),
        "arrays": arrays,
    }


def _save_arrays(path: str, arrays: dict, meta: dict) -> str:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path, metadata=meta)
    return path


def _zeros(input_shapes, multi_input, dtype):
    arrays = [np.zeros(s, dtype=dtype) for s in input_shapes]
    return arrays if multi_input else arrays[0]


# -- PyTorch ---------------------------------------------------------------------------------


class TorchPortAdapter(PortAdapter):
    """A port written as a ``torch.nn.Module``. ``call`` defaults to ``module(x)`` (or
    ``module(a, b)`` for a two-input layer); ``module.train(training)`` is set before."""

    framework = "torch"
    AUTOCAST = ("bfloat16", "float16")  # mixed precision: float32 parameters, autocast compute

    def __init__(self):
        import torch

        self.torch = torch

    def call(self, module, inputs, *, training):
        return module(*inputs) if isinstance(inputs, list) else module(inputs)

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        torch = self.torch
        torch.manual_seed(seed)  # the global RNG: initialisers and dropout masks
        param = None if dtype is None else getattr(torch, _float32(dtype))
        module = self.construct(layer, dict(config), input_shapes=input_shapes, dtype=param)
        if param is not None:
            module = module.to(param)
        return TorchPortHandle(self, layer, module, config, input_shapes, dtype)

    def load_native(self, layer, path):
        meta = _load_meta(path, layer)
        handle = self.build(
            layer, meta["config"], input_shapes=meta["input_shapes"], seed=0, dtype=meta["dtype"]
        )
        tensors = {k: self.torch.from_numpy(v) for k, v in meta["arrays"].items()}
        handle.obj.load_state_dict(tensors, strict=True)
        return handle

    def describe(self):
        return f"{self.name} (torch {self.torch.__version__})"


def _float32(dtype: str) -> str:
    return "float32" if dtype in TorchPortAdapter.AUTOCAST else dtype


class TorchPortHandle(PortHandle):
    def _tensors(self):
        return self.obj.state_dict(keep_vars=True)

    def _native(self):
        params = {id(p) for p in self.obj.parameters() if p.requires_grad}
        return {
            path: (tuple(t.shape), id(t) in params)
            for path, t in self._tensors().items()
            if t.is_floating_point()
        }

    def _read(self):
        return {path: t.detach().cpu().numpy().copy() for path, t in self._tensors().items()}

    def _write(self, path, value):
        torch = self.adapter.torch
        target = self._tensors()[path]
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.array(value, order="C")).to(target.dtype))

    def _tensor(self, x):
        torch = self.adapter.torch
        if isinstance(x, (list, tuple)):
            return [self._tensor(v) for v in x]
        x = np.asarray(x)
        if x.dtype.name == "bfloat16":  # torch cannot read ml_dtypes arrays
            return torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
        return torch.from_numpy(np.array(x, order="C"))

    def _numpy(self, t):
        t = t.detach().cpu()
        if t.dtype == self.adapter.torch.bfloat16:  # NumPy has no bfloat16 of its own
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy().copy()

    def _run(self, module, x, training):
        torch = self.adapter.torch
        self.obj.train(training)
        if self.dtype in TorchPortAdapter.AUTOCAST:
            with torch.autocast("cpu", dtype=getattr(torch, self.dtype)):
                return self.adapter.call(module, x, training=training)
        return self.adapter.call(module, x, training=training)

    def forward(self, inputs, *, training):
        with self.adapter.torch.no_grad():
            return self._numpy(self._run(self.obj, self._tensor(inputs), training))

    def forward_compiled(self, inputs, *, training):
        if not hasattr(self, "_compiled"):
            self._compiled = self.adapter.torch.compile(self.obj)
        with self.adapter.torch.no_grad():
            return self._numpy(self._run(self._compiled, self._tensor(inputs), training))

    def _native_grad(self, inputs, cotangent, training, paths):
        torch = self.adapter.torch
        x = self._tensor(inputs)
        xs = x if isinstance(x, list) else [x]
        for t in xs:
            t.requires_grad_(True)
        tensors = self._tensors()
        out = self._run(self.obj, x, training)
        cot = torch.from_numpy(np.asarray(cotangent, dtype=np.float64)).to(out.dtype)
        grads = torch.autograd.grad(
            (out * cot).sum(),
            [*xs, *(tensors[p] for p in paths)],
            allow_unused=True,
            materialize_grads=True,
        )
        gx = [self._numpy(g) for g in grads[: len(xs)]]
        weights = {p: self._numpy(g) for p, g in zip(paths, grads[len(xs) :], strict=True)}
        return (gx if isinstance(x, list) else gx[0]), weights

    def param_counts(self):
        # torch's own split: parameters that require grad, the rest plus every buffer
        params = list(self.obj.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        frozen = sum(p.numel() for p in params if not p.requires_grad)
        return trainable, frozen + sum(b.numel() for b in self.obj.buffers())

    def save_native(self, directory):
        # the module's own state_dict, as safetensors: never a pickle
        state = {k: v.detach().cpu().numpy() for k, v in self.obj.state_dict().items()}
        path = os.path.join(directory, f"{self.layer}.safetensors")
        return _save_arrays(path, state, self._meta())


# -- Keras 3 ---------------------------------------------------------------------------------

KERAS_POLICIES = {
    "float32": "float32",
    "float64": "float64",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


class KerasPortAdapter(PortAdapter):
    """A port written as a Keras 3 layer, on whichever backend ``KERAS_BACKEND`` selects.

    Parameter paths are the variables' paths below the layer, dotted: ``feature_norm.gamma``.
    ``call`` defaults to ``layer(x, training=training)``, and ``layer([a, b])`` for a
    two-input layer.
    """

    framework = "keras"

    def __init__(self):
        import keras

        self.keras = keras
        self.backend = keras.backend.backend()
        if self.backend == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)  # else float64 silently runs in float32

    def call(self, layer, inputs, *, training):
        if isinstance(inputs, list):
            return layer(inputs)
        return layer(inputs, training=training)

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        keras = self.keras
        keras.utils.set_random_seed(seed)
        policy = None if dtype is None else KERAS_POLICIES[dtype]
        obj = self.construct(layer, dict(config), input_shapes=input_shapes, dtype=policy)
        multi = LAYERS[layer].multi_input
        if not obj.built:
            obj.build([tuple(s) for s in input_shapes] if multi else tuple(input_shapes[0]))
        # Sublayers made in build() create their weights on their first call: one inference
        # call on float32 zeros (Keras casts them to the layer's dtype), which changes no state,
        # makes the port's weights exist. Should it fail (a config the port accepted but cannot
        # run), the port's own first call fails the same way, where the clause sees it.
        try:
            self.call(obj, _zeros(input_shapes, multi, "float32"), training=False)
        except Exception:
            pass
        return KerasPortHandle(self, layer, obj, config, input_shapes, dtype)

    def config_of(self, layer, obj):
        return obj.get_config()

    def load_native(self, layer, path):
        with open(path + ".json") as f:
            meta = json.load(f)
        obj = self.keras.saving.load_model(path).layers[-1]
        shapes = [tuple(s) for s in meta["input_shapes"]]
        return KerasPortHandle(self, layer, obj, meta["config"], shapes, meta["dtype"])

    def describe(self):
        return f"{self.name} (keras {self.keras.__version__} on {self.backend})"


class KerasPortHandle(PortHandle):
    def _variables(self):
        prefix = self.obj.name + "/"
        return {
            (v.path[len(prefix) :] if v.path.startswith(prefix) else v.path).replace("/", "."): v
            for v in self.obj.weights
        }

    def _native(self):
        return {p: (tuple(v.shape), bool(v.trainable)) for p, v in self._variables().items()}

    def _read(self):
        return {p: self._numpy(v.value) for p, v in self._variables().items()}

    def _write(self, path, value):
        var = self._variables()[path]
        var.assign(np.asarray(value, dtype=np.float64).astype(var.dtype))

    def _tensor(self, x):
        return keras_tensor(self.adapter.keras, x)

    def _numpy(self, t):
        return keras_numpy(self.adapter.keras, t)

    def _call(self, x, training):
        return self.adapter.call(self.obj, x, training=training)

    def forward(self, inputs, *, training):
        return self._numpy(self._call(self._tensor(inputs), training))

    def _stateless(self, tvals, ntvals, x, training):
        """The call with the variables' values given, as JAX transformations need it."""
        obj, keras = self.obj, self.adapter.keras
        mapping = [
            *zip(obj.trainable_variables, tvals, strict=True),
            *zip(obj.non_trainable_variables, ntvals, strict=True),
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            out = self._call(x, training)
        new = [scope.get_current_value(v) for v in obj.non_trainable_variables]
        return out, [n if n is not None else o for n, o in zip(new, ntvals, strict=True)]

    def _values(self):
        obj = self.obj
        return [v.value for v in obj.trainable_variables], [
            v.value for v in obj.non_trainable_variables
        ]

    def _assign_state(self, new):
        for var, value in zip(self.obj.non_trainable_variables, new, strict=True):
            var.assign(value)

    def forward_compiled(self, inputs, *, training):
        backend, x = self.adapter.backend, self._tensor(inputs)
        if backend == "jax":
            import jax

            fn = jax.jit(lambda t, n, v: self._stateless(t, n, v, training))
            out, new = fn(*self._values(), x)
            self._assign_state(new)
            return self._numpy(out)
        if backend == "tensorflow":
            import tensorflow as tf

            fn = tf.function(lambda v: self._call(v, training), jit_compile=True)
        else:
            import torch

            fn = torch.compile(lambda v: self._call(v, training))
        return self._numpy(fn(x))

    def _native_grad(self, inputs, cotangent, training, paths):
        backend, x = self.adapter.backend, self._tensor(inputs)
        cot = self._tensor(np.asarray(cotangent))
        variables = self._variables()
        wanted = [variables[p] for p in paths]
        if backend == "jax":
            gx, gw = self._grad_jax(x, cot, training, wanted)
        elif backend == "torch":
            gx, gw = self._grad_torch(x, cot, training, wanted)
        else:
            gx, gw = self._grad_tf(x, cot, training, wanted)
        return self._numpy(gx), {p: self._numpy(g) for p, g in zip(paths, gw, strict=True)}

    def _grad_jax(self, x, cot, training, wanted):
        import jax
        import jax.numpy as jnp

        tv = self.obj.trainable_variables
        tvals, ntvals = self._values()

        def loss(t, v):
            out, new = self._stateless(t, ntvals, v, training)
            return jnp.sum(out * cot.astype(out.dtype)), new

        (gt, gx), new = jax.grad(loss, argnums=(0, 1), has_aux=True)(tvals, x)
        self._assign_state(new)
        by_id = {id(v): g for v, g in zip(tv, gt, strict=True)}
        return gx, [by_id[id(v)] for v in wanted]

    def _grad_torch(self, x, cot, training, wanted):
        import torch

        xs = [t.detach().requires_grad_(True) for t in (x if isinstance(x, list) else [x])]
        out = self._call(xs if isinstance(x, list) else xs[0], training)
        grads = torch.autograd.grad(
            (out * cot.to(out.dtype)).sum(),
            xs + [v.value for v in wanted],
            allow_unused=True,
            materialize_grads=True,  # a weight the output does not reach has gradient 0
        )
        gx = list(grads[: len(xs)]) if isinstance(x, list) else grads[0]
        return gx, list(grads[len(xs) :])

    def _grad_tf(self, x, cot, training, wanted):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self._call(x, training)
            loss = tf.reduce_sum(out * tf.cast(cot, out.dtype))
        zero = tf.UnconnectedGradients.ZERO  # a weight the output does not reach has gradient 0
        gx, gw = tape.gradient(loss, [x, [v.value for v in wanted]], unconnected_gradients=zero)
        return gx, gw

    def param_counts(self):
        def count(weights):
            return sum(int(np.prod(v.shape)) for v in weights)

        return count(self.obj.trainable_weights), count(self.obj.non_trainable_weights)

    def save_native(self, directory):
        keras = self.adapter.keras
        shapes = [tuple(s[1:]) for s in self.input_shapes]
        if self.spec.multi_input:
            inputs = [keras.Input(s) for s in shapes]
        else:
            inputs = keras.Input(shapes[0])
        path = os.path.join(directory, f"{self.layer}.keras")
        keras.Model(inputs, self.obj(inputs)).save(path)
        meta = {"config": self.config, "input_shapes": self.input_shapes, "dtype": self.dtype}
        with open(path + ".json", "w") as f:
            json.dump(meta, f)
        return path


# -- Flax NNX --------------------------------------------------------------------------------


class FlaxPortAdapter(PortAdapter):
    """A port written as a Flax NNX module. ``construct`` also gets ``rngs`` (an ``nnx.Rngs``
    seeded from the suite's seed, with ``params`` and ``dropout`` streams). ``call`` defaults
    to ``module(x)`` after ``module.train()`` / ``module.eval()``. Parameter paths are the
    attribute paths, dotted: ``norm.scale``."""

    framework = "jax"

    def __init__(self):
        import jax

        jax.config.update("jax_enable_x64", True)  # else float64 silently runs in float32
        from flax import nnx

        self.jax, self.nnx = jax, nnx

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        raise NotImplementedError

    def call(self, module, inputs, *, training):
        return module(inputs)

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        rngs = self.nnx.Rngs(params=seed, dropout=seed + 1)
        module = self.construct(
            layer, dict(config), input_shapes=input_shapes, dtype=dtype, rngs=rngs
        )
        return FlaxPortHandle(self, layer, module, config, input_shapes, dtype)

    def load_native(self, layer, path):
        meta = _load_meta(path, layer)
        handle = self.build(
            layer, meta["config"], input_shapes=meta["input_shapes"], seed=0, dtype=meta["dtype"]
        )
        for name, value in meta["arrays"].items():
            handle._write(name, value)
        return handle

    def describe(self):
        import flax

        return f"{self.name} (flax {flax.__version__}, jax {self.jax.__version__})"


class FlaxPortHandle(PortHandle):
    def _variables(self):
        nnx = self.adapter.nnx
        out = {}
        for path, _ in nnx.to_flat_state(nnx.state(self.obj)):
            node = self.obj
            for part in path:
                node = node[part] if isinstance(part, int) else getattr(node, part)
            if not isinstance(node, nnx.RngState):  # RNG keys and counters are no weights
                out[".".join(str(p) for p in path)] = node
        return out

    def _native(self):
        nnx = self.adapter.nnx
        return {
            p: (tuple(v.shape), isinstance(v, nnx.Param))
            for p, v in self._variables().items()
            if np.issubdtype(np.dtype(v.dtype), np.floating)
        }

    def _read(self):
        return {p: np.array(v[...]) for p, v in self._variables().items()}

    def _write(self, path, value):
        var = self._variables()[path]
        var.set_value(self.adapter.jax.numpy.asarray(value, dtype=var.dtype))

    def _mode(self, training):
        if training:
            self.obj.train()
        else:
            self.obj.eval()

    @staticmethod
    def _jax(x):
        import jax.numpy as jnp

        if isinstance(x, (list, tuple)):
            return [jnp.asarray(np.asarray(v)) for v in x]
        return jnp.asarray(np.asarray(x))

    @staticmethod
    def _numpy(x):
        return [np.array(v) for v in x] if isinstance(x, (list, tuple)) else np.array(x)

    def forward(self, inputs, *, training):
        self._mode(training)
        return self._numpy(self.adapter.call(self.obj, self._jax(inputs), training=training))

    def forward_compiled(self, inputs, *, training):
        nnx = self.adapter.nnx
        self._mode(training)
        fn = nnx.jit(lambda m, x: self.adapter.call(m, x, training=training))
        return self._numpy(fn(self.obj, self._jax(inputs)))

    def _native_grad(self, inputs, cotangent, training, paths):
        import jax.numpy as jnp

        nnx = self.adapter.nnx
        self._mode(training)
        cot = jnp.asarray(np.asarray(cotangent))

        def loss(module, x):
            out = self.adapter.call(module, x, training=training)
            return jnp.sum(out * cot.astype(out.dtype))

        grads, gx = nnx.grad(loss, argnums=(0, 1))(self.obj, self._jax(inputs))
        flat = {
            ".".join(str(p) for p in path): np.array(v[...])
            for path, v in nnx.to_flat_state(nnx.state(grads, nnx.Param))
        }
        return self._numpy(gx), {p: flat[p] for p in paths}

    def param_counts(self):
        native = self._native()
        trainable = sum(int(np.prod(s)) for s, t in native.values() if t)
        return trainable, sum(int(np.prod(s)) for s, t in native.values() if not t)

    def save_native(self, directory):
        # the module's variables by attribute path, as safetensors, the config beside them
        path = os.path.join(directory, f"{self.layer}.safetensors")
        return _save_arrays(path, self._read(), self._meta())


def keras_tensor(keras, x):
    """NumPy (or a list of arrays) to Keras tensors; ml_dtypes bfloat16 goes via float32."""
    if isinstance(x, (list, tuple)):
        return [keras_tensor(keras, v) for v in x]
    x = np.asarray(x)
    if x.dtype.name == "bfloat16":
        return keras.ops.cast(keras.ops.convert_to_tensor(x.astype(np.float32)), "bfloat16")
    return keras.ops.convert_to_tensor(x)


def keras_numpy(keras, t):
    """Keras tensors (or a list) to NumPy; bfloat16 comes back as an ml_dtypes array."""
    if isinstance(t, (list, tuple)):
        return [keras_numpy(keras, v) for v in t]
    if keras.backend.standardize_dtype(t.dtype) == "bfloat16":
        import ml_dtypes

        t = keras.ops.cast(t, "float32")
        return keras.ops.convert_to_numpy(t).astype(ml_dtypes.bfloat16)
    return keras.ops.convert_to_numpy(t)
