"""A port in plain NumPy built on the spec's oracle: a fixture that needs no framework.

Gradients are central differences of its own float64 forward (enough for the portability
clause's training step); it has no compiler and no native format.
"""

from __future__ import annotations

import numpy as np

from portspec.adapter import Adapter, Handle
from portspec.clauses import NotApplicable
from portspec.layers import LAYERS


class NumpyHandle(Handle):
    def __init__(self, layer, config, input_shapes, seed, dtype):
        self.spec = LAYERS[layer]
        self.config = self.spec.validate_config(config)
        self.input_shapes = input_shapes
        self.dtype = np.dtype(dtype or "float32")
        self.rng = np.random.default_rng(seed)
        table = self.spec.weight_table(self.config, input_shapes)
        self.weights = {w.name: w.initial_value(self.rng).astype(self.dtype) for w in table}
        self.trainable = {w.name: w.trainable for w in table}

    def _masks(self, x):
        p, shape = self.config.get("dropout", 0.0), np.shape(x)
        hidden = (*shape[:-1], self.config.get("ff_dim", 0))
        return {
            "dropout1": self.rng.random(hidden) >= p,
            "dropout2": self.rng.random(shape) >= p,
        }

    def forward(self, inputs, *, training):
        masks = self._masks(inputs) if training and not self.spec.multi_input else None
        out, new = self.spec.forward(
            self.config, self.weights, inputs, training=training, masks=masks
        )
        if training:
            self.weights = {k: np.asarray(v, self.dtype) for k, v in new.items()}
        return np.asarray(out, self.dtype)

    def grad(self, inputs, cotangent, *, training):
        saved = self.get_weights()

        def objective(weights, x):
            self.weights = {k: np.asarray(v, np.float64) for k, v in weights.items()}
            out = self.forward(x, training=training)
            self.weights = {k: v.copy() for k, v in saved.items()}
            return float(np.sum(np.asarray(out, np.float64) * cotangent))

        def central(shape, shifted):
            g = np.zeros(shape)
            for i in np.ndindex(shape):
                step = np.zeros(shape)
                step[i] = 1e-6
                g[i] = (shifted(step) - shifted(-step)) / 2e-6
            return g

        x = [np.asarray(v, np.float64) for v in inputs] if isinstance(inputs, list) else inputs
        grads = {
            k: central(v.shape, lambda d, k=k: objective({**saved, k: saved[k] + d}, x))
            for k, v in saved.items()
            if self.trainable[k]
        }
        if isinstance(x, list):
            gx = [
                central(xi.shape, lambda d, i=i: objective(saved, [*x[:i], x[i] + d, *x[i + 1 :]]))
                for i, xi in enumerate(x)
            ]
        else:
            gx = central(np.shape(x), lambda d: objective(saved, x + d))
        self.forward(inputs, training=training)  # a training call updates the state
        return gx, grads

    def forward_compiled(self, inputs, *, training):
        raise NotApplicable("NumPy has no compiler")

    def get_weights(self):
        return {k: v.copy() for k, v in self.weights.items()}

    def set_weights(self, weights):
        for name, value in weights.items():
            if name not in self.weights:
                raise ValueError(f"unknown weight {name!r}")
            if np.shape(value) != self.weights[name].shape:
                raise ValueError(f"weight {name!r} has shape {self.weights[name].shape}")
            self.weights[name] = np.asarray(value, self.dtype)

    def weight_info(self):
        return {k: (v.shape, self.trainable[k]) for k, v in self.weights.items()}

    def param_counts(self):
        sizes = [(v.size, self.trainable[k]) for k, v in self.weights.items()]
        return sum(n for n, t in sizes if t), sum(n for n, t in sizes if not t)

    def get_config(self):
        return dict(self.config)


class NumpyAdapter(Adapter):
    name = "numpy-oracle"
    framework = "numpy"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    handle = NumpyHandle

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        return self.handle(layer, config, input_shapes, seed, dtype)


ADAPTERS = [NumpyAdapter()]
