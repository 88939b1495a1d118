"""PyTorch mutants: the porting mistakes PyTorch invites, each an adapter ``portspec verify`` loads.

``catches`` names the clauses that must fail for each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from portspec.impls.torch import layers as ref
from portspec.impls.torch.adapter import TorchAdapter
from portspec.layers import feature_mixing as fm_spec
from portspec.layers.feature_mixing import EPSILON
from portspec.ports import TorchPortHandle, identity


class _TorchMutant(TorchAdapter):
    catches: tuple[str, ...] = ()
    mistake = ""
    layers = ("FeatureMixing",)
    fm = ref.FeatureMixing
    gff = ref.GatedFeatureFusion

    def __init__(self, variant=None):
        super().__init__(variant)
        self.name = type(self).__name__
        self.classes = {"FeatureMixing": self.fm, "GatedFeatureFusion": self.gff}


def _with_norm(name, make_norm):
    """A FeatureMixing whose BatchNorm is built by ``make_norm(num_features)``."""

    def __init__(self, *args, **kwargs):
        ref.FeatureMixing.__init__(self, *args, **kwargs)
        self.norm = make_norm(self.input_size * self.n_series).to(self.dense1.weight)

    return type(name, (ref.FeatureMixing,), {"__init__": __init__})


class BatchNorm1dAsIs(_TorchMutant):
    mistake = ("nn.BatchNorm1d with its defaults: eps 1e-5, momentum 0.1 in torch's sense, "
               "unbiased running variance, batch of one rejected, num_batches_tracked")
    catches = ("FM-BN-UPDATE", "FM-BN-BATCH1", "FM-BN-EPSILON", "FM-PARAMS")
    fm = _with_norm("BN1d", nn.BatchNorm1d)


class BatchNorm1dKerasMomentum(_TorchMutant):
    mistake = "nn.BatchNorm1d(momentum=0.01): Keras's momentum value copied into torch's sense"
    catches = ("FM-BN-UPDATE",)
    names = r"keep 0\.99 of their old value"
    fm = _with_norm("BN1dMomentum", lambda n: _NoCounter(n, eps=EPSILON, momentum=0.01))


class _NoCounter(nn.BatchNorm1d):
    """BatchNorm1d without num_batches_tracked, so only the momentum sense is wrong."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("num_batches_tracked", None)

    def forward(self, x):
        out = super().forward(x)
        if self.training:  # torch updates with the unbiased variance; undo only that part
            with torch.no_grad():
                n = x.shape[0]
                biased = x.var(dim=0, correction=0)
                self.running_var.sub_(self.momentum * biased * (n / (n - 1) - 1))
        return out


class LinearWeightNotTransposed(_TorchMutant):
    mistake = "nn.Linear.weight (out, in) mapped to the canonical (in, out) kernel as is"
    catches = ("FM-WEIGHTS", "FM-INFERENCE", "GFF-WEIGHTS", "GFF-FORWARD")
    names = r"transposed"
    layers = ("FeatureMixing", "GatedFeatureFusion")

    def weight_rule(self, name):
        return super().weight_rule(name)[0], identity


class _DefaultInitFM(ref.FeatureMixing):
    def reset_parameters(self):
        self.norm.reset_parameters()
        for dense in (self.dense1, self.dense2):
            dense.reset_parameters()  # nn.Linear's own: Kaiming-uniform, U(+-1/sqrt(fan_in)) bias


class _DefaultInitGFF(ref.GatedFeatureFusion):
    def reset_parameters(self):
        self.gate.reset_parameters()


class LinearDefaultInit(_TorchMutant):
    mistake = "nn.Linear left with PyTorch's initialisation instead of Glorot-uniform, bias 0"
    catches = ("FM-INIT", "GFF-INIT")
    names = r"FeatureMixing and GatedFeatureFusion: .*PyTorch's default Linear initialisation"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    fm = _DefaultInitFM
    gff = _DefaultInitGFF


class _AllBuffersHandle(TorchPortHandle):
    def _tensors(self):
        return {**dict(self.obj.named_buffers()), **self.obj.state_dict(keep_vars=True)}


class _VolatileStats(ref.BatchNorm):
    def register_buffer(self, name, tensor, persistent=True):
        super().register_buffer(name, tensor, persistent=False)


class NonPersistentRunningStats(_TorchMutant):
    mistake = "running statistics registered with persistent=False: not in the state_dict"
    names = r"native load does not restore norm\.moving_mean, norm\.moving_variance"
    catches = ("FM-SAVE-NATIVE",)
    fm = _with_norm("Volatile", lambda n: _VolatileStats(n, eps=EPSILON, momentum=0.99))
    handle_class = _AllBuffersHandle


class _EvalIgnoringDropout(ref.FeatureMixing):
    def forward(self, input):
        z = self.norm(input.reshape(input.shape[0], -1)).reshape(input.shape)
        h = F.dropout(F.relu(self.dense1(z)), self.dropout)  # training defaults to True
        return input + F.dropout(self.dense2(h), self.dropout)


class FunctionalDropoutAlwaysOn(_TorchMutant):
    mistake = "F.dropout called without training=self.training: dropout in eval mode"
    catches = ("FM-DROPOUT-INFERENCE",)
    names = r"dropout active in inference"
    fm = _EvalIgnoringDropout


class _ScaledInInference(ref.FeatureMixing):
    """Dropout as first published (Srivastava et al. 2014): kept units are not scaled in
    training, and inference multiplies by the keep probability instead."""

    def forward(self, input):
        fm_spec.SPEC.check_call(self._config(), tuple(input.shape), str(input.dtype))
        z = self.norm(input.reshape(input.shape[0], -1)).reshape(input.shape)
        keep = 1.0 - self.dropout
        if self.training:
            h = F.dropout(F.relu(self.dense1(z)), self.dropout) * keep
            return input + F.dropout(self.dense2(h), self.dropout) * keep
        return input + self.dense2(F.relu(self.dense1(z)) * keep) * keep


class DropoutScaledInInference(_TorchMutant):
    mistake = "dropout not inverted: inference scales by the keep probability"
    catches = ("FM-DROPOUT-INFERENCE", "FM-DROPOUT-SITES")
    names = r"classic \(non-inverted\) dropout: .* every unit scaled by 1-p in inference"
    fm = _ScaledInInference


class _DetachedStatsNorm(ref.BatchNorm):
    def forward(self, input):
        if not self.training:
            return super().forward(input)
        var, mean = torch.var_mean(input.detach(), dim=0, correction=0)
        super().forward(input)  # the running update
        return (input - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class DetachedBatchStatistics(_TorchMutant):
    mistake = "batch mean and variance computed on input.detach(): no gradient through them"
    catches = ("FM-GRAD",)
    names = r"batch mean and variance are treated as constants in backprop"
    fm = _with_norm("Detached", lambda n: _DetachedStatsNorm(n, eps=EPSILON, momentum=0.99))
