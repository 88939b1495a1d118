"""The base class for a port written as a Keras 3 layer (and for our Keras layers), on any backend.

Keras picks its backend once per process from ``KERAS_BACKEND``; ``KerasPortAdapter(variant=
"torch")`` sets it when Keras is not imported yet (``--impl keras-torch``) and raises
``RuntimeError`` when another backend is already loaded. A ``{backend}`` in ``name`` is filled
in (``"keras-{backend}"``). Compute dtypes map to Keras's dtype policies (bfloat16 and float16
are ``mixed_bfloat16`` / ``mixed_float16``: float32 variables). Gradients and compiled calls
have no backend-neutral Keras API, so those dispatch on the backend: ``jax.jit`` of a stateless
call, ``tf.function(jit_compile=True)``, ``torch.compile``, each made once per handle and
training flag. The native format is a one-layer ``keras.Model`` saved as ``.keras``.
"""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np

from portspec.layers import LAYERS
from portspec.ports.base import PortAdapter, PortHandle, floating, one_output, zeros

BACKENDS = ("jax", "torch", "tensorflow")
POLICIES = {
    "float32": "float32",
    "float64": "float64",
    "bfloat16": "mixed_bfloat16",
    "float16": "mixed_float16",
}


def select_backend(variant: str | None) -> None:
    """Set ``KERAS_BACKEND`` for this process, or raise when Keras already runs another."""
    if not variant:
        return
    if variant not in BACKENDS:
        raise RuntimeError(f"unknown Keras backend {variant!r}; one of {BACKENDS}")
    if "keras" in sys.modules:
        active = sys.modules["keras"].backend.backend()
        if active != variant:
            raise RuntimeError(
                f"Keras is already imported with backend {active!r} in this process; "
                f"run keras-{variant} in a separate process (KERAS_BACKEND={variant})"
            )
    os.environ["KERAS_BACKEND"] = variant


class KerasPortAdapter(PortAdapter):
    """Parameter paths are the variables' paths below the layer, dotted: ``feature_norm.gamma``.
    ``call`` defaults to ``layer(x, training=training)``, and ``layer([a, b],
    training=training)`` for a two-input layer: Keras passes the flag on only to a ``call``
    that takes ``training`` (``keras.layers.Layer.__call__``), so a layer without a training
    mode is called alike, and one that has one (a dropout on the gate) shows it."""

    framework = "keras"

    def __init__(self, variant: str | None = None):
        select_backend(variant)
        import keras

        self.keras = keras
        self.backend = keras.backend.backend()
        if self.backend == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)  # else float64 silently runs in float32
        self.name = self.name.format(backend=self.backend)

    def call(self, layer, inputs, *, training):
        return layer(inputs, training=training)

    def build(self, layer, config, *, input_shapes, seed, dtype=None):
        self.keras.utils.set_random_seed(seed)
        policy = None if dtype is None else POLICIES[dtype]
        uids = _name_uids()  # the layers this build names come after these (_name_note)
        obj = self.construct(layer, self.port_config(layer, config),
                             input_shapes=input_shapes, dtype=policy)
        multi = LAYERS[layer].multi_input
        if not obj.built:
            obj.build([tuple(s) for s in input_shapes] if multi else tuple(input_shapes[0]))
        handle = self._handle(layer, obj, config, input_shapes, dtype)
        handle._rng = np.random.default_rng(seed)  # the seeds of its eager calls on torch
        paths = {p for e in handle.held.values() for p, _ in e.pieces}
        handle.made_by_call = sorted(paths - set(handle._native()))  # build() left them
        if not paths <= set(handle._native()):
            # Sublayers made in build() create their weights on their first call: one
            # inference call on float32 zeros (Keras casts them to the layer's dtype), which
            # changes no state, makes them exist. Should it fail (a config the port accepted
            # but cannot run), the port's own first call fails the same way, where the clause
            # sees it.
            try:
                self.call(obj, zeros(input_shapes, multi, "float32"), training=False)
            except Exception:
                pass
        handle._uids = (uids, _name_uids())
        return handle

    def config_of(self, layer, obj):
        return obj.get_config()

    def load_native(self, layer, path):
        with open(path + ".json") as f:
            meta = json.load(f)
        try:
            obj = self.keras.saving.load_model(path).layers[-1]
        except TypeError as exc:
            if "deserialized" not in str(exc) and "locate" not in str(exc):
                raise
            raise TypeError(f"{exc} (Keras loads a custom layer class back only where it is "
                            "registered: @keras.saving.register_keras_serializable(package="
                            "...) on the port's layer class)") from exc
        shapes = [tuple(s) for s in meta["input_shapes"]]
        return self._handle(layer, obj, meta["config"], shapes, meta["dtype"])

    def describe(self):
        return f"{self.name} (keras {self.keras.__version__} on {self.backend})"


