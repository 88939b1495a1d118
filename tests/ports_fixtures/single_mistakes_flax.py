"""Flax NNX ports that each make one mistake, for measuring the root-cause stage.

Written the way a Flax NNX port is: ``nnx.BatchNorm``, ``nnx.LayerNorm``, ``nnx.Linear`` and
``nnx.Dropout`` submodules, ``jax.nn`` functions, the mode switched by ``train()`` /
``eval()``. ``Conforming`` follows the spec (its BatchNorm configured as the spec says, its
moving statistics kept in the parameters' dtype); each port below changes one thing, most of
them mistakes from public reports about porting these layers to JAX (``nnx.BatchNorm`` left at
its momentum 0.99 or epsilon 1e-5, ``jax.nn.gelu``'s default tanh approximation,
``use_running_average`` inverted, PyTorch's unbiased running variance, the rate used as keep
probability, dropout left active in ``eval()``, ``nnx.LayerNorm`` where BatchNorm was meant).

``expected`` is what the root-cause stage must name: the variant choices that reproduce the
mistake (``portspec.variants``; "precision" the dtype a float64 call is partly computed in); a
string, a pattern the one root cause must match where the evidence is the layer's build rather
than its computation; for a mistake outside the variant space, a pattern the staged probe's
cause must match (``portspec.localise``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from measure_layers import mistaken

from portspec.layers import LAYERS
from portspec.ports import FlaxPortAdapter, absent, flax_names, held_as, transpose

FM_SPEC, GFF_SPEC = LAYERS["FeatureMixing"], LAYERS["GatedFeatureFusion"]
glorot, zeros = nnx.initializers.glorot_uniform(), nnx.initializers.zeros_init()


class TorchStyleBatchNorm(nnx.Module):
    """A BatchNorm written out the way a port from PyTorch writes it; ``unbiased`` and
    ``eps_outside`` are the two habits it brings along."""

    unbiased, eps_outside = True, False
    rebind = False  # self.mean = ... where self.mean[...] = ... was meant: a plain array after

    def __init__(self, features, *, momentum, epsilon, param_dtype, rngs):
        self.momentum, self.epsilon = momentum, epsilon
        self.scale = nnx.Param(jnp.ones((features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros((features,), param_dtype))
        self.var = nnx.BatchStat(jnp.ones((features,), param_dtype))
        self.use_running_average = False

    def __call__(self, x):
        if self.use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            mean, var = x.mean(0), x.var(0)
            running = x.var(0, ddof=1) if self.unbiased and x.shape[0] > 1 else var
            m = self.momentum
            if self.rebind:
                self.mean = m * self.mean[...] + (1 - m) * mean
                self.var = m * self.var[...] + (1 - m) * running
            else:
                self.mean[...] = m * self.mean[...] + (1 - m) * mean
                self.var[...] = m * self.var[...] + (1 - m) * running
        if self.eps_outside:
            return self.scale[...] * (x - mean) / (jnp.sqrt(var) + self.epsilon) + self.bias[...]
        return self.scale[...] * (x - mean) / jnp.sqrt(var + self.epsilon) + self.bias[...]


class FeatureMixing(nnx.Module):
    """nnx.BatchNorm over the flattened (L*N) features, Linear-ReLU-Dropout-Linear-Dropout
    across channels, plus the input. The methods are the places a port goes wrong."""

    def __init__(self, n_series, input_size, dropout, ff_dim, *, dtype=None,
                 param_dtype=jnp.float32, rngs):
        config = FM_SPEC.validate_config({"n_series": n_series, "input_size": input_size,
                                          "dropout": dropout, "ff_dim": ff_dim})
        self.n_series, self.input_size = config["n_series"], config["input_size"]
        self.dropout, self.ff_dim = config["dropout"], config["ff_dim"]
        self.norm = self.make_norm(param_dtype, rngs)
        linear = {"dtype": dtype, "param_dtype": param_dtype, "kernel_init": glorot,
                  "bias_init": zeros, "rngs": rngs}
        self.dense1 = nnx.Linear(self.n_series, self.ff_dim, **linear)
        self.dense2 = nnx.Linear(self.ff_dim, self.n_series, **linear)
        self.dropout1 = nnx.Dropout(self.rate(), rngs=rngs)
        self.dropout2 = nnx.Dropout(self.rate(), rngs=rngs)
        self.use_running_average = False  # train() / eval() set it, as on the submodules

    def make_norm(self, param_dtype, rngs):
        # use_fast_variance=False: the two-pass variance (nnx.BatchNorm's default one-pass
        # variance is the batchnorm-fast-variance port's mistake)
        norm = nnx.BatchNorm(self.input_size * self.n_series, momentum=0.01, epsilon=1e-3,
                             use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)
        return _wide_statistics(norm, param_dtype)

    def rate(self):
        return self.dropout

    def get_config(self):
        return {"n_series": self.n_series, "input_size": self.input_size,
                "dropout": self.dropout, "ff_dim": self.ff_dim}

    def normalise(self, x):
        flat = x.reshape(x.shape[0], self.input_size * self.n_series)
        return self.norm(flat).reshape(x.shape)

    def activation(self, h):
        return jax.nn.relu(h)

    def branch(self, z):
        return self.dropout2(self.dense2(self.dropout1(self.activation(self.dense1(z)))))

    def __call__(self, x):
        FM_SPEC.check_call(self.get_config(), tuple(x.shape), str(x.dtype))
        z = self.normalise(x)
        return self.residual(x, z, self.branch(z))

    def residual(self, x, z, y):
        return x + y


def _wide_statistics(norm, param_dtype):
    """nnx.BatchNorm keeps its statistics in float32 whatever ``param_dtype`` says; a float64
    layer keeps them in float64."""
    stat = jnp.promote_types(param_dtype, jnp.float32)
    norm.mean = nnx.BatchStat(norm.mean[...].astype(stat))
    norm.var = nnx.BatchStat(norm.var[...].astype(stat))
    return norm


ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu,
               "softmax": lambda z: jax.nn.softmax(z, axis=-1)}


class GatedFeatureFusion(nnx.Module):
    """``g = activation(Linear(concat([a, b])))``, ``g * a + (1 - g) * b``."""

    def __init__(self, features, activation="sigmoid", *, dtype=None, param_dtype=jnp.float32,
                 rngs):
        self.features = features
        self.activation = GFF_SPEC.validate_config({"activation": activation})["activation"]
        self.gate = nnx.Linear(2 * features, features, use_bias=self.use_bias, dtype=dtype,
                               param_dtype=param_dtype, kernel_init=glorot, bias_init=zeros,
                               rngs=rngs)

    use_bias = True

    def get_config(self):
        return {"activation": self.activation}

    def gate_activation(self, z):
        return ACTIVATIONS[self.activation](z)

    def __call__(self, inputs):
        config = self.get_config()
        if not isinstance(inputs, (list, tuple)):
            GFF_SPEC.check_call(config, tuple(jnp.shape(inputs)), [str(inputs.dtype)],
                                features=self.features)
        GFF_SPEC.check_call(config, [tuple(t.shape) for t in inputs],
                            [str(t.dtype) for t in inputs], features=self.features)
        a, b = inputs
        g = self.gate_activation(self.gate(self.gate_input(a, b)))
        return g * a + (1 - g) * b

    def gate_input(self, a, b):
        return jnp.concatenate([a, b], axis=-1)


FM_NAMES = ("norm.gamma", "norm.beta", "norm.moving_mean", "norm.moving_variance",
            "dense1.kernel", "dense1.bias", "dense2.kernel", "dense2.bias")
STATS = ("norm.moving_mean", "norm.moving_variance")


def _weights(fm_map=None, gff_map=None):
    return {"FeatureMixing": {**{n: flax_names(n) for n in FM_NAMES}, **(fm_map or {})},
            "GatedFeatureFusion": {**{n: flax_names(n) for n in ("gate.kernel", "gate.bias")},
                                   **(gff_map or {})}}


class Conforming(FlaxPortAdapter):
    name = "conforming"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    fm, gff = FeatureMixing, GatedFeatureFusion
    expected: dict | str | None = {}
    weights = _weights()
    low_precision = ("bfloat16", "float16")

    def construct(self, layer, config, *, input_shapes, dtype, rngs):
        kwargs = {}
        if dtype is not None:
            low = dtype in self.low_precision
            kwargs = {"dtype": jnp.dtype(dtype), "param_dtype": jnp.float32 if low else dtype}
        if layer == "FeatureMixing":
            return self.fm(**config, **kwargs, rngs=rngs)
        return self.gff(input_shapes[0][-1], **config, **kwargs, rngs=rngs)

    def config_of(self, layer, module):
        return module.get_config()


def _params32(self, *args, param_dtype=None, **kwargs):
    # param_dtype left at float32 whatever the layer's dtype: every weight float32
    FeatureMixing.__init__(self, *args, param_dtype=jnp.float32, **kwargs)


def _sown(self, x):
    out = FeatureMixing.__call__(self, x)
    self.sow(nnx.Intermediate, "output", out)  # a tuple of every call's output
    return out


def port(name, expected, fm=None, gff=None, weights=None):
    """A port like Conforming with one mistake: overridden FeatureMixing /
    GatedFeatureFusion members, or its own weight map."""
    title = name.title().replace("-", "").replace(".", "")
    body = {"name": name, "expected": expected,
            "fm": type(f"FM{title}", (FeatureMixing,), fm or {}),
            "gff": type(f"GFF{title}", (GatedFeatureFusion,), gff or {}),
            "weights": weights or _weights(), "layers": mistaken(fm, gff, weights)}
    return type(title, (Conforming,), body)


def _batch_norm(wide=True, **kwargs):
    kwargs.setdefault("use_fast_variance", False)

    def make_norm(self, param_dtype, rngs):
        norm = nnx.BatchNorm(self.input_size * self.n_series, param_dtype=param_dtype,
                             rngs=rngs, **kwargs)
        return _wide_statistics(norm, param_dtype) if wide else norm

    return {"make_norm": make_norm}


def _torch_style(**habits):
    cls = type("Habit", (TorchStyleBatchNorm,), habits)

    def make_norm(self, param_dtype, rngs):
        return cls(self.input_size * self.n_series, momentum=0.01, epsilon=1e-3,
                   param_dtype=param_dtype, rngs=rngs)

    return {"make_norm": make_norm}


def _layer_norm_channels(self, param_dtype, rngs):  # nnx.LayerNorm at its defaults
    return nnx.LayerNorm(self.n_series, param_dtype=param_dtype, rngs=rngs)


def _rms_norm(self, param_dtype, rngs):  # nnx.RMSNorm over the flattened L*N features
    return nnx.RMSNorm(self.input_size * self.n_series, epsilon=1e-3, param_dtype=param_dtype,
                       rngs=rngs)


def _per_channel(self, param_dtype, rngs):  # nnx.BatchNorm(N) on (batch, L, N)
    norm = nnx.BatchNorm(self.n_series, momentum=0.01, epsilon=1e-3, use_fast_variance=False,
                         param_dtype=param_dtype,
                         rngs=rngs)
    return _wide_statistics(norm, param_dtype)


def _channel_major(self, x):
    flat = x.transpose(0, 2, 1).reshape(x.shape[0], -1)
    return self.norm(flat).reshape(x.shape[0], self.n_series, self.input_size).transpose(0, 2, 1)


def _inverted_running_average(self, x):
    flat = x.reshape(x.shape[0], -1)
    # use_running_average is True in eval(); the port passes its negation
    return self.norm(flat, use_running_average=not self.use_running_average).reshape(x.shape)


LN_CHANNELS = _weights({"norm.gamma": held_as("norm.scale", why="a LayerNorm (N,) scale"),
                        "norm.beta": held_as("norm.bias", why="a LayerNorm (N,) offset"),
                        **{k: absent("nnx.LayerNorm keeps no moving statistics")
                           for k in STATS}})
RMS = _weights({"norm.gamma": "norm.scale",
                "norm.beta": absent("RMSNorm has no offset"),
                **{k: absent("nnx.RMSNorm keeps no moving statistics") for k in STATS}})
PER_CHANNEL = _weights({k: held_as(flax_names(k)[0], why="one statistic per channel")
                        for k in ("norm.gamma", "norm.beta", *STATS)})
KERNELS_AS_TORCH = _weights({k: (flax_names(k)[0], transpose)
                             for k in ("dense1.kernel", "dense2.kernel")},
                            {"gate.kernel": ("gate.kernel", transpose)})


def _when(name, fn):
    """The gate activation: ``fn`` where the config says ``name``, else the right one."""

    def gate_activation(self, z):
        return fn(z) if self.activation == name else ACTIVATIONS[self.activation](z)

    return {"gate_activation": gate_activation}


def _dense1_without_bias(self, *args, rngs, **kwargs):
    FeatureMixing.__init__(self, *args, rngs=rngs, **kwargs)
    old = self.dense1
    self.dense1 = nnx.Linear(self.n_series, self.ff_dim, use_bias=False, dtype=old.dtype,
                             param_dtype=old.param_dtype, kernel_init=glorot, rngs=rngs)


def _linears_in_param_dtype(self, *args, rngs, **kwargs):
    """The Linears built with dtype=param_dtype (NNX's two arguments confused)."""
    FeatureMixing.__init__(self, *args, rngs=rngs, **kwargs)
    for name in ("dense1", "dense2"):
        old = getattr(self, name)
        setattr(self, name, nnx.Linear(old.in_features, old.out_features,
                                       dtype=old.param_dtype, param_dtype=old.param_dtype,
                                       kernel_init=glorot, bias_init=zeros, rngs=rngs))


def _train_argument(self, x, train=True):
    """A linen-style ``train`` argument defaulting to True: .eval() does not reach it."""
    FM_SPEC.check_call(self.get_config(), tuple(x.shape), str(x.dtype))
    flat = x.reshape(x.shape[0], self.input_size * self.n_series)
    z = self.norm(flat, use_running_average=not train).reshape(x.shape)
    h = self.dropout1(self.activation(self.dense1(z)), deterministic=not train)
    return x + self.dropout2(self.dense2(h), deterministic=not train)


def _dropouts_of_seed_0(self, *args, rngs, **kwargs):
    FeatureMixing.__init__(self, *args, rngs=rngs, **kwargs)
    self.dropout1 = nnx.Dropout(self.rate(), rngs=nnx.Rngs(0))
    self.dropout2 = nnx.Dropout(self.rate(), rngs=nnx.Rngs(0))


def _dense2_zeros(self, *args, rngs, **kwargs):
    FeatureMixing.__init__(self, *args, rngs=rngs, **kwargs)
    old = self.dense2
    self.dense2 = nnx.Linear(self.ff_dim, self.n_series, dtype=old.dtype,
                             param_dtype=old.param_dtype, kernel_init=zeros, bias_init=zeros,
                             rngs=rngs)


def _float_inputs_only(self, x):
    if x.dtype not in (jnp.float32, jnp.float64):  # "floating" meant float32 or float64
        raise TypeError(f"FeatureMixing input dtype must be floating, got {x.dtype}")
    return FeatureMixing.__call__(self, x)


PORTS = [
    # nnx.BatchNorm's constants
    port("batchnorm-flax-momentum", {"momentum": 0.99}, fm=_batch_norm(epsilon=1e-3)),
    port("batchnorm-flax-epsilon", {"eps": 1e-5}, fm=_batch_norm(momentum=0.01)),
    port("batchnorm-momentum-0.1", {"momentum": 0.1},
         fm=_batch_norm(momentum=0.1, epsilon=1e-3)),
    port("batchnorm-float32-statistics", {"precision": "float32"},
         fm=_batch_norm(wide=False, momentum=0.01, epsilon=1e-3)),
    # its default one-pass variance, E[x^2] - E[x]^2, alone
    port("batchnorm-fast-variance", r"the batch variance computed in one pass as E\[x\^2\]",
         fm=_batch_norm(momentum=0.01, epsilon=1e-3, use_fast_variance=True)),
    # nnx.BatchNorm(features, rngs=rngs) as it comes (its one-pass variance aside, the port
    # above): momentum 0.99, epsilon 1e-5, float32
    # statistics; one line of the port, three differences
    port("batchnorm-flax-defaults", {"momentum": 0.99, "eps": 1e-5, "precision": "float32"},
         fm=_batch_norm(wide=False)),
    port("unbiased-running-variance", {"update_ddof": 1}, fm=_torch_style()),
    port("moving-stats-rebound-to-arrays",
         r"a call rebinds the port's norm\.mean to a plain .*: after it the layer's state",
         fm=_torch_style(unbiased=False, rebind=True)),
    port("epsilon-outside-sqrt", {"eps_where": "outside"},
         fm=_torch_style(unbiased=False, eps_outside=True)),
    port("use-running-average-inverted", {"norm_training": "inverted"},
         fm={"normalise": _inverted_running_average}),
    # where and over what it normalises
    port("layernorm-over-channels", {"norm": "layer-N", "eps": 1e-6},
         fm={"make_norm": _layer_norm_channels, "normalise": lambda self, x: self.norm(x)},
         weights=LN_CHANNELS),
    # RMSNorm: no mean subtracted, no offset, per sample
    port("rmsnorm-over-the-flattened-features", {"norm": "rms-LN"},
         fm={"make_norm": _rms_norm}, weights=RMS),
    port("batchnorm-per-channel", {"norm": "batch-channel"},
         fm={"make_norm": _per_channel, "normalise": lambda self, x: self.norm(x)},
         weights=PER_CHANNEL),
    port("flatten-channel-major", {"flatten": "F"}, fm={"normalise": _channel_major}),
    # the MLP
    port("gelu-of-jax-nn", {"activation": "gelu-tanh"},
         fm={"activation": lambda self, h: jax.nn.gelu(h)}),  # approximate=True by default
    port("gelu-exact", {"activation": "gelu"},
         fm={"activation": lambda self, h: jax.nn.gelu(h, approximate=False)}),
    port("kernels-read-as-torch", {"transpose": True}, weights=KERNELS_AS_TORCH),
    port("linears-computing-in-param-dtype", r"under bfloat16 compute the port's dense1 "
         r"\(dtype=float32\), dense2 \(dtype=float32\) compute in float32",
         fm={"__init__": _linears_in_param_dtype}),
    port("dense1-without-bias", {"biases": ("dense2",)}, fm={"__init__": _dense1_without_bias},
         weights=_weights({"dense1.bias": absent("nnx.Linear(use_bias=False)")})),
    # dropout
    port("dropout-rate-as-keep", {"dropout_rate": "keep"},
         fm={"rate": lambda self: 1.0 - self.dropout}),
    port("dropout-in-eval", {"dropout_inference": True},
         fm={"branch": lambda self, z: self.dropout2(self.dense2(self.dropout1(
             self.activation(self.dense1(z)), deterministic=False)), deterministic=False)}),
    port("dropout-first-site-only", {"sites": ("dropout1",)},
         fm={"branch": lambda self, z: self.dense2(self.dropout1(
             self.activation(self.dense1(z))))}),
    # the residual
    port("no-residual", {"residual": "none"}, fm={"residual": lambda self, x, z, y: y}),
    port("train-argument-defaulting-to-true", {"training_flag": "always"},
         fm={"__call__": _train_argument}),
    port("dropout-rngs-of-seed-0", r"^FeatureMixing: the dropout masks do not depend on the "
         r"layer's seed", fm={"__init__": _dropouts_of_seed_0}),
    port("residual-added-in-float32", r"^FeatureMixing: under bfloat16 compute the output "
         r"comes out float32: a bfloat16 value is converted to float32 in the port's own code",
         fm={"residual": lambda self, x, z, y: x.astype(jnp.promote_types(x.dtype,
                                                                           jnp.float32)) + y}),
    port("low-precision-inputs-refused", r"^FeatureMixing: a bfloat16 call raises where the "
         r"same call in float32 runs, and the port's error names bfloat16",
         fm={"__call__": _float_inputs_only}),
    port("dense2-kernel-initialised-to-zeros", r"^FeatureMixing: initial weights set to the "
         r"constant 0 instead of Glorot-uniform \[dense2.kernel: every value equal\]",
         fm={"__init__": _dense2_zeros}),
    port("param-dtype-left-at-float32", r"^FeatureMixing: a float64 call computed partly in "
         r"float32: the float64 layer holds all its weights in float32",
         fm={"__init__": _params32}),
    # not a mistake: a value recorded by the call (Module.sow) is no weight
    port("sows-its-output", {}, fm={"__call__": _sown}),
    # GatedFeatureFusion
    port("gff-hard-sigmoid", {"sigmoid": "hard"}, gff=_when("sigmoid", jax.nn.hard_sigmoid)),
    port("gff-softmax-axis-0", {"axis": 0},
         gff=_when("softmax", lambda z: jax.nn.softmax(z, axis=0))),
    port("gff-concat-swapped", {"concat": "ba"},
         gff={"gate_input": lambda self, a, b: jnp.concatenate([b, a], axis=-1)}),
    port("gff-no-bias", r"gate\.bias", gff={"use_bias": False},
         weights=_weights(gff_map={"gate.bias": absent("nnx.Linear(use_bias=False)")})),
    # outside the variant space: named by the staged probe (portspec.localise), a pattern
    port("softplus-activation", r"the activation after the first Dense is softplus, not ReLU",
         fm={"activation": lambda self, h: jax.nn.softplus(h)}),
    port("residual-halved", r"the residual: .* returns 0\.5 x in inference and training",
         fm={"residual": lambda self, x, z, y: 0.5 * x + y}),
]

ADAPTERS = [Conforming(), *(cls() for cls in PORTS)]
