"""Keras mutants: the reference layers with one plausible porting mistake each.

This file is an ordinary adapter file, exactly what a port author hands to ``portspec verify``:
each class is an Adapter whose ``catches`` names the clauses that must fail for it.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from keras import ops

from portspec.impls.keras import layers as ref
from portspec.impls.keras.adapter import KerasAdapter
from portspec.layers import LAYERS
from portspec.ports import KerasPortHandle


class _KerasMutant(KerasAdapter):
    """A KerasAdapter whose layer classes (``fm``, ``gff``) or ``handle_class`` carry the mistake.

    ``layers`` defaults to the layers whose class the mutant replaces.
    """

    catches: tuple[str, ...] = ()
    mistake = ""
    fm = ref.FeatureMixing
    gff = ref.GatedFeatureFusion

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "layers" not in cls.__dict__:
            cls.layers = tuple(name for name, base, mutated in (
                ("FeatureMixing", ref.FeatureMixing, cls.fm),
                ("GatedFeatureFusion", ref.GatedFeatureFusion, cls.gff)) if mutated is not base)

    def __init__(self, variant=None):
        super().__init__(variant)
        self.name = type(self).__name__
        self.classes = {"FeatureMixing": self.fm, "GatedFeatureFusion": self.gff}


# ---------------------------------------------------------------- FeatureMixing mutants --
class _FM(ref.FeatureMixing):
    """A FeatureMixing whose BatchNorm and branch can be altered by subclasses."""

    momentum, epsilon = 0.01, 1e-3

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm.momentum, self.norm.epsilon = self.momentum, self.epsilon


def _fm(name, **attrs):
    return type(name, (_FM,), attrs)


class _UnbiasedNorm(ref.FlatBatchNorm):
    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs, training)
        old = ops.copy(ops.convert_to_tensor(self.moving_variance))
        out = super().call(inputs, training)
        n = inputs.shape[0]
        mean = ref._mean0(inputs)
        unbiased = ref._mean0(ops.square(inputs - mean)) * n / (n - 1)  # as torch does
        self.moving_variance.assign(self.momentum * old + (1 - self.momentum) * unbiased)
        return out


class _ResidualFM(ref.FeatureMixing):
    residual = "input"

    def call(self, inputs, training=None):
        flat = ops.reshape(inputs, (-1, self.input_size * self.n_series))
        normed = ops.reshape(self.norm(flat, training=training), ops.shape(inputs))
        x = self._drop(self.dropout1, ops.relu(self.dense1(normed)), training)
        x = self._drop(self.dropout2, self.dense2(x), training)
        return {"input": inputs + x, "none": x, "normed": normed + x}[self.residual]


class FMMomentumTorchConvention(_KerasMutant):
    mistake = "BatchNorm momentum 0.99: PyTorch's momentum=0.01 carried over in Keras's sense"
    catches = ("FM-BN-UPDATE",)
    names = r"keep 0\.99 of their old value"
    fm = _fm("MomentumFlipped", momentum=0.99)


class FMUnbiasedMovingVariance(_KerasMutant):
    mistake = "moving variance updated with the unbiased batch variance (PyTorch)"
    catches = ("FM-BN-UPDATE",)
    names = r"unbiased batch variance in the moving update"

    class fm(ref.FeatureMixing):  # noqa: N801
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm = _UnbiasedNorm(dtype=self.dtype_policy, name="norm")


class FMEpsilonTorchDefault(_KerasMutant):
    mistake = "BatchNorm epsilon 1e-5 (PyTorch's default) instead of 1e-3"
    catches = ("FM-BN-EPSILON",)
    names = r"epsilon 1e-05"
    fm = _fm("Eps5", epsilon=1e-5)


class FMNoResidual(_KerasMutant):
    mistake = "the residual connection is missing"
    catches = ("FM-RESIDUAL", "FM-INFERENCE")
    names = r"no residual connection"
    fm = type("NoResidual", (_ResidualFM,), {"residual": "none"})


class FMResidualFromNormalised(_KerasMutant):
    mistake = "the residual adds the normalised input instead of the raw input"
    catches = ("FM-RESIDUAL",)
    names = r"residual adding the normalised input"
    fm = type("NormedResidual", (_ResidualFM,), {"residual": "normed"})


class FMFlattenTimeLast(_KerasMutant):
    mistake = "features flattened as (n_series, input_size): BatchNorm index c*L + t"
    catches = ("FM-INFERENCE", "FM-VECTORS")
    names = r"channel-major flatten"

    class fm(ref.FeatureMixing):  # noqa: N801
        def call(self, inputs, training=None):
            swapped = ops.transpose(inputs, (0, 2, 1))
            flat = ops.reshape(swapped, (-1, self.input_size * self.n_series))
            x = ops.transpose(ops.reshape(self.norm(flat, training=training),
                                          ops.shape(swapped)), (0, 2, 1))
            x = self._drop(self.dropout1, ops.relu(self.dense1(x)), training)
            return inputs + self._drop(self.dropout2, self.dense2(x), training)


class FMTrainingUsesMovingStats(_KerasMutant):
    mistake = "the training flag never reaches BatchNorm: moving statistics in training"
    catches = ("FM-TRAINING", "FM-BN-UPDATE")
    names = r"moving statistics in training"

    class fm(ref.FeatureMixing):  # noqa: N801
        def call(self, inputs, training=None):
            flat = ops.reshape(inputs, (-1, self.input_size * self.n_series))
            x = ops.reshape(self.norm(flat, training=False), ops.shape(inputs))
            x = self._drop(self.dropout1, ops.relu(self.dense1(x)), training)
            return inputs + self._drop(self.dropout2, self.dense2(x), training)


class FMUpdatesInInference(_KerasMutant):
    mistake = "the moving statistics are updated in inference calls too"
    catches = ("FM-BN-FROZEN",)
    names = r"inference call updates them with the batch's mean and variance"

    class fm(ref.FeatureMixing):  # noqa: N801
        def call(self, inputs, training=None):
            if not training:
                flat = ops.reshape(inputs, (-1, self.input_size * self.n_series))
                self.norm(flat, training=True)  # a stray statistics pass
            return super().call(inputs, training)


class FMBatchOfOneRejected(_KerasMutant):
    mistake = "a training batch of one raises, as torch.nn.BatchNorm1d does"
    catches = ("FM-BN-BATCH1",)
    names = r"refuses a training batch of one while larger batches run"

    class fm(ref.FeatureMixing):  # noqa: N801
        def call(self, inputs, training=None):
            if training and inputs.shape[0] == 1:
                raise ValueError("Expected more than 1 value per channel when training")
            return super().call(inputs, training)


class FMDropoutNotInverted(_KerasMutant):
    mistake = "dropout keeps values unscaled (no 1/(1-p))"
    catches = ("FM-DROPOUT-SITES",)
    names = r"not scaled \(dropout not inverted\)"

    class fm(ref.FeatureMixing):  # noqa: N801
        def _drop(self, layer, x, training):
            return super()._drop(layer, x, training) * (1.0 - self.dropout if training else 1.0)


class FMOneDropoutSite(_KerasMutant):
    mistake = "only the final dropout is applied (the hidden-layer dropout is missing)"
    catches = ("FM-DROPOUT-SITES",)
    names = r"dropout only after the second Dense"

    class fm(ref.FeatureMixing):  # noqa: N801
        def _drop(self, layer, x, training):
            return x if layer is self.dropout1 else super()._drop(layer, x, training)


class FMDropoutInInference(_KerasMutant):
    mistake = "dropout is applied in inference (training flag ignored by dropout)"
    catches = ("FM-DROPOUT-INFERENCE",)
    names = r"dropout active in inference"

    class fm(ref.FeatureMixing):  # noqa: N801
        def _drop(self, layer, x, training):
            return super()._drop(layer, x, True)


class FMRateOneRejected(_KerasMutant):
    mistake = "dropout = 1.0 is rejected, as several frameworks' dropout layers do"
    catches = ("FM-DROPOUT-ONE",)
    names = r"dropout 1\.0 is refused where a rate below 1 runs"

    class fm(ref.FeatureMixing):  # noqa: N801
        def __init__(self, n_series, input_size, dropout, ff_dim, **kwargs):
            if dropout == 1.0:
                raise ValueError("dropout must be in [0, 1)")
            super().__init__(n_series, input_size, dropout, ff_dim, **kwargs)


class FMFrozenGamma(_KerasMutant):
    mistake = "BatchNorm gamma created non-trainable"
    names = r"norm\.gamma held non-trainable"
    catches = ("FM-WEIGHTS", "FM-PARAMS")

    class fm(ref.FeatureMixing):  # noqa: N801
        def build(self, input_shape):
            super().build(input_shape)
            self.norm.gamma.trainable = False


class FMTorchDefaultInit(_KerasMutant):
    mistake = "Dense kernels initialised like torch.nn.Linear (U(+-1/sqrt(fan_in)))"
    catches = ("FM-INIT",)
    names = r"PyTorch's default Linear initialisation"

    class fm(ref.FeatureMixing):  # noqa: N801
        def build(self, input_shape):
            super().build(input_shape)
            for dense in (self.dense1, self.dense2):
                fan_in = dense.kernel.shape[0]
                dense.kernel.assign(keras.random.uniform(
                    dense.kernel.shape, -fan_in**-0.5, fan_in**-0.5, dtype=dense.kernel.dtype))


class FMStatsWithoutGradient(_KerasMutant):
    mistake = "batch statistics treated as constants in backprop (stop_gradient)"
    catches = ("FM-GRAD",)
    names = r"batch mean and variance are treated as constants in backprop"

    class fm(ref.FeatureMixing):  # noqa: N801
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm = _StopGradNorm(dtype=self.dtype_policy, name="norm")


class _StopGradNorm(ref.FlatBatchNorm):
    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs, training)
        mean = ops.stop_gradient(ref._mean0(inputs))
        var = ops.stop_gradient(ref._mean0(ops.square(inputs - mean)))
        super().call(inputs, training)  # the state update
        inv = ops.rsqrt(var + self.epsilon) * self.gamma
        return (inputs - mean) * inv + self.beta


class FMUnvalidatedConfig(_KerasMutant):
    mistake = "the config is not validated (bools, floats and 0 accepted)"
    names = r"configs not validated"
    catches = ("FM-CONFIG",)

    class fm(ref.FeatureMixing):  # noqa: N801
        def __init__(self, n_series, input_size, dropout, ff_dim, **kwargs):
            keras.layers.Layer.__init__(self, **{k: v for k, v in kwargs.items() if k != "seed"})
            self.n_series, self.input_size = n_series, input_size
            self.dropout, self.ff_dim, self.seed = dropout, ff_dim, None
            self.norm = ref.FlatBatchNorm(name="norm")
            self.dense1 = ref.Linear(ff_dim, name="dense1")
            self.dense2 = ref.Linear(n_series, name="dense2")
            self.dropout1 = keras.layers.Dropout(0.0, name="dropout1")
            self.dropout2 = keras.layers.Dropout(0.0, name="dropout2")


class FMUnvalidatedCall(_KerasMutant):
    mistake = "calls are not validated: the backend's own error (or broadcasting) instead"
    names = r"calls not validated"
    catches = ("FM-CALL",)

    class fm(ref.FeatureMixing):  # noqa: N801
        def call(self, inputs, training=None):
            flat = ops.reshape(inputs, (ops.shape(inputs)[0], -1))
            x = ops.reshape(self.norm(flat, training=training), ops.shape(inputs))
            x = self._drop(self.dropout1, ops.relu(self.dense1(x)), training)
            return inputs + self._drop(self.dropout2, self.dense2(x), training)

        def build(self, input_shape):
            pass


class FMSqueezesOutput(_KerasMutant):
    mistake = "the output is squeezed, so a batch of one loses its batch axis"
    names = r"output is squeezed"
    catches = ("FM-SHAPE",)

    class fm(ref.FeatureMixing):  # noqa: N801
        def call(self, inputs, training=None):
            return ops.squeeze(super().call(inputs, training))


def _reseed():
    keras.utils.set_random_seed(int.from_bytes(os.urandom(4), "little"))


class Unseeded(_KerasMutant):
    mistake = "the initialisers draw from OS entropy instead of the seed"
    catches = ("FM-DETERMINISM", "GFF-DETERMINISM")
    names = r"FeatureMixing and GatedFeatureFusion: .*initialisers do not draw from the given seed"

    class fm(ref.FeatureMixing):  # noqa: N801
        def build(self, input_shape):
            _reseed()
            super().build(input_shape)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def build(self, input_shape):
            _reseed()
            super().build(input_shape)


class FMConfigDropsFfDim(_KerasMutant):
    mistake = "get_config reports n_series as ff_dim"
    names = r"get_config reports ff_dim=\d+ .*the value of n_series"
    catches = ("FM-CONFIG-ROUNDTRIP",)

    class fm(ref.FeatureMixing):  # noqa: N801
        def get_config(self):
            return {**super().get_config(), "ff_dim": self.n_series}


@keras.saving.register_keras_serializable(package="portspec_zoo")
class _TrainableOnlyNorm(ref.FlatBatchNorm):
    def load_own_variables(self, store):
        self.gamma.assign(store["0"])
        self.beta.assign(store["1"])  # the moving statistics stay at their initial values


@keras.saving.register_keras_serializable(package="portspec_zoo")
class _StatelessLoad(ref.FeatureMixing):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = _TrainableOnlyNorm(dtype=self.dtype_policy, name="norm")


class FMStateNotSaved(_KerasMutant):
    mistake = "the moving statistics are not restored on load (re-initialised)"
    names = r"native load does not restore norm\.moving_mean, norm\.moving_variance"
    catches = ("FM-SAVE-NATIVE",)
    fm = _StatelessLoad


class Float64Ignored(_KerasMutant):
    mistake = "float64 is ignored: the layer always computes in float32"
    catches = ("FM-DTYPE", "GFF-DTYPE")
    names = r"FeatureMixing and GatedFeatureFusion: .*float64 call computed partly in float32"
    layers = ("FeatureMixing", "GatedFeatureFusion")

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        return super().build(layer, config, input_shapes=input_shapes, seed=seed,
                             dtype="float32" if dtype == "float64" else dtype)


# -------------------------------------------------------------- adapter-level mutants ----
class _TransposingHandle(KerasPortHandle):
    """Writes and reads canonical safetensors with kernels in torch's (out, in) layout."""

    def save_weights(self, path):
        from safetensors.numpy import save_file

        w = {k: np.ascontiguousarray(v.T if k.endswith("kernel") else v)
             for k, v in self.get_weights().items()}
        save_file(w, path)

    def load_weights(self, path):
        from portspec.adapter import read_weights

        self.set_weights({k: (v.T if k.endswith("kernel") else v)
                          for k, v in read_weights(path).items()})


