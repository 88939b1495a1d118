"""Initialisation: exact constants, and Glorot-uniform checked as a distribution.

For n draws from U(-l, l): mean 0 with sd l/sqrt(3n); variance l^2/3 with sd
l^2 sqrt(4/(45 n)); kurtosis 1.8 with sd sqrt(1.34/n) (a normal's is 3). Every moment is
tested at 6 sd, and the largest |w| must lie in [l(1 - 20/n), l]: a narrower uniform
(PyTorch's Kaiming default), a normal or a truncated normal (Keras's GlorotNormal) fails one
of them.

A weight that fails is then tested, by the same moments, against the frameworks' default
initialisers (``DEFAULTS``): uniform, normal and normal truncated at 2 sd (jax's and Keras's
``variance_scaling``, which rescale the sd by 1/0.8796 so the variance is the one asked for),
each at variance 1/fan_in (LeCun), 2/fan_in (He/Kaiming), 2/(fan_in + fan_out) (Glorot) or
1/(3 fan_in) (PyTorch's ``nn.Linear`` U(±1/sqrt(fan_in))), plus Keras's and jax's fixed-scale
defaults and any constant. The diagnosis names each that fits at 6 sd of every moment (and,
for a bounded one, its bound), or the message says that none does. Sources: the PyTorch
``nn.Linear.reset_parameters`` and ``torch.nn.init`` docs, ``jax.nn.initializers``
(``lecun_normal`` is Flax's ``nnx.Linear`` default), Keras ``initializers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.meta import config_text
from portspec.suite.checks import check


def glorot_uniform_problems(w: np.ndarray, fans: tuple | None = None) -> list[str]:
    """What of ``w`` does not fit Glorot-uniform over ``fans`` (default: its own shape)."""
    fan_in, fan_out = fans or w.shape
    n = w.size
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    v = w.astype(np.float64).ravel()
    problems = []
    if np.abs(v).max() > limit * (1 + 1e-6):
        problems.append(f"max |w| {np.abs(v).max():.4g} exceeds the Glorot limit {limit:.4g}")
    if np.abs(v).max() < limit * (1 - 20.0 / n):
        problems.append(f"max |w| {np.abs(v).max():.4g} falls short of the limit {limit:.4g}")
    if abs(v.mean()) > 6 * limit / np.sqrt(3 * n):
        problems.append(f"mean {v.mean():.4g} is not 0")
    var = v.var()
    if abs(var - limit**2 / 3) > 6 * limit**2 * np.sqrt(4 / (45 * n)):
        problems.append(f"variance {var:.4g}, Glorot-uniform gives {limit**2 / 3:.4g}")
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant: kurtosis inf or nan
        kurt = np.mean(v**4) / var**2
    # sd of the sample kurtosis of a uniform: sqrt(1.34/n) (measured over 2000 draws of 8192)
    if abs(kurt - 1.8) > 6 * np.sqrt(1.34 / n):
        problems.append(f"kurtosis {kurt:.3g}, a uniform has 1.8")
    return problems


# -- the frameworks' default initialisers, as distributions --------------------------------

@dataclass(frozen=True)
class Shape:
    """A zero-mean distribution at unit variance: its 4th, 6th and 8th moments, its bound
    (None: unbounded) and 2 b f(b), the chance per unit of relative distance of a draw lying
    just inside the bound b (f its density there)."""

    name: str
    mu4: float
    mu6: float
    mu8: float
    bound: float | None = None
    edge: float = 1.0


def _uniform() -> Shape:
    # U(-1, 1): moments 1/3, 1/5, 1/7, 1/9, standardised by the variance 1/3
    return Shape("uniform", 9 / 5, 27 / 7, 81 / 9, math.sqrt(3.0), 1.0)


def _normal() -> Shape:
    return Shape("normal", 3.0, 15.0, 105.0)


def _truncated(c: float = 2.0) -> Shape:
    """A normal truncated at ±c sd: m_2k = (2k-1) m_2k-2 - 2 c^(2k-1) phi(c) / Z."""
    tail = 2 * math.exp(-c * c / 2) / math.sqrt(2 * math.pi) / math.erf(c / math.sqrt(2))
    m = [1.0]
    for k in range(1, 5):
        m.append((2 * k - 1) * m[-1] - c ** (2 * k - 1) * tail)
    v = m[1]
    return Shape("normal truncated at 2 sd", m[2] / v**2, m[3] / v**3, m[4] / v**4,
                 c / math.sqrt(v), c * tail)


UNIFORM, NORMAL, TRUNCATED = _uniform(), _normal(), _truncated()


@dataclass(frozen=True)
class Initialiser:
    name: str
    shape: Shape
    variance: object  # (fan_in, fan_out) -> variance; fan_out None for a bias
    scale: str  # the variance, in words

    def problems(self, v: np.ndarray, fan_in: int, fan_out: int | None) -> list[str] | None:
        """What of ``v`` contradicts this initialiser (empty: every moment fits); None where
        the initialiser needs a fan the weight has not."""
        want = self.variance(fan_in, fan_out)
        if want is None:
            return None
        s, n = self.shape, v.size
        var, top = v.var(), np.abs(v).max()
        kurt = np.mean((v - v.mean()) ** 4) / var**2 if var > 0 else math.inf
        # the delta method's sd of the sample kurtosis m4/m2^2 (uniform: sqrt(1.32/n))
        vk = (s.mu8 - s.mu4**2) - 4 * s.mu4 * (s.mu6 - s.mu4) + 4 * s.mu4**2 * (s.mu4 - 1)
        out = []
        if abs(v.mean()) > 6 * math.sqrt(want / n):
            out.append(f"mean {v.mean():.4g}")
        if abs(var - want) > 6 * want * math.sqrt((s.mu4 - 1) / n):
            out.append(f"variance {var:.4g}, {self.scale} gives {want:.4g}")
        if abs(kurt - s.mu4) > 6 * math.sqrt(vk / n):
            out.append(f"kurtosis {kurt:.3g}, a {s.name} has {s.mu4:.3g}")
        if s.bound is not None:
            bound = s.bound * math.sqrt(want)
            if top > bound * (1 + 1e-6) or top < bound * (1 - min(1.0, 20.0 / (n * s.edge))):
                out.append(f"max |w| {top:.4g}, the bound is {bound:.4g}")
        return out


def _fan(k):
    return lambda fi, fo: None if fi is None else k / fi


def _fixed(var):
    return lambda fi, fo: var


DEFAULTS = [
    Initialiser("PyTorch's default Linear initialisation U(±1/sqrt(fan_in))", UNIFORM,
                lambda fi, fo: None if fi is None else 1 / (3 * fi), "1/(3 fan_in)"),
    Initialiser("LeCun-uniform U(±sqrt(3/fan_in)) (the same distribution as Glorot-uniform "
                "with fan_out counted as fan_in, as for a (2F, F) gate kernel held as (2, F, F), "
                "whose fans Keras and jax count as (2F, 2F) over its leading axis)", UNIFORM,
                _fan(1), "1/fan_in"),
    Initialiser("He/Kaiming-uniform U(±sqrt(6/fan_in)) (torch's kaiming_uniform_, Keras's "
                "HeUniform; the same distribution as Glorot-uniform with fan_in + fan_out "
                "counted as fan_in, as for a (2F, F) kernel drawn as two (F, F) halves)",
                UNIFORM, _fan(2), "2/fan_in"),
    Initialiser("LeCun-normal truncated at 2 sd (Flax's nnx.Linear default, Keras's LecunNormal)",
                TRUNCATED, _fan(1), "1/fan_in"),
    Initialiser("LeCun-normal, untruncated", NORMAL, _fan(1), "1/fan_in"),
    Initialiser("He-normal truncated at 2 sd (Keras's HeNormal, jax's he_normal)", TRUNCATED,
                _fan(2), "2/fan_in"),
    Initialiser("He/Kaiming-normal, untruncated (torch's kaiming_normal_)", NORMAL, _fan(2),
                "2/fan_in"),
    Initialiser("Glorot-normal truncated at 2 sd (Keras's GlorotNormal, jax's glorot_normal)",
                TRUNCATED, lambda fi, fo: None if fo is None else 2 / (fi + fo),
                "2/(fan_in + fan_out)"),
    Initialiser("Glorot-normal, untruncated (torch's xavier_normal_)", NORMAL,
                lambda fi, fo: None if fo is None else 2 / (fi + fo), "2/(fan_in + fan_out)"),
    Initialiser("N(0, 0.05^2) (Keras's RandomNormal default)", NORMAL, _fixed(0.05**2),
                "sd 0.05"),
    Initialiser("N(0, 0.05^2) truncated at 2 sd (Keras's TruncatedNormal default)", TRUNCATED,
                _fixed(0.05**2 / TRUNCATED.bound**2 * 4), "sd 0.05 truncated"),
    Initialiser("U(±0.05) (Keras's RandomUniform default)", UNIFORM, _fixed(0.05**2 / 3),
                "U(±0.05)"),
    Initialiser("N(0, 0.01^2) (jax's initializers.normal default)", NORMAL, _fixed(0.01**2),
                "sd 0.01"),
]

SPEC_INIT = {"glorot_uniform": "Glorot-uniform", "zeros": "zeros", "ones": "ones"}


def fitting(w: np.ndarray, fan_in: int | None, fan_out: int | None) -> list[tuple[str, str]]:
    """(initialiser, evidence) for each default of ``DEFAULTS`` (or a constant) whose every
    moment ``w`` fits: for a failed weight, what the port may initialise it with instead."""
    w = np.asarray(w, dtype=np.float64)
    v = w.ravel()
    if v.size == 0:
        return []
    if np.all(v == v[0]):
        return [(f"the constant {v[0]:.4g}", "every value equal")]
    orthogonal = _orthogonal(w)
    if orthogonal:
        return orthogonal
    kurt = np.mean((v - v.mean()) ** 4) / v.var() ** 2
    inits = DEFAULTS + ([_keras_vector(v.size)] if fan_out is None else [])
    fits = [(init.name, f"variance {v.var():.4g}, {init.scale} = "
                        f"{init.variance(fan_in, fan_out):.4g}; kurtosis {kurt:.3g}, a "
                        f"{init.shape.name} has {init.shape.mu4:.3g}")
            for init in inits if init.problems(v, fan_in, fan_out) == []]
    return (fits or _with_gain(v, fan_in, fan_out, kurt) or _shifted(v, fan_in, fan_out)
            or _fans_swapped(v, fan_in, fan_out, kurt) or _fixed_scale(v, kurt))


# scales ports write by hand: normal_(std=0.02) (the transformers' initializer_range),
# normal_(std=0.01), uniform_(-0.1, 0.1), a bare torch.randn (1). Few, and far apart: the
# variance, which alone tells a scale, fits at 6 sd within some 9 % for 8192 values, and a
# fan-scaled draw of a gain no framework names must not be read as a round one.
ROUND_SCALES = (0.001, 0.01, 0.02, 0.05, 0.1, 1.0)


def _fixed_scale(v, kurt) -> list[tuple[str, str]]:
    """A weight drawn from a normal of a round standard deviation or a uniform of a round
    bound, fixed by the port's code rather than scaled by the fans (``normal_(std=0.02)``,
    the transformers' ``initializer_range``; ``uniform_(-0.1, 0.1)``): every moment fits that
    scale at 6 sd (and a uniform its bound), as ``Initialiser.problems`` tests the defaults.
    Only where no default fits, and the weight has the values to tell the two shapes apart
    (kurtosis 3 and 1.8, whose sd for a normal is sqrt(24/n): 6 sd apart from n = 600): a
    round scale is a guess among several, as the defaults are not; empty where none fits."""
    if v.size < 600:
        return []
    out = []
    for r in ROUND_SCALES:
        for shape, name, var in ((NORMAL, f"N(0, {r:g}^2), a fixed standard deviation "
                                  f"{r:g} not scaled by the fans (normal_(std={r:g}); 0.02 is "
                                  "the transformers' initializer_range, as in BERT, GPT-2 and "
                                  "ViT)", r * r),
                                 (UNIFORM, f"U(±{r:g}), a fixed bound not scaled by the fans "
                                  f"(uniform_(-{r:g}, {r:g}))", r * r / 3)):
            init = Initialiser(name, shape, _fixed(var), "")
            if init.problems(v, None, None) == []:
                out.append((name, f"variance {v.var():.4g}, {r:g}^2"
                            f"{'' if shape is NORMAL else '/3'} = {var:.4g}; kurtosis "
                            f"{kurt:.3g}, a {shape.name} has {shape.mu4:.3g}"))
    return out


def _fans_swapped(v, fan_in, fan_out, kurt) -> list[tuple[str, str]]:
    """nn.Linear's own initialisation (``reset_parameters``: kaiming_uniform_ with a =
    sqrt(5), U(±1/sqrt(fan_in))) copied onto a kernel held as the spec's (in, out):
    torch.nn.init reads fan_in off the last axis (``_calculate_fan_in_and_fan_out``: size(1),
    torch's Linear layout being (out, in)), so the scale is the output width's. Only where the
    fans differ and no default fits them as they are; the other defaults are not tried with
    their fans exchanged, where a Glorot draw times a gain torch does not name would fit one."""
    if fan_out is None or fan_in == fan_out:
        return []
    return [(f"{init.name}, its fan_in read off the kernel's last axis ({fan_out}, the "
             f"output width, where the input width is {fan_in}: torch.nn.init on a kernel "
             "held (in, out), which torch takes for (out, in))",
             f"variance {v.var():.4g}, {init.scale} = {init.variance(fan_out, fan_in):.4g} "
             f"with fan_in {fan_out}; kurtosis {kurt:.3g}, a {init.shape.name} has "
             f"{init.shape.mu4:.3g}")
            for init in DEFAULTS[:1] if init.problems(v, fan_out, fan_in) == []]


def _keras_vector(n: int) -> Initialiser:
    """Keras's ``add_weight`` without an initializer draws Glorot-uniform (its default,
    ``glorot_uniform``), and Keras counts a 1-D shape (n,) as fan_in = fan_out = n
    (``keras.src.initializers.random_initializers.compute_fans``): U(±sqrt(3/n)), variance
    1/n. A vector of the spec's (a moving statistic, an offset) left so."""
    return Initialiser(f"Glorot-uniform over its own ({n},) shape, fans ({n}, {n}): Keras's "
                       "add_weight default initializer, where no initializer is given",
                       UNIFORM, lambda fi, fo: 1.0 / n, "1/n")


