"""The generic port adapter: canonical weights over a port's own, whatever its framework.

A port's adapter (ours in ``impls/`` are written the same way) declares, per layer, where each
canonical weight of the spec's weight table lives in the port::

    weights = {"FeatureMixing": {
        "norm.gamma": ("bn.weight", identity),          # held as the spec has it
        "dense1.kernel": ("fc1.weight", transpose),     # torch Linear is (out, in)
        "norm.moving_mean": absent("LayerNorm keeps no moving statistics"),
        "norm.beta": held_as("ln.bias", why="a LayerNorm (L, N) offset"),
    }}

and, where the port's constructor differs from the spec's config, ``config_names`` (spec name ->
the port's) and ``extra_args`` (layer -> fixed constructor arguments, an activation module
say). A weight of the port that the map does not name shows under its own path, so the
weight-table clause reports it; nothing is hidden or corrected on the port's behalf.

A weight the port holds as several, a (2F, F) kernel as two (F, F) Dense kernels say, is
``concat`` of them: read, written and differentiated as the spec's one weight.

Weights the port does not hold as the spec has them (``Handle.weight_layout``):

- ``absent``: missing from ``get_weights`` and ``weight_info``; reading it from the returned
  dict, or writing it with ``set_weights``, raises ``MissingWeight`` (a ``NotApplicable``).
- ``held_as``: reported under its canonical name at the port's own shape by ``get_weights``,
  ``weight_info`` and ``grad``; ``set_weights`` takes that shape and raises ``MissingWeight``
  for a value of the canonical shape.

So a clause that reads or writes such a weight does not apply, with the weight named as the
reason (each named once), and the clauses that never touch it run as usual. A clause whose
expected values do not depend on such a weight's value (the residual with the second Dense
zeroed, compiled against eager, the dropout probes, gradients against the port's own central
differences, the round trips) sets weights through ``portspec.adapter.set_held_weights``,
which leaves those at the port's own values, and runs. A weight the spec's layer can do without
(a Dense bias, a BatchNorm offset or scale: ``LayerSpec.neutral``) declared ``absent`` is
different: the numeric clauses judge the port against the spec's layer with that weight at its
neutral value (a bias 0, a scale 1), which is what a bias-free Dense or Keras's
``center=False`` computes, and a failure says so ("judged with gate.bias at 0: the port holds
none"). FM/GFF-WEIGHTS and -PARAMS fail for the missing weight; any other mistake fails the
clauses that see it, a root cause of its own. The layout is stable API: the root cause
analysis reads ports' weights through it.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from portspec.adapter import Adapter, Handle, MissingWeight, WeightLayout, Weights
from portspec.clauses import NotApplicable
from portspec.layers import LAYERS

# -- transforms between the port's layout and the canonical one ----------------------------


@dataclass(frozen=True)
class Transform:
    """``to_canonical(native, canonical_shape)`` and ``to_native(canonical, native_shape)``."""

    name: str
    to_canonical: Callable[[np.ndarray, tuple], np.ndarray]
    to_native: Callable[[np.ndarray, tuple], np.ndarray]


identity = Transform("identity", lambda v, shape: v, lambda v, shape: v)
# A 2-D kernel stored (out, in), as torch.nn.Linear.weight is.
transpose = Transform("transpose", lambda v, shape: v.T, lambda v, shape: v.T)


def floating(dtype) -> bool:
    """Is ``dtype`` a floating-point type: NumPy's, or one of ml_dtypes' (``bfloat16``,
    ``float8_*``: how JAX's and TensorFlow's weights come to NumPy), which NumPy does not class
    as ``np.floating`` (``np.issubdtype(bfloat16, np.floating)`` is False)."""
    d = np.dtype(dtype)
    return bool(np.issubdtype(d, np.floating)) or d.name.startswith(("bfloat16", "float8_",
                                                                     "float6_", "float4_"))


def reshape(order: str = "C") -> Transform:
    """Same values, another shape (a flat BatchNorm vector stored as (L, N), say)."""
    return Transform(
        f"reshape({order})",
        lambda v, shape: np.reshape(v, shape, order=order),
        lambda v, shape: np.reshape(v, shape, order=order),
    )


@dataclass(frozen=True)
class Entry:
    """Where one canonical weight lives: ``kind`` is canonical, held_as or absent. ``parts``
    (``concat``) holds it as several of the port's weights, each a (path, Transform) whose
    canonical-layout values concatenate along ``axis``; ``path`` is then the first part's."""

    kind: str
    path: str | None = None
    transform: Transform = identity
    shape: tuple | Callable | None = None  # held_as: the declared own shape, or of config
    why: str = ""
    parts: tuple = ()
    axis: int = 0
    index: tuple | None = None  # ``part``: where in the port's weight the canonical one is

    @property
    def pieces(self) -> tuple[tuple[str, Transform], ...]:
        """Each of the port's weights that holds this one, with its transform."""
        return self.parts or ((self.path, self.transform),)


