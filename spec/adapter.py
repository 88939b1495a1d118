"""The adapter protocol: how the suite talks to an implementation, with NumPy at the boundary.

An implementation (ours in ``impls/`` or a third party's port) provides one ``Adapter``
subclass. The suite asks it to build a layer from a spec config and gets back a ``Handle``
whose methods take and return NumPy arrays and canonical weight dicts (names and layouts of the
spec's weight table). Nothing in the suite knows which framework is behind it.

Inputs follow the layer's call convention: one array for a single-input layer, a list of arrays
for a multi-input one. Arrays of low-precision dtypes come back as ``ml_dtypes`` arrays
(``bfloat16``) or ``float16``, so the suite can see the dtype an implementation computed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from safetensors.numpy import load_file, save_file

from portspec.clauses import NotApplicable

DTYPES = ("float32", "float64", "bfloat16", "float16")


class MissingWeight(NotApplicable):
    """A clause read or wrote a canonical weight the port does not hold as the spec has it.

    Raised by a handle when a weight is declared ``absent`` (the port has no such weight) or
    ``held_as`` another shape and a canonical-shaped value is written. A ``NotApplicable``: the
    clauses that touch the weight do not apply, and the reason names the weight.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(f"the port holds no {name} as the spec has it: {reason}")
        # ``name``: one canonical name, or several joined by ", " when one call needs them
        self.name, self.reason = name, reason


@dataclass(frozen=True)
class WeightLayout:
    """How a port holds one canonical weight (see ``Handle.weight_layout``).

    ``kind`` is ``"canonical"`` (the spec's shape and meaning), ``"held_as"`` (another shape or
    meaning: ``shape`` is the port's own, which ``get_weights``, ``set_weights`` and ``grad``
    use) or ``"absent"`` (``shape`` is None; the name is missing from ``get_weights``).
    ``canonical_shape`` is the spec's weight-table shape; ``reason`` is the author's words.
    """

    kind: str
    shape: tuple[int, ...] | None
    canonical_shape: tuple[int, ...] | None
    reason: str = ""


class Weights(dict):
    """A canonical weight dict. Reading a weight the port lacks raises ``MissingWeight``.
    ``own``: the names whose values are the port's own, not the spec's (what
    ``set_held_weights`` left); ``refused``: the ``MissingWeight`` that said so."""

    def __init__(self, values=(), absent: Mapping[str, str] | None = None, own=(),
                 refused: MissingWeight | None = None):
        super().__init__(values)
        self.absent = dict(absent or {})
        self.own, self.refused = tuple(own), refused

    def for_oracle(self) -> Weights:
        """These weights, for the oracle: ``MissingWeight`` (the refusal ``set_weights`` gave,
        word for word) where some are the port's own, so a clause whose first part needs no
        such weight runs it, and its comparison with the spec then does not apply."""
        if self.own:
            raise MissingWeight(self.refused.name, self.refused.reason)
        return self

    def __missing__(self, name):
        if name in self.absent:
            raise MissingWeight(name, self.absent[name])
        raise KeyError(name)


