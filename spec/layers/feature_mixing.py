"""FeatureMixing: the channel-mixing block of TSMixer (normative definition).

Source: seeds/000 (KMR FeatureMixing). Where the seed is vague or wrong, the spec decides and
each decision is written as a clause with its rationale.
"""

from __future__ import annotations

import numpy as np

from portspec import exact, profiles, validation
from portspec.clauses import Clause, serialization_clauses
from portspec.layers.base import BadCall, Case, LayerSpec, WeightSpec

EPSILON = 1e-3
# Keras convention: the moving statistic keeps MOMENTUM of its old value. The seeds' value, the
# default profile's (portspec.profiles); the oracle reads the active profile.
MOMENTUM = 0.01
DROPOUT_SITES = ("dropout1", "dropout2")


PREFIX = "FM"


def _c(suffix, family, text, rationale=""):
    return Clause(f"{PREFIX}-{suffix}", family, text, rationale)


CLAUSES = [
    _c(
        "CONFIG",
        "config-errors",
        "n_series, input_size and ff_dim are positive ints (a bool is not an int) and dropout is "
        "a real number in [0, 1]; any other value, an unknown or a missing parameter raises "
        "ValueError or TypeError whose message names the parameter.",
    ),
    _c(
        "CALL",
        "call-errors",
        "A call whose input is not rank 3, whose trailing dimensions are not "
        "(input_size, n_series), or whose dtype is not floating raises ValueError or TypeError "
        "naming the shape (and showing the shape it got) or the dtype.",
    ),
    _c(
        "SHAPE",
        "shape",
        "The input is (batch, input_size, n_series) and the output has the same shape, for "
        "every batch >= 1, in training and inference; one layer, once called, runs on "
        "another batch size as a fresh one does.",
    ),
    _c(
        "RESIDUAL",
        "residual",
        "The output is the input plus the branch: with the second Dense's kernel and bias zero "
        "the output equals the input exactly, in training and inference.",
    ),
    _c(
        "WEIGHTS",
        "weight-table",
        "The layer holds exactly the weights of the weight table, with those canonical names, "
        "shapes and trainability.",
    ),
    _c(
        "PARAMS",
        "param-counts",
        "The framework's own count is 2*L*N + 2*N*H + H + N trainable and 2*L*N non-trainable "
        "scalars (L = input_size, N = n_series, H = ff_dim).",
        "The seed's estimate counts only the two Dense layers; BatchNorm over the L*N flattened "
        "features adds gamma and beta (trainable) and the moving mean and variance "
        "(non-trainable).",
    ),
    _c(
        "INIT",
        "init",
        "Dense kernels are Glorot-uniform (|w| <= sqrt(6/(fan_in+fan_out)), variance "
        "limit^2/3), Dense biases 0, BatchNorm gamma 1, beta 0, moving mean 0, moving "
        "variance 1.",
        "The seed says nothing of initialisation; these are the Keras defaults the seed's "
        "implementation inherits. PyTorch's Linear default (Kaiming-uniform, bias "
        "U(+-1/sqrt(fan_in))) is a porting error.",
    ),
    _c(
        "DETERMINISM",
        "determinism",
        "Two layers built with the same seed have identical weights and outputs; inference is "
        "repeatable; training with dropout > 0 is reproducible under a seed, whichever of two "
        "layers built alike is called first (each draws its masks from a generator it owns, "
        "seeded by its seed: a layer built with another seed draws other masks).",
    ),
    *serialization_clauses(PREFIX),
    _c(
        "INFERENCE",
        "inference",
        "In inference the output is x + D2(relu(D1(reshape(BN_moving(flatten(x)))))), equal to "
        "the NumPy oracle within the dtype's tolerance in float32 and float64; also after a "
        "training call, with the weights set again: BN_moving normalises with the moving "
        "statistics the layer holds, not with statistics kept from the last training batch.",
        "Flatten and reshape are row-major: the BatchNorm feature index is t*n_series + c.",
    ),
    _c(
        "TRAINING",
        "training",
        "In training with dropout 0 the output uses the batch mean and the biased batch "
        "variance over the batch axis of the flattened input, equal to the oracle within the "
        "dtype's tolerance in float32 and float64, in float32 also on inputs of mean 1000 "
        "and unit spread (a one-pass variance E[x^2] - E[x]^2 loses its digits there).",
    ),
    _c(
        "BN-UPDATE",
        "bn-update",
        "One training call sets moving = m * moving + (1 - m) * batch_statistic for the mean "
        "and for the biased batch variance, m being the profile's momentum: 0.01 by default "
        "(profile kmr), 0.99 under --profile tsmixer. The moving statistics are state, not "
        "part of the graph: after a training call that computes gradients they hold no "
        "autograd history (a PyTorch port's, requires_grad and grad_fn).",
        "The seed's 'momentum=0.01' is read in the Keras convention the seed's implementation "
        "(KMR's FeatureMixing) uses: momentum is the share of the old value, so the moving "
        "statistic keeps 0.01 of it. That is the default profile, kmr. It is a choice, not the "
        "only sound reading: the TSMixer paper's reference code (Keras BatchNormalization at "
        "its default momentum 0.99) and neuralforecast (nn.BatchNorm1d(momentum=0.01), "
        "PyTorch's momentum being the share of the new value) both keep 0.99 of the old value; "
        "ports of that block are judged with --profile tsmixer (portspec.profiles). Under "
        "either profile PyTorch's unbiased running variance differs from the spec.",
    ),
    _c("BN-FROZEN", "bn-frozen", "Inference calls leave the moving mean and variance unchanged."),
    _c(
        "BN-BATCH1",
        "bn-batch1",
        "A training batch of one is valid: the batch variance is 0, the normalised value is "
        "beta, and the moving statistics update as for any batch: each keeps the share of its "
        "old value that the same layer keeps for a full batch (that this share is the "
        "profile's momentum is FM-BN-UPDATE's), the batch variance being 0.",
        "Keras accepts it; torch.nn.BatchNorm1d raises, which a port must not inherit.",
    ),
    _c(
        "BN-EPSILON",
        "bn-epsilon",
        "BatchNorm adds epsilon = 1e-3 to the variance: with moving variance 0 the normalised "
        "value is (x - moving_mean) / sqrt(1e-3).",
    ),
    _c(
        "DROPOUT-SITES",
        "dropout-sites",
        "In training each of the two dropout sites (after the ReLU, after the second Dense) "
        "zeroes each element independently with probability p and scales kept ones by "
        "1/(1-p) (inverted dropout).",
    ),
    _c(
        "DROPOUT-INFERENCE",
        "dropout-inference",
        "In inference nothing is dropped: the output is deterministic and does not depend on "
        "the dropout rate (it equals the same layer's output at dropout 0, with the same "
        "weights; FM-INFERENCE compares that output with the oracle, so a mistake elsewhere "
        "in the layer fails that clause, not this one).",
    ),
    _c(
        "DROPOUT-ONE",
        "dropout-one",
        "dropout = 1.0 in training zeroes the branch: the output equals the input (judged "
        "against the same layer in training at dropout 0 with the second Dense's kernel and "
        "bias 0, the layer without its branch; that this is the input is FM-RESIDUAL's), with "
        "finite gradients.",
    ),
    _c(
        "GRAD",
        "gradients",
        "Gradients of sum(output * cotangent) with respect to the input and every trainable "
        "weight agree with central differences of the float64 forward, in training (dropout 0) "
        "and inference.",
    ),
    _c(
        "DTYPE",
        "dtype",
        "float32 is the default; float64 runs end to end in float64 (it matches the oracle, "
        "or follows changes of 1e-9 in every weight and input); where the framework supports "
        "bfloat16 or float16 compute the output has that dtype and meets its tolerance against "
        "the same layer's float32 call (what the layer computes is the inference clause's), "
        "and the layer is mixed precision: its weights stay float32 (Keras's mixed policies, "
        "torch.autocast, NNX's param_dtype), so that updates below the compute dtype's "
        "resolution are kept.",
    ),
    _c(
        "COMPILE",
        "compile",
        "The framework's compiled execution (jax.jit / nnx.jit, torch.compile, Keras "
        "jit_compile) gives the eager output within the float32 tolerance.",
    ),
    _c(
        "VECTORS",
        "vectors",
        "On every golden vector in spec/vectors the inference output, the training output and "
        "the updated moving statistics match the stored values within the float32 tolerance. "
        "The vectors hold the default profile's (kmr) statistics; under --profile tsmixer the "
        "moving statistics expected are the oracle's update of the stored inputs and weights.",
    ),
    _c(
        "PORTABLE",
        "portable",
        "Canonical weights written as safetensors by any implementation and read by this one "
        "give the writer's outputs within the float32 tolerance, in inference and after one "
        "identical training step. The writers are the default profile's layers; under --profile "
        "tsmixer the moving statistics after the step are that profile's update of the writer's "
        "weights, and the output after the step the oracle's from them.",
    ),
]


