"""The base class for a port written as a Flax NNX module (and for our Flax layers).

``FlaxPortAdapter()`` runs on the CPU; ``FlaxPortAdapter(variant="gpu")`` on the first GPU
JAX sees (its ``name`` gains ``-gpu``; ``RuntimeError`` where there is none): every array and
computation of the adapter is placed there. ``construct`` also gets ``rngs`` (an ``nnx.Rngs``
seeded from the suite's seed, with ``params`` and ``dropout`` streams). JAX runs with x64
enabled, else float64 silently computes in float32. Compiled calls are ``nnx.jit``, made once
per handle and training flag (a compiled gradient, once per call). The native format is the
module's variables by attribute path as safetensors, with the build arguments in its metadata.
"""

from __future__ import annotations

import os

import numpy as np

from portspec.ports.base import (
    REBOUND,
    PortAdapter,
    PortHandle,
    floating,
    identity,
    load_meta,
    one_output,
    save_arrays,
)

# Keras's weight names (the canonical ones) in flax.nnx; kernels are (in, out) in both
FLAX_NAMES = {"gamma": "scale", "beta": "bias", "moving_mean": "mean", "moving_variance": "var"}


def flax_names(name: str):
    """``norm.gamma`` -> ``("norm.scale", identity)``: flax.nnx's name for a Keras-named weight."""
    owner, _, kind = name.rpartition(".")
    kind = FLAX_NAMES.get(kind, kind)
    return f"{owner}.{kind}" if owner else kind, identity


class FlaxPortAdapter(PortAdapter):
    """``call`` defaults to ``module(x)`` after ``module.train()`` / ``module.eval()``.
    Parameter paths are the attribute paths, dotted: ``norm.scale``."""

    framework = "jax"

    def __init__(self, variant: str | None = None):
        import jax

        jax.config.update("jax_enable_x64", True)  # else float64 silently runs in float32
        from flax import nnx

        self.jax, self.nnx = jax, nnx
        if variant in (None, "", "cpu"):
            self.device = jax.devices("cpu")[0]
        elif variant == "gpu":
            try:
                gpus = jax.devices("gpu")
            except RuntimeError:
                gpus = []
            if not gpus:
                raise RuntimeError("no GPU visible to JAX")
            self.device, self.name = gpus[0], f"{self.name}-gpu"
        else:
            raise RuntimeError(f"unknown jax variant {variant!r} (known: cpu, gpu)")

    def placed(self):
        """Every array and computation of this adapter lives on its device."""
        return self.jax.default_device(self.device)

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        raise NotImplementedError

    def call(self, module, inputs, *, training):
        return module(inputs)

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        with self.placed():
            rngs = self.nnx.Rngs(params=seed, dropout=seed + 1)
            module = self.construct(layer, self.port_config(layer, config),
                                    input_shapes=input_shapes, dtype=dtype, rngs=rngs)
        return self._handle(layer, module, config, input_shapes, dtype)

    def load_native(self, layer, path):
        meta = load_meta(path, layer)
        handle = self.build(
            layer, meta["config"], input_shapes=meta["input_shapes"], seed=0, dtype=meta["dtype"]
        )
        handle._write_all(meta["arrays"].items())
        return handle

    def describe(self):
        import flax

        kind = getattr(self.device, "device_kind", self.device.platform)
        return (f"{self.name} (flax {flax.__version__}, jax {self.jax.__version__}, "
                f"{self.device.platform} {kind})")


