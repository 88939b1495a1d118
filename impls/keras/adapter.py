"""The portspec adapter for the Keras 3 layers, on the public base class a port author uses.

``--impl keras`` runs on the backend ``KERAS_BACKEND`` names, ``--impl keras-torch`` (or
``-jax``, ``-tensorflow``) selects it when Keras is not imported yet. Dtype policies, the
backends' gradients and compilers, and the native ``.keras`` format come from
:class:`portspec.ports.KerasPortAdapter`. Every layer of the spec that ``layers.py`` defines is
adapted; its sublayers and variables carry the canonical names, so each weight maps as it is.
"""

from __future__ import annotations

from portspec.layers import LAYERS
from portspec.ports import KerasPortAdapter, identity


class KerasAdapter(KerasPortAdapter):
    name = "keras-{backend}"
    low_precision = ("bfloat16", "float16")

    def __init__(self, variant=None):
        super().__init__(variant)  # selects the backend before the layers import Keras
        from portspec.impls.keras import layers

        self.classes = {n: getattr(layers, n) for n in LAYERS if hasattr(layers, n)}
        self.layers = self.layers or tuple(self.classes)

    def weight_rule(self, name):
        return name, identity

    def construct(self, layer, config, *, input_shapes, dtype):
        return self.classes[layer](**config, **({} if dtype is None else {"dtype": dtype}))
