"""The portspec adapter for the Flax NNX implementation (``--impl flax``, ``--impl flax-gpu``).

NumPy at the boundary: inputs arrive as NumPy arrays, outputs, gradients and weights leave as
NumPy arrays (bfloat16 as ``ml_dtypes.bfloat16``). Canonical weight names map onto the NNX
attribute paths below; Flax kernels are (in, out) like the canonical layout, so no transposes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax

# float64 layers need x64 before any array exists; float32 stays the default because every
# parameter, statistic and input is created with an explicit dtype.
jax.config.update("jax_enable_x64", True)

import flax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from flax import serialization as flax_serialization  # noqa: E402

from portspec.adapter import DTYPES, Adapter, Handle  # noqa: E402
from portspec.impls.jax.layers import FeatureMixing, GatedFeatureFusion  # noqa: E402

# canonical name -> NNX attribute path
NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "FeatureMixing": {
        "norm.gamma": ("norm", "scale"),
        "norm.beta": ("norm", "bias"),
        "norm.moving_mean": ("norm", "mean"),
        "norm.moving_variance": ("norm", "var"),
        "dense1.kernel": ("dense1", "kernel"),
        "dense1.bias": ("dense1", "bias"),
        "dense2.kernel": ("dense2", "kernel"),
        "dense2.bias": ("dense2", "bias"),
    },
    "GatedFeatureFusion": {
        "gate.kernel": ("gate", "kernel"),
        "gate.bias": ("gate", "bias"),
    },
}

# compute dtype -> parameter dtype. Half precision keeps float32 parameters and statistics,
# like Keras' mixed_bfloat16 / mixed_float16 policies.
PARAM_DTYPE = {
    "float32": jnp.float32,
    "float64": jnp.float64,
    "bfloat16": jnp.float32,
    "float16": jnp.float32,
}

NATIVE_STATE = "state.msgpack"
NATIVE_CONFIG = "config.json"
NATIVE_FORMAT = "portspec-flax-nnx-1"


def _forward(model, inputs):
    return model(inputs)


def _to_jax(inputs):
    # jnp.asarray keeps the NumPy dtype: an int32 input reaches the layer as int32 and the
    # layer's call check raises the TypeError.
    if isinstance(inputs, (list, tuple)):
        return [jnp.asarray(np.asarray(v)) for v in inputs]
    return jnp.asarray(np.asarray(inputs))


def _to_numpy(value):
    # np.array copies: the caller gets writable arrays that no later call can alter.
    if isinstance(value, (list, tuple)):
        return [np.array(v) for v in value]
    return np.array(value)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


class FlaxHandle(Handle):
    def __init__(self, adapter: FlaxAdapter, layer: str, model: nnx.Module, dtype: str | None):
        self.adapter = adapter
        self.layer = layer
        self.model = model
        self.dtype = dtype
        self.names = NAMES[layer]
        self.paths = {path: name for name, path in self.names.items()}
        self._compiled = None
        self._training: bool | None = None

    # -- calls ---------------------------------------------------------------------------
    def _mode(self, training: bool) -> None:
        # train()/eval() walk the module graph; switch only when the mode changes.
        training = bool(training)
        if training is self._training:
            return
        if training:
            self.model.train()
        else:
            self.model.eval()
        self._training = training

    def forward(self, inputs, *, training: bool):
        with self.adapter.placed():
            self._mode(training)
            return _to_numpy(self.model(_to_jax(inputs)))

    def forward_compiled(self, inputs, *, training: bool):
        with self.adapter.placed():
            if self._compiled is None:
                self._compiled = nnx.jit(_forward)
            self._mode(training)
            return _to_numpy(self._compiled(self.model, _to_jax(inputs)))

    def grad(self, inputs, cotangent, *, training: bool):
        with self.adapter.placed():
            self._mode(training)
            x = _to_jax(inputs)
            ct = jnp.asarray(np.asarray(cotangent))

            def loss(model, x):
                out = model(x)
                return jnp.sum(out * ct.astype(out.dtype))

            # Differentiates w.r.t. every nnx.Param of the model and the inputs; BatchStat
            # and RNG updates of a training call propagate back to self.model.
            model_grads, input_grads = nnx.grad(loss, argnums=(0, 1))(self.model, x)
            weights = {
                self._name(path): np.array(v[...])
                for path, v in nnx.to_flat_state(nnx.state(model_grads, nnx.Param))
            }
            return _to_numpy(input_grads), weights

    # -- weights -------------------------------------------------------------------------
    def _name(self, path) -> str:
        path = tuple(str(p) for p in path)
        return self.paths.get(path, ".".join(path))

    def _variables(self):
        """(canonical name, Variable) for every Param and BatchStat, as NNX reports them."""
        state = nnx.state(self.model, nnx.Param, nnx.BatchStat)
        for group in state:
            for path, _ in nnx.to_flat_state(group):
                yield self._name(path), self._lookup(path)

    def _lookup(self, path) -> nnx.Variable:
        node = self.model
        for part in path:
            node = getattr(node, part)
        return node

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: np.array(var[...]) for name, var in self._variables()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        unknown = sorted(set(weights) - set(self.names))
        if unknown:
            raise ValueError(
                f"{self.layer} has no weight(s) {unknown}; canonical names are "
                f"{sorted(self.names)}"
            )
        updates = {}
        for name, value in weights.items():
            var = self._lookup(self.names[name])
            value = np.asarray(value)
            if value.shape != tuple(var.shape):
                raise ValueError(
                    f"{self.layer} weight {name!r} has shape {tuple(var.shape)}, got an array "
                    f"of shape {value.shape}"
                )
            updates[name] = (var, value)
        with self.adapter.placed():
            for var, value in updates.values():
                var.set_value(jnp.asarray(value, dtype=var.dtype))

    def weight_info(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        return {name: (tuple(var.shape), isinstance(var, nnx.Param))
                for name, var in self._variables()}

    def param_counts(self) -> tuple[int, int]:
        def count(kind):
            return sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(self.model, kind)))

        return count(nnx.Param), count(nnx.BatchStat)

    def get_config(self) -> dict:
        return self.model.get_config()

    # -- native format: nnx.split -> pure dict -> msgpack, config as JSON beside it -------
    def save_native(self, directory: str) -> str:
        path = os.path.join(directory, f"{self.layer}.nnx")
        os.makedirs(path, exist_ok=True)
        _, state = nnx.split(self.model)
        pure = jax.tree.map(
            lambda x: np.asarray(jax.random.key_data(x) if _is_key(x) else x),
            nnx.to_pure_dict(state),
        )
        with open(os.path.join(path, NATIVE_STATE), "wb") as f:
            f.write(flax_serialization.msgpack_serialize(pure))
        meta = {
            "format": NATIVE_FORMAT,
            "layer": self.layer,
            "config": self.get_config(),
            "features": getattr(self.model, "features", None),
            "dtype": self.dtype,
            "jax": jax.__version__,
            "flax": flax.__version__,
        }
        with open(os.path.join(path, NATIVE_CONFIG), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        return path


class FlaxAdapter(Adapter):
    framework = "jax"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    low_precision = ("bfloat16", "float16")

    def __init__(self, variant: str | None = None):
        if variant in (None, "", "cpu"):
            self.name = "flax"
            self.device = jax.devices("cpu")[0]
        elif variant == "gpu":
            try:
                gpus = jax.devices("gpu")
            except RuntimeError:
                gpus = []
            if not gpus:
                raise RuntimeError("no GPU visible to JAX")
            self.name = "flax-gpu"
            self.device = gpus[0]
        else:
            raise RuntimeError(f"unknown jax variant {variant!r} (known: cpu, gpu)")

    def placed(self):
        """Every array and computation of this adapter lives on its device."""
        return jax.default_device(self.device)

    def build(self, layer: str, config: dict, *, input_shapes, seed: int,
              dtype: str | None = None) -> FlaxHandle:
        features = None
        if layer == "GatedFeatureFusion":
            features = tuple(input_shapes[0])[-1]
        model = self._make(layer, config, features, seed, dtype)
        return FlaxHandle(self, layer, model, dtype)

    def _make(self, layer, config, features, seed, dtype):
        # XLA on GPU may run float32 matmuls as TF32; the spec's float32 tolerance needs full
        # float32 products. Precision is no dtype: the default layer gets it too.
        kwargs = {"precision": jax.lax.Precision.HIGHEST}
        if dtype is not None:  # None: the layer's own defaults (float32 parameters)
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {list(DTYPES)} or None, got {dtype!r}")
            kwargs["dtype"] = jnp.dtype(dtype)
            kwargs["param_dtype"] = PARAM_DTYPE[dtype]
            if dtype in self.low_precision:
                kwargs["precision"] = None
        with self.placed():
            params_key, dropout_key = jax.random.split(jax.random.key(seed))
            rngs = nnx.Rngs(params=params_key, dropout=dropout_key)
            if layer == "FeatureMixing":
                return FeatureMixing.from_config(config, rngs=rngs, **kwargs)
            if layer == "GatedFeatureFusion":
                return GatedFeatureFusion.from_config(config, features, rngs=rngs, **kwargs)
        raise ValueError(f"{self.name} implements {list(self.layers)}, not {layer!r}")

    def load_native(self, layer: str, path: str) -> FlaxHandle:
        with open(os.path.join(path, NATIVE_CONFIG)) as f:
            meta = json.load(f)
        if meta.get("format") != NATIVE_FORMAT or meta.get("layer") != layer:
            raise ValueError(f"{path} is not a saved Flax NNX {layer}")
        model = self._make(layer, meta["config"], meta["features"], 0, meta["dtype"])
        with open(os.path.join(path, NATIVE_STATE), "rb") as f:
            pure = flax_serialization.msgpack_restore(f.read())
        with self.placed():
            graphdef, state = nnx.split(model)

            def restore(variable, value):
                old = variable.get_value()
                value = (jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(old))
                         if _is_key(old) else jnp.asarray(value, dtype=old.dtype))
                return variable.replace(value)

            nnx.replace_by_pure_dict(state, pure, restore)
            model = nnx.merge(graphdef, state)
        return FlaxHandle(self, layer, model, meta["dtype"])

    def describe(self) -> str:
        kind = getattr(self.device, "device_kind", self.device.platform)
        return f"jax {jax.__version__}, flax {flax.__version__}, {self.device.platform} ({kind})"
