"""GatedFeatureFusion: a learned gate between two feature representations (normative definition).

Source: seeds/003 (KMR GatedFeatureFusion). The seed draws the gate multiplying both branches;
the spec pins the convex form ``gate * a + (1 - gate) * b`` and the concatenation order.
"""

from __future__ import annotations

import numpy as np

from portspec import exact, validation
from portspec.clauses import Clause, serialization_clauses
from portspec.layers.base import BadCall, Case, LayerSpec, WeightSpec

ACTIVATIONS = ("sigmoid", "tanh", "relu", "softmax")


PREFIX = "GFF"


def _c(suffix, family, text, rationale=""):
    return Clause(f"{PREFIX}-{suffix}", family, text, rationale)


CLAUSES = [
    _c(
        "CONFIG",
        "config-errors",
        "activation is one of 'sigmoid' (default), 'tanh', 'relu', 'softmax'; any other "
        "value, an unknown parameter or a non-string raises ValueError or TypeError naming "
        "activation.",
        "The seed lists these four followed by 'etc.'; the spec closes the list, because "
        "activations beyond them (hard_sigmoid, gelu) differ between frameworks.",
    ),
    _c(
        "CALL",
        "call-errors",
        "A call with anything but a list of exactly two tensors, with tensors of different "
        "shapes, of rank < 2, with a feature size other than the built one, or of non-floating "
        "dtype raises ValueError or TypeError naming the inputs, the shape (showing the shapes "
        "it got) or the dtype.",
    ),
    _c(
        "SHAPE",
        "shape",
        "Inputs are two tensors of identical shape (..., F) of rank >= 2, features last; the "
        "output has that shape, for batch 1 and larger, ranks 2, 3 and 4; one layer, once "
        "called, runs on another batch size as a fresh one does.",
    ),
    _c(
        "WEIGHTS",
        "weight-table",
        "The layer holds exactly gate.kernel (2F, F) and gate.bias (F,), both trainable.",
    ),
    _c(
        "PARAMS",
        "param-counts",
        "The framework's own count is 2*F*F + F trainable and 0 non-trainable scalars.",
    ),
    _c("INIT", "init", "gate.kernel is Glorot-uniform (fan_in 2F, fan_out F) and gate.bias is 0, "
       "whatever the activation."),
    _c(
        "DETERMINISM",
        "determinism",
        "Two layers built with the same seed have identical weights and outputs; calls are "
        "repeatable.",
    ),
    *serialization_clauses(PREFIX),
    _c(
        "FORWARD",
        "inference",
        "gate = activation(concat([a, b], -1) @ gate.kernel + gate.bias) and the output is "
        "gate * a + (1 - gate) * b, equal to the NumPy oracle within the dtype's tolerance in "
        "float32 and float64, in training and inference alike.",
    ),
    _c(
        "GATE-ORDER",
        "gate-order",
        "The gate multiplies the first input and 1 - gate the second, and the first input "
        "fills the first F rows of gate.kernel.",
        "The seed's diagram multiplies both inputs by the gate; read literally that is not a "
        "fusion. The spec takes the convex combination, the only reading under which the "
        "gate 'balances the contributions'.",
    ),
    _c(
        "ACTIVATIONS",
        "activations",
        "Each supported activation matches the oracle; softmax normalises over the last "
        "(feature) axis.",
    ),
    _c(
        "CONVEX",
        "convex",
        "With the sigmoid gate the output lies elementwise between the two inputs, for any "
        "weights and inputs (property-based).",
    ),
    _c(
        "GRAD",
        "gradients",
        "Gradients of sum(output * cotangent) with respect to both inputs, gate.kernel and "
        "gate.bias agree with central differences of the float64 forward, and are finite where "
        "the gate saturates (|pre-activation| up to 1000, where the spec's gate is 0 or 1 and "
        "its derivative 0).",
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
        "The framework's compiled execution gives the eager output within the float32 tolerance.",
    ),
    _c(
        "VECTORS",
        "vectors",
        "On every golden vector in spec/vectors the output matches the stored value within the "
        "float32 tolerance.",
    ),
    _c(
        "PORTABLE",
        "portable",
        "Canonical weights written as safetensors by any implementation and read by this one "
        "give the writer's outputs within the float32 tolerance, before and after one identical "
        "training step.",
    ),
]


