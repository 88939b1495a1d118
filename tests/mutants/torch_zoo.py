"""PyTorch mutants: the porting mistakes PyTorch invites, each an adapter ``portspec verify`` loads.

``catches`` names the clauses that must fail for each.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from portspec.impls.torch import adapter as ref_adapter
from portspec.impls.torch import layers as ref
from portspec.layers.feature_mixing import EPSILON


class _TorchMutant(ref_adapter.TorchAdapter):
    catches: tuple[str, ...] = ()
    mistake = ""
    layers = ("FeatureMixing",)
    fm = ref.FeatureMixing
    gff = ref.GatedFeatureFusion
    names = ref_adapter._NAMES
    handle = ref_adapter.TorchHandle

    def __init__(self, variant=None):
        super().__init__(variant)
        self.name = type(self).__name__

    def _make(self, layer, config, features, dtype):
        param_dtype = ref_adapter._param_dtype(dtype)
        if layer == "FeatureMixing":
            return self.fm(**config, device=self.device, dtype=param_dtype)
        return self.gff(features, **config, device=self.device, dtype=param_dtype)

    def _handle(self, layer, module, seed, dtype):
        handle = self.handle(layer, module, seed, dtype)
        handle.names = self.names[layer]
        return handle

    def build(self, layer, config, *, input_shapes, seed, dtype="float32"):
        torch.manual_seed(seed)
        features = input_shapes[0][-1] if layer == "GatedFeatureFusion" else None
        return self._handle(layer, self._make(layer, config, features, dtype), seed, dtype)

    def load_native(self, layer, path):
        import json

        import safetensors

        with safetensors.safe_open(path, framework="pt") as f:
            meta = f.metadata()
            state = {k: f.get_tensor(k) for k in f.keys()}
        dtype = json.loads(meta["dtype"])
        module = self._make(layer, json.loads(meta["config"]), json.loads(meta["features"]),
                            dtype)
        module.load_state_dict(state, strict=True)
        return self._handle(layer, module, 0, dtype)


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


_TRANSPOSE_FORGOTTEN = {
    layer: {k: (target, False) for k, (target, _) in names.items()}
    for layer, names in ref_adapter._NAMES.items()
}


class LinearWeightNotTransposed(_TorchMutant):
    mistake = "nn.Linear.weight (out, in) mapped to the canonical (in, out) kernel as is"
    catches = ("FM-WEIGHTS", "FM-INFERENCE", "GFF-WEIGHTS", "GFF-FORWARD")
    layers = ("FeatureMixing", "GatedFeatureFusion")
    names = _TRANSPOSE_FORGOTTEN


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
    layers = ("FeatureMixing", "GatedFeatureFusion")
    fm = _DefaultInitFM
    gff = _DefaultInitGFF


class _AllBuffersHandle(ref_adapter.TorchHandle):
    def _tensors(self):
        return {**dict(self.module.named_buffers()), **self.module.state_dict(keep_vars=True)}


class _VolatileStats(ref.BatchNorm):
    def register_buffer(self, name, tensor, persistent=True):
        super().register_buffer(name, tensor, persistent=False)


class NonPersistentRunningStats(_TorchMutant):
    mistake = "running statistics registered with persistent=False: not in the state_dict"
    catches = ("FM-SAVE-NATIVE",)
    fm = _with_norm("Volatile", lambda n: _VolatileStats(n, eps=EPSILON, momentum=0.99))
    handle = _AllBuffersHandle


class _EvalIgnoringDropout(ref.FeatureMixing):
    def forward(self, input):
        z = self.norm(input.reshape(input.shape[0], -1)).reshape(input.shape)
        h = F.dropout(F.relu(self.dense1(z)), self.dropout)  # training defaults to True
        return input + F.dropout(self.dense2(h), self.dropout)


class FunctionalDropoutAlwaysOn(_TorchMutant):
    mistake = "F.dropout called without training=self.training: dropout in eval mode"
    catches = ("FM-DROPOUT-INFERENCE",)
    fm = _EvalIgnoringDropout


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
    fm = _with_norm("Detached", lambda n: _DetachedStatsNorm(n, eps=EPSILON, momentum=0.99))
