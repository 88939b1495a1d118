"""Keras 3 ports that each make one mistake, for measuring the root-cause stage.

Written the way a Keras port is: ``keras.layers.BatchNormalization``, ``LayerNormalization``,
``Dense`` and ``Dropout`` sublayers named after the spec's weights, ``keras.ops`` in ``call``.
``Conforming`` follows the spec; each port below overrides one thing of it, most of them
mistakes from public reports about porting these layers between Keras, PyTorch and JAX (the
momentum read in PyTorch's sense, PyTorch's epsilon, ``keras.ops.gelu``'s tanh approximation,
Keras 2's hard sigmoid, the rate used as keep probability, ``training`` inverted or forced,
LayerNormalization where BatchNormalization was meant, a flatten in the other order).

``expected`` is what the root-cause stage must name: the variant choices that reproduce the
mistake (``portspec.variants``); a string, a pattern the one root cause must match where the
evidence is the layer's build rather than its computation (a missing weight), or of a mistake
outside the variant space, which the staged probe names (``portspec.localise``).

The expectations hold on the TensorFlow backend, where ``BatchNormalization`` and
``LayerNormalization`` keep float64; Keras 3.15's jax and torch backends compute their moments
of a float64 input in float32.
"""

from __future__ import annotations

import keras
from keras import layers, ops
from measure_layers import mistaken

from portspec.layers import LAYERS
from portspec.ports import KerasPortAdapter, absent, held_as, identity, reshape, transpose

FM_SPEC, GFF_SPEC = LAYERS["FeatureMixing"], LAYERS["GatedFeatureFusion"]
PACKAGE = "single_mistakes_keras"


def _shapes(input_shape):
    if input_shape and isinstance(input_shape[0], (list, tuple)):
        return [tuple(s) for s in input_shape]
    return tuple(input_shape)


class FeatureMixing(layers.Layer):
    """BatchNorm over the flattened (L*N) features, Dense-ReLU-Dropout-Dense-Dropout across
    channels, plus the input. The methods are the places a port goes wrong."""

    def __init__(self, n_series, input_size, dropout, ff_dim, **kwargs):
        super().__init__(**kwargs)
        config = FM_SPEC.validate_config({"n_series": n_series, "input_size": input_size,
                                          "dropout": dropout, "ff_dim": ff_dim})
        self.n_series, self.input_size = config["n_series"], config["input_size"]
        self.dropout, self.ff_dim = config["dropout"], config["ff_dim"]
        policy = self.sublayer_dtype()
        self.norm = self.make_norm(policy)
        self.dense1 = layers.Dense(self.ff_dim, dtype=policy, name="dense1")
        self.dense2 = self.make_dense2(policy)
        self.dropout1 = layers.Dropout(self.rate(), dtype=policy, name="dropout1")
        self.dropout2 = layers.Dropout(self.rate(), dtype=policy, name="dropout2")

    def sublayer_dtype(self):
        return self.dtype_policy

    def make_norm(self, policy):
        return layers.BatchNormalization(momentum=0.01, epsilon=1e-3, dtype=policy, name="norm")

    def make_dense2(self, policy):
        return layers.Dense(self.n_series, dtype=policy, name="dense2")

    def rate(self):
        return self.dropout

    def _config(self):
        return {"n_series": self.n_series, "input_size": self.input_size,
                "dropout": self.dropout, "ff_dim": self.ff_dim}

    def build(self, input_shape):
        FM_SPEC.check_call(self._config(), tuple(input_shape), "float32")
        self.norm.build(self.norm_input_shape())
        self.dense1.build((None, self.input_size, self.n_series))
        self.dense2.build((None, self.input_size, self.ff_dim))

    def norm_input_shape(self):
        return (None, self.input_size * self.n_series)

    def normalise(self, x, training):
        flat = ops.reshape(x, (-1, self.input_size * self.n_series))
        return ops.reshape(self.norm(flat, training=training), ops.shape(x))

    def activation(self, h):
        return ops.relu(h)

    def drop(self, layer, v, training):
        if training and layer.rate >= 1.0:  # Keras's dropout divides by 1 - rate
            return v * 0.0
        return layer(v, training=training)

    def branch(self, z, training):
        h = self.drop(self.dropout1, self.activation(self.dense1(z)), training)
        return self.drop(self.dropout2, self.dense2(h), training)

    def call(self, inputs, training=None):
        FM_SPEC.check_call(self._config(), tuple(inputs.shape),
                           keras.backend.standardize_dtype(inputs.dtype))
        return self.combine(inputs, training)

    def combine(self, x, training):
        return x + self.branch(self.normalise(x, training), training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self._config()}


