"""The base class for a port written as a Keras 2 layer (``tf_keras``, on TensorFlow).

Keras 2 code does not always run on Keras 3: the TSMixer paper's reference code normalises with
``BatchNormalization(axis=[-2, -1])``, a list axis Keras 3 refuses. ``tf_keras`` is Keras 2 as
a package of its own, pinned to the installed TensorFlow's version. Parameter paths are the
attribute paths below the layer, dotted (``norm.gamma``, ``dense.kernel``): Keras 2 names
variables after uniquified layer names (``batch_normalization_3/gamma:0``), which change from
one build to the next. Compiled calls are ``tf.function(jit_compile=True)``; compute dtypes
map to the Keras 2 mixed-precision policies; the native format is a one-layer model saved as
``.keras`` (the layer must be registered as serializable, as for Keras 3).
"""

from __future__ import annotations

import numpy as np

from portspec.ports.keras import KerasPortAdapter, KerasPortHandle


class TfKerasPortAdapter(KerasPortAdapter):
    framework = "tf_keras"

    def __init__(self, variant: str | None = None):
        if variant not in (None, "", "tensorflow"):
            raise RuntimeError(f"tf_keras runs on TensorFlow only, not {variant!r}")
        import tensorflow as tf
        import tf_keras

        self.keras, self.tf, self.backend = tf_keras, tf, "tensorflow"
        self.name = self.name.format(backend=self.backend)

    def describe(self):
        return f"{self.name} (tf_keras {self.keras.__version__}, tensorflow {self.tf.__version__})"


class TfKerasPortHandle(KerasPortHandle):
    def _variables(self):
        tf, out, seen = self.adapter.tf, {}, set()
        found = self.obj._flatten(predicate=lambda v: isinstance(v, tf.Variable), with_path=True)
        for path, var in sorted(found, key=lambda item: len(item[0])):
            if id(var) in seen or any(str(p).startswith("_") for p in path):
                continue  # Keras's own bookkeeping lists reach every variable a second time
            seen.add(id(var))
            out[".".join(str(p) for p in path)] = var
        return out

    def _read(self):
        return {p: self._numpy(v) for p, v in self._variables().items()}

    def _write_all(self, staged):
        variables = self._variables()
        for path, value in staged:
            var = variables[path]
            var.assign(np.asarray(value, dtype=np.float64).astype(var.dtype.as_numpy_dtype))

    def _tensor(self, x):
        tf = self.adapter.tf
        if isinstance(x, (list, tuple)):
            return [self._tensor(v) for v in x]
        x = np.asarray(x)
        if x.dtype.name == "bfloat16":
            return tf.cast(tf.convert_to_tensor(x.astype(np.float32)), tf.bfloat16)
        return tf.convert_to_tensor(x)

    def _numpy(self, t):
        if isinstance(t, (list, tuple)):
            return [self._numpy(v) for v in t]
        tf = self.adapter.tf
        if t.dtype == tf.bfloat16:
            import ml_dtypes

            return tf.cast(t, tf.float32).numpy().astype(ml_dtypes.bfloat16)
        return np.array(t.numpy())

    @staticmethod
    def _source(variable):
        return variable


TfKerasPortAdapter.handle_class = TfKerasPortHandle
