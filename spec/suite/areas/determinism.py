"""Seeds: the same seed gives the same layer and the same outputs."""

from __future__ import annotations

import numpy as np

from portspec.clauses import ClauseFailure
from portspec.suite.areas.dropout import random_in_inference
from portspec.suite.checks import check

SEED_NOT_USED = (
    "every build with the same seed starts from other initial weights: the initialisers do not "
    "draw from the given seed (fresh entropy, or a global generator the seed does not reset)"
)

SEED_IGNORED = (
    "the initial weights do not depend on the seed: builds with seeds 7, 8 and 9 start from the "
    "same weights (the initialisers draw from a fixed seed)"
)
MASKS_UNSEEDED = (
    "the dropout masks do not follow the seed: layers built with seed 5, whose weights and "
    "inference outputs agree, draw other masks in their first training call (the masks come "
    "from a generator the seed does not set)"
)


# Every comparison here is of the port with itself: a NaN it gives again at the same place is
# reproduced (a NaN output is the forward clauses' finding, not a seed's).
def _differing(a: dict, b: dict) -> list[str]:
    return [k for k in a if k not in b or not np.array_equal(a[k], b[k], equal_nan=True)]


@check("determinism")
def determinism(ctx):
    rng = np.random.default_rng(2)
    case = ctx.spec.cases()[0]
    first, second = ctx.build(case, seed=7), ctx.build(case, seed=7)
    differ = _differing(first.get_weights(), second.get_weights())
    if differ:
        # a third build tells draws that never repeat from two builds of a pair that alternates
        third = ctx.build(case, seed=7).get_weights()
        anew = all(set(differ) & set(_differing(third, h.get_weights()))
                   for h in (first, second))
        raise ClauseFailure(
            f"two layers built with seed 7 differ in {differ}"
            + (" (and a third differs from both)" if anew else ""),
            diagnosis=SEED_NOT_USED if anew else None, checked=anew,
        )
    other = ctx.build(case, seed=8).get_weights()
    random_names = [
        w.name
        for w in ctx.spec.weight_table(case.config, case.input_shapes)
        if w.init == "glorot_uniform"
    ]
    same = [
        k for k in random_names
        if k in other and np.array_equal(other[k], first.get_weights()[k], equal_nan=True)
    ]
    if same:
        # a third seed tells a seed not used from two seeds that happen to map alike
        fixed = all(np.array_equal(ctx.build(case, seed=9).get_weights()[k], other[k],
                                    equal_nan=True)
                    for k in same)
        ours = first.get_weights()
        constant = [k for k in same if np.size(ours[k]) > 1 and np.ptp(np.ravel(ours[k])) == 0]
        if constant == same:  # drawn from no generator at all: no seed could change them
            raise ClauseFailure(
                f"seeds 7 and 8 give the same {same}: every value of each is "
                f"{_constant_words(ours, same)}, whatever the seed (a constant initialiser, "
                "where the spec draws them from the seeded Glorot-uniform)")
        raise ClauseFailure(
            f"seeds 7 and 8 give the same {same}: the seed is ignored"
            + (" (seed 9 too)" if fixed else ""),
            diagnosis=SEED_IGNORED if fixed else None, checked=fixed,
        )

    x = ctx.inputs(case, rng)
    a, b = first.forward(x, training=False), first.forward(x, training=False)
    if not np.array_equal(a, b, equal_nan=True):
        why = random_in_inference(ctx, first, case, case.config, first.get_weights(), x,
                                  dtype="float32")
        raise ClauseFailure("two inference calls on the same input differ"
                            + (" (with dropout 0 they agree)" if why else ""),
                            diagnosis=why, checked=bool(why))
    if not np.array_equal(a, second.forward(x, training=False), equal_nan=True):
        raise ClauseFailure("two layers built with the same seed give different outputs")

    dropout = _dropout_config(case.config)
    if dropout is not None:
        # build, call, build, call: a framework-global RNG restarts from the seed each time
        outs = []
        for _ in range(2):
            handle = ctx.build(case, seed=5, config=dropout)
            outs.append(handle.forward(x, training=True))
        if not np.array_equal(*outs, equal_nan=True):
            # the weights and the inference outputs of same-seed builds agreed above, so the
            # training calls differ in what they draw: the dropout masks
            raise ClauseFailure("training with dropout 0.5 is not reproducible under seed 5",
                                diagnosis=MASKS_UNSEEDED, checked=True)
        # build, build, call, call: each layer draws from a generator of its own, which the
        # other's build and call leave alone (Keras's Dropout layers, Flax's Rngs; a torch
        # port's calls are seeded by its handle)
        pair = [ctx.build(case, seed=5, config=dropout) for _ in range(2)]
        again = [h.forward(x, training=True) for h in pair]
        if not np.array_equal(*again, equal_nan=True):
            raise ClauseFailure("two layers built with seed 5, then called in training one "
                                "after the other, draw different dropout masks",
                                diagnosis=MASKS_SHARED, checked=True)
        # another seed, the same weights: other masks (a generator seeded by the layer's seed,
        # not by a constant of the port's)
        other, five = ctx.build(case, seed=6, config=dropout), ctx.build(case, seed=5,
                                                                         config=dropout)
        if hasattr(other, "_write_all") and hasattr(five, "_read"):
            other._write_all(list(five._read().items()))  # a port's own tensors, map aside
        else:
            other.set_weights(five.get_weights())
        if np.array_equal(other.forward(x, training=True), outs[0], equal_nan=True):
            raise ClauseFailure("layers built with seeds 5 and 6, given the same weights, draw "
                                "the same dropout masks in training", diagnosis=MASKS_FIXED,
                                checked=True)


MASKS_FIXED = (
    "the dropout masks do not depend on the layer's seed: its generator is seeded with a "
    "constant of the port's (nnx.Dropout(rate, rngs=nnx.Rngs(0)), keras.random.SeedGenerator(42), "
    "torch.Generator().manual_seed(0)) instead of the seed the layer is built with, so every "
    "layer draws the same masks (and two dropouts of one shape, the same mask)"
)


# MASKS_FIXED here and dropout.KEY_REUSED in FM-DROPOUT-SITES, both: one design
# (rootcause._one_constant_seed)
SEED_CONSTANT_EVERY_CALL = (
    "the dropout masks are drawn from a constant seed of the port's, the same in every layer "
    "and on every call (an integer seed given to a stateless draw: keras.random.dropout(x, "
    "rate, seed=42), jax.random.bernoulli(jax.random.key(0), ...), torch.manual_seed(0) in "
    "the call), so every layer and every training call draws the same masks; draw them from a "
    "generator seeded with the layer's seed and advanced by each call "
    "(keras.random.SeedGenerator(seed) made once, nnx.Rngs(seed), a torch.Generator)"
)


MASKS_SHARED = (
    "the dropout masks are drawn from a generator every layer shares (a framework-global one: "
    "Keras 2's Dropout or keras.random.dropout without a seed, TensorFlow's or NumPy's global "
    "generator), not one the layer owns: two layers built alike draw differently, as each "
    "call moves the shared state (the same layers called build, call, build, call agree)"
)


def _dropout_config(config):
    return {**config, "dropout": 0.5} if "dropout" in config else None


def _constant_words(weights, names) -> str:
    values = sorted({float(np.ravel(weights[k])[0]) for k in names})
    return " or ".join(f"{v:g}" for v in values)