def _orthogonal(w: np.ndarray) -> list[tuple[str, str]]:
    """A 2-D kernel whose columns (a tall one) or rows (a wide one) are orthogonal with one
    norm, g, to 1e-5 relative: an orthogonal initialiser (torch's ``orthogonal_``, Keras's
    ``Orthogonal``, ``jax.nn.initializers.orthogonal``) with gain g. No other default gives
    that: n independent draws are orthogonal to about 1/sqrt(n), not 1e-5."""
    if w.ndim != 2 or min(w.shape) < 2:
        return []
    m = w if w.shape[0] >= w.shape[1] else w.T
    gram = m.T @ m
    g2 = float(np.mean(np.diag(gram)))
    if g2 <= 0 or np.abs(gram - g2 * np.eye(len(gram))).max() > 1e-5 * g2:
        return []
    gain = "" if abs(math.sqrt(g2) - 1) < 1e-4 else f" with gain {math.sqrt(g2):.4g}"
    return [(f"an orthogonal initialiser{gain} (torch's orthogonal_, Keras's Orthogonal, "
             "jax.nn.initializers.orthogonal)", f"{'columns' if m is w else 'rows'} "
             f"orthogonal, each of norm {math.sqrt(g2):.4g}, to 1e-5")]


# the ends of a uniform not centred on 0, as multiples of the Glorot limit, in words
ENDS = {-1.0: "-limit", 0.0: "0", 1.0: "limit", 2.0: "2 limit"}