def _name_uids() -> dict:
    """Keras's count of the layers it has named after each class (``auto_name``), now."""
    from keras.src.backend.common import global_state

    return dict(global_state.get_global_attribute("object_name_uids", default={}) or {})


def _dtype(variable) -> str:
    """A Keras variable's dtype as NumPy names it (Keras 3 gives a string)."""
    from keras import backend

    return backend.standardize_dtype(variable.dtype)


class KerasPortHandle(PortHandle):
    def __init__(self, *args):
        super().__init__(*args)
        self._compiled = {}

    def _variables(self):
        prefix = self.obj.name + "/"
        return {
            (v.path[len(prefix) :] if v.path.startswith(prefix) else v.path).replace("/", "."): v
            for v in self.obj.weights
        }

    def _native(self):
        # integer state (a counter of training calls, as torch's num_batches_tracked) is no
        # weight: the PyTorch and Flax handles leave it out alike
        return {p: (tuple(v.shape), bool(v.trainable)) for p, v in self._variables().items()
                if floating(_dtype(v))}

    def _name_note(self, path):
        """Keras names a layer built without ``name=`` after its class, numbered by how many
        such it has named in the process (``dense``, then ``dense_1``, ...: ``auto_name``): a
        new name in every build, so no weight map can name that path for long. A layer is
        taken as named so where its name is its class's with a number its build drew (from
        the counts before and after the build, ``_uids``); a name the port gave stays."""
        from keras.src.utils.naming import to_snake_case

        if getattr(self, "_uids", None) is None:  # not made by build (a native file read back)
            return ""
        before, after = self._uids
        auto = set()
        for layer in self.obj._flatten_layers(include_self=False):
            base = to_snake_case(type(layer).__name__)
            m = re.fullmatch(rf"{re.escape(base)}(?:_(\d+))?", layer.name)
            drawn = (before.get(base, 0) <= int(m[1]) < after.get(base, 0) if m and m[1]
                     else bool(m) and base not in before and base in after)
            if drawn:
                auto.add(layer.name)
        named = [part for part in path.split(".") if part in auto]
        if not named:
            return ""
        plain = [re.sub(r"_\d+$", "", p) if p in auto else p for p in path.split(".")]
        names = [re.sub(r"_\d+$", "", p) for p in named]
        said = " and ".join(repr(p) for p in named)
        return (f" {said} {'is' if len(named) == 1 else 'are'} Keras's name"
                f"{'' if len(named) == 1 else 's'} for a layer built without one, new in every "
                f"build: name {'it' if len(named) == 1 else 'them'} "
                f"({', '.join(repr(n) for n in names)}) and map {'.'.join(plain)!r}")

    def _read(self):
        return {p: self._numpy(v.value) for p, v in self._variables().items()}

    def _write_all(self, staged):
        variables = self._variables()
        for path, value in staged:
            var = variables[path]
            var.assign(np.asarray(value, dtype=np.float64).astype(var.dtype))

    def _tensor(self, x):
        return keras_tensor(self.adapter.keras, x)

    def _numpy(self, t):
        return keras_numpy(self.adapter.keras, t)

    def _call(self, x, training):
        return one_output(self.adapter.call(self.obj, x, training=training))

    def forward(self, inputs, *, training):
        if training and self.adapter.backend == "torch":
            # Keras on PyTorch draws a seedless Dropout's masks from torch's global generator
            # (keras/src/backend/torch/random.py: "torch doesn't support seeding dropout"),
            # where the other backends give each layer its own: as portspec's PyTorch
            # handles do, each call seeds it from this handle's generator, so two layers
            # built alike draw alike whichever is called first
            import torch

            seed = int(getattr(self, "_rng", np.random.default_rng(0)).integers(2**62))
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)
                return self._numpy(self._call(self._tensor(inputs), training))
        return self._numpy(self._call(self._tensor(inputs), training))

    def narrowing(self, inputs, *, training):
        if self.dtype != "float64":
            return None
        from portspec.ports import narrowing

        backend, x = self.adapter.backend, self._tensor(inputs)
        if backend == "jax":
            import jax

            def traced():
                return jax.make_jaxpr(lambda t, n, v: self._stateless(t, n, v, training))(
                    *self._values(), x)

            return narrowing.in_jaxpr(traced, self.port_files())
        if backend == "torch":
            import torch

            return narrowing.in_torch(torch, lambda: self._call(x, training), self.port_files())
        import tensorflow as tf
        from keras.src.backend.common import global_state

        # a trace that raises inside a layer's call leaves that layer's Keras name scope on
        # Keras's stack (its __exit__ never runs), and every layer built after it would take
        # the scope into its variables' paths: the stack is put back as it was
        stack = list(global_state.get_global_attribute("name_scope_stack") or [])
        try:
            return narrowing.in_tf(tf, lambda: self._call(x, training), self.port_files())
        finally:
            global_state.set_global_attribute("name_scope_stack", stack)

    def _stateless(self, tvals, ntvals, x, training):
        """The call with the variables' values given, as JAX transformations need it."""
        obj, keras = self.obj, self.adapter.keras
        mapping = [
            *zip(obj.trainable_variables, tvals, strict=True),
            *zip(obj.non_trainable_variables, ntvals, strict=True),
        ]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            out = self._call(x, training)
        new = [scope.get_current_value(v) for v in obj.non_trainable_variables]
        return out, [n if n is not None else o for n, o in zip(new, ntvals, strict=True)]

    def _values(self):
        obj = self.obj
        return [v.value for v in obj.trainable_variables], [
            v.value for v in obj.non_trainable_variables
        ]

    def _assign_state(self, new):
        for var, value in zip(self.obj.non_trainable_variables, new, strict=True):
            var.assign(value)

    def _compile(self, training):
        backend = self.adapter.backend
        if backend == "jax":
            import jax

            return jax.jit(lambda t, n, v: self._stateless(t, n, v, training))
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(lambda v: self._call(v, training), jit_compile=True)
        import torch

        return torch.compile(lambda v: self._call(v, training))

    def forward_compiled(self, inputs, *, training):
        x = self._tensor(inputs)

        def make(fresh):
            if fresh or training not in self._compiled:
                self._compiled[training] = self._compile(training)
            return self._compiled[training]

        if self.adapter.backend == "torch":  # Inductor, as for a torch module
            import torch

            from portspec.ports.torch import inductor_run

            return inductor_run(torch, make, lambda fn: self._numpy(fn(x)))
        fn = make(False)
        if self.adapter.backend == "jax":
            out, new = fn(*self._values(), x)
            self._assign_state(new)
            return self._numpy(out)
        return self._numpy(fn(x))

    def _native_grad(self, inputs, cotangent, training, paths):
        backend, x = self.adapter.backend, self._tensor(inputs)
        cot = self._tensor(np.asarray(cotangent))
        variables = self._variables()
        wanted = [variables[p] for p in paths]
        gx, gw = getattr(self, f"_grad_{backend}")(x, cot, training, wanted)
        return self._numpy(gx), {p: self._numpy(g) for p, g in zip(paths, gw, strict=True)}

    def _grad_jax(self, x, cot, training, wanted):
        import jax
        import jax.numpy as jnp

        tv = self.obj.trainable_variables
        tvals, ntvals = self._values()

        def loss(t, v):
            out, new = self._stateless(t, ntvals, v, training)
            return jnp.sum(out * cot.astype(out.dtype)), new

        (gt, gx), new = jax.grad(loss, argnums=(0, 1), has_aux=True)(tvals, x)
        self._assign_state(new)
        by_id = {id(v): g for v, g in zip(tv, gt, strict=True)}
        return gx, [by_id[id(v)] for v in wanted]

    def _grad_torch(self, x, cot, training, wanted):
        import torch

        xs = [t.detach().requires_grad_(True) for t in (x if isinstance(x, list) else [x])]
        out = self._call(xs if isinstance(x, list) else xs[0], training)
        grads = torch.autograd.grad(
            (out * cot.to(out.dtype)).sum(),
            xs + [v.value for v in wanted],
            allow_unused=True,
            materialize_grads=True,  # a weight the output does not reach has gradient 0
        )
        gx = list(grads[: len(xs)]) if isinstance(x, list) else grads[0]
        return gx, list(grads[len(xs) :])

    def _grad_tensorflow(self, x, cot, training, wanted):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            out = self._call(x, training)
            loss = tf.reduce_sum(out * tf.cast(cot, out.dtype))
        zero = tf.UnconnectedGradients.ZERO  # a weight the output does not reach has gradient 0
        return tape.gradient(loss, [x, [self._source(v) for v in wanted]],
                             unconnected_gradients=zero)

    @staticmethod
    def _source(variable):
        return variable.value

    def param_counts(self):
        def count(weights):  # the floating variables, as _native (Keras's count_params
            # counts an integer counter too)
            return sum(int(np.prod(v.shape)) for v in weights if floating(_dtype(v)))

        return count(self.obj.trainable_weights), count(self.obj.non_trainable_weights)

    def extra_source(self, paths) -> str | None:
        """What in the port's module holds the weights outside the table (``paths``), where
        a Keras layer's own option adds them: a BatchNormalization built with
        ``renorm=True`` (batch renormalisation) keeps ``moving_stddev``, ``renorm_mean`` and
        ``renorm_stddev``. None where no option of a Keras layer accounts for them."""
        keras = self.adapter.keras
        for layer in self.obj._flatten_layers(include_self=True, recursive=True):
            if not (isinstance(layer, keras.layers.BatchNormalization)
                    and getattr(layer, "renorm", False)):
                continue
            own = [p for p in paths if p.rsplit(".", 1)[-1] in (
                "moving_stddev", "renorm_mean", "renorm_stddev")]
            if own:
                return (f"{layer.name} is a Keras BatchNormalization built with renorm=True "
                        "(batch renormalisation, Ioffe 2017): it keeps moving_stddev, "
                        "renorm_mean and renorm_stddev besides the moving statistics, and in "
                        "training corrects the batch statistics by r and d, constants in the "
                        "backward, where the spec's BatchNorm normalises by the batch "
                        "statistics alone (renorm=False, Keras's default)")
        return None

    def config_without_dtype(self) -> str | None:
        """Words for a layer whose ``get_config()`` does not carry its dtype policy (built
        without ``super().get_config()``, which holds name, trainable and dtype), so that a
        native load rebuilds it at Keras's default float32; None where it carries it."""
        config = self.obj.get_config()
        if "dtype" in config:
            return None
        return ("get_config leaves out the base layer's config (it is built without "
                "super().get_config(), which holds name, trainable and the dtype policy): a "
                "native load rebuilds the layer at Keras's default float32 "
                f"[get_config() keys: {', '.join(sorted(config))}]")

    made_by_call: list = []  # the mapped weights build() did not make (``build`` sets it)

    def unbuilt(self) -> str | None:
        """Words for a layer whose build() leaves mapped weights to the first call (sublayers
        not built there): a native load builds the layer, then restores its weights, and
        finds no variables for those; None where build() made every one."""
        if not self.made_by_call:
            return None
        return (f"build() leaves {', '.join(self.made_by_call)} to the layer's first call (its "
                "sublayers are not built in build()): a native load builds the layer and then "
                "restores its weights, and finds no variables to restore those into; build "
                "each sublayer in build() (self.dense.build(shape))")

    def foreign_compute(self) -> str | None:
        """Words for sublayers whose compute dtype is not the layer's (under a mixed policy, a
        sublayer built with ``dtype=self.dtype``, the variable dtype, computes in float32); None
        where every sublayer computes in the layer's."""
        own = self.obj.compute_dtype
        odd = [(layer.name, layer.compute_dtype) for layer in self.obj._flatten_layers(
            include_self=False, recursive=True) if getattr(layer, "compute_dtype", own) != own]
        if not odd:
            return None
        dtypes = "/".join(sorted({d for _, d in odd}))
        return (f"the sublayers {', '.join(n for n, _ in odd)} compute in {dtypes} under the "
                f"layer's {self.obj.dtype_policy.name} policy, which computes in {own}: they "
                "were built with the variable dtype (dtype=self.dtype, float32 under a mixed "
                "policy) where the policy was meant (dtype=self.dtype_policy), and their "
                f"{dtypes} results meet {own} values inside the call")

    def list_shapes_refused(self) -> str | None:
        """Words for a layer whose build() refuses its input shape given as lists, as a native
        load gives it (Keras rebuilds a loaded layer with the shape its config stored in JSON:
        lists, not tuples), where a fresh layer of the same config builds from the tuples;
        None where both build, or neither does."""
        from portspec.report import quote

        lists = [list(s) for s in self.input_shapes]
        tuples = [tuple(s) for s in self.input_shapes]
        if not self.spec.multi_input:
            lists, tuples = lists[0], tuples[0]
        outcomes = []
        for shape in (tuples, lists):
            layer = self.adapter.construct(
                self.layer, self.adapter.port_config(self.layer, self.config),
                input_shapes=self.input_shapes,
                dtype=None if self.dtype is None else POLICIES[self.dtype])
            try:
                layer.build(shape)
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001 - the refusal is the evidence
                outcomes.append(f"{type(exc).__name__}: {quote(str(exc))}")
        if outcomes[0] is not None or outcomes[1] is None:
            return None
        return (f"build() refuses the input shape as lists, {lists}, where it builds from "
                f"tuples: a native load rebuilds the layer with the shapes its config stored "
                f"in JSON, as lists ({outcomes[1]}); accept any sequence (tuple(shape))")

    def unregistered(self) -> str | None:
        """Words for a layer class the Keras registry cannot give back by its registered name
        (``keras.saving.register_keras_serializable`` left off), so that ``load_model`` cannot
        rebuild the layer; None for a registered class or one of Keras's own."""
        keras, cls = self.adapter.keras, type(self.obj)
        if cls.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow"):
            return None
        name = keras.saving.get_registered_name(cls)
        other = keras.saving.get_registered_object(name)
        if other is cls:
            return None
        if isinstance(other, type):  # the name taken over by a class registered after it
            return (f"the name {name!r} the layer class {cls.__qualname__} is registered "
                    f"under gives another class, {other.__qualname__}: it was registered "
                    "under the same name after it (a register_keras_serializable(package, "
                    "name) copied with its name), so a saved model that holds the layer "
                    f"rebuilds it as {other.__qualname__} when it is loaded")
        return (f"the layer class {cls.__qualname__} is not registered with "
                "Keras (keras.saving.register_keras_serializable), so a saved model that "
                "holds it cannot be rebuilt by name when it is loaded")

    def save_native(self, directory):
        keras = self.adapter.keras
        shapes = [tuple(s[1:]) for s in self.input_shapes]
        if self.spec.multi_input:
            inputs = [keras.Input(s) for s in shapes]
        else:
            inputs = keras.Input(shapes[0])
        path = os.path.join(directory, f"{self.layer}.keras")
        keras.Model(inputs, self.obj(inputs)).save(path)
        meta = {"config": self.config, "input_shapes": self.input_shapes, "dtype": self.dtype}
        with open(path + ".json", "w") as f:
            json.dump(meta, f)
        return path


KerasPortAdapter.handle_class = KerasPortHandle


def keras_tensor(keras, x):
    """NumPy (or a list of arrays) to Keras tensors; ml_dtypes bfloat16 goes via float32."""
    if isinstance(x, (list, tuple)):
        return [keras_tensor(keras, v) for v in x]
    x = np.asarray(x)
    if x.dtype.name == "bfloat16":
        return keras.ops.cast(keras.ops.convert_to_tensor(x.astype(np.float32)), "bfloat16")
    return keras.ops.convert_to_tensor(x)


def keras_numpy(keras, t):
    """Keras tensors (or a list) to NumPy; bfloat16 comes back as an ml_dtypes array."""
    if isinstance(t, (list, tuple)):
        return [keras_numpy(keras, v) for v in t]
    if keras.backend.standardize_dtype(t.dtype) == "bfloat16":
        import ml_dtypes

        t = keras.ops.cast(t, "float32")
        return keras.ops.convert_to_numpy(t).astype(ml_dtypes.bfloat16)
    return keras.ops.convert_to_numpy(t)