class GatedFeatureFusionSpec(LayerSpec):
    name = "GatedFeatureFusion"
    prefix = "GFF"
    neutral = {"gate.bias": 0.0}
    multi_input = True
    summary = (
        "gate = activation(concat([a, b]) @ K + bias), output = gate*a + (1-gate)*b, for two "
        "inputs of identical shape (..., F)."
    )
    clauses = CLAUSES
    config_params = [
        ("activation", "one of 'sigmoid' (default), 'tanh', 'relu', 'softmax'"),
    ]

    def validate_config(self, config) -> dict:
        validation.config_keys(self.name, config, (), ("activation",))
        return {
            "activation": validation.choice(
                "activation", config.get("activation", "sigmoid"), ACTIVATIONS
            )
        }

    def invalid_configs(self):
        return [
            ({"activation": "swish"}, "activation"),
            ({"activation": "Sigmoid"}, "activation"),
            ({"activation": None}, "activation"),
            ({"activation": 1}, "activation"),
            # an unknown parameter: a name no port renames a parameter to (config_names)
            ({"activation": "sigmoid", "no_such_parameter": 4}, "no_such_parameter"),
        ]

    def weight_table(self, config, input_shapes):
        f = input_shapes[0][-1]
        return [
            WeightSpec("gate.kernel", (2 * f, f), True, "glorot_uniform"),
            WeightSpec("gate.bias", (f,), True, "zeros"),
        ]

    def param_counts(self, config, input_shapes):
        f = input_shapes[0][-1]
        return 2 * f * f + f, 0

    def random_weights(self, config, input_shapes, rng):
        f = input_shapes[0][-1]
        return {
            "gate.kernel": rng.normal(0.0, 1.0 / np.sqrt(2 * f), (2 * f, f)),
            "gate.bias": rng.normal(0.0, 0.3, f),
        }

    def check_call(self, config, shapes, dtypes, features=None):
        if not isinstance(shapes, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) for s in shapes
        ):
            raise TypeError("GatedFeatureFusion inputs must be a list of two tensors")
        if len(shapes) != 2:
            raise ValueError(
                "GatedFeatureFusion inputs must be a list of exactly two tensors, "
                f"got {len(shapes)}"
            )
        a, b = (tuple(s) for s in shapes)
        if len(a) < 2:
            raise ValueError(f"GatedFeatureFusion inputs must have rank >= 2, got shape {a}")
        if a != b:
            raise ValueError(f"GatedFeatureFusion inputs must have the same shape, got {a} and {b}")
        if features is not None and a[-1] is not None and a[-1] != features:
            raise ValueError(
                f"GatedFeatureFusion was built for {features} features, got input shape {a}"
            )
        for i, dtype in enumerate(dtypes):
            validation.floating_dtype(f"GatedFeatureFusion input {i}", dtype)

    def bad_calls(self, config):
        return [
            BadCall("a single tensor, not a list", (4, 6), "float32", ("inputs", "list")),
            BadCall("one input", [(4, 6)], "float32", ("inputs", "two")),
            BadCall("three inputs", [(4, 6)] * 3, "float32", ("inputs", "two")),
            BadCall("mismatched shapes", [(4, 6), (4, 5)], "float32", ("shape",)),
            BadCall("mismatched batch", [(4, 6), (3, 6)], "float32", ("shape",)),
            # Shapes that broadcast: a gate computed as a @ Ka + b @ Kb (two Dense layers
            # instead of one over the concatenation) runs on them without an error and returns
            # the broadcast shape, silently pairing one row of b with every row of a.
            BadCall("broadcastable batch", [(4, 6), (1, 6)], "float32", ("shape",)),
            BadCall("broadcastable ranks", [(2, 4, 6), (4, 6)], "float32", ("shape", "rank")),
            BadCall("rank 1 inputs", [(6,), (6,)], "float32", ("shape", "rank")),
            BadCall(
                "feature size other than the built one",
                [(4, 7), (4, 7)],
                "float32",
                ("shape", "features"),
            ),
            BadCall("integer dtype", [(4, 6), (4, 6)], "int32", ("dtype",)),
        ]

    def cases(self):
        return [
            Case({"activation": "sigmoid"}, ((16, 6), (16, 6)), "rank2"),
            Case({"activation": "sigmoid"}, ((3, 5, 6), (3, 5, 6)), "rank3"),
        ]

    def config_cases(self):
        # rank 3, so that a softmax over the wrong axis shows
        shapes = ((3, 5, 6), (3, 5, 6))
        return [Case({"activation": name}, shapes, name) for name in ACTIVATIONS]

    def init_case(self):
        return Case({"activation": "sigmoid"}, ((2, 64), (2, 64)), "init")

    def init_cases(self):
        # the initialiser is Glorot-uniform whatever the activation (KMR's Dense default); a
        # port may scale it by torch's calculate_gain(activation)
        base = self.init_case()
        return [base, *(Case({"activation": name}, base.input_shapes, f"init-{name}")
                        for name in ACTIVATIONS if name != base.config["activation"])]

    def make_inputs(self, case, rng):
        return [rng.standard_normal(s) for s in case.input_shapes]

    def forward(self, config, weights, inputs, *, training=False, masks=None):
        return _forward(config, weights, inputs), dict(weights)

    def alternatives(self):
        def option(**kw):
            return lambda config, w, x, training: _forward(config, w, x, **kw)

        def sigmoid_always(config, w, x, training):
            if config["activation"] == "sigmoid":
                raise ValueError("indistinguishable from the spec with a sigmoid gate")
            return _forward({**config, "activation": "sigmoid"}, w, x)

        return [
            ("gate roles swapped (gate * b + (1 - gate) * a)", option(swap_roles=True)),
            ("concatenation order swapped (concat([b, a]))", option(swap_concat=True)),
            (
                "the gate multiplying both inputs (gate * a + gate * b, the seed's diagram)",
                option(both=True),
            ),
            ("a gated residual (a + gate * b)", option(residual=True)),
            ("softmax over the first axis instead of the last", option(softmax_axis=0)),
            ("the activation parameter ignored (a sigmoid gate always)", sigmoid_always),
        ]


def _forward(
    config, weights, inputs, *, swap_roles=False, swap_concat=False, both=False, residual=False,
    softmax_axis=-1,
):
    a, b = (np.asarray(v, dtype=np.float64) for v in inputs)
    k = np.asarray(weights["gate.kernel"], dtype=np.float64)
    bias = np.asarray(weights["gate.bias"], dtype=np.float64)
    parts = [b, a] if swap_concat else [a, b]
    gate = activate(
        config["activation"], exact.matmul(np.concatenate(parts, axis=-1), k) + bias,
        axis=softmax_axis,
    )
    if both:
        return gate * a + gate * b
    if residual:
        return a + gate * b
    if swap_roles:
        a, b = b, a
    return gate * a + (1.0 - gate) * b


def activate(name: str, z: np.ndarray, axis: int = -1) -> np.ndarray:
    if name == "sigmoid":
        return exact.sigmoid(z)
    if name == "tanh":
        return exact.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "softmax":
        return exact.softmax(z, axis=axis)
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")


SPEC = GatedFeatureFusionSpec()