def _shifted(v, fan_in, fan_out) -> list[tuple[str, str]]:
    """A kernel drawn from a uniform not centred on 0 whose ends are round multiples of the
    Glorot limit l = sqrt(6/(fan_in + fan_out)): U(0, l) is ``torch.rand(...) * l``, where
    Glorot-uniform is ``(2 * torch.rand(...) - 1) * l``. The shape is a uniform's (variance
    w^2/12 for the range w, at 6 sd of sd w^2/12 sqrt(0.8/n); kurtosis about the mean 1.8 at
    6 sd of sqrt(1.34/n)), the centre off 0 by more than 6 sd of the mean (w/sqrt(12 n)), and
    each end within 20 w/n of its multiple (n draws fall that close to an end). Empty where
    any of that fails."""
    n = v.size
    if fan_out is None or n < 30:
        return []
    lo, hi, mean, var = float(v.min()), float(v.max()), float(v.mean()), float(v.var())
    width = hi - lo
    if width <= 0:
        return []
    kurt = float(np.mean((v - mean) ** 4)) / var**2
    sd_mean = width / math.sqrt(12 * n)
    if (abs(var - width**2 / 12) > 6 * width**2 / 12 * math.sqrt(0.8 / n)
            or abs(kurt - 1.8) > 6 * math.sqrt(1.34 / n) or abs(mean) <= 6 * sd_mean):
        return []
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    ends = [min(ENDS, key=lambda k, e=e: abs(e - k * limit)) for e in (lo, hi)]
    if any(abs(e - k * limit) > 20 * width / n for e, k in zip((lo, hi), ends, strict=True)):
        return []
    a, b = (ENDS[k] for k in ends)
    return [(f"a uniform not centred on 0, U({a}, {b}) with the Glorot limit, limit = "
             "sqrt(6/(fan_in + fan_out)) (a draw in [0, 1) scaled without its shift, as "
             "torch.rand(...) * limit or jax.nn.initializers.uniform(limit), where "
             "Glorot-uniform is (2 * torch.rand(...) - 1) * limit, uniform_(-limit, limit))",
             f"range {lo:.4g}..{hi:.4g}, mean {mean:.4g}, limit {limit:.4g}")]