class _HalfStorageHandle(KerasPortHandle):
    def set_weights(self, weights):
        super().set_weights({k: np.asarray(v).astype(np.float16) for k, v in weights.items()})


class WeightsStoredInHalf(_KerasMutant):
    mistake = "set_weights rounds through float16 (weights kept in half precision)"
    catches = ("FM-WEIGHTS-ROUNDTRIP", "GFF-WEIGHTS-ROUNDTRIP")
    names = r"FeatureMixing and GatedFeatureFusion: weights stored in float16"
    layers = ("FeatureMixing", "GatedFeatureFusion")
    handle_class = _HalfStorageHandle


class _StaleCompileHandle(KerasPortHandle):
    def forward_compiled(self, inputs, *, training):
        return super().forward_compiled(inputs, training=True)  # the flag baked in


class FMKernelLayoutInFile(_KerasMutant):
    mistake = "canonical weight files written and read with (out, in) kernels"
    names = r"weight files hold dense1\.kernel, dense2\.kernel transposed"
    catches = ("FM-PORTABLE",)
    handle_class = _TransposingHandle
    layers = ("FeatureMixing",)


class FMCompiledTrainingFlag(_KerasMutant):
    mistake = "the compiled function is traced once with training=True and reused"
    catches = ("FM-COMPILE",)
    names = r"compiled function runs the training path whatever the training flag"
    handle_class = _StaleCompileHandle
    layers = ("FeatureMixing",)


