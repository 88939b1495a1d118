"""Base classes for adapting a layer implementation to the suite: a port author writes one
small PORT.py, and our own implementations in ``impls/`` are adapted the same way.

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
counts as the framework reports them, dtype policies, devices, compiled execution, native
save/load) is generic: see :mod:`portspec.ports.base` for weights a port lacks or holds at
another shape (``absent``, ``held_as``), as several weights (``concat``) or as part of one
(``part``: a scale and offset fused into one parameter), renamed config
parameters (``config_names``) and fixed constructor arguments (``extra_args``). One module per
framework: ``torch``, ``keras`` (Keras 3, any backend), ``tf_keras`` (Keras 2), ``flax`` (Flax
NNX). None imports its framework before an adapter is instantiated.
"""

from portspec.adapter import MissingWeight, WeightLayout, Weights
from portspec.ports.base import (
    PortAdapter,
    PortHandle,
    Transform,
    absent,
    concat,
    held_as,
    identity,
    part,
    reshape,
    transpose,
)
from portspec.ports.flax import FlaxPortAdapter, FlaxPortHandle, flax_names
from portspec.ports.keras import KerasPortAdapter, KerasPortHandle, keras_numpy, keras_tensor
from portspec.ports.tf_keras import TfKerasPortAdapter, TfKerasPortHandle
from portspec.ports.torch import TorchPortAdapter, TorchPortHandle, torch_names

__all__ = [
    "FlaxPortAdapter",
    "FlaxPortHandle",
    "KerasPortAdapter",
    "KerasPortHandle",
    "MissingWeight",
    "PortAdapter",
    "PortHandle",
    "TfKerasPortAdapter",
    "TfKerasPortHandle",
    "TorchPortAdapter",
    "TorchPortHandle",
    "Transform",
    "WeightLayout",
    "Weights",
    "absent",
    "flax_names",
    "concat",
    "held_as",
    "identity",
    "keras_numpy",
    "keras_tensor",
    "part",
    "reshape",
    "torch_names",
    "transpose",
]
