"""The TSMixer paper's feature-mixing block in Keras 2 (``tf_keras``, on TensorFlow): the
layer in ``block.py`` beside this file, written from the paper's description of its reference
code. Judge it with ``--profile tsmixer`` (the reference's BatchNormalization keeps 0.99 of the
old moving statistic); under the default profile FM-BN-UPDATE says that profile fits better.

The BatchNormalization over axes (-2, -1) holds its scale, offset and moving statistics as
(L, N) arrays, one value per (time step, channel): the spec's flat (L*N,) vectors in row-major
order, so they map through ``reshape("C")``. Dense kernels are Keras's (in, out). Parameter
paths are the block's attribute paths (``norm.gamma``, ``dense1.kernel``).
"""

from __future__ import annotations

from block import FeatureMixingBlock

from portspec.ports import TfKerasPortAdapter, identity, reshape


class TSMixerReference(TfKerasPortAdapter):
    name = "tsmixer-reference"
    package = "tf_keras"
    layers = ("FeatureMixing",)
    # Keras 2 mixed-precision policies, through the block's dtype
    low_precision = ("bfloat16", "float16")
    weights = {
        "FeatureMixing": {
            "norm.gamma": ("norm.gamma", reshape("C")),
            "norm.beta": ("norm.beta", reshape("C")),
            "norm.moving_mean": ("norm.moving_mean", reshape("C")),
            "norm.moving_variance": ("norm.moving_variance", reshape("C")),
            "dense1.kernel": ("dense1.kernel", identity),
            "dense1.bias": ("dense1.bias", identity),
            "dense2.kernel": ("dense2.kernel", identity),
            "dense2.bias": ("dense2.bias", identity),
        }
    }

    def construct(self, layer, config, *, input_shapes, dtype):
        kwargs = {} if dtype is None else {"dtype": dtype}
        return FeatureMixingBlock(**config, **kwargs)
