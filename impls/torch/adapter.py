"""The portspec adapter for the PyTorch layers, on the public base class a port author uses.

``--impl torch`` runs on the CPU, ``--impl torch-cuda`` on the current CUDA device; devices,
mixed precision (autocast), seeded dropout, ``torch.compile`` and the native format (the
``state_dict`` as safetensors) come from :class:`portspec.ports.TorchPortAdapter`. Every layer
of the spec that ``layers.py`` defines is adapted, its weights found by torch.nn's names.
"""

from __future__ import annotations

import inspect

from portspec.impls.torch import layers as torch_layers
from portspec.layers import LAYERS
from portspec.ports import TorchPortAdapter, torch_names


class TorchAdapter(TorchPortAdapter):
    name = "torch"
    classes = {n: getattr(torch_layers, n) for n in LAYERS if hasattr(torch_layers, n)}
    layers = tuple(classes)
    low_precision = ("bfloat16", "float16")

    def weight_rule(self, name):
        return torch_names(name)  # nn.Linear keeps its kernel (out, in): transposed

    def construct(self, layer, config, *, input_shapes, dtype):
        cls = self.classes[layer]
        if "features" in inspect.signature(cls).parameters:  # a width taken up front
            config = {"features": input_shapes[0][-1], **config}
        return cls(**config, dtype=dtype)

    def call(self, module, inputs, *, training):
        return module(inputs)  # a multi-input layer takes its inputs as one list
