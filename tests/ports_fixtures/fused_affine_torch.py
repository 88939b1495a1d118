"""PyTorch FeatureMixing ports whose BatchNorm holds its scale and offset as one (2, L*N)
parameter, ``affine``: gamma its row 0, beta its row 1 (``portspec.ports.part``).

- ``fused-affine``: the spec's layer.
- ``fused-affine-exchanged``: the rows read the other way round, ``affine[1] z + affine[0]``.
"""

from __future__ import annotations

import torch
from torch import nn

from portspec.layers import LAYERS
from portspec.ports import TorchPortAdapter, identity, part, transpose

FM_SPEC = LAYERS["FeatureMixing"]


class FusedAffineFM(nn.Module):
    exchanged = False

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__()
        width = input_size * n_series
        self.n_series, self.input_size, self.dropout, self.ff_dim = (
            n_series, input_size, dropout, ff_dim)
        self.affine = nn.Parameter(torch.stack([torch.ones(width), torch.zeros(width)]))
        self.register_buffer("moving_mean", torch.zeros(width))
        self.register_buffer("moving_var", torch.ones(width))
        self.mlp = nn.Sequential(nn.Linear(n_series, ff_dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(ff_dim, n_series), nn.Dropout(dropout))
        for layer in (self.mlp[0], self.mlp[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        FM_SPEC.check_call({"input_size": self.input_size, "n_series": self.n_series},
                           tuple(x.shape), str(x.dtype).removeprefix("torch."))
        v = x.reshape(x.shape[0], -1)
        if self.training:
            mean, var = v.mean(0), v.var(0, correction=0)
            with torch.no_grad():
                self.moving_mean.mul_(0.01).add_(0.99 * mean)
                self.moving_var.mul_(0.01).add_(0.99 * var)
        else:
            mean, var = self.moving_mean, self.moving_var
        scale, offset = (1, 0) if self.exchanged else (0, 1)
        z = (v - mean) / torch.sqrt(var + 1e-3) * self.affine[scale] + self.affine[offset]
        return x + self.mlp(z.reshape(x.shape))


class FusedAffine(TorchPortAdapter):
    name = "fused-affine"
    layers = ("FeatureMixing",)
    module = FusedAffineFM
    def construct(self, layer, config, *, input_shapes, dtype):
        FM_SPEC.validate_config(config)
        return type(self).module(**config)


def _weights():
    return {"FeatureMixing": {
        "norm.gamma": part("affine", 0), "norm.beta": part("affine", 1),
        "norm.moving_mean": ("moving_mean", identity),
        "norm.moving_variance": ("moving_var", identity),
        "dense1.kernel": ("mlp.0.weight", transpose), "dense1.bias": ("mlp.0.bias", identity),
        "dense2.kernel": ("mlp.3.weight", transpose), "dense2.bias": ("mlp.3.bias", identity),
    }}


FusedAffine.weights = _weights()


class Exchanged(FusedAffineFM):
    exchanged = True


class FusedAffineExchanged(FusedAffine):
    name = "fused-affine-exchanged"
    module = Exchanged


ADAPTERS = [FusedAffine(), FusedAffineExchanged()]
