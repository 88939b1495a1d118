"""GatedFeatureFusion: ours in Keras 3 (three backends), PyTorch and Flax NNX, next to the peer
``kerasfactory.layers.GatedFeatureFusion``."""

import math

import numpy as np

from . import common

# The shape of each of the two inputs; the last axis is F.
SIZES = {
    "small": (1024, 64),
    "medium": (4096, 256),
    "large": (16384, 512),
    "rank3": (32, 336, 256),  # a sequence of embeddings: batch, time, F
}


def matmuls(size: str, mode: str) -> list[tuple[int, int, int]]:
    """The gate's (rows, 2F) x (2F, F) and, for a training step, its kernel gradient
    concat^T dG; the inputs take no gradient, so there is no dX product."""
    *lead, f = SIZES[size]
    rows = math.prod(lead)
    forward = [(rows, 2 * f, f)]
    return forward if mode != "train-step" else forward + [(2 * f, rows, f)]


class GatedFeatureFusion(common.LayerBenchmark):
    # neuralforecast has no such layer
    params = common.params([i for i in common.IMPLS if i != "neuralforecast"], SIZES)

    @staticmethod
    def spec(impl, mode, size):
        shape = SIZES[size]
        layer = common.layer_class(impl, "GatedFeatureFusion")
        if impl == "flax":
            build = lambda rngs: layer(shape[-1], rngs=rngs)  # noqa: E731
        elif impl == "torch":
            build = lambda: layer(shape[-1])  # noqa: E731
        else:
            build = layer  # a Keras layer learns F from its first call
        rng = np.random.default_rng(0)
        inputs = [rng.standard_normal(shape, np.float32) for _ in range(2)]
        return common.Spec(build, inputs, True, matmuls(size, mode))