# torch.nn.init.calculate_gain's values, which xavier_uniform_/xavier_normal_ take as gain
GAINS = {math.sqrt(2.0): "sqrt(2), torch's calculate_gain('relu')",
         5.0 / 3.0: "5/3, torch's calculate_gain('tanh')",
         3.0 / 4.0: "3/4, torch's calculate_gain('selu')"}


def _with_gain(v, fan_in, fan_out, kurt) -> list[tuple[str, str]]:
    """A kernel drawn Glorot-uniform or Glorot-normal times a gain: the shape's every moment
    fits at the variance gain^2 * 2/(fan_in + fan_out), the gain one of torch's
    ``calculate_gain`` values (to 2 %). Empty where none does."""
    if fan_out is None:
        return []
    glorot = 2.0 / (fan_in + fan_out)
    gain = math.sqrt(v.var() / glorot)
    known = next(((g, said) for g, said in GAINS.items() if abs(gain / g - 1) < 0.02), None)
    if known is None:
        return []
    g, known = known
    out = []
    for shape, name in ((UNIFORM, "Glorot-uniform"), (NORMAL, "Glorot-normal, untruncated")):
        scaled = Initialiser(f"{name} with gain {known}", shape,
                             lambda fi, fo, g=g: g * g * 2.0 / (fi + fo), "")
        if scaled.problems(v, fan_in, fan_out) == []:
            out.append((scaled.name, f"variance {v.var():.4g} = {gain:.3g}^2 x 2/(fan_in + "
                                     f"fan_out); kurtosis {kurt:.3g}, a {shape.name} has "
                                     f"{shape.mu4:.3g}"))
    return out


