"""FeatureMixing and GatedFeatureFusion as PyTorch modules.

The modules follow ``torch/nn/modules/linear.py``: ``__init__(..., device=None, dtype=None)``
creates the parameters, ``reset_parameters`` initialises them, ``forward`` is plain tensor code
and ``extra_repr`` shows the config. Configs and calls are validated by the spec's own
functions, so an error names the parameter, shape or dtype exactly as every other port does.

Where PyTorch's defaults differ from the spec they are not used: ``nn.Linear`` is re-initialised
Glorot-uniform with zero bias, and the BatchNorm is :class:`BatchNorm` below rather than
``nn.BatchNorm1d`` (Keras's biased running variance, momentum convention, and batch of one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from portspec import validation
from portspec.layers import feature_mixing as fm_spec
from portspec.layers import gated_feature_fusion as gff_spec

__all__ = ["BatchNorm", "FeatureMixing", "GatedFeatureFusion"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@torch.library.custom_op("portspec::keep_mask", mutates_args=())
def keep_mask(like: Tensor, p: float) -> Tensor:
    """A Bernoulli(1 - p) mask shaped like ``like``, from ATen's generator (``bernoulli_``, as
    eager ``F.dropout`` draws it; seeded by ``torch.manual_seed``).

    An operator of its own so that ``torch.compile`` calls it rather than generating the draw:
    Inductor's CPU code computes one Philox4x32-10 block per element in a scalar loop and uses
    one of its four outputs. For the (32, 512, 862) mask of the large benchmark, forward and
    backward of ``mean(dropout(x) ** 2)`` compiled: 1550 ms with ``F.dropout``, 341-503 ms
    with this operator (one process, 2 cores, load average 6-9)."""
    return torch.empty_like(like).bernoulli_(1.0 - p)


@keep_mask.register_fake
def _(like: Tensor, p: float) -> Tensor:
    return torch.empty_like(like)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout: each element zeroed with probability ``p``, the rest scaled by
    ``1 / (1 - p)``. Eager, ``F.dropout`` itself; under ``torch.compile``, the same draw through
    :func:`keep_mask` (eager, the operator's dispatch and an extra temporary cost 12-21 % of a
    training forward; compiled, Inductor fuses the multiplications)."""
    if not (training and torch.compiler.is_compiling()) or p == 0.0 or p >= 1.0:
        return F.dropout(x, p, training)
    return x * keep_mask(x.detach(), p) * (1.0 / (1.0 - p))


