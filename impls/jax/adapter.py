"""The portspec adapter for the Flax NNX layers, on the public base class a port author uses.

``--impl flax`` runs on the CPU, ``--impl flax-gpu`` on the first GPU; placement, x64, compiled
calls (``nnx.jit``) and the native format come from :class:`portspec.ports.FlaxPortAdapter`.
Every layer of the spec that ``layers.py`` defines is adapted, its weights found by
flax.nnx's names (kernels are (in, out) like the canonical layout, so no transposes).
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from portspec.impls.jax import layers as flax_layers
from portspec.layers import LAYERS
from portspec.ports import FlaxPortAdapter, flax_names


class FlaxAdapter(FlaxPortAdapter):
    name = "flax"
    classes = {n: getattr(flax_layers, n) for n in LAYERS if hasattr(flax_layers, n)}
    layers = tuple(classes)
    low_precision = ("bfloat16", "float16")
    export_compiled = True  # portspec.adapter.Adapter.export_compiled: 23 XLA programs, not 88

    def weight_rule(self, name):
        return flax_names(name)

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        # XLA on GPU may run float32 matmuls as TF32; the spec's float32 tolerance needs full
        # float32 products. Half precision keeps float32 parameters (mixed precision).
        kwargs = {"precision": jax.lax.Precision.HIGHEST}
        if dtype is not None:
            low = dtype in self.low_precision
            kwargs.update(dtype=jnp.dtype(dtype), param_dtype=jnp.float32 if low else dtype,
                          precision=None if low else kwargs["precision"])
        cls = self.classes[layer]
        if "features" in inspect.signature(cls.from_config).parameters:  # a width up front
            kwargs["features"] = input_shapes[0][-1]
        return cls.from_config(config, rngs=rngs, **kwargs)

    def config_of(self, layer, module):
        return module.get_config()