# the initialiser a framework gives a weight the port leaves as built, and how it is left so
# (PyTorch's nn.Linear.reset_parameters: kernel and bias U(±1/sqrt(fan_in)); Flax's nnx.Linear:
# kernel LeCun-normal truncated, bias zeros; Keras's Dense: the spec's own, Glorot-uniform and
# zeros, but add_weight without an initializer: Glorot-uniform over the vector's own shape)
LEFT_BY_DENSE = "the weight left as its Dense layer initialised it"
BUILT = {"torch": (DEFAULTS[0].name, LEFT_BY_DENSE), "flax": (DEFAULTS[3].name, LEFT_BY_DENSE),
         "keras": ("Glorot-uniform over its own (", "")}  # the name says how


def identify(failed: list[tuple[str, str, list]],
             framework: str | None = None) -> tuple[str | None, list[str]]:
    """(diagnosis, message tails) for the failed weights, each (name, spec init, fits): a
    weight is put down to the one default it fits; of several (too few values to tell), to
    the one another weight of the clause was put down to, where exactly one is; else to the
    one the port's ``framework`` (``BUILT``) gives a weight it is left with, where that fits;
    otherwise the tail says what it fits."""
    named, tails = {}, []
    for name, init, fits in failed:
        if len(fits) == 1:
            named[name] = (fits[0], init)
    for name, init, fits in failed:
        if name in named:
            continue
        seen = {f[0][0] for f in named.values()}
        shared = [f for f in fits if f[0] in seen]
        prefix, how = BUILT.get(framework, (None, ""))
        built = [f for f in fits if prefix and f[0].startswith(prefix)]
        if len(shared) == 1:
            named[name] = (shared[0], init)
        elif built and not shared:
            what, evidence = built[0]
            named[name] = ((f"{what}, the port's framework's default" + (f": {how}" if how
                                                                           else ""),
                            f"{evidence}; the values alone fit {len(fits)} defaults"), init)
        elif not fits:
            tails.append(f"{name} fits none of the frameworks' default initialisers (uniform, "
                         "normal and 2-sd truncated normal at LeCun, He, Glorot and PyTorch "
                         "Linear scales; Keras's and jax's fixed-scale defaults; a normal or "
                         "uniform of a round scale; a constant)")
        else:
            tails.append(f"{name} fits {len(fits)} of the frameworks' default initialisers "
                         f"(too few values to tell): {', '.join(f[0] for f in fits)}")
    groups: dict[str, list] = {}
    for name, ((what, evidence), init) in named.items():
        groups.setdefault(what, []).append((name, evidence, SPEC_INIT[init]))
    # the weights and their moments in brackets: the same default kept in both layers of a
    # port reads as one root cause (the report merges causes differing in those alone)
    said = [f"initial weights {'set to' if what.startswith('the constant') else 'drawn from'} "
            f"{what} instead of {' / '.join(dict.fromkeys(s for _, _, s in g))} "
            f"[{'; '.join(f'{n}: {e}' for n, e, _ in g)}]" for what, g in groups.items()]
    return "; ".join(said) or None, tails