def _as(tensor: Tensor, dtype: torch.dtype) -> Tensor:
    """``tensor.to(dtype)`` without the call when nothing changes: at the small benchmark
    size a FeatureMixing call takes 0.18 ms, and six no-op ``.to`` calls were 2-3 % of it."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


class BatchNorm(nn.Module):
    r"""Batch normalisation over the last axis of a ``(batch, num_features)`` tensor, with the
    semantics of Keras ``BatchNormalization`` rather than ``nn.BatchNorm1d``.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    In training, the mean and the *biased* variance of the batch normalise the input and update
    the running statistics as ``running = (1 - momentum) * running + momentum * batch``. Unlike
    ``nn.BatchNorm1d``, the running variance is updated with the biased variance too, and a
    batch of one is accepted (its variance is 0). In eval mode the running statistics are used
    and nothing changes. float16 and bfloat16 inputs are normalised in float32 and cast back.

    Args:
        num_features: size of the last input axis.
        eps: added to the variance. Default: 1e-3 (Keras's default, not PyTorch's 1e-5).
        momentum: share of the batch statistic in the running update, PyTorch's convention.
            Keras's ``momentum=m`` is ``momentum=1 - m`` here. Default: 0.01.

    Shape:
        - Input: :math:`(N, C)` with :math:`C` = ``num_features``.
        - Output: :math:`(N, C)`, same shape as the input.
    """

    __constants__ = ["num_features", "eps", "momentum"]

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.01,
                 device=None, dtype=None) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.num_features = validation.positive_int("num_features", num_features)
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        self.bias = nn.Parameter(torch.empty(num_features, **factory_kwargs))
        self.register_buffer("running_mean", torch.empty(num_features, **factory_kwargs))
        self.register_buffer("running_var", torch.empty(num_features, **factory_kwargs))
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_var)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, input: Tensor) -> Tensor:
        # Keras computes BatchNorm of float16/bfloat16 inputs in float32; so do we.
        compute = torch.float32 if input.dtype in _LOW_PRECISION else input.dtype
        x, weight, bias = _as(input, compute), _as(self.weight, compute), _as(self.bias, compute)
        n = x.shape[0]
        if self.training and n > 1 and self.running_var.dtype == compute:
            # The fused kernel: one pass for the statistics, a fused backward, and the running
            # statistics updated inside it, where var_mean and five element-wise ops were
            # 1.2-1.4x slower for a whole FeatureMixing step (BENCHMARKS.md). Its update is the
            # spec's, running = (1 - momentum) * running + momentum * batch, except that it
            # uses the unbiased variance, s = n / (n - 1) times the biased one. So it is handed
            # the running variance times s and the result is divided by s:
            # ((1 - m) * s * v + m * s * var) / s = (1 - m) * v + m * var.
            s = n / (n - 1)
            scaled_var = self.running_var * s
            y = F.batch_norm(x, self.running_mean, scaled_var, weight, bias, True,
                             self.momentum, self.eps)
            with torch.no_grad():
                torch.div(scaled_var, s, out=self.running_var)
        elif self.training:
            # A batch of one, which F.batch_norm refuses (its variance is 0), or running
            # statistics kept in a dtype other than the computation's (a float16 module).
            var, mean = torch.var_mean(x, dim=0, correction=0)
            with torch.no_grad():
                self._update(self.running_mean, mean)
                self._update(self.running_var, var)
            y = (x - mean) * torch.rsqrt(var + self.eps) * weight + bias
        else:
            y = F.batch_norm(x, _as(self.running_mean, compute), _as(self.running_var, compute),
                             weight, bias, False, 0.0, self.eps)
        return _as(y, input.dtype)

    def _update(self, running: Tensor, batch: Tensor) -> None:
        old = running.to(batch.dtype)
        running.copy_((1.0 - self.momentum) * old + self.momentum * batch.detach())

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class FeatureMixing(nn.Module):
    r"""The channel-mixing block of TSMixer.

    The input is flattened to ``(batch, input_size * n_series)`` (row-major, feature index
    ``t * n_series + c``), batch-normalised, reshaped back, and mixed across channels by
    ``Linear(n_series, ff_dim) -> ReLU -> Dropout -> Linear(ff_dim, n_series) -> Dropout``;
    the result is added to the input.

    Args:
        n_series: number of channels :math:`N`, the last input axis.
        input_size: number of time steps :math:`L`, the middle input axis.
        dropout: rate of both dropout sites, in [0, 1].
        ff_dim: hidden width :math:`H` of the channel MLP.

    Shape:
        - Input: :math:`(B, L, N)`.
        - Output: :math:`(B, L, N)`, same shape as the input.

    Attributes:
        norm: :class:`BatchNorm` over the :math:`L N` flattened features (epsilon 1e-3,
            ``running = 0.01 * running + 0.99 * batch``).
        dense1, dense2: ``nn.Linear`` layers, Glorot-uniform weights and zero biases.

    Examples::

        >>> m = FeatureMixing(n_series=7, input_size=96, dropout=0.1, ff_dim=64)
        >>> m(torch.randn(32, 96, 7)).shape
        torch.Size([32, 96, 7])
    """

    __constants__ = ["n_series", "input_size", "dropout", "ff_dim"]

    def __init__(self, n_series: int, input_size: int, dropout: float, ff_dim: int,
                 device=None, dtype=None) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        config = fm_spec.SPEC.validate_config({
            "n_series": n_series, "input_size": input_size, "dropout": dropout, "ff_dim": ff_dim,
        })
        self.n_series = config["n_series"]
        self.input_size = config["input_size"]
        self.dropout = config["dropout"]
        self.ff_dim = config["ff_dim"]
        # The spec's MOMENTUM is Keras's (share of the old value); BatchNorm takes PyTorch's.
        self.norm = BatchNorm(self.input_size * self.n_series, eps=fm_spec.EPSILON,
                              momentum=1.0 - fm_spec.MOMENTUM, **factory_kwargs)
        self.dense1 = nn.Linear(self.n_series, self.ff_dim, **factory_kwargs)
        self.dense2 = nn.Linear(self.ff_dim, self.n_series, **factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        for dense in (self.dense1, self.dense2):
            nn.init.xavier_uniform_(dense.weight)
            nn.init.zeros_(dense.bias)

    def forward(self, input: Tensor) -> Tensor:
        fm_spec.SPEC.check_call(self._config(), tuple(input.shape), str(input.dtype))
        # One name for every intermediate, so that each is freed once the next exists. Held
        # under names of their own until the end (z, h, y), they made an eval-mode call at the
        # medium benchmark size 1.3x slower (44 against 34 ms) with the same kernels taking
        # the same time: the cost is in holding more memory at once.
        x = self.norm(input.reshape(input.shape[0], -1)).reshape(input.shape)
        x = dropout(F.relu(self.dense1(x)), self.dropout, self.training)
        x = dropout(self.dense2(x), self.dropout, self.training)
        return input + x

    def _config(self) -> dict:
        return {"n_series": self.n_series, "input_size": self.input_size,
                "dropout": self.dropout, "ff_dim": self.ff_dim}

    def extra_repr(self) -> str:
        return (f"n_series={self.n_series}, input_size={self.input_size}, "
                f"dropout={self.dropout}, ff_dim={self.ff_dim}")


_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "softmax": lambda z: torch.softmax(z, dim=-1),
}


class GatedFeatureFusion(nn.Module):
    r"""A learned gate between two feature representations of the same shape.

    .. math::
        g = \mathrm{activation}([a, b] K^\top + c), \qquad y = g \odot a + (1 - g) \odot b

    where :math:`[a, b]` concatenates the inputs along the last axis (``a`` first) and
    :math:`K, c` are the weight and bias of ``gate = nn.Linear(2 * features, features)``.

    Args:
        features: size :math:`F` of the inputs' last axis.
        activation: ``"sigmoid"`` (default), ``"tanh"``, ``"relu"`` or ``"softmax"`` (over the
            last axis).

    Shape:
        - Input: a list or tuple of two tensors, each :math:`(*, F)` with at least two axes.
        - Output: :math:`(*, F)`, the inputs' shape.

    Examples::

        >>> m = GatedFeatureFusion(16)
        >>> m([torch.randn(8, 16), torch.randn(8, 16)]).shape
        torch.Size([8, 16])
    """

    __constants__ = ["features", "activation"]

    def __init__(self, features: int, activation: str = "sigmoid", device=None,
                 dtype=None) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.features = validation.positive_int("features", features)
        self.activation = gff_spec.SPEC.validate_config({"activation": activation})["activation"]
        self.gate = nn.Linear(2 * self.features, self.features, **factory_kwargs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, inputs: list[Tensor] | tuple[Tensor, Tensor]) -> Tensor:
        config = {"activation": self.activation}
        if isinstance(inputs, Tensor):
            # Said here rather than by check_call, which would read a 0-d tensor's empty shape
            # as an empty list of shapes.
            raise TypeError(
                f"GatedFeatureFusion inputs must be a list of two tensors, got a single tensor "
                f"of shape {tuple(inputs.shape)}"
            )
        gff_spec.SPEC.check_call(config, [tuple(t.shape) for t in inputs],
                                 [str(t.dtype) for t in inputs], features=self.features)
        a, b = inputs
        gate = _ACTIVATIONS[self.activation](self.gate(torch.cat([a, b], dim=-1)))
        return gate * a + (1.0 - gate) * b

    def extra_repr(self) -> str:
        return f"features={self.features}, activation={self.activation!r}"