# ------------------------------------------------------------ GatedFeatureFusion mutants --
class _GFF(ref.GatedFeatureFusion):
    mode = "spec"

    def call(self, inputs):
        a, b = inputs
        parts = [b, a] if self.mode == "concat" else [a, b]
        z = self.gate(ops.concatenate(parts, axis=-1))
        if self.mode == "softmax0" and self.activation == "softmax":
            gate = ops.softmax(z, axis=0)
        else:
            gate = ref._activation(self.activation, z)
        if self.mode == "both":
            return gate * a + gate * b
        if self.mode == "roles":
            return gate * b + (1.0 - gate) * a
        return gate * a + (1.0 - gate) * b


def _gff(name, **attrs):
    return type(name, (_GFF,), attrs)


class GFFRolesSwapped(_KerasMutant):
    mistake = "the gate multiplies the second input and 1 - gate the first"
    catches = ("GFF-GATE-ORDER", "GFF-FORWARD", "GFF-VECTORS")
    names = r"gate roles swapped"
    gff = _gff("Roles", mode="roles")


class GFFConcatSwapped(_KerasMutant):
    mistake = "the gate sees concat([b, a])"
    catches = ("GFF-GATE-ORDER",)
    names = r"the gate seeing concat\(\[b, a\]\)"
    gff = _gff("Concat", mode="concat")