class FeatureMixingSpec(LayerSpec):
    name = "FeatureMixing"
    prefix = "FM"
    neutral = {"norm.gamma": 1.0, "norm.beta": 0.0, "dense1.bias": 0.0, "dense2.bias": 0.0}
    multi_input = False
    summary = (
        "Channel mixing of TSMixer: BatchNorm over the flattened (input_size*n_series) "
        "features, Dense(ff_dim)+ReLU, dropout, Dense(n_series), dropout, residual add."
    )
    clauses = CLAUSES
    epsilon = EPSILON

    @property
    def momentum(self) -> float:
        """Share of the old moving statistic kept, under the active profile."""
        return profiles.active().momentum
    config_params = [
        ("n_series", "int >= 1: channels N, the last input axis"),
        ("input_size", "int >= 1: time steps L, the middle input axis"),
        ("dropout", "float in [0, 1]: rate of both dropout sites"),
        ("ff_dim", "int >= 1: hidden width H of the channel MLP"),
    ]

    # -- configuration -------------------------------------------------------------------
    def validate_config(self, config) -> dict:
        validation.config_keys(
            self.name, config, ("n_series", "input_size", "dropout", "ff_dim"), ()
        )
        return {
            "n_series": validation.positive_int("n_series", config["n_series"]),
            "input_size": validation.positive_int("input_size", config["input_size"]),
            "dropout": validation.rate("dropout", config["dropout"]),
            "ff_dim": validation.positive_int("ff_dim", config["ff_dim"]),
        }

    def invalid_configs(self):
        ok = {"n_series": 3, "input_size": 4, "dropout": 0.1, "ff_dim": 5}
        bad = []
        for name in ("n_series", "input_size", "ff_dim"):
            for value in (0, -2, 2.0, True, "4", None):
                bad.append(({**ok, name: value}, name))
        for value in (-0.1, 1.5, float("nan"), True, "0.1", None):
            bad.append(({**ok, "dropout": value}, "dropout"))
        bad.append(({k: v for k, v in ok.items() if k != "ff_dim"}, "ff_dim"))
        # an unknown parameter: a name no port renames a parameter to (config_names)
        bad.append(({**ok, "no_such_parameter": 3}, "no_such_parameter"))
        return bad

    # -- weights -------------------------------------------------------------------------
    def weight_table(self, config, input_shapes=None):
        n, length, h = config["n_series"], config["input_size"], config["ff_dim"]
        flat = length * n
        return [
            WeightSpec("norm.gamma", (flat,), True, "ones"),
            WeightSpec("norm.beta", (flat,), True, "zeros"),
            WeightSpec("norm.moving_mean", (flat,), False, "zeros"),
            WeightSpec("norm.moving_variance", (flat,), False, "ones"),
            WeightSpec("dense1.kernel", (n, h), True, "glorot_uniform"),
            WeightSpec("dense1.bias", (h,), True, "zeros"),
            WeightSpec("dense2.kernel", (h, n), True, "glorot_uniform"),
            WeightSpec("dense2.bias", (n,), True, "zeros"),
        ]

    def param_counts(self, config, input_shapes=None):
        n, length, h = config["n_series"], config["input_size"], config["ff_dim"]
        return 2 * length * n + 2 * n * h + h + n, 2 * length * n

    def random_weights(self, config, input_shapes, rng):
        n, length, h = config["n_series"], config["input_size"], config["ff_dim"]
        flat = length * n
        return {
            "norm.gamma": rng.uniform(0.5, 1.5, flat),
            "norm.beta": rng.normal(0.0, 0.5, flat),
            "norm.moving_mean": rng.normal(0.0, 1.0, flat),
            "norm.moving_variance": rng.uniform(0.25, 2.0, flat),
            "dense1.kernel": rng.normal(0.0, 1.0 / np.sqrt(n), (n, h)),
            "dense1.bias": rng.normal(0.0, 0.2, h),
            "dense2.kernel": rng.normal(0.0, 1.0 / np.sqrt(h), (h, n)),
            "dense2.bias": rng.normal(0.0, 0.2, n),
        }

    # -- calls ---------------------------------------------------------------------------
    def check_call(self, config, shapes, dtypes):
        shape, dtype = tuple(shapes), dtypes
        expected = (config["input_size"], config["n_series"])
        if len(shape) != 3:
            raise ValueError(
                f"FeatureMixing expects input shape (batch, {expected[0]}, {expected[1]}), "
                f"got shape {shape} of rank {len(shape)}"
            )
        if tuple(shape[1:]) != expected:
            raise ValueError(
                f"FeatureMixing expects input shape (batch, input_size={expected[0]}, "
                f"n_series={expected[1]}), got shape {shape}"
            )
        validation.floating_dtype("FeatureMixing input", dtype)

    def bad_calls(self, config):
        length, n = config["input_size"], config["n_series"]
        return [
            BadCall("rank 2 input", (2, length * n), "float32", ("shape",)),
            BadCall("rank 4 input", (2, length, n, 1), "float32", ("shape",)),
            BadCall("wrong input_size", (2, length + 1, n), "float32", ("shape", "input_size")),
            BadCall("wrong n_series", (2, length, n + 1), "float32", ("shape", "n_series")),
            BadCall("integer dtype", (2, length, n), "int32", ("dtype",)),
        ]

    def cases(self):
        return [
            Case(
                {"n_series": 5, "input_size": 6, "dropout": 0.1, "ff_dim": 16},
                ((8, 6, 5),),
                "expand",
            ),
            Case(
                {"n_series": 7, "input_size": 4, "dropout": 0.0, "ff_dim": 3},
                ((16, 4, 7),),
                "bottleneck",
            ),
            # Square kernels: a transposed-layout port computes without a shape error here.
            Case(
                {"n_series": 6, "input_size": 3, "dropout": 0.0, "ff_dim": 6},
                ((5, 3, 6),),
                "square",
            ),
        ]

    def init_case(self):
        # 64x128 kernels: 8192 draws each, enough for 6-sigma moment tests.
        return Case(
            {"n_series": 64, "input_size": 3, "dropout": 0.0, "ff_dim": 128}, ((2, 3, 64),), "init"
        )

    def make_inputs(self, case, rng):
        (shape,) = case.input_shapes
        # Per-feature offsets and scales, so batch statistics differ from the moving ones.
        loc = rng.normal(0.0, 1.0, shape[1:])
        scale = rng.uniform(0.5, 2.0, shape[1:])
        return loc + scale * rng.standard_normal(shape)

    # -- the oracle ----------------------------------------------------------------------
    def forward(self, config, weights, inputs, *, training, masks=None):
        return _forward(config, weights, inputs, training=training, masks=masks)

    def alternatives(self):
        from portspec.diagnose import Fitted  # here: only the diagnoses need it

        def square_transposed(config, w, x, training):
            if config["n_series"] != config["ff_dim"]:
                raise ValueError("kernels are not square")
            w = {
                **w,
                "dense1.kernel": np.transpose(w["dense1.kernel"]),
                "dense2.kernel": np.transpose(w["dense2.kernel"]),
            }
            return _forward(config, w, x, training=training)[0]

        def option(**kw):
            return lambda config, w, x, training: _forward(config, w, x, training=training, **kw)[0]

        def with_eps(config, w, x, training, eps):
            return _forward(config, w, x, training=training, eps=eps)[0]

        def with_eps_fast(config, w, x, training, eps):  # the same, in NumPy's arithmetic
            from portspec import variants

            return variants.fm_forward(config, w, x, training=training, eps=eps,
                                       ops=variants.FAST)[0]

        def describe_eps(eps):
            if eps < 1e-11:
                return "BatchNorm epsilon ~0 instead of 1e-3 (fitted to the output)"
            known = "; 1e-5 is the PyTorch and Flax default" if abs(eps / 1e-5 - 1) < 0.05 else ""
            return f"BatchNorm epsilon {eps:.3g} instead of 1e-3 (fitted to the output{known})"

        def residual_normalised(config, w, x, training):
            # x + branch(x) where the residual adds BatchNorm's output instead of the raw input
            branch = _forward(config, w, x, training=training, residual=False)[0]
            flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
            if training:
                mean, var = flat.mean(0), flat.var(0)
            else:
                mean, var = w["norm.moving_mean"], w["norm.moving_variance"]
            z = w["norm.gamma"] * (flat - mean) / np.sqrt(var + EPSILON) + w["norm.beta"]
            return branch + z.reshape(x.shape)

        return [
            (
                "Dense kernels transposed (torch (out, in) layout loaded as (in, out))",
                square_transposed,
            ),
            ("BatchNorm epsilon (fitted)",
             Fitted(with_eps, describe_eps, EPSILON, fast=with_eps_fast)),
            (
                "features flattened time-last (c*input_size + t) instead of row-major",
                option(flatten="F"),
            ),
            (
                "batch statistics used in inference (training flag ignored)",
                option(force_batch_stats=True),
            ),
            (
                "moving statistics used in training (training flag ignored)",
                option(force_moving_stats=True),
            ),
            ("unbiased batch variance in the normalisation", option(ddof=1)),
            ("no residual connection", option(residual=False)),
            (
                "the residual adding the BatchNorm output instead of the raw input",
                residual_normalised,
            ),
        ]


