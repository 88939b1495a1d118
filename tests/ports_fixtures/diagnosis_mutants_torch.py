"""PyTorch ports written with spec.ports.TorchPortAdapter: one correct, the rest one mistake each.

``Good`` conforms to the spec (except config validation and call errors, which it leaves out).
Each mutant changes one thing of it; tests/test_diagnoses.py runs each against the clause that
must diagnose it. Mutants are picked by ``name`` through verify's ``tasks``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from portspec.ports import TorchPortAdapter, identity, transpose


class FM(nn.Module):
    """FeatureMixing to the spec: BatchNorm in the Keras sense, written out."""

    eps, keep = 1e-3, 0.01  # keep: the share of the old moving statistic
    update, ddof, flatten, residual = True, 0, "C", "input"
    batch_stats_in_inference = moving_stats_in_training = detach_stats = False

    def __init__(self, n_series, input_size, dropout, ff_dim):
        super().__init__()
        self.n_series, self.input_size, self.dropout, self.ff_dim = (
            n_series,
            input_size,
            dropout,
            ff_dim,
        )
        flat = n_series * input_size
        self.gamma, self.beta = nn.Parameter(torch.ones(flat)), nn.Parameter(torch.zeros(flat))
        self.register_buffer("moving_mean", torch.zeros(flat))
        self.register_buffer("moving_var", torch.ones(flat))
        self.lin1, self.lin2 = nn.Linear(n_series, ff_dim), nn.Linear(ff_dim, n_series)
        self.init()
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def init(self):
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def normalise(self, flat):
        batch = self.training or self.batch_stats_in_inference
        if batch and not self.moving_stats_in_training:
            stats = flat.detach() if self.detach_stats else flat
            mean = stats.mean(0)
            var = stats.var(0, correction=self.ddof) if len(flat) > self.ddof else mean * 0
        else:  # copies: the update below is in place
            mean, var = self.moving_mean.clone(), self.moving_var.clone()
        if (self.training or self.batch_stats_in_inference) and self.update:
            with torch.no_grad():
                self.moving_mean.mul_(self.keep).add_((1 - self.keep) * flat.mean(0))
                self.moving_var.mul_(self.keep).add_((1 - self.keep) * self.moving_update(flat))
        return self.gamma * (flat - mean) / torch.sqrt(var + self.eps) + self.beta

    def moving_update(self, flat):
        return flat.var(0, correction=0)

    def branch(self, z):
        return self.drop2(self.lin2(self.drop1(F.relu(self.lin1(z)))))

    def forward(self, x):
        seq = x if self.flatten == "C" else x.transpose(1, 2)
        z = self.normalise(seq.reshape(len(x), -1)).reshape(seq.shape)
        z = z if self.flatten == "C" else z.transpose(1, 2)
        y = self.branch(z)
        return {"input": x + y, "none": y, "normalised": z + y}[self.residual]


class GFF(nn.Module):
    swap_roles = swap_concat = both = False
    softmax_axis, fixed_activation = -1, None

    def __init__(self, features, activation="sigmoid"):
        super().__init__()
        self.activation = activation
        self.gate = nn.Linear(2 * features, features)
        nn.init.xavier_uniform_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, a, b):
        z = self.gate(torch.cat([b, a] if self.swap_concat else [a, b], dim=-1))
        name = self.fixed_activation or self.activation
        if name == "softmax":
            g = torch.softmax(z, dim=self.softmax_axis)
        else:
            g = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[name](z)
        if self.both:
            return g * a + g * b
        return g * b + (1 - g) * a if self.swap_roles else g * a + (1 - g) * b


WEIGHTS = {
    "FeatureMixing": {
        "norm.gamma": ("gamma", identity),
        "norm.beta": ("beta", identity),
        "norm.moving_mean": ("moving_mean", identity),
        "norm.moving_variance": ("moving_var", identity),
        "dense1.kernel": ("lin1.weight", transpose),
        "dense1.bias": ("lin1.bias", identity),
        "dense2.kernel": ("lin2.weight", transpose),
        "dense2.bias": ("lin2.bias", identity),
    },
    "GatedFeatureFusion": {
        "gate.kernel": ("gate.weight", transpose),
        "gate.bias": ("gate.bias", identity),
    },
}


class Good(TorchPortAdapter):
    name = "good"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    low_precision = ("bfloat16", "float16")
    weights = WEIGHTS
    fm, gff = FM, GFF

    def construct(self, layer, config, *, input_shapes, dtype):
        if layer == "FeatureMixing":
            return self.fm(**config)
        return self.gff(input_shapes[0][-1], **config)


def mutant(name, fm=None, gff=None, **attrs):
    """A port like Good with a FeatureMixing / GatedFeatureFusion changed by ``fm`` / ``gff``."""
    body = {"name": name, **attrs}
    if fm:
        body["fm"] = type(f"FM_{name}", (FM,), fm) if isinstance(fm, dict) else fm
    if gff:
        body["gff"] = type(f"GFF_{name}", (GFF,), gff)
    return type(name.title().replace("-", ""), (Good,), body)


class _Unbiased(FM):
    def moving_update(self, flat):
        return flat.var(0, correction=1)


class _TorchBatchNorm(FM):
    """nn.BatchNorm1d configured as neuralforecast does: eps 1e-3 and momentum=0.01."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.gamma, self.beta, self.moving_mean, self.moving_var
        self.bn = nn.BatchNorm1d(self.n_series * self.input_size, eps=1e-3, momentum=0.01)

    def normalise(self, flat):
        return self.bn(flat)