def absent(why: str) -> Entry:
    """A canonical weight the port does not have: ``absent("LayerNorm keeps no moving
    statistics")``."""
    return Entry("absent", why=why)


def held_as(path: str, shape=None, *, why: str = "", transform: Transform = identity) -> Entry:
    """A canonical weight the port holds at another shape or meaning, at ``path``.

    ``shape`` (a tuple, or a function of the spec config returning one) is the port's own
    shape after ``transform``; None takes whatever the port holds. Example: one scalar
    BatchNorm statistic, ``held_as("norm.running_mean", (1,), why="one statistic for all")``.
    """
    return Entry("held_as", path, transform, shape, why or f"held as {path}")


def concat(*parts, axis: int = 0) -> Entry:
    """A canonical weight the port holds as several weights: the spec's value is theirs, each
    in canonical layout after its transform, concatenated along ``axis``. Each part is a path
    (held as is) or a (path, Transform) pair. GatedFeatureFusion's gate written as two Dense
    layers, ``gate_a(a) + gate_b(b)``, holds the (2F, F) kernel as two (F, F) halves, the rows
    that see ``a`` first (the spec concatenates ``[a, b]``)::

        "gate.kernel": concat("gate_a.kernel", "gate_b.kernel", axis=0)          # Keras, Flax
        "gate.kernel": concat(("gate_a.weight", transpose),
                              ("gate_b.weight", transpose), axis=0)               # torch Linear

    Raises ``ValueError`` for fewer than two parts; ``set_weights`` raises it where the parts'
    shapes do not add up to the spec's.
    """
    pieces = tuple((p, identity) if isinstance(p, str) else tuple(p) for p in parts)
    if len(pieces) < 2:
        raise ValueError(f"concat needs two or more parts, got {len(pieces)}")
    for piece in pieces:
        if len(piece) != 2 or not isinstance(piece[0], str) or not isinstance(piece[1], Transform):
            raise TypeError(f"a concat part is a path or a (path, Transform) pair, got {piece!r}")
    return Entry("canonical", pieces[0][0], pieces[0][1], parts=pieces, axis=axis)


def part(path: str, index, transform: Transform = identity) -> Entry:
    """A canonical weight held as part of one of the port's weights: ``weight[index]`` (an
    int, a slice or a tuple of them), after which ``transform`` applies. Several canonical
    weights may be parts of one weight; a write changes only its part. A BatchNorm whose
    scale and offset are one (2, L*N) parameter::

        "norm.gamma": part("affine", 0), "norm.beta": part("affine", 1)

    Raises ``TypeError`` for an index that is not an int, a slice or a tuple of them.
    """
    parts = index if isinstance(index, tuple) else (index,)
    if not parts or not all(isinstance(i, int | slice) and not isinstance(i, bool)
                            for i in parts):
        raise TypeError(f"part's index is an int, a slice or a tuple of them, got {index!r}")
    return Entry("canonical", path, transform, index=parts,
                 why=f"part {_shown(parts)} of {path}")