def _fans(spec_w, table) -> tuple:
    """(fan_in, fan_out) of a kernel; a bias's fan_in is its kernel's (torch draws a Linear's
    bias from U(±1/sqrt(fan_in))); (None, None) for a weight of no Dense."""
    if len(spec_w.shape) == 2:
        return spec_w.shape
    kernel = spec_w.name.rsplit(".", 1)[0] + ".kernel"
    shapes = {w.name: w.shape for w in table}
    return (shapes[kernel][0], None) if kernel in shapes else (None, None)


def _pieces(handle, name, w):
    """(canonical-layout shape of each part, the parts of ``w``) of a 2-D weight the port
    holds as several (``concat``); None for one held as one weight."""
    parts = getattr(handle, "part_shapes", lambda n: None)(name)
    if parts is None or w.ndim != 2:
        return None
    from portspec.ports.base import split_parts

    axis, shapes = parts
    return shapes, split_parts(w, axis, shapes)


def _per_part(handle, name, w) -> str | None:
    """The diagnosis of a Glorot-uniform weight the port holds as several (``concat``) whose
    every part is Glorot-uniform over its own shape: smaller fans, a wider limit."""
    split = _pieces(handle, name, w)
    if split is None:
        return None
    shapes, pieces = split
    if any(p.shape != s or glorot_uniform_problems(p) for p, s in zip(pieces, shapes,
                                                                       strict=True)):
        return None
    limits = ", ".join(f"{s} {np.sqrt(6.0 / sum(s)):.4g}" for s in shapes)
    return (f"{name} drawn Glorot-uniform over each of the port's weights that make it up, "
            f"instead of over the whole {w.shape} [limits {limits}, the spec's "
            f"{np.sqrt(6.0 / sum(w.shape)):.4g}]: draw each part from U(±sqrt(6/(fan_in + "
            "fan_out))) of the whole kernel")


def _odd_part(handle, name, w) -> str | None:
    """The diagnosis of a weight the port holds as several (``concat``) one part of which,
    alone, is not drawn as the whole's Glorot-uniform, and fits one framework default over
    its own shape (a Dense of the port's own kept at its default)."""
    split = _pieces(handle, name, w)
    if split is None:
        return None
    _, pieces = split
    paths = [p for p, _ in handle.held[name].pieces]
    odd = [(path, piece) for path, piece in zip(paths, pieces, strict=True)
           if glorot_uniform_problems(piece, fans=w.shape)]
    if len(odd) != 1 or len(pieces) < 2:
        return None
    path, piece = odd[0]
    fits = fitting(piece, *piece.shape)
    if not fits:
        return None
    what = " or ".join(f for f, _ in fits) + (
        "" if len(fits) == 1 else " (the same distribution at a square shape)"
        if piece.shape[0] == piece.shape[1] else " (too few values to tell)")
    evidence = fits[0][1]
    return (f"{name}'s part {path} {piece.shape} drawn from {what} over its own shape, instead "
            f"of Glorot-uniform over the whole {w.shape} kernel as its other parts are "
            f"[{path}: {evidence}]")


def _each_part(handle, name, w) -> str | None:
    """The diagnosis of a weight the port holds as several (``concat``) every part of which
    is drawn alike from one framework default over its own shape (two ``nnx.Linear`` halves
    of a gate kernel left at Flax's LeCun-normal): the default each part fits, named over the
    part's fans, not the whole's (where it may read as another: LeCun over (F, F) is He over
    (2F, F))."""
    split = _pieces(handle, name, w)
    if split is None:
        return None
    _, pieces = split
    if len(pieces) < 2 or not all(p.ndim == 2 for p in pieces):
        return None
    fits = [dict(fitting(piece, *piece.shape)) for piece in pieces]
    common = [f for f in fits[0] if all(f in other for other in fits[1:])]
    if not common:
        return None
    paths = [p for p, _ in handle.held[name].pieces]
    square = all(p.shape[0] == p.shape[1] for p in pieces)
    what = " or ".join(common) + ("" if len(common) == 1 else
                                  " (the same distribution at a square shape)" if square
                                  else " (too few values to tell)")
    evidence = "; ".join(f"{path} {piece.shape}: {fit[common[0]]}"
                         for path, piece, fit in zip(paths, pieces, fits, strict=True))
    return (f"{name} drawn from {what} over each of the port's weights that make it up "
            f"({', '.join(paths)}), each over its own shape, instead of Glorot-uniform over "
            f"the whole {w.shape} kernel [{evidence}]")


