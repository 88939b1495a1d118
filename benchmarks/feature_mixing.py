"""FeatureMixing: ours in Keras 3 (three backends), PyTorch and Flax NNX, next to the peers
``neuralforecast.models.tsmixer.FeatureMixing`` and ``kerasfactory.layers.FeatureMixing``."""

import numpy as np

from . import common

# (batch, input_size L, n_series N, ff_dim H): TSMixer's shapes on three datasets.
SIZES = {
    "small": (32, 96, 7, 64),  # ETTh1
    "medium": (32, 336, 321, 256),  # Electricity
    "large": (32, 512, 862, 512),  # Traffic
}


def matmuls(size: str, mode: str) -> list[tuple[int, int, int]]:
    """The two channel matmuls over B*L rows and, for a training step, their four backward
    products: dH = dY W2^T, dW2 = H^T dY, dZ = dH W1^T (BatchNorm's gamma and beta need it),
    dW1 = Z^T dH."""
    batch, length, n, h = SIZES[size]
    rows = batch * length
    forward = [(rows, n, h), (rows, h, n)]
    if mode != "train-step":
        return forward
    return forward + [(rows, n, h), (h, rows, n), (rows, h, n), (n, rows, h)]


class FeatureMixing(common.LayerBenchmark):
    params = common.params(common.IMPLS, SIZES)

    @staticmethod
    def spec(impl, mode, size):
        batch, length, n, h = SIZES[size]
        config = dict(n_series=n, input_size=length, dropout=common.DROPOUT, ff_dim=h)
        layer = common.layer_class(impl, "FeatureMixing")
        if impl == "flax":
            build = lambda rngs: layer(**config, rngs=rngs)  # noqa: E731
        else:
            build = lambda: layer(**config)  # noqa: E731
        x = np.random.default_rng(0).standard_normal((batch, length, n), np.float32)
        return common.Spec(build, [x], False, matmuls(size, mode))