def _shown(index: tuple) -> str:
    def one(i):
        if isinstance(i, int):
            return str(i)
        return ":".join("" if v is None else str(v) for v in (i.start, i.stop)) + (
            f":{i.step}" if i.step is not None else "")
    return f"[{', '.join(one(i) for i in index)}]"


def _part_shape(shape, index) -> tuple[int, ...]:
    """The shape of ``weight[index]`` for a weight of ``shape``; ``shape`` for no index."""
    shape = tuple(shape)
    return shape if index is None else tuple(np.shape(np.empty(shape)[index]))


def split_parts(value, axis: int, shapes) -> list[np.ndarray]:
    """``value`` cut along ``axis`` into the parts of ``shapes`` (each's size on that axis):
    what ``concat`` joined, back apart."""
    cuts = np.cumsum([s[axis] for s in shapes])[:-1]
    return np.split(value, cuts, axis=axis)


def _entry(value) -> Entry:
    """One entry of a weight map: an ``Entry`` (``absent``, ``held_as``, ``concat``,
    ``part``), a pair (the port's path, a ``Transform``), or the path alone (held as the spec
    holds it: ``identity``). Raises TypeError for anything else."""
    if isinstance(value, Entry):
        return value
    if isinstance(value, str):
        return Entry("canonical", value, identity)
    # a transform is what the handles call: to_canonical and to_native (a Transform, or any
    # object with both, as before this check)
    if (isinstance(value, tuple | list) and len(value) == 2 and isinstance(value[0], str)
            and all(callable(getattr(value[1], f, None)) for f in ("to_canonical", "to_native"))):
        return Entry("canonical", value[0], value[1])
    raise TypeError(
        f"{value!r} is not a weight-map entry: give the port's path ('fc1.bias'), a pair of "
        "the path and a Transform of portspec.ports (identity, transpose, reshape()), or "
        "absent(), held_as(), concat() or part()")


# -- the generic adapter and handle ---------------------------------------------------------

# What a refusal adds where the spec's weight is several of the port's (``split_guess``);
# portspec.suite.areas.structure reads it back.
# How a weight write begins when a call rebound the state it held to a plain array (a Flax
# ``self.mean = v`` where ``self.mean[...] = v`` updates the nnx.Variable): the root causes
# name the rebinding from these words (rootcause._raised), whatever call met it first.
REBOUND = "a call rebound the port's "

SPLIT_HINT = ("the spec's is several of the port's weights: map it with {call}, in the order "
              "the layer uses them")