TORCH_BN = {
    "norm.gamma": ("bn.weight", identity),
    "norm.beta": ("bn.bias", identity),
    "norm.moving_mean": ("bn.running_mean", identity),
    "norm.moving_variance": ("bn.running_var", identity),
}


class _Detached(FM):
    detach_stats = True


class _DropoutAlwaysOn(FM):
    def branch(self, z):
        h = F.dropout(F.relu(self.lin1(z)), self.dropout)  # training defaults to True
        return F.dropout(self.lin2(h), self.dropout)


class _NotInverted(FM):
    def branch(self, z):
        def drop(v):
            return v * (torch.rand_like(v) >= self.dropout) if self.training else v

        return drop(self.lin2(drop(F.relu(self.lin1(z)))))


class _RateAsKeep(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop1, self.drop2 = nn.Dropout(1 - self.dropout), nn.Dropout(1 - self.dropout)


class _FixedRate(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop1, self.drop2 = nn.Dropout(0.1), nn.Dropout(0.1)  # whatever the config's


class _OneSite(FM):
    def branch(self, z):
        return self.lin2(self.drop1(F.relu(self.lin1(z))))


class _SecondSiteOnly(FM):
    def branch(self, z):
        return self.drop2(self.lin2(F.relu(self.lin1(z))))


class _SameMasks(FM):
    def branch(self, z):
        torch.manual_seed(0)  # every call draws the same masks
        return super().branch(z)


class _Dropout1dSecond(FM):
    """nn.Dropout1d at the second site: on (batch, time, channel) it takes time for its channel
    axis and drops whole rows, one decision per sample and time step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop2 = nn.Dropout1d(self.dropout)


class _Dropout1dBoth(_Dropout1dSecond):
    """nn.Dropout1d at both sites: the hidden units of a sample and time step share one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drop1 = nn.Dropout1d(self.dropout)


class _DivideByKeep(FM):
    def branch(self, z):
        def drop(v):
            if not self.training:
                return v
            keep = torch.rand_like(v) >= self.dropout
            return torch.where(keep, v / (1 - self.dropout), torch.zeros_like(v))

        return drop(self.lin2(drop(F.relu(self.lin1(z)))))


class _TorchInit(FM):
    def init(self):
        pass  # nn.Linear's own: Kaiming-uniform kernel, U(+-1/sqrt(fan_in)) bias


class _Counter(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("num_batches_tracked", torch.tensor(0))


class _StatsAsParameters(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        flat = self.n_series * self.input_size
        del self.moving_mean, self.moving_var
        self.moving_mean = nn.Parameter(torch.zeros(flat))
        self.moving_var = nn.Parameter(torch.ones(flat))


class _AffineFrozen(FM):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gamma.requires_grad_(False)
        self.beta.requires_grad_(False)


class _StatsNotBuffers(FM):
    """Moving statistics as plain tensor attributes: not registered, so no state of the module."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        mean, var = self.moving_mean, self.moving_var
        del self.moving_mean, self.moving_var
        self.__dict__.update(moving_mean=mean, moving_var=var)


class _BiasByHand(FM):
    """The second Dense's bias added by hand to F.linear's output: the same values, but under
    autocast a float32 bias added to a bfloat16 result promotes it to float32."""

    def branch(self, z):
        h = self.drop1(F.relu(self.lin1(z)))
        return self.drop2(F.linear(h, self.lin2.weight) + self.lin2.bias)


class _SkipDetached(FM):
    """The residual added from a detached input: the same values, no gradient through the
    skip connection."""

    def forward(self, x):
        return super().forward(x) - x + x.detach()


class _Float32Inside(FM):
    """Computes in float32 whatever it is given, like layers whose sublayers ignore the dtype."""

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


class _Float32Port(Good):
    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        handle = super().build(layer, config, input_shapes=input_shapes, seed=seed, dtype=None)
        handle.dtype = dtype
        return handle


UNTRANSPOSED = {
    layer: {k: (path, identity) for k, (path, _) in names.items()}
    for layer, names in WEIGHTS.items()
}

MUTANTS = [
    mutant("momentum-flipped", fm={"keep": 0.99}),
    mutant("unbiased-moving-variance", fm=_Unbiased),
    mutant("no-moving-update", fm={"update": False}),
    mutant(
        "torch-batchnorm1d",
        fm=_TorchBatchNorm,
        weights={**WEIGHTS, "FeatureMixing": {**WEIGHTS["FeatureMixing"], **TORCH_BN}},
    ),
    mutant("epsilon-1e-5", fm={"eps": 1e-5}),
    mutant("flatten-time-last", fm={"flatten": "F"}),
    mutant("batch-stats-in-inference", fm={"batch_stats_in_inference": True}),
    mutant("moving-stats-in-training", fm={"moving_stats_in_training": True}),
    mutant("unbiased-normalisation", fm={"ddof": 1}),
    mutant("no-residual", fm={"residual": "none"}),
    mutant("residual-normalised", fm={"residual": "normalised"}),
    mutant("dropout-in-inference", fm=_DropoutAlwaysOn),
    mutant("dropout-not-inverted", fm=_NotInverted),
    mutant("dropout-rate-as-keep", fm=_RateAsKeep),
    mutant("dropout-rate-fixed", fm=_FixedRate),
    mutant("one-dropout-site", fm=_OneSite),
    mutant("first-dropout-site-missing", fm=_SecondSiteOnly),
    mutant("dropout-same-masks", fm=_SameMasks),
    mutant("dropout-divides-by-keep", fm=_DivideByKeep),
    mutant("dropout1d-second-site", fm=_Dropout1dSecond),
    mutant("dropout1d-both-sites", fm=_Dropout1dBoth),
    mutant("torch-init", fm=_TorchInit),
    mutant("detached-batch-stats", fm=_Detached),
    mutant("kernel-not-transposed", weights=UNTRANSPOSED),
    mutant("batch-counter", fm=_Counter),
    mutant("stats-as-parameters", fm=_StatsAsParameters),
    mutant("bn-affine-frozen", fm=_AffineFrozen),
    mutant("stats-not-buffers", fm=_StatsNotBuffers),
    mutant("bias-added-by-hand", fm=_BiasByHand),
    mutant("skip-detached", fm=_SkipDetached),
    type("Float32Inside", (_Float32Port,), {"name": "float32-inside", "fm": _Float32Inside}),
    mutant("gate-roles-swapped", gff={"swap_roles": True}),
    mutant("concat-swapped", gff={"swap_concat": True}),
    mutant("gate-on-both", gff={"both": True}),
    mutant("softmax-first-axis", gff={"softmax_axis": 0}),
    mutant("activation-ignored", gff={"fixed_activation": "sigmoid"}),
    # dropout on the output in every call, inference too: random where the spec has no dropout
    mutant("gate-output-dropped", gff={
        "forward": lambda self, a, b: F.dropout(GFF.forward(self, a, b), 0.1, training=True)}),
]

ADAPTERS = [Good(), *(cls() for cls in MUTANTS)]