class GFFGateOnBoth(_KerasMutant):
    mistake = "the seed's diagram read literally: gate * a + gate * b"
    catches = ("GFF-CONVEX", "GFF-FORWARD")
    names = r"gate multiplying both inputs"
    gff = _gff("Both", mode="both")


class GFFSoftmaxBatchAxis(_KerasMutant):
    mistake = "softmax over the batch axis (axis=0) instead of the features"
    catches = ("GFF-ACTIVATIONS",)
    names = r"softmax over the first \(batch\) axis"
    gff = _gff("Softmax0", mode="softmax0")


class GFFNoBias(_KerasMutant):
    mistake = "the gate Dense has no bias"
    names = r"holds no gate\.bias"
    catches = ("GFF-WEIGHTS", "GFF-PARAMS")

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def build(self, input_shape):
            features = input_shape[0][-1]
            self.gate = _NoBiasLinear(features, dtype=self.dtype_policy, name="gate")
            self.gate.build((None, 2 * features))


class _NoBiasLinear(ref.Linear):
    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")

    def call(self, inputs):
        return ops.einsum("...i,io->...o", inputs, self.kernel)


class GFFTorchDefaultInit(_KerasMutant):
    mistake = "gate kernel initialised like torch.nn.Linear (U(+-1/sqrt(fan_in)))"
    catches = ("GFF-INIT",)
    names = r"PyTorch's default Linear initialisation"

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def build(self, input_shape):
            super().build(input_shape)
            k = self.gate.kernel
            k.assign(keras.random.uniform(k.shape, -k.shape[0] ** -0.5, k.shape[0] ** -0.5,
                                          dtype=k.dtype))