class FlaxPortHandle(PortHandle):
    def __init__(self, *args):
        super().__init__(*args)
        self._compiled = {}
        self._training = None

    def _variables(self):
        nnx = self.adapter.nnx
        out = {}
        for path, _ in nnx.to_flat_state(nnx.state(self.obj)):
            node = self.obj
            for part in path:
                node = node[part] if isinstance(part, int) else getattr(node, part)
            if isinstance(node, nnx.RngState) or self._is_key(node):  # RNG keys and
                continue  # counters are no weights, whatever holds them
            if isinstance(node, nnx.Intermediate) or not hasattr(node, "dtype"):
                # values a call records (Module.sow: a tuple of arrays per call, which the
                # next call extends) are no weights: not read, written or saved
                continue
            out[".".join(str(p) for p in path)] = node
        return out

    def promotion(self, inputs, *, training) -> str | None:
        """Where a low-precision layer's sublayers compute in another dtype: each NNX module
        of the port built with a ``dtype`` (NNX's computation dtype; ``param_dtype`` is its
        weights') other than the compute dtype, as words. Where none is, the call is traced
        and the first conversion to float32 from which the output is reached in float32 alone
        is named (``narrowing.widened_output``: a residual added to an upcast input, say);
        None where there is none."""
        if self.dtype not in ("bfloat16", "float16"):
            return None
        jnp = self.adapter.jax.numpy
        want = jnp.dtype(self.dtype)
        other = [(".".join(str(p) for p in path), jnp.dtype(node.dtype).name)
                 for path, node in self.adapter.nnx.iter_modules(self.obj)
                 if path and getattr(node, "dtype", None) is not None
                 and hasattr(node, "param_dtype") and jnp.dtype(node.dtype) != want]
        if not other:  # no sublayer of another dtype: where a value turns float32 for good
            from portspec.ports.narrowing import widened_output

            nnx, jax, call = self.adapter.nnx, self.adapter.jax, self.adapter.call
            with self.adapter.placed():
                self._mode(training)
                graphdef, state = nnx.split(self.obj)
                x = self._jax(inputs)
                where = widened_output(lambda: jax.make_jaxpr(lambda s, v: call(
                    nnx.merge(graphdef, s), v, training=training))(state, x),
                    self.port_files(), self.dtype)
            return where and (f"under {self.dtype} compute the output comes out float32: "
                              f"{where}, and the output is computed from it in float32 "
                              f"without a cast back to {self.dtype}, where the spec computes "
                              f"in {self.dtype}")
        said = ", ".join(f"{path} (dtype={dtype})" for path, dtype in other)
        return (f"under {self.dtype} compute the port's {said} compute in "
                f"{other[0][1]}: NNX's dtype is a module's computation dtype (param_dtype its "
                f"weights'), so the output is promoted, where the spec computes in "
                f"{self.dtype}")

    def _is_key(self, variable) -> bool:
        """A typed PRNG key (``jax.random.key``) held in a plain Variable."""
        jax = self.adapter.jax
        try:
            return bool(jax.dtypes.issubdtype(variable.dtype, jax.dtypes.prng_key))
        except (AttributeError, TypeError):
            return False

    def _native(self):
        nnx = self.adapter.nnx
        return {
            p: (tuple(v.shape), isinstance(v, nnx.Param))
            for p, v in self._variables().items()
            if floating(v.dtype)
        }

    def _read(self):
        return {p: np.array(v[...]) for p, v in self._variables().items()}

    def _write_all(self, staged):
        variables = self._variables()  # one walk of the module graph for every write
        with self.adapter.placed():
            for path, value in staged:
                var = variables[path]
                if not isinstance(var, self.adapter.nnx.Variable):
                    # said first in few words: a refusal is quoted to 120 characters
                    raise TypeError(
                        f"{REBOUND}{path} to a plain {type(var).__name__} "
                        "(self.x = v where self.x[...] = v updates the nnx.Variable): it is no "
                        "longer the layer's state (nnx.state, nnx.split and a save no longer "
                        "see it as a Variable of its kind)")
                var.set_value(self.adapter.jax.numpy.asarray(value, dtype=var.dtype))

    def _mode(self, training):
        # train()/eval() walk the module graph: switch only when the mode changes
        if self._training is not bool(training):
            self.obj.train() if training else self.obj.eval()
            self._training = bool(training)

    @staticmethod
    def _jax(x):
        # jnp.asarray keeps the NumPy dtype: an int32 input reaches the port as int32
        import jax.numpy as jnp

        if isinstance(x, (list, tuple)):
            return [jnp.asarray(np.asarray(v)) for v in x]
        return jnp.asarray(np.asarray(x))

    @staticmethod
    def _numpy(x):
        # np.array copies: the caller gets writable arrays no later call can alter
        return [np.array(v) for v in x] if isinstance(x, (list, tuple)) else np.array(x)

    def forward(self, inputs, *, training):
        with self.adapter.placed():
            self._mode(training)
            return self._numpy(one_output(self.adapter.call(self.obj, self._jax(inputs),
                                                            training=training)))

    def narrowing(self, inputs, *, training):
        if self.dtype != "float64":
            return None
        from portspec.ports.narrowing import in_jaxpr

        nnx, jax, call = self.adapter.nnx, self.adapter.jax, self.adapter.call
        with self.adapter.placed():
            self._mode(training)
            graphdef, state = nnx.split(self.obj)
            x = self._jax(inputs)

            def traced():
                return jax.make_jaxpr(lambda s, v: call(nnx.merge(graphdef, s), v,
                                                        training=training))(state, x)

            return in_jaxpr(traced, self.port_files())

    def forward_compiled(self, inputs, *, training):
        nnx = self.adapter.nnx
        fn = self._compiled.get(training)
        if fn is None:
            call = self.adapter.call
            fn = self._compiled[training] = nnx.jit(lambda m, x: call(m, x, training=training))
        with self.adapter.placed():
            self._mode(training)
            return self._numpy(fn(self.obj, self._jax(inputs)))

    def _native_grad(self, inputs, cotangent, training, paths, *, jit=False):
        import jax.numpy as jnp

        nnx = self.adapter.nnx
        with self.adapter.placed():
            self._mode(training)
            cot = jnp.asarray(np.asarray(cotangent))

            def loss(module, x):
                out = one_output(self.adapter.call(module, x, training=training))
                return jnp.sum(out * cot.astype(out.dtype))

            # BatchStat and RNG updates of a training call propagate back to the module (under
            # nnx.jit too)
            grad = nnx.grad(loss, argnums=(0, 1))
            grads, gx = (nnx.jit(grad) if jit else grad)(self.obj, self._jax(inputs))
        flat = {
            ".".join(str(p) for p in path): np.array(v[...])
            for path, v in nnx.to_flat_state(nnx.state(grads, nnx.Param))
        }
        return self._numpy(gx), {p: flat[p] for p in paths}

    def _native_grad_compiled(self, inputs, cotangent, training, paths):
        # one nnx.jit per call: the cotangent is a constant of the traced loss
        return self._native_grad(inputs, cotangent, training, paths, jit=True)

    def param_counts(self):
        native = self._native()
        trainable = sum(int(np.prod(s)) for s, t in native.values() if t)
        return trainable, sum(int(np.prod(s)) for s, t in native.values() if not t)

    def save_native(self, directory):
        # the module's variables by attribute path, as safetensors, the config beside them
        path = os.path.join(directory, f"{self.layer}.safetensors")
        return save_arrays(path, self._read(), self._meta())


FlaxPortAdapter.handle_class = FlaxPortHandle
