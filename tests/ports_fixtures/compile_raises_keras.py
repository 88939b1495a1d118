"""A Keras 3 FeatureMixing that checks its input with a Python ``bool()`` of a tensor: the
eager call runs, a compiled one (``jax.jit``, ``tf.function``) has no value to convert and
raises. Built on ``single_mistakes_keras``'s conforming layer, one method changed."""

from __future__ import annotations

import keras
from keras import ops
from single_mistakes_keras import Conforming
from single_mistakes_keras import FeatureMixing as Base


@keras.saving.register_keras_serializable(package="portspec_fixture_compile")
class FeatureMixing(Base):
    def combine(self, x, training):
        if not bool(ops.all(ops.isfinite(x))):  # a value check in Python
            raise ValueError("FeatureMixing input must be finite")
        return super().combine(x, training)


class FiniteCheck(Conforming):
    name, layers, fm = "finite-check-in-python", ("FeatureMixing",), FeatureMixing


ADAPTERS = [FiniteCheck()]