class PortAdapter(Adapter):
    """What a port author fills in; the framework subclasses do the rest."""

    # layer -> {canonical name: the port's parameter path | (path, Transform) | absent() |
    # held_as() | concat() | part()}; a path alone is held as the spec holds it (identity)
    weights: dict[str, dict] = {}
    # layer -> fixed constructor arguments merged into the config ``construct`` gets
    extra_args: dict[str, dict] = {}
    handle_class: type = None  # each framework's handle; a subclass may bring its own

    def construct(self, layer: str, config: dict, *, input_shapes, dtype):
        """Return the port's layer object for a config (in the port's own names, with
        ``extra_args``); ``dtype`` as the framework names it (a Keras policy, a torch dtype,
        a JAX dtype name) or None for the default."""
        raise NotImplementedError

    def check_weights(self) -> None:
        """Every entry of ``weights`` is one (``_entry``); TypeError naming the first that is
        not, by its layer and canonical name."""
        for layer, entries in self.weights.items():
            for name, value in entries.items():
                try:
                    _entry(value)
                except TypeError as exc:
                    raise TypeError(f"{type(self).__name__}.weights[{layer!r}][{name!r}]: "
                                    f"{exc}") from None

    def weight_rule(self, name: str):
        """The entry of a canonical weight of a layer ``weights`` does not list: a naming
        convention (``torch_names``, ``flax_names``), so a new layer needs no map."""
        raise ValueError(f"{type(self).__name__}.weights maps no {name!r}")

    def weight_map(self, layer: str, config: dict, names=()) -> dict[str, Entry]:
        """Canonical name -> Entry: ``weights[layer]``, else ``weight_rule`` of ``names`` (the
        spec's weight table)."""
        if layer in self.weights:
            return {name: _entry(v) for name, v in self.weights[layer].items()}
        return {name: _entry(self.weight_rule(name)) for name in names}

    def port_config(self, layer: str, config: dict) -> dict:
        """The spec config in the port's names, with the layer's fixed extra arguments."""
        renamed = {self.config_names.get(k, k): v for k, v in config.items()}
        return {**renamed, **self.extra_args.get(layer, {})}

    def config_of(self, layer: str, obj) -> dict:
        """The config the port object reports, in the port's names; by default its
        attributes of those names."""
        keys = [self.config_names.get(n, n) for n, _ in LAYERS[layer].config_params]
        missing = [k for k in keys if not hasattr(obj, k)]
        if missing:
            raise NotApplicable(f"the port keeps no {', '.join(missing)} to report its config by")
        return {k: getattr(obj, k) for k in keys}

    def _handle(self, layer, obj, config, input_shapes, dtype, **extra):
        return self.handle_class(self, layer, obj, config, input_shapes, dtype, **extra)


# the packages whose classes a port's layer or adapter derives from: not the port's own code
FRAMEWORK_MODULES = ("builtins", "torch", "keras", "tf_keras", "tensorflow", "flax", "jax",
                     "portspec")