def _native_fans(handle, name, w) -> str | None:
    """The diagnosis of a kernel the port holds as one tensor of rank 3 or more (a (2F, F)
    gate kernel as (2, F, F)) drawn Glorot over that tensor with a framework's fans for it:
    PyTorch's ``xavier_uniform_``/``xavier_normal_`` count the dimensions past the second as
    a receptive field (fan_in = shape[1] x field, fan_out = shape[0] x field), Keras's and
    jax's initialisers those before the last two (fan_in = shape[-2] x field, fan_out =
    shape[-1] x field). None where no such fans fit, or they are the spec's."""
    entry = getattr(handle, "held", {}).get(name)
    if entry is None or len(entry.pieces) != 1 or not hasattr(handle, "_native"):
        return None
    shape = handle._native().get(entry.pieces[0][0], ((),))[0]
    if len(shape) < 3 or math.prod(shape) != w.size:
        return None
    v = np.asarray(w, np.float64).ravel()
    torch_field, keras_field = math.prod(shape[2:]), math.prod(shape[:-2])
    conventions = [((shape[1] * torch_field, shape[0] * torch_field), "PyTorch's xavier_ "
                    "initialisers count the dimensions past the second as a receptive field"),
                   ((shape[-2] * keras_field, shape[-1] * keras_field), "Keras's and jax's "
                    "initialisers count those before the last two as a receptive field")]
    for fans, how in conventions:
        if sorted(fans) == sorted(w.shape):
            continue  # the spec's own fans: Glorot there passes
        for dist, what in ((UNIFORM, "Glorot-uniform"), (NORMAL, "Glorot-normal")):
            drawn = Initialiser(what, dist, lambda fi, fo: 2.0 / (fi + fo), "")
            if drawn.problems(v, *fans) == []:
                return (f"{name} drawn {what} over the port's {tuple(shape)} tensor with the "
                        f"fans it has as that tensor, fan_in {fans[0]} and fan_out {fans[1]} "
                        f"({how}), instead of over the spec's {tuple(w.shape)} kernel with "
                        f"fans {tuple(w.shape)} [variance {v.var():.4g}, 2/(fan_in + fan_out) "
                        f"= {2.0 / sum(fans):.4g}; the spec's {2.0 / sum(w.shape):.4g}]")
    return None


def _drawn_whole(handle, table, failed) -> dict[str, str]:
    """{weight: diagnosis} of failed weights the port holds as parts of one of its own
    (``part``: a kernel and its bias as the rows of one weight, say) where that whole weight
    is drawn from one framework default over its own shape, as one weight: the parts were
    initialised together, not each as the spec's."""
    inits = {w.name: w.init for w in table}
    out = {}
    for path, (names, whole) in getattr(handle, "fused", dict)().items():
        if not set(names) & set(failed) or whole.ndim != 2:
            continue
        limit = np.sqrt(6.0 / sum(whole.shape))
        fits = ([("Glorot-uniform", f"max |w| {np.abs(whole).max():.4g}, the limit "
                  f"sqrt(6/(fan_in + fan_out)) {limit:.4g}")]
                if not glorot_uniform_problems(whole) else fitting(whole, *whole.shape))
        if not fits or fits[0][0].startswith("the constant"):
            continue
        what = " or ".join(f for f, _ in fits)
        spec = "; ".join(f"{n} {SPEC_INIT.get(inits[n], inits[n])}" for n in names)
        said = (f"{', '.join(names)}, parts of the port's one weight {path} {whole.shape}, "
                f"initialised together as one weight drawn from {what} over {whole.shape}, "
                f"where the spec initialises each on its own ({spec}) [{path}: {fits[0][1]}]")
        out.update(dict.fromkeys([n for n in names if n in failed], said))
    return out


def _exchanged(spec, table, weights, failed) -> dict[str, str]:
    """{weight: diagnosis} of two failed constant-initialised weights each holding exactly the
    other's initial constant: the weight map exchanging them (``variants.MAP_SWAPS``), worded
    as the root-cause search words that variant (one root cause)."""
    from portspec import variants

    if spec.name != "FeatureMixing":  # the layer whose map swaps variants knows of
        return {}
    inits = {w.name: w.init for w in table}
    want = {"zeros": 0.0, "ones": 1.0}
    for choice, (one, other) in variants.MAP_SWAPS.items():
        if not {one, other} <= set(failed):
            continue
        if inits[one] not in want or inits[other] not in want or inits[one] == inits[other]:
            continue
        if all(np.all(np.asarray(weights[a]) == want[inits[b]]) for a, b in ((one, other),
                                                                              (other, one))):
            said = (f"{variants.describe(variants.FM_SPACE, {'map_swap': choice})} [{one} "
                    f"holds {inits[other]}, {other}'s initial value, and {other} {inits[one]}]")
            return {one: said, other: said}
    return {}