class GatedFeatureFusion(layers.Layer):
    """``g = activation(Dense(concat([a, b])))``, ``g * a + (1 - g) * b``."""

    def __init__(self, activation="sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.activation = GFF_SPEC.validate_config({"activation": activation})["activation"]
        self.gate = None

    def build(self, input_shape):
        shapes = _shapes(input_shape)
        GFF_SPEC.check_call({"activation": self.activation}, shapes, ["float32"] * len(shapes))
        self.features = shapes[0][-1]
        self.gate = self.make_gate(self.features)
        self.gate.build((None, 2 * self.features))

    def make_gate(self, features):
        return layers.Dense(features, dtype=self.dtype_policy, name="gate")

    def gate_activation(self, z):
        return keras.activations.get(self.activation)(z)

    def fuse(self, g, a, b):
        return g * a + (1.0 - g) * b

    def call(self, inputs):
        config = {"activation": self.activation}
        if not isinstance(inputs, (list, tuple)):
            GFF_SPEC.check_call(config, tuple(inputs.shape), [])
        GFF_SPEC.check_call(config, [tuple(t.shape) for t in inputs],
                            [keras.backend.standardize_dtype(t.dtype) for t in inputs],
                            features=self.features)
        a, b = inputs
        return self.fuse(self.gate_activation(self.gate(ops.concatenate([a, b], -1))), a, b)

    def compute_output_shape(self, input_shape):
        return _shapes(input_shape)[0]

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


STATS = ("norm.moving_mean", "norm.moving_variance")


def _weights(fm_map=None, gff_map=None):
    fm_names = ("norm.gamma", "norm.beta", *STATS, "dense1.kernel", "dense1.bias",
                "dense2.kernel", "dense2.bias")
    return {"FeatureMixing": {**{n: (n, identity) for n in fm_names}, **(fm_map or {})},
            "GatedFeatureFusion": {"gate.kernel": ("gate.kernel", identity),
                                   "gate.bias": ("gate.bias", identity), **(gff_map or {})}}


class Conforming(KerasPortAdapter):
    name = "conforming"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    fm, gff = FeatureMixing, GatedFeatureFusion
    expected: dict | str | None = {}
    weights = _weights()

    def construct(self, layer, config, *, input_shapes, dtype):
        cls = self.fm if layer == "FeatureMixing" else self.gff
        return cls(**config, **({} if dtype is None else {"dtype": dtype}))


def _counting_build(self, input_shape):
    FeatureMixing.build(self, input_shape)
    # a count of training calls (torch's num_batches_tracked): integer state, no weight
    self.calls = self.add_weight(name="calls", shape=(), dtype="int64", trainable=False,
                                 initializer="zeros")


def _counting_combine(self, x, training):
    if training:
        self.calls.assign_add(ops.cast(1, "int64"))
    return FeatureMixing.combine(self, x, training)


def _relu32(self, h):
    return ops.cast(ops.relu(ops.cast(h, "float32")), h.dtype)  # the line a trace names


def port(name, expected, fm=None, gff=None, weights=None):
    """A port like Conforming with one mistake: overridden FeatureMixing / GatedFeatureFusion
    members, or its own weight map."""
    title = name.title().replace("-", "").replace(".", "")
    fm_class = keras.saving.register_keras_serializable(PACKAGE, f"FM{title}")(
        type(f"FM{title}", (FeatureMixing,), fm or {}))
    gff_class = keras.saving.register_keras_serializable(PACKAGE, f"GFF{title}")(
        type(f"GFF{title}", (GatedFeatureFusion,), gff or {}))
    body = {"name": name, "expected": expected, "fm": fm_class, "gff": gff_class,
            "weights": weights or _weights(), "layers": mistaken(fm, gff, weights)}
    return type(title, (Conforming,), body)


keras.saving.register_keras_serializable(PACKAGE, "FeatureMixing")(FeatureMixing)
keras.saving.register_keras_serializable(PACKAGE, "GatedFeatureFusion")(GatedFeatureFusion)


def _dropout1_over_time(self, *args, **kwargs):
    """The first Dropout with noise_shape (None, 1, ff_dim): one mask for every time step."""
    FeatureMixing.__init__(self, *args, **kwargs)
    self.dropout1 = layers.Dropout(self.rate(), noise_shape=(None, 1, self.ff_dim),
                                   dtype=self.dtype_policy, name="dropout1")


def _frozen(norm):
    """``norm.trainable = False``: Keras then runs it in inference mode in every call."""
    norm.trainable = False
    return norm


def _norm(**kwargs):
    def make_norm(self, policy):
        return layers.BatchNormalization(**{"momentum": 0.01, "epsilon": 1e-3, **kwargs},
                                         dtype=policy, name="norm")

    return {"make_norm": make_norm}


def _per_channel_norm(self, x, training):  # BatchNormalization(axis=-1) on (batch, L, N)
    return self.norm(x, training=training)


def _channel_major(self, x, training):  # flattened as (N, L), PyTorch's NCL habit
    flat = ops.reshape(ops.transpose(x, (0, 2, 1)), (-1, self.input_size * self.n_series))
    out = self.norm(flat, training=training)
    return ops.transpose(ops.reshape(out, (-1, self.n_series, self.input_size)), (0, 2, 1))


def _transpose_not_undone(self, x, training):  # the (N, L) flatten, reshaped straight back
    flat = ops.reshape(ops.transpose(x, (0, 2, 1)), (-1, self.input_size * self.n_series))
    return ops.reshape(self.norm(flat, training=training), ops.shape(x))


def _layer_norm(axis):
    def make_norm(self, policy):
        return layers.LayerNormalization(axis=axis, dtype=policy, name="norm")

    def norm_input_shape(self):
        return (None, self.input_size, self.n_series)

    def normalise(self, x, training):
        return self.norm(x)

    return {"make_norm": make_norm, "norm_input_shape": norm_input_shape,
            "normalise": normalise}


def _grid(config):
    return (config["input_size"], config["n_series"])


NO_STATS = {k: absent("LayerNormalization keeps no moving statistics") for k in STATS}
LN_OVER_LN = _weights({"norm.gamma": ("norm.gamma", reshape()),
                       "norm.beta": ("norm.beta", reshape()), **NO_STATS})
LN_OVER_N = _weights({"norm.gamma": held_as("norm.gamma", why="a LayerNorm (N,) scale"),
                      "norm.beta": held_as("norm.beta", why="a LayerNorm (N,) offset"),
                      **NO_STATS})
PER_CHANNEL = _weights({k: held_as(k, why="one statistic per channel")
                        for k in ("norm.gamma", "norm.beta", *STATS)})
KERNELS_AS_TORCH = _weights({k: (k, transpose) for k in ("dense1.kernel", "dense2.kernel")},
                            {"gate.kernel": ("gate.kernel", transpose)})


def _call_training(value):
    """``call`` whose BatchNormalization and Dropout get ``value(training)``."""

    def call(self, inputs, training=None):
        FM_SPEC.check_call(self._config(), tuple(inputs.shape),
                           keras.backend.standardize_dtype(inputs.dtype))
        z = self.normalise(inputs, value(training, "norm"))
        return inputs + self.branch(z, value(training, "dropout"))

    return {"call": call}


def _gate_dropout_call(self, inputs, training=None):
    """The spec's call, with a dropout of rate 0.1 on the gate in training (Keras passes the
    flag to a call that takes it: the adapter's call must pass it for this to show)."""
    object.__setattr__(self, "_dropping", bool(training))
    return GatedFeatureFusion.call(self, inputs)


def _gate_dropout_activation(self, z):
    g = keras.activations.get(self.activation)(z)
    return keras.random.dropout(g, 0.1, seed=7) if self._dropping else g


def _keras2_hard_sigmoid(z):  # Keras 2: clip(0.2 x + 0.5, 0, 1)
    return ops.clip(0.2 * z + 0.5, 0.0, 1.0)


def _gate(fn):
    def gate_activation(self, z):
        return fn(self, z)

    return {"gate_activation": gate_activation}


PORTS = [
    # BatchNormalization's constants
    port("momentum-torch-sense", {"momentum": 0.99}, fm=_norm(momentum=0.99)),
    port("momentum-torch-value", {"momentum": 0.1}, fm=_norm(momentum=0.1)),
    port("epsilon-torch-default", {"eps": 1e-5}, fm=_norm(epsilon=1e-5)),
    # where and over what it normalises
    port("batchnorm-per-channel", {"norm": "batch-channel"},
         fm={"normalise": _per_channel_norm,
             "norm_input_shape": lambda self: (None, self.input_size, self.n_series)},
         weights=PER_CHANNEL),
    port("flatten-channel-major", {"flatten": "F"}, fm={"normalise": _channel_major}),
    port("layernorm-over-L-N", {"norm": "layer-LN"}, fm=_layer_norm([-2, -1]),
         weights=LN_OVER_LN),
    port("layernorm-over-channels", {"norm": "layer-N"}, fm=_layer_norm(-1),
         weights=LN_OVER_N),
    port("norm-after-residual", {"position": "after"},
         fm={"combine": lambda self, x, training: self.normalise(
             x + self.branch(x, training), training)}),
    port("batchnorm-training-inverted", {"norm_training": "inverted"},
         fm=_call_training(lambda t, where: (not t) if where == "norm" else t)),
    # the MLP
    # keras.ops.gelu approximates by tanh by default; on TensorFlow (tf.nn.gelu) its cubic
    # coefficient 0.044715 is rounded to float32 whatever the input's dtype
    port("gelu-tanh-of-keras-ops", {"activation": "gelu-tanh", "precision": "float32"},
         fm={"activation": lambda self, h: ops.gelu(h)}),
    port("kernels-read-as-torch", {"transpose": True}, weights=KERNELS_AS_TORCH),
    # not a mistake: an integer counter of training calls is state, not a weight
    port("counts-its-training-calls", {},
         fm={"build": _counting_build, "combine": _counting_combine}),
    # the activation computed in float32 whatever the layer's dtype: a cast in the port's code
    port("activation-in-float32", {"precision": "float32"}, fm={"activation": _relu32}),
    # dropout
    port("dropout-rate-as-keep", {"dropout_rate": "keep"},
         fm={"rate": lambda self: 1.0 - self.dropout}),
    port("dropout-in-inference", {"dropout_inference": True},
         fm=_call_training(lambda t, where: True if where == "dropout" else t)),
    port("dropout-second-site-only", {"sites": ("dropout2",)},
         fm={"branch": lambda self, z, training: self.drop(
             self.dropout2, self.dense2(self.activation(self.dense1(z))), training)}),
    # the residual
    port("no-residual", {"residual": "none"},
         fm={"combine": lambda self, x, training: self.branch(
             self.normalise(x, training), training)}),
    port("residual-of-normalised", {"residual": "normalised"},
         fm={"combine": lambda self, x, training: (
             lambda z: z + self.branch(z, training))(self.normalise(x, training))}),
    # GatedFeatureFusion
    port("gff-hard-sigmoid", {"sigmoid": "hard"},
         gff=_gate(lambda self, z: keras.activations.hard_sigmoid(z)
                   if self.activation == "sigmoid" else
                   keras.activations.get(self.activation)(z))),
    port("gff-keras2-hard-sigmoid", {"sigmoid": "hard-keras2"},
         gff=_gate(lambda self, z: _keras2_hard_sigmoid(z) if self.activation == "sigmoid"
                   else keras.activations.get(self.activation)(z))),
    port("gff-softmax-axis-1", {"axis": 1},
         gff=_gate(lambda self, z: ops.softmax(z, axis=1) if self.activation == "softmax"
                   else keras.activations.get(self.activation)(z))),
    port("gff-roles-swapped", {"roles": "b-gated"},
         gff={"fuse": lambda self, g, a, b: g * b + (1.0 - g) * a}),
    port("gff-no-bias", r"gate\.bias",
         gff={"make_gate": lambda self, f: layers.Dense(f, use_bias=False,
                                                        dtype=self.dtype_policy, name="gate")},
         weights=_weights(gff_map={"gate.bias": absent("Dense(use_bias=False)")})),
    # outside the variant space: named by the staged probe (portspec.localise), a pattern
    port("relu-after-second-dense", r"adds max\(c, 0\) \(a ReLU after the second Dense\)",
         fm={"branch": lambda self, z, training: self.drop(
             self.dropout2, ops.relu(self.dense2(self.drop(
                 self.dropout1, self.activation(self.dense1(z)), training))), training)}),
    port("gff-gate-dropout", r"in training the gate is dropped out: .* rate 0\.1\b",
         gff={"call": _gate_dropout_call, "gate_activation": _gate_dropout_activation}),
    port("leaky-relu-activation", r"the activation after the first Dense is LeakyReLU\(0\.2\), "
         "not ReLU",
         fm={"activation": lambda self, h: ops.leaky_relu(h, negative_slope=0.2)}),
    port("transpose-not-undone", r"the features flattened channel-major \(the input "
         r"transposed to \(batch, N, L\) first\) and reshaped back",
         fm={"normalise": _transpose_not_undone}),
    port("dense2-without-the-dtype", r"^FeatureMixing: a float64 call computed partly in "
         r"float32: the float64 layer holds dense2.bias, dense2.kernel in float32",
         fm={"make_dense2": lambda self, policy: layers.Dense(self.n_series, name="dense2")}),
    port("get-config-returns-update", r"^FeatureMixing: get_config returns None, not a dict",
         fm={"get_config": lambda self: {**super(FeatureMixing, self).get_config()}.update(
             self._config())}),
    port("first-dropout-mask-shared-over-time", r"^FeatureMixing: the first dropout site's "
         r"mask broadcast along the time axis",
         fm={"__init__": _dropout1_over_time}),
    port("batchnorm-not-trainable", r"^FeatureMixing: the normalisation is frozen: gamma and "
         r"beta are held non-trainable, and a training call normalises with the moving",
         fm={"make_norm": lambda self, policy: _frozen(layers.BatchNormalization(
             momentum=0.01, epsilon=1e-3, dtype=policy, name="norm"))}),
    port("sublayers-not-built", r"^FeatureMixing: build\(\) leaves .* to the layer's first "
         r"call \(its sublayers are not built in build\(\)\)",
         fm={"build": lambda self, input_shape: None}),
    port("moving-mean-left-at-the-add-weight-default", r"^FeatureMixing: initial weights "
         r"drawn from Glorot-uniform over its own \(\d+,\) shape, fans",
         fm=_norm(moving_mean_initializer="glorot_uniform")),
    port("sublayers-in-the-variable-dtype", r"^FeatureMixing: the sublayers norm, dense1, "
         r".* compute in float32 under the layer's mixed_bfloat16 policy",
         fm={"sublayer_dtype": lambda self: self.dtype}),  # the variable dtype, float32
    port("moving-stats-read-in-the-compute-dtype", r"^FeatureMixing: under bfloat16 compute "
         r"the moving statistics' update reads their old values in bfloat16",
         fm={"make_norm": lambda self, policy: type("OldRead", (_StatsAutocast,), {
             "update_wide": True})(dtype=policy, name="norm")}),
    port("moving-stats-updated-in-the-compute-dtype", r"^FeatureMixing: under bfloat16 "
         r"compute the moving statistics' update is computed in bfloat16",
         fm={"make_norm": lambda self, policy: _StatsAutocast(dtype=policy, name="norm")}),
    port("batchnorm-in-the-compute-dtype", r"^FeatureMixing: under bfloat16 compute the port "
         r"holds norm.beta, norm.gamma, norm.moving_mean, norm.moving_variance in bfloat16",
         fm={"make_norm": lambda self, policy: layers.BatchNormalization(
             momentum=0.01, epsilon=1e-3, dtype=self.compute_dtype, name="norm")}),
]
# the ports judged in mixed precision too: their mistakes show only there
for judged in PORTS[-4:]:
    judged.low_precision = ("bfloat16",)

class _StatsAutocast(layers.Layer):
    """A BatchNormalization written by hand whose moving statistics are add_weight'ed without
    autocast=False: under a mixed policy a call reads them in the compute dtype, and the
    update, computed there, is assigned back rounded to it (``update_wide``: computed in
    float32 from the old values read in the compute dtype)."""

    update_wide = False

    def build(self, input_shape):
        n = input_shape[-1]
        self.gamma = self.add_weight(shape=(n,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(n,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(n,), initializer="zeros", trainable=False,
                                           name="moving_mean")
        self.moving_variance = self.add_weight(shape=(n,), initializer="ones", trainable=False,
                                               name="moving_variance")

    def call(self, x, training=False):
        low = keras.backend.standardize_dtype(x.dtype)
        wide = "float64" if low == "float64" else "float32"
        if training:
            mean, var = ops.mean(ops.cast(x, wide), axis=0), ops.var(ops.cast(x, wide), axis=0)
            at = wide if self.update_wide else low  # the update's dtype
            for stat, batch in ((self.moving_mean, mean), (self.moving_variance, var)):
                stat.assign(0.01 * ops.cast(stat, at) + 0.99 * ops.cast(batch, at))
        else:
            mean, var = self.moving_mean, self.moving_variance
        z = (ops.cast(x, wide) - ops.cast(mean, wide)) / ops.sqrt(ops.cast(var, wide) + 1e-3)
        return ops.cast(z * ops.cast(self.gamma, wide) + ops.cast(self.beta, wide), low)


def _tuples_only(self, input_shape):
    """build() checking its shapes with isinstance(..., tuple): a load passes lists."""
    if not (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
            and all(isinstance(s, tuple) for s in input_shape)):
        raise ValueError(f"GatedFeatureFusion needs two input shapes, got {input_shape}")
    GatedFeatureFusion.build(self, input_shape)


GFFTuplesOnly = keras.saving.register_keras_serializable(PACKAGE, "GFFTuplesOnly")(
    type("GFFTuplesOnly", (GatedFeatureFusion,), {"build": _tuples_only}))


class BuildRefusingListShapes(Conforming):
    name, layers, gff = "build-refusing-list-shapes", ("GatedFeatureFusion",), GFFTuplesOnly
    expected = (r"^GatedFeatureFusion: build\(\) refuses the input shape as lists, .* where it "
                r"builds from tuples")


@keras.saving.register_keras_serializable(PACKAGE, "FMRenamed")
class _FMRenamed(FeatureMixing):
    """The constructor takes names of the port's own; get_config, inherited, writes the
    spec's names, which this constructor does not take."""

    def __init__(self, num_series, seq_len, dropout_rate, hidden_dim, **kwargs):
        super().__init__(num_series, seq_len, dropout_rate, hidden_dim, **kwargs)


class ConfigInTheSpecsNames(Conforming):
    name, layers, fm = "config-in-the-specs-names", ("FeatureMixing",), _FMRenamed
    config_names = {"n_series": "num_series", "input_size": "seq_len",
                    "dropout": "dropout_rate", "ff_dim": "hidden_dim"}
    expected = (r"^FeatureMixing: get_config writes n_series, input_size, dropout, ff_dim "
                r"under the spec's names, where the port's constructor takes 'num_series'")


@keras.saving.register_keras_serializable(PACKAGE, "FMNameTaken")
class _FMNameTaken(FeatureMixing):
    pass


# the gate's class registered after it under the same name: its decorator copied unchanged
keras.saving.register_keras_serializable(PACKAGE, "FMNameTaken")(
    type("GFFNameTaken", (GatedFeatureFusion,), {}))


class RegisteredNameTaken(Conforming):
    name, layers, fm = "registered-name-taken-by-another-class", ("FeatureMixing",), _FMNameTaken
    expected = (r"^FeatureMixing: the name '.*>FMNameTaken' the layer class _FMNameTaken is "
                r"registered under gives another class, GFFNameTaken")


ADAPTERS = [Conforming(), *(cls() for cls in PORTS), ConfigInTheSpecsNames(),
            RegisteredNameTaken(), BuildRefusingListShapes()]