def _forward(
    config,
    weights,
    inputs,
    *,
    training,
    masks=None,
    eps=EPSILON,
    flatten="C",
    force_batch_stats=False,
    force_moving_stats=False,
    ddof=0,
    residual=True,
):
    x = np.asarray(inputs, dtype=np.float64)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    p = config["dropout"]
    batch = x.shape[0]
    # Row-major: feature index t*n_series + c. (flatten="F" is a known mistake, for diagnoses.)
    seq = x if flatten == "C" else np.swapaxes(x, 1, 2)
    flat = seq.reshape(batch, -1)
    new = dict(w)
    use_batch = (training or force_batch_stats) and not force_moving_stats
    if use_batch:
        mean = exact.mean(flat, axis=0)
        var = exact.var(flat, axis=0, ddof=ddof) if batch > ddof else np.zeros_like(mean)
    else:
        mean, var = w["norm.moving_mean"], w["norm.moving_variance"]
    if training:
        batch_var = exact.var(flat, axis=0)  # biased (ddof=0), also for the moving update
        batch_mean = exact.mean(flat, axis=0)
        m = profiles.active().momentum  # the seeds' MOMENTUM unless another profile is chosen
        new["norm.moving_mean"] = m * w["norm.moving_mean"] + (1 - m) * batch_mean
        new["norm.moving_variance"] = (
            m * w["norm.moving_variance"] + (1 - m) * batch_var
        )
    z = w["norm.gamma"] * (flat - mean) / np.sqrt(var + eps) + w["norm.beta"]
    z = z.reshape(seq.shape)
    if flatten != "C":
        z = np.swapaxes(z, 1, 2)
    h = np.maximum(exact.matmul(z, w["dense1.kernel"]) + w["dense1.bias"], 0.0)
    h = _dropout(h, p, training, masks, "dropout1")
    y = exact.matmul(h, w["dense2.kernel"]) + w["dense2.bias"]
    y = _dropout(y, p, training, masks, "dropout2")
    return (x + y if residual else y), new


def _dropout(v, p, training, masks, site):
    if not training or p == 0.0:
        return v
    if p == 1.0:
        return np.zeros_like(v)
    if masks is None:
        raise ValueError(f"the oracle needs masks[{site!r}] for training with dropout {p}")
    return np.where(masks[site], v / (1.0 - p), 0.0)


SPEC = FeatureMixingSpec()