def _framework(handle) -> str | None:
    """"torch", "flax" or "keras" where the port's layer is a PyTorch or Flax module or a
    Keras 3 layer, else None."""
    names = {c.__module__.split(".")[0] for c in type(getattr(handle, "obj", None)).__mro__}
    return next((n for n in ("torch", "flax", "keras") if n in names), None)


@check("init")
def init(ctx):
    """Every init case of the layer (``LayerSpec.init_cases``: GatedFeatureFusion's at each
    activation, the spec's initialiser being the same for all): the first must build; a later
    one the port refuses to build is GFF-CONFIG's and GFF-ACTIVATIONS' finding, not this
    clause's. The failures of every case are reported together, each case's config named where
    there are several."""
    cases = ctx.spec.init_cases()
    found, passed = [], []
    for i, case in enumerate(cases):
        try:
            handle = ctx.build(case, seed=11)
        except Exception:  # noqa: BLE001 - a config the port refuses (above)
            if i == 0:
                raise
            continue
        result = _problems(ctx, case, handle)
        (found if result else passed).append((case, result))
    if not found:
        return
    if passed:  # each failing config named
        problems = [f"{_config(case)}: {'; '.join(p)}" for case, (p, _) in found]
    else:  # the first config's problems stand for all
        problems = found[0][1][0] + ([f"likewise at {', '.join(_config(c) for c, _ in found[1:])}"]
                                     if len(found) > 1 else [])
    # each diagnosis once, with the configs it was found at where some config is the spec's
    at: dict[str, list[str]] = {}
    for case, (_, said) in found:
        if said:
            at.setdefault(said, []).append(_config(case))
    if passed:  # the first config or another is the spec's
        right = ", ".join(_config(c) for c, _ in passed)
        diagnosis = (f"the port's initialiser depends on the config, the spec's does not (as the "
                     f"spec's at {right}): " + "; ".join(f"at {' and '.join(where)}, {said}"
                                                         for said, where in at.items())
                     ) if at else None
    else:
        diagnosis = "; ".join(at) or None
    raise ClauseFailure("; ".join(problems), diagnosis=diagnosis, checked=diagnosis is not None)


def _config(case) -> str:
    return config_text(case.config)


def _problems(ctx, case, handle) -> tuple[list[str], str | None] | None:
    """(problems, diagnosis) of the initial weights of ``handle``, built for ``case``; None
    where they are the spec's."""
    weights = handle.get_weights()
    table = ctx.spec.weight_table(case.config, case.input_shapes)
    problems, failed, parted = [], [], []
    for spec_w in table:
        if spec_w.name in getattr(weights, "absent", {}):
            continue  # declared absent by the port: the weight table reports it, once
        if spec_w.name not in weights:
            problems.append(f"{spec_w.name} missing")
            continue
        w = np.asarray(weights[spec_w.name], dtype=np.float64)
        if spec_w.init in ("zeros", "ones"):
            want = 0.0 if spec_w.init == "zeros" else 1.0
            found = [] if np.all(w == want) else [
                f"{spec_w.name} is not all {want:g} (range {w.min():.3g}..{w.max():.3g})"]
        else:
            found = [f"{spec_w.name}: {p}" for p in glorot_uniform_problems(w)]
            split = found and (_per_part(handle, spec_w.name, w)
                               or _odd_part(handle, spec_w.name, w)
                               or _each_part(handle, spec_w.name, w)
                               or _native_fans(handle, spec_w.name, w))
            if split:
                problems, parted = problems + found, [*parted, split]
                continue
        if found:
            problems += found
            failed.append((spec_w.name, spec_w.init, fitting(w, *_fans(spec_w, table))))
    if not problems:
        return None
    swapped = _exchanged(ctx.spec, table, weights, [f[0] for f in failed])
    whole = _drawn_whole(handle, table, [f[0] for f in failed])
    failed = [f for f in failed if f[0] not in swapped and f[0] not in whole]
    parted += list(swapped.values())[:1] + list(dict.fromkeys(whole.values()))
    diagnosis, tails = identify(failed, _framework(handle))
    return problems + tails, "; ".join(parted + ([diagnosis] if diagnosis else [])) or None