class GFFBroadcasts(_KerasMutant):
    mistake = "inputs are not validated: one, three or mismatched tensors reach the backend"
    names = r"calls not validated.*accepted: a single tensor"
    catches = ("GFF-CALL",)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def call(self, inputs):
            a, b = inputs[0], inputs[-1]
            gate = ref._activation(self.activation, self.gate(ops.concatenate([a, b], -1)))
            return gate * a + (1.0 - gate) * b


class GFFShapesByBroadcast(_KerasMutant):
    mistake = ("inputs of different shapes are accepted where they broadcast: the gate is two "
               "products, a @ Ka + b @ Kb, and the call checks only that the shapes broadcast")
    names = r"calls not validated.*accepted: broadcastable batch, broadcastable ranks"
    catches = ("GFF-CALL",)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def call(self, inputs):
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                return super().call(inputs)
            a, b = inputs
            try:
                np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
            except ValueError:
                raise ValueError(f"GatedFeatureFusion inputs must broadcast, got shapes "
                                 f"{tuple(a.shape)} and {tuple(b.shape)}") from None
            for t in (a, b):  # rank, features and dtype of each input, as the spec's check
                shape = tuple(t.shape)
                LAYERS["GatedFeatureFusion"].check_call(
                    self._config(), [shape, shape],
                    [keras.backend.standardize_dtype(t.dtype)] * 2, features=self.gate.units)
            f = self.gate.units
            kernel = self.gate.kernel
            logits = ops.matmul(a, kernel[:f]) + ops.matmul(b, kernel[f:]) + self.gate.bias
            gate = ref._activation(self.activation, logits)
            return gate * a + (1.0 - gate) * b