class PortHandle(Handle):
    """Canonical weights over the framework's own: subclasses give ``_native``, ``_read``,
    ``_write`` (or ``_write_all``) and ``_native_grad``, all keyed by the port's parameter
    paths."""

    def __init__(self, adapter: PortAdapter, layer, obj, config, input_shapes, dtype):
        self.adapter, self.layer, self.obj = adapter, layer, obj
        self.config, self.input_shapes, self.dtype = dict(config), input_shapes, dtype
        self.spec = LAYERS[layer]
        try:
            table = self.spec.weight_table(config, input_shapes)
        except Exception:  # a malformed config the port accepted: the clause reports that
            table = []
        self.shapes = {w.name: tuple(w.shape) for w in table}
        try:
            self.map = adapter.weight_map(layer, config, tuple(self.shapes))
        except ValueError as exc:  # no entry for a weight: say what the port holds to map
            try:
                held = sorted(self._native())
            except Exception:  # noqa: BLE001 - the map's own words are then all there is
                raise exc from None
            raise ValueError(f"{exc}; the port holds {held}: map each of the spec's weights "
                             f"{sorted(self.shapes)} to one of them in the adapter's "
                             "weights (portspec.ports)") from None
        self.absent = {n: e.why for n, e in self.map.items() if e.kind == "absent"}
        self.held = {n: e for n, e in self.map.items() if e.kind != "absent"}

    def _native(self) -> dict[str, tuple[tuple[int, ...], bool]]:
        """Every floating weight of the port: path -> (shape, trainable), as the framework says."""
        raise NotImplementedError

    def port_files(self) -> list[str]:
        """The source files of the port's layer class and of its adapter class: the frames
        the narrowing words name as the port's (``portspec.ports.narrowing``)."""
        files = []
        for klass in (*type(self.obj).__mro__, *type(self.adapter).__mro__):
            if klass.__module__.split(".")[0] in FRAMEWORK_MODULES:
                continue
            # the class's own functions say where it is written, registered as a module or not
            files += [f.__code__.co_filename for f in vars(klass).values()
                      if inspect.isfunction(f)]
        return list(dict.fromkeys(files))

    def narrowing(self, inputs, *, training) -> str | None:
        """Where a float64 layer's call turns a float64 value into a narrower float, as words
        (``portspec.ports.narrowing``); None where it does not, the layer is not float64, or
        the framework gives no way to see it (Keras on TensorFlow)."""
        return None

    def _read(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _write(self, path: str, value: np.ndarray) -> None:
        """One weight into the port; a handle may give ``_write_all`` instead (below)."""
        raise NotImplementedError

    def _native_grad(self, inputs, cotangent, training, paths):
        """(input gradients, {path: gradient}) of sum(output * cotangent) for ``paths``."""
        raise NotImplementedError

    def _native_grad_compiled(self, inputs, cotangent, training, paths):
        """``_native_grad`` through the framework's compiler; not every handle has one."""
        raise NotApplicable("this implementation has no compiled gradient")

    def _write_all(self, staged) -> None:
        """Write each (path, value) pair: ``_write`` of each by default. The framework handles
        (PyTorch, Keras, tf_keras, Flax) give this instead of ``_write``: their lookup of a
        variable walks the whole module (``state_dict``, Keras's weight list, ``nnx.state``),
        once here for every pair."""
        for path, value in staged:
            self._write(path, value)

    def _mapped(self) -> set[str]:
        """The port's paths the weight map names for a weight."""
        return {p for e in self.held.values() for p, _ in e.pieces}

    def _entry(self, canonical: str, native=None) -> Entry:
        """The map's entry of ``canonical``, checked against ``native`` (``_native()``, which
        a caller looking up several entries computes once: each call walks the module)."""
        entry = self.held[canonical]
        native = self._native() if native is None else native
        for path, _ in entry.pieces:
            if path not in native:
                # a misspelt path: the nearest of the paths the map names for no weight
                close = _nearest(path, [n for n in native if n not in self._mapped()],
                                 native, self.shapes.get(canonical))
                note = self._name_note(close) if close else ""
                hint = f" no {path!r} (did you mean {close!r}?{note}): it has" if close else ""
                raise ValueError(
                    f"the weight map names {path!r} for {canonical!r}, but the port has{hint} "
                    f"only {sorted(native)}"
                )
        return entry

    def _name_note(self, path: str) -> str:
        """Words on a path the map may have meant, where the framework named a part of it
        (``KerasPortHandle``: a Keras layer built without a name); '' otherwise."""
        return ""

    def _to_canonical(self, name, values):
        """The canonical value of ``name`` from the port's values, by path."""
        entry = self.held[name]
        if entry.parts:
            return np.concatenate([np.asarray(t.to_canonical(np.asarray(values[p]), None))
                                   for p, t in entry.parts], axis=entry.axis)
        shape = self.shapes.get(name) if entry.kind == "canonical" else None
        held = np.asarray(values[entry.path])
        if entry.index is not None:
            held = held[entry.index]
        return entry.transform.to_canonical(held, shape)

    def _to_native(self, name, value, native) -> list[tuple[str, np.ndarray]]:
        """(path, value) pairs that write canonical ``value`` of ``name`` at the port's shapes;
        ``ValueError`` naming the shapes where it does not fit."""
        entry = self.held[name]
        staged = []
        if entry.parts:
            sizes = self.part_shapes(name, native)[1]
            axis = entry.axis % value.ndim if value.ndim else 0
            rest = {tuple(np.delete(s, axis)) for s in sizes if len(s) == value.ndim}
            if (any(len(s) != value.ndim for s in sizes) or rest != {tuple(np.delete(value.shape,
                                                                                    axis))}
                    or sum(s[axis] for s in sizes) != value.shape[axis]):
                said = " + ".join(f"{p} {s}" for (p, _), s in zip(entry.parts, sizes, strict=True))
                raise ValueError(f"{name!r} of shape {value.shape} is mapped to {said} along axis "
                                 f"{entry.axis}, which do not add up to it")
            for (path, t), part in zip(entry.parts, split_parts(value, axis, sizes), strict=True):
                staged.append((path, t.to_native(part, native[path][0])))
        else:  # a part (``part``) is written into its weight later (set_weights)
            own = _part_shape(native[entry.path][0], entry.index)
            staged.append((entry.path, entry.transform.to_native(value, own)))
        first = self.__dict__.setdefault("_first_shapes", {
            p: tuple(shape) for p, (shape, _) in native.items()})
        fitted = []
        for path, part in staged:
            own = _part_shape(native[path][0], entry.index)
            if tuple(np.shape(part)) != own:
                if (entry.index is None and first.get(path) == tuple(np.shape(part))
                        and np.size(part) == int(np.prod(own))):
                    # a shape the port's own call gave the weight since it was first written
                    # (a moving statistic stored with keepdims=True): the values as it holds
                    # them now; the clause that reads the weight back shows the change
                    fitted.append((path, np.reshape(part, own)))
                    continue
                hint = "" if entry.parts else self._hint(name, entry, value, native)
                raise ValueError(f"{name!r} maps to {path} of shape {own} for the spec's "
                                 f"{tuple(np.shape(value))}{hint}")
            fitted.append((path, part))
        return fitted

    def _hint(self, name, entry, value, native) -> str:
        """What the map may have meant where canonical ``value`` does not fit the one weight
        ``entry`` names: its shape transposed, reshaped, or the weight one of several parts."""
        own = tuple(native[entry.path][0])
        held = tuple(np.shape(entry.transform.to_native(value, own)))
        if held[::-1] == own and tuple(np.shape(value)) == own:  # the map transposes it
            return ("; the port holds it at the spec's shape, and the map transposes it: map it "
                    "with portspec.ports.identity")
        if held[::-1] == own:
            return "; the spec's shape transposed: map it with portspec.ports.transpose"
        if value.size == int(np.prod(own)):
            return "; as many values as the spec's shape: map it with portspec.ports.reshape()"
        call = self.split_guess(name, native)
        return f"; {SPLIT_HINT.format(call=call)}" if call else ""

    def split_guess(self, name, native=None) -> str | None:
        """The ``concat`` call that maps canonical ``name`` where the map names one weight
        and the spec's shape is whole copies of it along one axis, as many as that weight and
        the port's unmapped weights of its shape make (a gate kernel written as two Dense
        layers): ``"portspec.ports.concat('gate_a.kernel', 'gate_b.kernel', axis=0)"``, the
        parts sorted by path, which the author checks against the layer's order. None
        otherwise."""
        native = self._native() if native is None else native
        entry, spec = self.held.get(name), self.shapes.get(name)
        if entry is None or entry.parts or spec is None or entry.path not in native:
            return None
        own = tuple(native[entry.path][0])
        try:
            part = tuple(np.shape(entry.transform.to_canonical(np.zeros(own), None)))
        except Exception:  # noqa: BLE001 - a transform that needs the canonical shape
            return None
        if len(part) != len(spec):
            return None
        differ = [i for i, (a, b) in enumerate(zip(spec, part, strict=True)) if a != b]
        if len(differ) != 1 or spec[differ[0]] % part[differ[0]]:
            return None
        axis, count = differ[0], spec[differ[0]] // part[differ[0]]
        mapped = self._mapped()
        others = [p for p, (shape, _) in native.items() if p not in mapped and tuple(shape) == own]
        if count < 2 or len(others) != count - 1:
            return None
        said = {identity: None, transpose: "transpose"}.get(entry.transform, entry.transform.name)
        parts = ", ".join(repr(p) if said is None else f"({p!r}, {said})"
                          for p in sorted([entry.path, *others]))
        return f"portspec.ports.concat({parts}, axis={axis})"

    def get_weights(self):
        values, native = self._read(), self._native()
        for n in self.held:
            self._entry(n, native)
        return Weights({n: self._to_canonical(n, values) for n in self.held}, self.absent)

    def set_weights(self, weights):
        native = self._native()
        staged, missing = [], {}
        for name, value in weights.items():
            if name in self.absent:
                missing[name] = self.absent[name]
                continue
            if name not in self.held:
                raise ValueError(f"unknown weight {name!r}; weights are {sorted(self.held)}")
            entry = self._entry(name, native)
            value = np.asarray(value)
            want = (self._own_shape(name, native) if entry.kind == "held_as"
                    else self.shapes.get(name))
            if want is not None and value.shape != tuple(want):
                if entry.kind == "held_as" and value.shape == self.shapes.get(name):
                    missing[name] = f"{entry.why}, shape {tuple(want)}"
                    continue
                raise ValueError(f"weight {name!r} has shape {tuple(want)}, got {value.shape}")
            index = entry.index
            staged.extend((p, v, index) for p, v in self._to_native(name, value, native))
        if missing:  # every weight the clause needs and the port lacks, named once
            raise MissingWeight(", ".join(missing), "; ".join(dict.fromkeys(missing.values())))
        # parts (``part``) written into their weight as it is, several parts of one weight once
        whole, current = {}, None
        for path, value, index in staged:
            if index is None:
                whole[path] = value
                continue
            if path not in whole:
                current = self._read() if current is None else current
                whole[path] = np.array(current[path], dtype=np.float64, copy=True)
            whole[path][index] = value
        self._write_all(list(whole.items()))  # all checked first: a refused call changes nothing

    def _own_shape(self, name, native=None) -> tuple[int, ...]:
        """The shape the port holds a weight at, after its transform."""
        native = self._native() if native is None else native
        entry = self._entry(name, native)
        zeros = {p: np.zeros(native[p][0]) for p, _ in entry.pieces}
        shape = tuple(np.shape(self._to_canonical(name, zeros)))
        declared = entry.shape(self.config) if callable(entry.shape) else entry.shape
        if entry.kind == "held_as" and declared is not None and tuple(declared) != shape:
            raise ValueError(f"{name!r} is declared held as shape {declared}, the port has {shape}")
        return shape

    def fused(self) -> dict[str, tuple[list[str], np.ndarray]]:
        """Each of the port's weights that holds two or more canonical ones as parts
        (``part``): path -> (the canonical names, in the map's order; the port's whole weight
        as float64, read as the framework holds it)."""
        names: dict[str, list[str]] = {}
        for name, entry in self.held.items():
            if entry.index is not None:
                names.setdefault(entry.path, []).append(name)
        names = {p: n for p, n in names.items() if len(n) > 1}
        if not names:
            return {}
        values = self._read()
        return {p: (n, np.asarray(values[p], dtype=np.float64)) for p, n in names.items()}

    def part_shapes(self, name, native=None) -> tuple[int, list[tuple[int, ...]]] | None:
        """(axis, canonical-layout shape of each part) of a weight mapped with ``concat``;
        None for one held as one weight."""
        entry = self.held.get(name)
        if entry is None or not entry.parts:
            return None
        native = self._native() if native is None else native
        return entry.axis, [tuple(np.shape(t.to_canonical(np.zeros(native[p][0]), None)))
                            for p, t in entry.parts]

    def _trainable(self, name, native) -> bool:
        """Whether the port trains ``name``: all of its parts where it holds several."""
        return all(native[p][1] for p, _ in self._entry(name, native).pieces)

    def weight_info(self):
        native = self._native()
        info = {n: (self._own_shape(n, native), self._trainable(n, native)) for n in self.held}
        mapped = self._mapped()
        info.update({path: v for path, v in native.items() if path not in mapped})
        return info

    def weight_layout(self):
        layout = {n: WeightLayout("absent", None, self.shapes.get(n), why)
                  for n, why in self.absent.items()}
        native = self._native()
        for name, entry in self.held.items():
            layout[name] = WeightLayout(entry.kind, self._own_shape(name, native),
                                        self.shapes.get(name), entry.why)
        return layout

    def grad(self, inputs, cotangent, *, training):
        return self._grad(self._native_grad, inputs, cotangent, training)

    def grad_compiled(self, inputs, cotangent, *, training):
        return self._grad(self._native_grad_compiled, inputs, cotangent, training)

    def _grad(self, native_grad, inputs, cotangent, training):
        native = self._native()
        trainable = [n for n in self.held if self._trainable(n, native)]
        paths = [p for n in trainable for p, _ in self.held[n].pieces]
        gx, grads = native_grad(inputs, cotangent, training, paths)
        return gx, {n: self._to_canonical(n, grads) for n in trainable}

    def get_config(self):
        config = self.adapter.config_of(self.layer, self.obj)
        if not isinstance(config, dict):  # as it came: FM/GFF-CONFIG-ROUNDTRIP says what it is
            return config
        names = {self.adapter.config_names.get(n, n): n for n, _ in self.spec.config_params}
        return {names[k]: v for k, v in config.items() if k in names}

    def _meta(self) -> dict:
        return {
            "layer": self.layer,
            "config": json.dumps(self.config),
            "input_shapes": json.dumps([list(s) for s in self.input_shapes]),
            "dtype": json.dumps(self.dtype),
        }


def one_output(out):
    """``out``, the port's call's result, where it is one array; ``TypeError`` where it is a
    tuple or list (a layer that also returns its gate, its attention or its state): the
    spec's layers give one output, and a pair read as one array is a stack of two."""
    if isinstance(out, (tuple, list)):
        shapes = ", ".join(str(tuple(getattr(v, "shape", ()))) for v in out)
        raise TypeError(f"the call returned a {type(out).__name__} of {len(out)} ({shapes}): "
                        "the layer has one output, return it alone")
    return out


def _nearest(path: str, paths, native=None, shape=None) -> str | None:
    """The path the map most likely meant by ``path``: the one path that keeps its first and
    last parts with parts inserted between ('fc1.kernel' for 'fc1.inner.kernel', a sublayer
    the map skipped), of those one holding the spec's ``shape`` (or its transpose) where there
    are several; else difflib's closest (a misspelling); None where none is close."""
    head, tail = path.split(".")[0], path.rsplit(".", 1)[-1]
    inserted = [p for p in paths if p.split(".")[0] == head and p.rsplit(".", 1)[-1] == tail
                and p.count(".") > path.count(".")]
    if len(inserted) > 1 and native is not None and shape is not None:
        same = [p for p in inserted if tuple(native[p][0]) == tuple(shape)]
        inserted = same or [p for p in inserted if tuple(native[p][0]) == tuple(shape)[::-1]]
    if inserted:  # of several alike, the first made (dense_18 before dense_19)
        return min(inserted, key=lambda p: [(0, int(t), "") if t.isdigit() else (1, 0, t)
                                            for t in re.split(r"(\d+)", p)])
    close = difflib.get_close_matches(path, list(paths), n=1)
    return close[0] if close else None


def load_meta(path: str, layer: str) -> dict:
    """What ``save_arrays`` wrote: the arrays, and the build arguments from its metadata."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("layer") != layer:
        raise ValueError(f"{path} holds a {meta.get('layer')!r}, not a {layer!r}")
    return {
        "config": json.loads(meta["config"]),
        "input_shapes": [tuple(s) for s in json.loads(meta["input_shapes"])],
        "dtype": json.loads(meta["dtype"]),
        "seed": int(meta.get("seed", 0)),
        "arrays": arrays,
    }


def save_arrays(path: str, arrays: dict, meta: dict) -> str:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path, metadata=meta)
    return path


def zeros(input_shapes, multi_input, dtype):
    arrays = [np.zeros(s, dtype=dtype) for s in input_shapes]
    return arrays if multi_input else arrays[0]
