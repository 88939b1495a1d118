"""Adapter between the portspec suite and the Keras 3 layers, on whichever backend is active.

Keras picks its backend once per process from ``KERAS_BACKEND``; ``--impl keras-torch`` sets it
when Keras is not imported yet. Gradients and compiled calls have no backend-neutral Keras API,
so those two methods dispatch on the backend.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from portspec.adapter import Adapter, Handle
from portspec.layers import LAYERS
from portspec.ports import keras_numpy, keras_tensor

BACKENDS = ("jax", "torch", "tensorflow")
POLICIES = {
    "float32": "float32",
    "float64": "float64",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


def _select_backend(variant: str | None) -> None:
    if variant is None:
        return
    if variant not in BACKENDS:
        raise RuntimeError(f"unknown Keras backend {variant!r}; one of {BACKENDS}")
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != variant:
            raise RuntimeError(
                f"Keras is already imported with backend {active!r} in this process; "
                f"run keras-{variant} in a separate process (KERAS_BACKEND={variant})"
            )
    os.environ["KERAS_BACKEND"] = variant


class KerasAdapter(Adapter):
    framework = "keras"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    low_precision = ("bfloat16", "float16")

    def __init__(self, variant: str | None = None):
        _select_backend(variant)
        import keras

        from portspec.impls.keras import layers as keras_layers

        self.keras = keras
        self.backend = keras.backend.backend()
        if self.backend == "jax":
            import jax

            # Without x64, JAX silently computes "float64" layers in float32.
            jax.config.update("jax_enable_x64", True)
        self.name = f"keras-{self.backend}"
        self.classes = {
            "FeatureMixing": keras_layers.FeatureMixing,
            "GatedFeatureFusion": keras_layers.GatedFeatureFusion,
        }

    def describe(self) -> str:
        return f"keras {self.keras.__version__} on {self.backend}"

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        self.keras.utils.set_random_seed(seed)
        kwargs = {} if dtype is None else {"dtype": POLICIES[dtype]}
        obj = self.classes[layer](**config, **kwargs)
        shapes = list(input_shapes) if LAYERS[layer].multi_input else input_shapes[0]
        obj.build(shapes)
        return KerasHandle(self, layer, obj, input_shapes)

    def load_native(self, layer, path):
        model = self.keras.saving.load_model(path)
        with open(path + ".json") as f:
            input_shapes = [tuple(s) for s in json.load(f)["input_shapes"]]
        return KerasHandle(self, layer, model.layers[-1], input_shapes)


class KerasHandle(Handle):
    def __init__(self, adapter: KerasAdapter, layer: str, obj, input_shapes):
        self.adapter, self.layer, self.obj = adapter, layer, obj
        self.spec = LAYERS[layer]
        self.input_shapes = input_shapes
        self._compiled = {}

    # -- conversion ----------------------------------------------------------------------
    def _tensor(self, x):
        return keras_tensor(self.adapter.keras, x)

    def _numpy(self, t):
        return keras_numpy(self.adapter.keras, t)

    def _call(self, x, training):
        if self.spec.multi_input:
            return self.obj(x)  # GatedFeatureFusion has no training behaviour
        return self.obj(x, training=training)

    # -- calls ---------------------------------------------------------------------------
    def forward(self, inputs, *, training):
        return self._numpy(self._call(self._tensor(inputs), training))

    def forward_compiled(self, inputs, *, training):
        backend = self.adapter.backend
        x = self._tensor(inputs)
        if backend == "jax":
            return self._numpy(self._jax_stateless(x, training, jit=True))
        fn = self._compiled.get(training)
        if fn is None:
            if backend == "tensorflow":
                import tensorflow as tf

                fn = tf.function(lambda v: self._call(v, training), jit_compile=True)
            else:
                import torch

                fn = torch.compile(lambda v: self._call(v, training))
            self._compiled[training] = fn
        return self._numpy(fn(x))

    def _jax_stateless(self, x, training, jit):
        import jax

        obj = self.obj
        fn = self._compiled.get(training)
        if fn is None:

            def run(tv, ntv, v):
                return obj.stateless_call(tv, ntv, v, **self._kwargs(training))

            fn = jax.jit(run) if jit else run
            self._compiled[training] = fn
        out, ntv = fn(
            [v.value for v in obj.trainable_variables],
            [v.value for v in obj.non_trainable_variables],
            x,
        )
        for var, value in zip(obj.non_trainable_variables, ntv, strict=True):
            var.assign(value)
        return out

    def _kwargs(self, training):
        return {} if self.spec.multi_input else {"training": training}

    def grad(self, inputs, cotangent, *, training):
        backend = self.adapter.backend
        x = self._tensor(inputs)
        cot = self._tensor(cotangent)
        weights = self.obj.trainable_weights
        if backend == "jax":
            gx, gw = self._grad_jax(x, cot, training)
        elif backend == "torch":
            gx, gw = self._grad_torch(x, cot, training)
        else:
            gx, gw = self._grad_tf(x, cot, training)
        grads = {_canonical(v): self._numpy(g) for v, g in zip(weights, gw, strict=True)}
        gx = [self._numpy(g) for g in gx] if isinstance(gx, (list, tuple)) else self._numpy(gx)
        return gx, grads

    def _grad_jax(self, x, cot, training):
        import jax
        import jax.numpy as jnp

        obj = self.obj
        ntv = [v.value for v in obj.non_trainable_variables]

        def loss(tv, v):
            out, new = obj.stateless_call(tv, ntv, v, **self._kwargs(training))
            return jnp.sum(out * cot), new

        (gw, gx), new = jax.grad(loss, argnums=(0, 1), has_aux=True)(
            [v.value for v in obj.trainable_variables], x
        )
        for var, value in zip(obj.non_trainable_variables, new, strict=True):
            var.assign(value)
        return gx, gw

    def _grad_torch(self, x, cot, training):
        import torch

        xs = x if isinstance(x, list) else [x]
        xs = [t.detach().requires_grad_(True) for t in xs]
        out = self._call(xs if isinstance(x, list) else xs[0], training)
        params = [v.value for v in self.obj.trainable_weights]
        grads = torch.autograd.grad((out * cot).sum(), xs + params)
        gx = list(grads[: len(xs)]) if isinstance(x, list) else grads[0]
        return gx, list(grads[len(xs) :])

    def _grad_tf(self, x, cot, training):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self._call(x, training)
            loss = tf.reduce_sum(out * cot)
        grads = tape.gradient(loss, [x, self.obj.trainable_weights])
        return grads[0], grads[1]

    # -- weights -------------------------------------------------------------------------
    def _by_name(self):
        return {_canonical(v): v for v in self.obj.weights}

    def get_weights(self):
        return {name: self._numpy(v.value) for name, v in self._by_name().items()}

    def set_weights(self, weights):
        by_name = self._by_name()
        for name, value in weights.items():
            if name not in by_name:
                raise ValueError(f"unknown weight {name!r}; weights are {sorted(by_name)}")
            var = by_name[name]
            if tuple(var.shape) != tuple(np.shape(value)):
                raise ValueError(
                    f"weight {name!r} has shape {tuple(var.shape)}, got {tuple(np.shape(value))}"
                )
            var.assign(np.asarray(value, dtype=np.float64).astype(var.dtype))

    def weight_info(self):
        return {_canonical(v): (tuple(v.shape), bool(v.trainable)) for v in self.obj.weights}

    def param_counts(self):
        # Keras's own split of the layer's weights; seed-generator states are not weights.
        trainable = sum(int(np.prod(v.shape)) for v in self.obj.trainable_weights)
        non_trainable = sum(int(np.prod(v.shape)) for v in self.obj.non_trainable_weights)
        return trainable, non_trainable

    def get_config(self):
        config = self.obj.get_config()
        keep = {name for name, _ in self.spec.config_params}
        return {k: v for k, v in config.items() if k in keep}

    # -- native save ---------------------------------------------------------------------
    def save_native(self, directory):
        keras = self.adapter.keras
        shapes = [s[1:] for s in self.input_shapes]
        if self.spec.multi_input:
            inputs = [keras.Input(s) for s in shapes]
            outputs = self.obj(inputs)
        else:
            inputs = keras.Input(shapes[0])
            outputs = self.obj(inputs)
        path = os.path.join(directory, f"{self.layer}.keras")
        keras.Model(inputs, outputs).save(path)
        with open(path + ".json", "w") as f:
            json.dump({"input_shapes": self.input_shapes}, f)
        return path


def _canonical(variable) -> str:
    """``feature_mixing/dense1/kernel`` -> ``dense1.kernel``."""
    parts = variable.path.split("/")
    return ".".join(parts[-2:])