class Handle:
    """One built layer. Subclasses implement the abstract methods for their framework."""

    def forward(self, inputs, *, training: bool):
        """Call the layer eagerly. A training call updates the layer's state (BatchNorm)."""
        raise NotImplementedError

    def forward_compiled(self, inputs, *, training: bool):
        """Call the layer through the framework's compiler (jit, torch.compile, XLA)."""
        raise NotApplicable("this implementation has no compiled execution")

    def grad(self, inputs, cotangent, *, training: bool):
        """Gradients of sum(output * cotangent): (input grads shaped like inputs, weight dict).

        The weight dict holds every trainable canonical weight. A training call updates state.
        """
        raise NotImplementedError

    def grad_compiled(self, inputs, cotangent, *, training: bool):
        """``grad`` through the framework's compiler (one program for the forward and backward
        pass, where ``grad`` runs each operation eagerly)."""
        raise NotApplicable("this implementation has no compiled gradient")

    def get_weights(self) -> dict[str, np.ndarray]:
        """Canonical name -> array. A ``held_as`` weight comes at the port's own shape; an
        ``absent`` one is missing (reading it from a ``Weights`` raises ``MissingWeight``)."""
        raise NotImplementedError

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        raise NotImplementedError

    def weight_info(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Canonical name -> (shape, trainable), as the framework itself reports them."""
        raise NotImplementedError

    def weight_layout(self) -> dict[str, WeightLayout]:
        """Canonical name -> ``WeightLayout``: which weights the port holds as the spec has
        them, which at another shape or meaning (``held_as``) and which not at all
        (``absent``). By default every weight ``weight_info`` reports is canonical."""
        return {
            name: WeightLayout("canonical", tuple(shape), tuple(shape))
            for name, (shape, _) in self.weight_info().items()
        }

    def param_counts(self) -> tuple[int, int]:
        """(trainable, non-trainable) scalar counts, counted by the framework's own API."""
        raise NotImplementedError

    def get_config(self) -> dict:
        """The spec config the layer was built from, as the framework serialises it."""
        raise NotImplementedError

    def save_native(self, directory: str) -> str:
        """Save in the framework's native format; return what ``Adapter.load_native`` takes."""
        raise NotApplicable("this implementation has no native save format")

    # Canonical weights as safetensors: the portable format every implementation shares.
    def save_weights(self, path: str) -> None:
        weights = {k: np.ascontiguousarray(v) for k, v in self.get_weights().items()}
        save_file(weights, path)

    def load_weights(self, path: str) -> None:
        self.set_weights(read_weights(path))


class Adapter:
    """Builds layers of one implementation. ``name`` is what ``--impl`` and reports show."""

    name: str = "unnamed"
    framework: str = "unknown"
    layers: tuple[str, ...] = ()
    # The installed distribution the port wraps ("neuralforecast"): reports show its version
    # (read from the source by portspec.meta, so a plain string literal).
    package: str | None = None
    # Compute dtypes the implementation supports beyond float32 and float64.
    low_precision: tuple[str, ...] = ()
    # The implementation's own names of config parameters: spec name -> its name. A config
    # error naming either is the spec's clear error (FM-CONFIG, GFF-CONFIG).
    config_names: dict[str, str] = {}
    # Whether the portable-weights export (FM/GFF-PORTABLE's writer) calls the layer compiled
    # (``forward_compiled``, ``grad_compiled``) instead of eagerly. Only the built-in Flax
    # layers do: each eager JAX operation compiles an XLA program of its own (88 in a cold
    # cache's export, 2.4 s); compiled, the calls and the gradient are one program each (23 in
    # all with the initialisers'). A port's export stays eager.
    export_compiled: bool = False

    def build(self, layer: str, config: dict, *, input_shapes, seed: int, dtype: str | None = None):
        """Build and initialise a layer with the framework's own initialisers, seeded.

        ``dtype`` is the compute dtype (one of ``DTYPES``); ``None`` means the layer's default,
        which the spec requires to be float32.
        """
        raise NotImplementedError

    def load_native(self, layer: str, path: str) -> Handle:
        raise NotApplicable("this implementation has no native save format")

    def describe(self) -> str:
        """Versions and device, for reports."""
        return self.framework


def read_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a canonical weight file. safetensors only: a pickle is refused, never unpickled."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80" or head == b"PK":
        raise ValueError(
            f"{os.fspath(path)} is a pickle (or a zip of pickles, as torch.save writes); "
            "portspec reads weights only from safetensors files and never unpickles"
        )
    return load_file(os.fspath(path))


class HeldAtNeutral:
    """A handle whose port lacks weights the spec's layer can do without (``LayerSpec.neutral``:
    a Dense bias, a BatchNorm offset or scale), seen by the clauses as one that holds them at
    their neutral value, where it computes as the port does: ``set_weights`` takes such a weight
    at exactly that value and leaves it out, and refuses any other (``MissingWeight``, as the
    port itself does). Everything else is the port's handle. ``neutral``: name -> value;
    ``lacked``: name -> the port's reason."""

    def __init__(self, handle, neutral: Mapping[str, float], lacked: Mapping[str, str]):
        self._handle, self.neutral, self.lacked = handle, dict(neutral), dict(lacked)
        self.used = False  # whether a call set a weight it lacks at its neutral value

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __setattr__(self, name, value):
        if name in ("_handle", "neutral", "lacked", "used"):
            object.__setattr__(self, name, value)
        else:  # what a clause keeps on the handle (``set_held_weights``' own values)
            setattr(self._handle, name, value)

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        if any(n in self.neutral and not np.all(np.asarray(v) == self.neutral[n])
               for n, v in weights.items()):
            self._handle.set_weights(weights)  # MissingWeight, every weight it lacks named
        self._handle.set_weights({n: v for n, v in weights.items() if n not in self.neutral})
        self.used = self.used or any(n in self.neutral for n in weights)


def set_held_weights(handle, weights: Mapping[str, np.ndarray]) -> Weights:
    """``handle.set_weights(weights)`` for the weights the port holds as the spec has them;
    the others (``absent``, or ``held_as`` another shape or meaning: see
    ``Handle.weight_layout``) stay at the port's own values.

    Only for a clause whose expected values do not depend on those weights' values (the
    output equals the input when the second Dense is zero, whatever the normalisation; a
    compiled call against an eager one of the same state): each call site says why. Clauses
    whose expected values do depend on them call ``set_weights``, which raises
    ``MissingWeight`` (the clause does not apply, the weights named once).

    A ``held_as`` weight is set to the value it held at this handle's first such call (as
    built, where a clause sets weights right after building), so every call also restores
    what a training call moved since, as ``set_weights`` does for the others. Returns what the
    layer then holds, for the clause to set again or to move (FM-GRAD): the given values, a
    ``held_as`` weight's own (at its own shape), no ``absent`` one (reading it raises
    ``MissingWeight``); ``own`` names those left. Those values are the port's, not the
    spec's: never the oracle's input. A handle that takes every weight given (one holding
    them all as the spec has them) gets ``set_weights(weights)`` and nothing else.
    """
    try:
        handle.set_weights(weights)
    except MissingWeight as missing:
        refused = missing
    else:  # a weight held at its neutral value is still one the port lacks (no gradient)
        return Weights(weights, {n: why for n, why in getattr(handle, "lacked", {}).items()
                                 if n in weights})
    layout = handle.weight_layout()
    left = {n: w for n, w in layout.items() if n in weights and w.kind != "canonical"}
    if not left:
        raise refused
    if getattr(handle, "_own_values", None) is None:
        now = handle.get_weights()
        handle._own_values = {n: np.array(now[n]) for n, w in layout.items()
                              if w.kind == "held_as"}
    kept = {n: v for n, v in weights.items() if n not in left}
    kept.update({n: handle._own_values[n] for n, w in left.items() if w.kind == "held_as"})
    # a Dense bias of one constant, or a Dense kernel of zeros, means the same at any shape
    # (a bias per time step, a Dense over another axis): written at the port's own shape
    same = {n: np.full(np.shape(handle._own_values[n]), np.asarray(weights[n]).flat[0])
            for n, w in left.items() if w.kind == "held_as" and _constant(n, weights[n])}
    kept.update(same)
    handle.set_weights(kept)
    return Weights(kept, {n: w.reason for n, w in left.items() if w.kind == "absent"},
                   own=sorted(set(left) - set(same)), refused=refused)


def _constant(name: str, value) -> bool:
    """A value whose meaning does not depend on the shape it is held at: a Dense bias of one
    constant, a Dense kernel of zeros."""
    v = np.asarray(value)
    if v.size == 0 or not np.all(v == v.flat[0]):
        return False
    return name.endswith(".bias") or (name.endswith(".kernel") and v.flat[0] == 0)


def as_numpy_inputs(inputs):
    if isinstance(inputs, (list, tuple)):
        return [np.asarray(v) for v in inputs]
    return np.asarray(inputs)