class GFFAnyActivation(_KerasMutant):
    mistake = "unknown activation names are accepted (falling back to sigmoid)"
    names = r"configs not validated.*accepted: activation='swish' \(built as 'sigmoid'\)"
    catches = ("GFF-CONFIG",)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def __init__(self, activation="sigmoid", **kwargs):
            ok = activation in ("sigmoid", "tanh", "relu", "softmax")
            super().__init__(activation if ok else "sigmoid", **kwargs)


class GFFConfigDropsActivation(_KerasMutant):
    mistake = "get_config omits the activation (a rebuilt layer falls back to sigmoid)"
    names = r"get_config leaves out activation"
    catches = ("GFF-CONFIG-ROUNDTRIP",)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def get_config(self):
            config = super().get_config()
            config.pop("activation")
            return config


class GFFNotSerializable(_KerasMutant):
    mistake = "the layer is not registered as Keras-serializable, so a saved model won't load"
    names = r"GatedFeatureFusion: the layer class .* is not registered with Keras"
    catches = ("GFF-SAVE-NATIVE",)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        pass


class GFFGateDetached(_KerasMutant):
    mistake = "the gate is computed from stop_gradient(inputs)"
    catches = ("GFF-GRAD",)
    names = r"gate's input is treated as a constant in backprop"

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def call(self, inputs):
            a, b = inputs
            z = self.gate(ops.stop_gradient(ops.concatenate([a, b], axis=-1)))
            gate = ref._activation(self.activation, z)
            return gate * a + (1.0 - gate) * b


class GFFShapeFlattened(_KerasMutant):
    mistake = "rank > 2 inputs are flattened to (-1, F) and not reshaped back"
    names = r"flattened to \(-1, features\)"
    catches = ("GFF-SHAPE",)

    class gff(ref.GatedFeatureFusion):  # noqa: N801
        def call(self, inputs):
            f = inputs[0].shape[-1]
            return super().call([ops.reshape(t, (-1, f)) for t in inputs])


class GFFKernelLayoutInFile(_KerasMutant):
    mistake = "canonical weight files written and read with (out, in) kernels"
    names = r"weight files hold gate\.kernel transposed"
    catches = ("GFF-PORTABLE",)
    handle_class = _TransposingHandle
    layers = ("GatedFeatureFusion",)


class GFFCompiledStale(_KerasMutant):
    mistake = "the compiled function captured the initial weights as constants"
    catches = ("GFF-COMPILE",)
    names = r"compiled function computes with the weights the layer was built with"
    layers = ("GatedFeatureFusion",)

    def build(self, layer, config, **kw):
        handle = super().build(layer, config, **kw)
        handle._frozen = handle.get_weights()
        return handle

    class handle_class(KerasPortHandle):  # noqa: N801
        def forward_compiled(self, inputs, *, training):
            live = self.get_weights()
            self.set_weights(self._frozen)
            try:
                return super().forward_compiled(inputs, training=training)
            finally:
                self.set_weights(live)
