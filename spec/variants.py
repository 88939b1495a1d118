"""Oracle variants: each layer's NumPy float64 oracle, parametrised by the design choices real
implementations make and the mistakes ports make.

``forward(config, weights, inputs, training=..., masks=None, **choices)`` returns
``(output, new_weights)`` like ``LayerSpec.forward``; with every choice at its default it is
the spec's oracle (tests/test_rootcause.py checks this to the bit). A choice is one keyword;
``CHOICES`` lists, per layer, each choice's default and the alternatives the root-cause stage
(``portspec.rootcause``) tries, and ``describe`` words a choice as the diff from the spec.

Weights are the canonical ones (spec weight table). A port that keeps fewer statistics (one
per channel, one scalar) reads back through its adapter as the canonical vector with its
values repeated, which these oracles consume unchanged: the normalisation's own reduction
decides what is shared.

Conventions and their sources: BatchNorm and LayerNorm as in Keras 3
(``keras.layers.BatchNormalization``, ``LayerNormalization``) and PyTorch (``nn.BatchNorm1d``,
``nn.LayerNorm``); GELU exact (erf) and tanh-approximated as in ``torch.nn.GELU``; inverted
dropout as in ``keras.layers.Dropout`` and ``torch.nn.Dropout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from portspec import exact
from portspec.layers import feature_mixing as fm
from portspec.layers import gated_feature_fusion as gff


class ExactOps:
    """The spec oracle's arithmetic (portspec.exact): the same bits as ``LayerSpec.forward``."""

    @staticmethod
    def _last(x, axes):
        x = np.moveaxis(np.asarray(x, np.float64), axes, range(-len(axes), 0))
        return x.reshape(*x.shape[: x.ndim - len(axes)], -1)

    def mean(self, x, axes):
        out = exact.mean(self._last(x, axes), axis=-1)
        return np.expand_dims(out, axes)

    def var(self, x, axes, ddof):
        out = exact.var(self._last(x, axes), axis=-1, ddof=ddof)
        return np.expand_dims(out, axes)

    def variances(self, x, axes, mean):
        """``ddof -> var(x, axes, ddof)``; ``mean`` is ``self.mean(x, axes)``."""
        return lambda ddof: self.var(x, axes, ddof)

    matmul = staticmethod(exact.matmul)
    exp = staticmethod(exact.exp)
    tanh = staticmethod(exact.tanh)

    def activate(self, name, z, axis=-1):
        return gff.activate(name, z, axis=axis)


class NumpyOps(ExactOps):
    """NumPy's own kernels: within a few ulp of ExactOps and much faster, for the search."""

    def mean(self, x, axes):
        # np.mean's own steps for a float64 array (numpy/_core/_methods.py ``_mean``: the sum,
        # over the count), the same bits at a third of its time on the search's small arrays
        return np.add.reduce(x, axis=axes, keepdims=True) / math.prod(x.shape[a] for a in axes)

    def variances(self, x, axes, mean):
        """``ddof -> np.var(x, axis=axes, keepdims=True, ddof=ddof)`` to the bit, its squared
        deviations summed once for every ddof: np.var's own steps (numpy/_core/_methods.py
        ``_var``: the mean as ``np.mean`` gives it, the squares of x - mean summed, over
        count - ddof). The search asks two ddofs of each call (normalised by one, moving
        variance updated by another)."""
        count, squares = math.prod(x.shape[a] for a in axes), None

        def var(ddof):
            nonlocal squares
            if squares is None:
                d = x - mean
                squares = np.add.reduce(np.multiply(d, d, out=d), axis=axes, keepdims=True)
            return squares / max(count - ddof, 0)

        return var

    matmul = staticmethod(np.matmul)
    exp = staticmethod(np.exp)
    tanh = staticmethod(np.tanh)

    def activate(self, name, z, axis=-1):
        if name == "sigmoid":
            return _overflow_ok(lambda: 1.0 / (1.0 + np.exp(-z)))
        if name == "tanh":
            return np.tanh(z)
        if name == "relu":
            return np.maximum(z, 0.0)
        if name == "softmax":
            e = np.exp(z - z.max(axis=axis, keepdims=True))
            return e / e.sum(axis=axis, keepdims=True)
        return gff.activate(name, z, axis=axis)


EXACT, FAST = ExactOps(), NumpyOps()

# -- FeatureMixing --------------------------------------------------------------------------

MEAN, VAR = "norm.moving_mean", "norm.moving_variance"

# Axes of a (batch, L, N) tensor a normalisation reduces over.
NORM_AXES = {
    "batch-feature": (0,),  # BatchNorm per flattened feature t*N + c (the spec)
    "batch-channel": (0, 1),  # BatchNorm per channel (BatchNorm1d over N, darts' default)
    "batch-time": (0, 2),  # BatchNorm per time step
    "batch-scalar": (0, 1, 2),  # one statistic for everything (darts' TimeBatchNorm2d reading)
    "layer-LN": (1, 2),  # LayerNorm over (L, N) per sample (darts, neuralforecast tsmixerx)
    "layer-N": (2,),  # LayerNorm over N per sample and time step
    "layer-L": (1,),  # over time per sample and channel: instance norm (RevIN's statistics)
    # RMSNorm (Zhang and Sennrich 2019): x / sqrt(mean(x^2) + eps), no mean subtracted, per
    # sample over (L, N) (the flattened features, flax.nnx.RMSNorm's default last axis there)
    # or over N per time step
    "rms-LN": (1, 2),
    "rms-N": (2,),
}


def keeps_no_statistics(norm: str) -> bool:
    """Whether a normalisation holds no moving statistics: a per-sample one (LayerNorm,
    instance norm, RMSNorm) or none."""
    return norm.startswith(("layer", "rms")) or norm == "none"


def _erf(v):
    """math.erf of each element (NumPy has no erf; np.vectorize gives the same bits in 1.6
    times the time)."""
    v = np.asarray(v, np.float64)
    return np.fromiter(map(math.erf, v.ravel().tolist()), np.float64, v.size).reshape(v.shape)


def _overflow_ok(compute):
    """``compute()`` where exp(-v) may overflow to inf for a very negative v: 1 / (1 + inf) is
    the logistic's limit 0, so NumPy's overflow warning says nothing to a user."""
    with np.errstate(over="ignore"):
        return compute()


_ACT = {
    "relu": lambda v, ops: np.maximum(v, 0.0),
    "gelu": lambda v, ops: 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0))),
    # v * v * v, not v**3: NumPy's power calls pow() per element, ten times the time of two
    # multiplications on the search's arrays (the two differ by an ulp or so of the cube)
    "gelu-tanh": lambda v, ops: 0.5 * v * (
        1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * (v * v * v)))
    ),
    "relu6": lambda v, ops: np.clip(v, 0.0, 6.0),
    "silu": lambda v, ops: _overflow_ok(lambda: v / (1.0 + ops.exp(-v))),
    "tanh": lambda v, ops: ops.tanh(v),
    "sigmoid": lambda v, ops: _overflow_ok(lambda: 1.0 / (1.0 + ops.exp(-v))),
    "elu": lambda v, ops: np.where(v > 0, v, ops.exp(np.minimum(v, 0.0)) - 1.0),
    "identity": lambda v, ops: v,
}

FM_DEFAULTS = {
    "norm": "batch-feature",
    "affine": True,
    "position": "before",  # before the MLP; "after": normalise x + branch (post-norm)
    "eps": fm.EPSILON,
    "eps_where": "inside",  # sqrt(var + eps); "outside": sqrt(var) + eps
    "momentum": None,  # share of the old moving statistic kept (Keras sense); None: the profile's
    # the moving variance's own share kept, where it is not the mean's (None: the mean's)
    "var_momentum": None,
    "var_ddof": 0,  # variance in the normalisation: 0 biased, 1 unbiased
    "update_ddof": 0,  # variance in the moving update
    "train_stats": "batch",  # statistics training normalises with: "batch" or "moving"
    "infer_stats": "moving",  # statistics inference normalises with: "moving" or "batch"
    "update": "training",  # when the moving statistics move: "training", "never", "always"
    # the BatchNorm's own training flag: "called" (the layer's), "inverted" (Keras's
    # ``training=not training``, Flax's ``use_running_average`` negated: moving statistics in
    # training, batch statistics and their update in inference)
    "norm_training": "called",
    # the layer's training flag: "honoured"; "ignored": every call computes inference (an
    # adapter or layer that never passes it on: moving statistics used, not updated, no dropout)
    "training_flag": "honoured",
    # what updates the moving variance: "variance" (the batch's); "std" (its square root, a
    # std() where var() was meant)
    "var_update": "variance",
    # the mean training subtracts and the moving mean takes: "batch", each feature's over the
    # batch; "all", one mean of every value (x.mean() where x.mean(dim=0) was meant; the
    # variance stays each feature's)
    "train_mean": "batch",
    # the batch statistics in training: "mean-var"; "var-mean": each taken for the other (the
    # pair unpacked in the wrong order, torch.var_mean returning (var, mean)): training
    # subtracts the batch variance and divides by sqrt(batch mean + eps), and the moving mean
    # takes the variance, the moving variance the mean
    "batch_stats": "mean-var",
    # the moving statistics' shape after an update: "kept"; "keepdims", (1, L*N): the batch
    # statistics computed with keepdims=True and stored as they are
    "state_shape": "kept",
    # feature index t*N + c; "F": c*L + t; "batch": the batch read into the features, a
    # (batch, L, N) input flattened as x.reshape(L*N, batch).T (and back as its inverse), so
    # that feature j's statistics are taken over the batch consecutive values j*batch ..
    # j*batch + batch - 1 of x in memory: the spec's at a batch of one
    "flatten": "C",
    "activation": "relu",
    "biases": ("dense1", "dense2"),  # the Dense layers that add their bias
    "dropout_scale": "inverted",  # kept units * 1/(1-p); "none": * 1; "rate": * 1/p;
    # "classic": * 1 in training, every unit * (1-p) in inference
    "dropout_rate": "rate",  # drop probability p; "keep": drops 1-p; "keep-mask": drops 1-p
    # where 0 < p < 1, scaled by 1/(1-p) still; "keep-dropout1", "keep-dropout2": that site
    # alone drops 1-p (nn.Dropout(1 - p) at one site), the other p; a float q: drops q, any p
    "sites": ("dropout1", "dropout2"),
    "dropout_inference": False,
    "shared_mask": False,  # both sites draw one mask
    "mask_axis": None,  # None: a decision per element; "batch"/"time"/"channel": one mask
    # drawn without that axis and broadcast along it (the masks are the caller's; the
    # root-cause stage checks the probe's decisions against this)
    "residual": "input",  # what the residual adds: "input", "normalised", "none", "twice"
    # the standardised features (x - mean) / sqrt(var + eps) clipped to [-c, c] before the
    # scale and offset ("to guard outliers"); None: not clipped. Fitted among CLIPS.
    "clip": None,
    # the normalisation's output gamma z + beta clipped to [-c, c] ("clip(BN(x), -5, 5)"):
    # in training a batch's standardised values stay below sqrt(B - 1), so it bites in
    # inference alone; None: not clipped. Fitted among CLIPS.
    "norm_clip": None,
    # a training batch of one: "batch" (its own statistics, as any batch); "moving": the
    # BatchNorm run as in inference for it (moving statistics used, not updated), a port's
    # guard against the variance of one sample; "frozen": normalised with its own statistics
    # but the moving statistics left unchanged (an `if batch > 1:` around the update)
    "batch_one": "batch",
    # the second dropout on the residual sum (input included): drop(x + dense2(...))
    "residual_dropout": False,
    # None; "stats", "affine": the weight map exchanging those two weights (MAP_SWAPS)
    "map_swap": None,
    "transpose": False,  # Dense kernels read (out, in)
}


def fixed_rate(choices: dict) -> float | None:
    """The dropout rate fixed in the port whatever the config's (a float ``dropout_rate``),
    or None where the variant's rate follows the config."""
    how = choices.get("dropout_rate", "rate")
    return None if isinstance(how, str) else float(how)


def drops_in_inference(choices: dict) -> bool:
    """Whether a variant draws dropout in an inference call: dropout active in inference, or
    a layer that trains whatever the flag (``training_flag`` "always")."""
    return bool(choices.get("dropout_inference")) or choices.get("training_flag") == "always"


# dropout_rate: the rate read as the keep probability at one site only (KEEP_AT[how]); the
# "keep-mask-" ones in its mask alone, kept units still scaled by 1/(1-p) (a hand-written
# dropout keeping where rand < p)
KEEP_AT = {"keep-dropout1": "dropout1", "keep-dropout2": "dropout2",
           "keep-mask-dropout1": "dropout1", "keep-mask-dropout2": "dropout2"}


def drop_rate(choices: dict, p: float, site: str | None = None) -> float:
    """The probability a variant drops a unit with at ``site``, for the config's dropout
    ``p``: p, 1 - p (the rate read as the keep probability, at every site or at one), or a
    rate fixed in the port whatever p is."""
    how, fixed = choices.get("dropout_rate", "rate"), fixed_rate(choices)
    if fixed is not None:
        return fixed
    if how in KEEP_AT:
        if site != KEEP_AT[how] or (how.startswith("keep-mask") and p in (0.0, 1.0)):
            return p  # the other site; a keep-mask's port guards p = 0 and p = 1 the spec's
        return 1.0 - p
    if how not in ("rate", "keep", "keep-mask"):  # "fixed" before rootcause fits it: no rate
        raise ValueError(f"dropout_rate {how!r} has no rate")
    if how == "keep-mask":  # the mask alone reads p as the keep probability: the port's own
        return p if p in (0.0, 1.0) else 1.0 - p  # guards keep p = 0 and p = 1 the spec's
    return p if how == "rate" else 1.0 - p


# map_swap: the pairs of canonical weights of one shape a weight map can exchange, or the
# layer's call (``beta, gamma = self.affine``): the outputs alone cannot tell the two apart,
# the weights as built read through the map can (rootcause._swap_placed)
MAP_SWAPS = {"stats": ("norm.moving_mean", "norm.moving_variance"),
             "affine": ("norm.gamma", "norm.beta")}
SWAP_WHERE = ("(each used where the other belongs: in the weight map, or in the layer's "
              "call)")


def fm_forward(config, weights, inputs, *, training, masks=None, ops=EXACT, **choices):
    """FeatureMixing with ``choices`` (see ``FM_DEFAULTS``); defaults give the spec's oracle.

    ``inputs`` (batch, L, N); ``weights`` the canonical table (moving statistics may be
    missing for a layer without them); ``masks`` maps "dropout1" (batch, L, H) and "dropout2"
    (batch, L, N) to keep-masks, needed in training with 0 < p < 1.
    Returns (output (batch, L, N), new weights).
    """
    c = {**FM_DEFAULTS, **choices}
    unknown = set(choices) - set(FM_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown FeatureMixing choices {sorted(unknown)}")
    if c["momentum"] is None:
        c["momentum"] = fm.SPEC.momentum
    if c["training_flag"] in ("ignored", "always"):
        training = c["training_flag"] == "always"
    if isinstance(c["eps"], str) and c["eps"] == MACHINE:  # the input dtype's own epsilon
        import ml_dtypes

        c["eps"] = float(ml_dtypes.finfo(np.asarray(inputs).dtype).eps)
    x = np.asarray(inputs, dtype=np.float64)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    # two canonical weights exchanged by the port's weight map: the layer holds each under the
    # other's name, so it computes with them exchanged and the read-back exchanges them again
    pair = MAP_SWAPS.get(c["map_swap"])
    if pair:
        if not set(pair) <= set(w):
            raise KeyError(f"{pair} to exchange")
        w[pair[0]], w[pair[1]] = w[pair[1]], w[pair[0]]
    batch, length, n = x.shape
    new = dict(w)
    k1, k2 = w["dense1.kernel"], w["dense2.kernel"]
    k1, k2 = kernel_as_used(c["transpose"], k1), kernel_as_used(c["transpose"], k2)

    def grid(v):
        """A normalisation weight as (L, N), or a shape that broadcasts to it: the canonical
        flat vector in the port's flatten order, or a port's own (L, N), per-channel (N,),
        per-step (L,) or scalar one."""
        v = np.asarray(v, np.float64)
        if v.size == length * n:
            return v.reshape(n, length).T if c["flatten"] == "F" else v.reshape(length, n)
        # (1, N), (L, 1) and (1, 1) broadcast against (L, N) in the arithmetic (np.broadcast_to
        # here cost a sixth of the root-cause search)
        if v.size == n:
            return v.reshape(1, n)
        if v.size == length:
            return v.reshape(length, 1)
        if v.size == 1:
            return v.reshape(1, 1)
        raise ValueError(f"a normalisation weight of shape {v.shape} for (L, N) = {(length, n)}")

    def flat(g, like):
        """``g`` (L, N) stored back at the size of ``like``."""
        like = np.asarray(like)
        if like.size == length * n:
            return g.T.reshape(like.shape) if c["flatten"] == "F" else g.reshape(like.shape)
        pick = {n: g[0, :], length: g[:, 0], 1: g[:1, 0]}[like.size]
        return np.reshape(pick, like.shape)

    def normalise(v):
        if c["flatten"] == "batch" and c["norm"] != "none":
            # feature j of the port's flat array holds x's values j*B .. j*B + B - 1 in
            # memory; the result goes back the same way (leading axes: fitted epsilons)
            mixed = standardise(v.reshape(length * n, -1).T.reshape(v.shape))
            lead = mixed.shape[:-3]
            flat = mixed.reshape(*lead, v.shape[0], length * n)
            return np.swapaxes(flat, -1, -2).reshape(*lead, *v.shape)
        return standardise(v)

    def standardise(v):
        if c["norm"] == "none":
            return v
        axes = NORM_AXES[c["norm"]]
        batch_norm = c["norm"].startswith("batch")
        count = math.prod(v.shape[a] for a in axes)
        if c["norm"].startswith("rms"):  # the mean square about 0, nothing subtracted
            var = ops.mean(v * v, axes)
            mean = np.zeros_like(var)
        else:
            mean = ops.mean(v, axes)
            variance = ops.variances(v, axes, mean)
            if count > c["var_ddof"]:
                var = variance(c["var_ddof"])
            else:  # the spec's biased variance of one sample is 0; an unbiased one undefined
                var = np.zeros_like(mean) if c["var_ddof"] == 0 else np.full_like(mean, np.nan)
        if batch_norm:
            bn_training = training != (c["norm_training"] == "inverted")
            if c["batch_one"] == "moving" and v.shape[0] == 1:
                bn_training = False  # a batch of one normalised as in inference, not updated
            if bn_training and c["train_mean"] == "all":  # x.mean() for x.mean(dim=0)
                mean = np.full_like(mean, float(np.mean(v)))
            swapped = bn_training and c["batch_stats"] == "var-mean"
            by_elements = bn_training and c["batch_stats"] == "elements"
            if by_elements:  # sums over the batch divided by every element's count
                share = count / float(np.prod(v.shape[-3:]))
                mean = mean * share
                var = ops.mean((v - mean) ** 2, axes) * share
            frozen = c["batch_one"] == "frozen" and v.shape[0] == 1
            use_batch = (c["train_stats"] == "batch" if bn_training
                         else c["infer_stats"] == "batch")
            if not frozen and (c["update"] == "always" or (c["update"] == "training"
                                                            and bn_training)):
                ddof = c["update_ddof"]
                # an unbiased variance of one sample is undefined (NaN, as torch gives)
                uvar = variance(ddof) if count > ddof else np.full_like(mean, np.nan)
                uvar = var if by_elements else uvar
                if c["var_update"] == "std":
                    uvar = np.sqrt(uvar)
                a = c["momentum"]
                av = a if c["var_momentum"] is None else c["var_momentum"]
                old_m, old_v = grid(w[MEAN]), grid(w[VAR])
                took_m, took_v = (uvar, mean) if swapped else (mean, uvar)
                new[MEAN] = flat(a * old_m + (1 - a) * took_m[0], w[MEAN])
                new[VAR] = flat(av * old_v + (1 - av) * took_v[0], w[VAR])
                if c["var_update"] == "mixture":  # the pooled variance's between-means term
                    new[VAR] = new[VAR] + flat(av * (1 - av) * (took_m[0] - old_m) ** 2,
                                               w[VAR])
            if not use_batch:
                mean, var = grid(w[MEAN]), grid(w[VAR])
            elif swapped:
                mean, var = var, mean
        with np.errstate(invalid="ignore"):  # a negative variance a port holds: NaN, quietly
            if c["eps_where"] == "inside":
                denom = np.sqrt(var + c["eps"])
            else:
                denom = np.sqrt(var) + c["eps"]
        if c["norm_clip"] is not None:
            bound = c["norm_clip"]
            return np.clip(affine(v, mean, denom), -bound, bound)
        return affine(v, mean, denom)

    def affine(v, mean, denom):
        if c["affine"] is True and c["clip"] is None:  # the spec's order: defaults agree
            return grid(w["norm.gamma"]) * (v - mean) / denom + grid(w["norm.beta"])
        z = (v - mean) / denom
        if c["clip"] is not None:
            z = np.clip(z, -c["clip"], c["clip"])
        if c["affine"] is True:
            return grid(w["norm.gamma"]) * z + grid(w["norm.beta"])
        if c["affine"] == "scale":
            return grid(w["norm.gamma"]) * z
        return z + grid(w["norm.beta"]) if c["affine"] == "offset" else z

    active = training or c["dropout_inference"]

    def drop(v, site):
        rate = drop_rate(c, config["dropout"], site)
        if site not in c["sites"] or rate == 0.0:
            return v
        if not active:  # classic dropout scales by the keep probability here instead
            classic = c["dropout_scale"] == "classic" or (
                c["dropout_scale"] == "twice" and site == "dropout2")
            return v * (1.0 - rate) if classic else v
        if rate == 1.0:  # v * 0: a NaN or inf the branch holds stays NaN, as a mask multiply
            return v * 0.0
        if masks is None:
            raise ValueError(f"the oracle needs masks[{site!r}] for dropout {rate}")
        mask = masks[site]
        if c["shared_mask"] and site == "dropout1":  # unit c of both sites, one decision
            m = min(v.shape[-1], n)
            mask = np.concatenate([masks["dropout2"][..., :m], mask[..., m:]], axis=-1)
        kept = {"inverted": 1.0 - rate, "none": 1.0, "rate": rate, "classic": 1.0,
                "twice": 1.0 - rate}[
            c["dropout_scale"]]
        how = c["dropout_rate"]
        mask_only = how == "keep-mask" or (isinstance(how, str) and how.startswith(
            "keep-mask-") and KEEP_AT[how] == site)
        if c["dropout_scale"] == "inverted" and mask_only:
            kept = 1.0 - config["dropout"]  # the scale the spec's rate gives
        return np.where(mask, v / kept, v * 0.0)

    def branch(v):
        b1, b2 = (w[f"{d}.bias"] if d in c["biases"] else 0.0 for d in ("dense1", "dense2"))
        v = drop(v, "input")  # a dropout on the first Dense's input (never searched: read off
        # the staged probe's record, rootcause._input_site)
        h = _ACT[c["activation"]](ops.matmul(v, k1) + b1, ops)
        h = drop(h, "dropout1")
        y = ops.matmul(h, k2) + b2
        return y if c["residual_dropout"] else drop(y, "dropout2")

    def after(v):  # the residual sum, dropped where the second dropout comes after it
        return drop(v, "dropout2") if c["residual_dropout"] else v

    if c["position"] == "before":
        z = normalise(x)
        y = branch(z)
        out = after({"input": x + y, "normalised": z + y, "none": y,
                     "twice": x + x + y}[c["residual"]])
    else:
        y = branch(x)
        out = normalise(after({"input": x + y, "normalised": x + y, "none": y,
                               "twice": x + x + y}[c["residual"]]))
    if pair:
        new[pair[0]], new[pair[1]] = new[pair[1]], new[pair[0]]
    if c["state_shape"] == "keepdims":
        for k in (MEAN, VAR):
            if k in new and new[k] is not w.get(k):  # updated: stored as computed, (1, L*N)
                new[k] = np.reshape(new[k], (1, -1))
    return out, new


# Choices that change only the moving statistics a FeatureMixing call leaves, never its output:
# fm_forward reads them where it writes the new moving mean and variance alone (the call
# normalises with the statistics it was given, or the batch's). ``batch_one`` "frozen" too: it
# skips the update of a batch of one, which is normalised by its own statistics either way.
STATE_ONLY = frozenset({"momentum", "var_momentum", "update_ddof", "var_update", "update",
                        "state_shape"})
# Choices that change only a dropout that drops: at rate 0, ``drop`` returns its input before
# it reads any of them.
DROPOUT_ONLY = frozenset({"dropout_scale", "sites", "shared_mask", "mask_axis",
                          "residual_dropout", "dropout_inference"})


# Choices that change only what a FeatureMixing call does with the statistics it normalises by,
# never the moving statistics it leaves, where the normalisation comes before the MLP
# (``position`` "before"): the scale and shift, epsilon, the statistics a call normalises with
# (its update takes the batch's either way), the MLP and the residual. Not ``transpose``: an
# (out, in) kernel read as (in, out) may raise on its shape, and a call that raises leaves no
# statistics.
OUTPUT_ONLY = frozenset({"affine", "clip", "norm_clip", "eps", "eps_where", "var_ddof",
                         "train_stats", "infer_stats", "activation", "biases", "residual"})


def state_choices(space, choices: dict) -> dict:
    """The part of ``choices`` that can change the moving statistics a call leaves, for calls
    made without dropout (the dropout's choices, ``DROPOUT_ONLY`` and ``dropout_rate``, left
    out): two candidates with the same part leave the same statistics, bit for bit, and a fit
    to the statistics alone (a momentum) is one fit for both. A GatedFeatureFusion candidate
    is returned whole."""
    if space is not FM_SPACE:
        return dict(choices)
    before = choices.get("position", FM_DEFAULTS["position"]) == "before"
    return {k: v for k, v in choices.items()
            if k not in DROPOUT_ONLY and k != "dropout_rate"
            and not (before and k in OUTPUT_ONLY)}


def output_choices(space, choices: dict, rates) -> dict:
    """The part of ``choices`` that can change the output of calls whose configured dropout
    rates are ``rates``: two candidates with the same part compute the same outputs, bit for
    bit, and a fit to the outputs alone (an epsilon, a least-squares loss) is one fit for both.
    Without the moving statistics' choices (``STATE_ONLY``), and without the dropout's where
    every rate is 0 and the rate is the config's (``DROPOUT_ONLY``). A GatedFeatureFusion
    candidate is returned whole."""
    if space is not FM_SPACE:
        return dict(choices)
    undropped = all(p == 0.0 for p in rates) and choices.get("dropout_rate", "rate") == "rate"
    return {k: v for k, v in choices.items()
            if k not in STATE_ONLY and not (k == "batch_one" and v == "frozen")
            and not (undropped and k in DROPOUT_ONLY)}


# -- GatedFeatureFusion ---------------------------------------------------------------------

GFF_DEFAULTS = {
    "concat": "ab",  # the gate sees concat([a, b]); "ba": concat([b, a])
    # g*a + (1-g)*b; "b-gated": g*b + (1-g)*a; "both": g*a + g*b; "residual": a + g*b;
    # "precedence": g*a + 1 - g*b; "logits": g*a + (1-z)*b, z the gate's pre-activation
    "roles": "a-gated",
    "bias": True,
    "activation": None,  # None: the config's; else this one whatever the config says
    "axis": -1,  # softmax axis
    # what the gate sees: "both" (concat([a, b])), "a", "b"; "aa", "bb": concat([a, a]), ...
    "sees": "both",
    # the function a "sigmoid" gate computes: "logistic" 1/(1+e^-z); "hard" clip(z/6 + 1/2,
    # 0, 1) (Keras 3's hard_sigmoid, jax.nn.hard_sigmoid, torch's Hardsigmoid); "hard-keras2"
    # clip(0.2 z + 1/2, 0, 1) (Keras 2's hard_sigmoid)
    "sigmoid": "logistic",
    # a "tanh" gate: "plain" tanh(z); "rescaled" (tanh(z) + 1) / 2, a port's "fix" into [0, 1]
    "tanh": "plain",
    # where the activation is: "gate" act(concat @ kernel + bias); "input" act(concat) @
    # kernel + bias, the Dense after it (the gate unbounded)
    "activation_site": "gate",
    # the gate's width: "features", one gate per feature (the kernel (2F, F)); "one", one
    # scalar gate per sample broadcast over the features (a Dense of one unit, kernel (2F, 1))
    "width": "features",
    # the gate clamped to [e, 1 - e] ("to keep both inputs alive"); None: not clamped. Fitted
    # among GATE_CLIPS.
    "gate_clip": None,
    # a "softmax" gate: "plain"; "log", log_softmax (a log-probability gate, not in [0, 1])
    "softmax": "plain",
    # the gate's pre-activation multiplied by a scale (a temperature): None, or a key of
    # GATE_SCALES
    "gate_scale": None,
    # a kernel the port holds as two (F, F) halves, each transposed (a concat() of two (in,
    # out) weights mapped with transpose, or a layer that reads each half (out, in))
    "halves_transposed": False,
    "transpose": False,
}

# A temperature on the gate: the scales ports write, as functions of the features F.
GATE_SCALES = {"1/sqrt(F)": lambda f: 1.0 / np.sqrt(f), "sqrt(F)": lambda f: np.sqrt(f),
               "1/F": lambda f: 1.0 / f, "2": lambda f: 2.0, "1/2": lambda f: 0.5,
               "10": lambda f: 10.0, "1/10": lambda f: 0.1}

# The bounds a fitted clip is tried at (rootcause): the round values ports write.
CLIPS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 50.0, 100.0)
GATE_CLIPS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def gff_forward(config, weights, inputs, *, training=False, masks=None, ops=EXACT, **choices):
    """GatedFeatureFusion with ``choices`` (see ``GFF_DEFAULTS``); defaults give the spec.

    ``inputs`` [a, b], each (..., F); ``weights`` gate.kernel (2F, F), gate.bias (F,).
    Returns (output (..., F), weights unchanged).
    """
    c = {**GFF_DEFAULTS, **choices}
    unknown = set(choices) - set(GFF_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown GatedFeatureFusion choices {sorted(unknown)}")
    a, b = (np.asarray(v, dtype=np.float64) for v in inputs)
    k = np.asarray(weights["gate.kernel"], dtype=np.float64)
    f = a.shape[-1]
    k = kernel_as_used(c["transpose"], k)
    if c["halves_transposed"]:  # each (F, F) half of a kernel held as two, transposed
        if k.shape != (2 * f, f):
            raise ValueError(f"halves of a gate kernel of shape {k.shape} for F={f}")
        k = np.concatenate([k[:f].T, k[f:].T], axis=0)
    width = f if c["width"] == "features" else 1
    if k.shape[-1] != width:  # a kernel of another width is another layer, not broadcast
        raise ValueError(f"a gate kernel of {k.shape[-1]} columns for a gate of width {width}")
    first, second = (a, b) if c["concat"] == "ab" else (b, a)
    name = c["activation"] or config["activation"]
    if c["activation_site"] == "input":
        v = np.concatenate([first, second], axis=-1)
        g = ops.matmul(ops.activate(name, v, axis=_softmax_axis(c["axis"], v.ndim)), k)
        g = g + np.asarray(weights["gate.bias"], dtype=np.float64) if c["bias"] else g
        return _fuse(c, g, a, b, z=g), dict(weights)  # no activation after the Dense: z is g
    if c["sees"] == "both":
        z = ops.matmul(np.concatenate([first, second], axis=-1), k)
    elif c["sees"] in ("aa", "bb"):
        v = a if c["sees"] == "aa" else b
        z = ops.matmul(np.concatenate([v, v], axis=-1), k)
    elif c["sees"] == "a":
        z = ops.matmul(a, k[:f])
    else:
        z = ops.matmul(b, k[f:])
    if c["bias"]:
        z = z + np.asarray(weights["gate.bias"], dtype=np.float64)
    if c["gate_scale"] is not None:  # a temperature on the gate's pre-activation
        z = z * GATE_SCALES[c["gate_scale"]](f)
    if name == "softmax" and c["softmax"] == "log":
        z = z - np.max(z, axis=-1, keepdims=True)
        g = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
    elif name == "sigmoid" and c["sigmoid"] != "logistic":
        slope = {"hard": 1.0 / 6.0, "hard-keras2": 0.2}[c["sigmoid"]]
        g = np.clip(slope * z + 0.5, 0.0, 1.0)
    elif name == "tanh" and c["tanh"] == "rescaled":
        g = (ops.tanh(z) + 1.0) / 2.0
    else:
        g = ops.activate(name, z, axis=_softmax_axis(c["axis"], np.ndim(z)))
    if c["gate_clip"] is not None:
        g = np.clip(g, c["gate_clip"], 1.0 - c["gate_clip"])
    return _fuse(c, g, a, b, z), dict(weights)


def _softmax_axis(axis, ndim: int) -> int:
    """The softmax axis of a choice: an axis, "implicit", torch's F.softmax without dim
    (torch.nn.functional._get_softmax_dim: 0 at rank 0, 1 and 3, else 1), or "all" (None)."""
    if axis == "all":  # no axis given to a hand-written softmax: e / e.sum()
        return None
    if axis != "implicit":
        return axis
    return 0 if ndim in (0, 1, 3) else 1


def _fuse(c, g, a, b, z):
    """The output from the gate ``g`` (and its pre-activation ``z``) by ``c["roles"]``."""
    if c["roles"] == "both":
        return g * a + g * b
    if c["roles"] == "residual":
        return a + g * b
    if c["roles"] == "precedence":
        return g * a + 1.0 - g * b
    if c["roles"] == "logits":
        return g * a + (1.0 - z) * b
    if c["roles"] == "lerp-from-a":
        return a + g * (a - b)
    if c["roles"] == "lerp-from-b":
        return b + g * (b - a)
    if c["roles"] == "complement-clamped":
        return g * a + np.maximum(1.0 - g, 0.0) * b
    if c["roles"] == "complement-clipped":
        return g * a + np.clip(1.0 - g, 0.0, 1.0) * b
    if c["roles"] == "b-gated":
        a, b = b, a
    return g * a + (1.0 - g) * b


# -- the search space and its words ---------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """One layer's variant space: its oracle, defaults, alternatives per choice and words."""

    forward: object
    defaults: dict
    alternatives: dict  # choice -> values tried ("fit" for a fitted continuous constant)
    words: dict  # choice -> value -> phrase (a callable for continuous values)


# how a layer trains in every call, where the probe has not seen which (``rootcause.STUCK``
# replaces it with what it saw)
ALWAYS_HOW = ("a call argument defaulting to train=True that the mode switch, .eval() or "
              "training=False, does not set")


# epsilon the input dtype's machine epsilon (torch.finfo(x.dtype).eps, jnp.finfo): 2.2e-16 at
# float64, 1.2e-7 at float32, so a port writing it computes another layer per dtype
MACHINE = "machine"


def _eps_words(v):
    if isinstance(v, str):
        return ("epsilon the input dtype's machine epsilon (torch.finfo(x.dtype).eps or "
                "jnp.finfo(x.dtype).eps: 2.22e-16 at float64, 1.19e-07 at float32)")
    known = (" (the PyTorch and Flax default)" if abs(v / 1e-5 - 1) < 0.05 else
             " (float32's machine epsilon, torch.finfo(torch.float32).eps)"
             if abs(v / 1.1920929e-07 - 1) < 0.02 else "")
    return f"epsilon {v:.3g}{known}" if v > 1e-11 else "epsilon ~0"


def _momentum_words(a):
    from portspec import profiles

    a = fm.SPEC.momentum if a is None else a
    other = profiles.fitting(a)
    if other is not None and other != profiles.active():
        return (f"moving statistics keep {a:.4g} of their old value (profile {other.name}: "
                f"{other.source})")
    if abs(a - (1 - fm.SPEC.momentum)) < 1e-6:
        return (f"moving statistics keep {a:.4g} of their old value (momentum "
                f"{fm.SPEC.momentum:g} read in the other sense)")
    # a power of the spec's share: its update applied that many times in one training call
    # (both moving statistics moved twice, by a second update left in the port)
    # (compared as exponents, log a / log m, within 0.05: a ratio test of a against m^k
    # takes a share near 1 for its own square)
    m = fm.SPEC.momentum
    times = next((k for k in (2, 3, 4) if 0 < a < 1 and 0 < m < 1
                  and abs(math.log(a) / math.log(m) - k) < 0.05), None)
    if times is not None:
        return (f"moving statistics keep {a:.4g} of their old value ({fm.SPEC.momentum:g} to "
                f"the power {times}: the spec's update applied {times} times in one training "
                "call, or that share)")
    return f"moving statistics keep {a:.4g} of their old value"


def _dropout_rate_words(how):
    if how == "rate":
        return "dropping with probability p"
    if how == "keep":
        return "dropping with probability 1-p (the rate used as the keep probability)"
    if how in KEEP_AT and how.startswith("keep-mask"):
        first, other = ("first", "second") if KEEP_AT[how] == "dropout1" else ("second", "first")
        return (f"the {first} dropout dropping with probability 1-p, its mask drawn to keep "
                f"with probability p (a Bernoulli(p) draw, rand < p, taken as the keep mask), "
                f"kept units still scaled by 1/(1-p); the {other} with p")
    if how in KEEP_AT:
        first, other = ("first", "second") if KEEP_AT[how] == "dropout1" else ("second", "first")
        return (f"the {first} dropout dropping with probability 1-p (the rate used as its keep "
                f"probability: at dropout 0 it drops every unit), the {other} with p")
    if how == "keep-mask":
        return ("dropping with probability 1-p, the mask drawn to keep with probability p (a "
                "Bernoulli(p) draw taken as the keep mask), kept units still scaled by "
                "1/(1-p)")
    return (f"dropping with probability {float(how):g} whatever the config's dropout (a rate "
            "fixed in the port: the dropout parameter never reaches its dropout)")


def _var_momentum_words(a):
    if a is None:
        return "the moving variance keeping the moving mean's share of its old value"
    return (f"the moving variance keeping {a:.4g} of its old value (the moving mean another "
            "share)")


def kernel_as_used(how, k):
    """The (in, out) kernel a layer computes with, given the kernel ``k`` as read back and
    ``how`` (the ``transpose`` choice): False, k itself; True, ``k.T`` (the kernel read back is
    (out, in)); "reshape", ``k.reshape(out, in).T`` (the canonical values held as they are and
    reinterpreted in torch.nn.Linear's (out, in) order: ``F.linear(x, k.reshape(out, in))``);
    "reshape-in", ``k.T.reshape(in, out)`` (held (out, in) and multiplied as
    ``x @ w.reshape(in, out)``). Both reshapes keep the memory order where a transpose
    reorders it."""
    k = np.asarray(k)
    if how is True:
        return k.T
    if how == "reshape":
        return k.reshape(k.shape[::-1]).T
    if how == "reshape-in":
        return k.T.reshape(k.shape)
    return k


# the transpose choices whose layer holds its kernels (out, in)
HELD_TRANSPOSED = (True, "reshape-in")

# (choice, value) pairs the search tries alone, never joined with a second change: a kernel
# reshaped where a transpose was meant, joined with each of its halves transposed, reads the
# rows of concat(a, b) interleaved (a0, b0, a1, b1, ...), another mistake the staged probe
# names (localise._permuted)
ALONE = {("transpose", "reshape"), ("transpose", "reshape-in")}

# One wording in both layers, so that one adapter mistake in both is one root cause.
TRANSPOSE = {False: "Dense kernels (in, out)",
             True: "Dense kernels transposed ((out, in), torch.nn.Linear's layout, read as "
                   "(in, out): a weight map giving identity for kernels held (out, in), or "
                   "transpose for kernels held (in, out))",
             "reshape": "Dense kernels reshaped where a transpose was meant: the (in, out) "
                        "kernel's values read in torch.nn.Linear's (out, in) order "
                        "(F.linear(x, kernel.reshape(out, in)) for kernel.T)",
             "reshape-in": "Dense kernels reshaped where a transpose was meant: the (out, in) "
                           "weight's values read in (in, out) order (x @ weight.reshape(in, "
                           "out) for weight.T)"}

FM_SPACE = Space(
    fm_forward,
    FM_DEFAULTS,
    {
        "norm": [k for k in NORM_AXES if k != "batch-feature"] + ["none"],
        "affine": [False, "scale", "offset"],
        "position": ["after"],
        "eps": ["fit"],
        "eps_where": ["outside"],
        "var_ddof": [1],
        "update_ddof": [1],
        "var_momentum": ["fit"],
        "train_stats": ["moving"],
        "infer_stats": ["batch"],
        "update": ["never", "always"],
        "norm_training": ["inverted"],
        "training_flag": ["ignored", "always"],
        "var_update": ["std", "mixture"],
        "train_mean": ["all"],
        "batch_stats": ["var-mean", "elements"],
        "state_shape": ["keepdims"],
        "flatten": ["F", "batch"],
        "activation": [a for a in _ACT if a != "relu"],
        "biases": [("dense2",), ("dense1",), ()],
        "dropout_scale": ["none", "rate", "classic", "twice"],
        "dropout_rate": ["keep", "keep-mask", "fixed", *KEEP_AT],  # "fixed": fitted (rootcause)
        "sites": [("dropout1",), ("dropout2",), ()],
        "dropout_inference": [True],
        "shared_mask": [True],
        "mask_axis": ["batch", "time", "channel"],
        "residual": ["normalised", "none", "twice"],
        "residual_dropout": [True],
        "map_swap": ["stats", "affine"],
        "clip": ["fit"],
        "norm_clip": ["fit"],
        "batch_one": ["moving", "frozen"],
        "transpose": [True, "reshape", "reshape-in"],
    },
    {
        "norm": {
            "batch-feature": "BatchNorm over each of the L*N flattened features",
            "batch-channel": "BatchNorm per channel (statistics over batch and time)",
            "batch-time": "BatchNorm per time step (statistics over batch and channels)",
            "batch-scalar": "BatchNorm with one scalar statistic",
            "layer-LN": "LayerNorm over (L, N)",
            "layer-N": "LayerNorm over the channels N",
            "layer-L": "instance normalisation over time L (per sample and channel, RevIN's "
                       "statistics)",
            "rms-LN": "RMSNorm over (L, N) (per sample x / sqrt(mean(x^2) + epsilon): no mean "
                      "subtracted)",
            "rms-N": "RMSNorm over the channels N (per sample and time step, no mean "
                     "subtracted)",
            "none": "no normalisation",
        },
        "affine": {True: "a learned scale and offset", False: "no scale and offset",
                   "scale": "a learned scale but no offset (Keras's center=False)",
                   "offset": "a learned offset but no scale (Keras's scale=False)"},
        "position": {"before": "normalising before the MLP", "after": "normalising after the "
                     "residual add"},
        "eps": _eps_words,
        "eps_where": {"inside": "epsilon inside the square root",
                      "outside": "epsilon added outside the square root"},
        "momentum": _momentum_words,
        "var_momentum": _var_momentum_words,
        "var_ddof": {0: "biased batch variance", 1: "unbiased batch variance in the normalisation"},
        "update_ddof": {0: "biased variance in the moving update",
                        1: "unbiased batch variance in the moving update"},
        "train_stats": {"batch": "batch statistics in training",
                        "moving": "moving statistics in training"},
        "infer_stats": {"moving": "moving statistics in inference",
                        "batch": "batch statistics in inference"},
        "update": {"training": "moving statistics updated in training calls only",
                   "never": "moving statistics never updated",
                   "always": "moving statistics updated in inference calls too"},
        "norm_training": {"called": "BatchNorm in the layer's own mode",
                          "inverted": "BatchNorm's training flag inverted (moving statistics "
                          "in training, batch statistics and their update in inference)"},
        "training_flag": {"honoured": "the training flag honoured",
                          "ignored": "the training flag never reaching the layer: every call "
                          "computes inference (moving statistics used and left unchanged, no "
                          "dropout)",
                          "always": "the training flag never reaching the layer: every call "
                          "trains, inference too (batch statistics used and the moving ones "
                          f"updated, dropout drawn: {ALWAYS_HOW})"},
        "train_mean": {"batch": "each feature's batch mean in training",
                       "all": "one mean of every value of the batch in training, subtracted "
                       "from every feature and taken by the moving mean (x.mean() where "
                       "x.mean(dim=0) was meant; the variance is each feature's)"},
        "batch_stats": {"mean-var": "the batch mean and variance each used as itself",
                        "var-mean": "the batch mean and variance each used for the other in "
                        "training (the pair unpacked in the wrong order, as mean, var = "
                        "torch.var_mean(...), which returns (var, mean)): the normalisation "
                        "subtracts the batch variance and divides by sqrt(batch mean + eps), "
                        "NaN where that mean is below -eps, and the moving mean takes the "
                        "variance, the moving variance the mean",
                        "elements": "the batch statistics' sums over the batch divided by the "
                        "element count B*L*N (x.numel(), ops.size(x)) where the batch size B "
                        "was meant: the mean is the batch mean / (L*N), the variance the mean "
                        "square about it / (L*N), in training and in the moving update"},
        "state_shape": {"kept": "the moving statistics keep their shape",
                        "keepdims": "the moving statistics stored with the batch axis kept: "
                        "after a training call they take the shape (1, L*N) (batch statistics "
                        "computed with keepdims=True and written back as they are), their "
                        "values the spec's"},
        "var_update": {"variance": "the moving variance updated with the batch variance",
                       "mixture": "the moving variance updated as the variance of the two "
                       "statistics' mixture: m var + (1 - m) batch var + m (1 - m) (batch mean "
                       "- moving mean)^2, the last term (the spread between the two means) "
                       "added to the spec's average",
                       "std": "the moving variance updated with the batch standard deviation "
                       "(std where var was meant)"},
        "flatten": {"C": "row-major flatten (t*N + c)",
                    "F": "channel-major flatten (c*L + t), in the layer or in the weight "
                    "map (a reshape in Fortran order)",
                    "batch": "a flatten that reads the batch into the features "
                    "(x.reshape(L*N, batch).T where x.reshape(batch, L*N) was meant, undone "
                    "the same way): each feature's statistics are taken over batch "
                    "consecutive values of the input in memory, from several samples and "
                    "features, which agrees with the spec only at a batch of one"},
        "activation": {a: f"{a} activation" for a in _ACT},
        "biases": {("dense1", "dense2"): "a bias in both Dense layers",
                   ("dense2",): "no bias in the first Dense",
                   ("dense1",): "no bias in the second Dense",
                   (): "no bias in either Dense"},
        "dropout_scale": {"inverted": "kept units scaled by 1/(1-p)",
                          "none": "kept units not scaled (dropout not inverted)",
                          "rate": "kept units scaled by 1/p",
                          "twice": "both conventions at once: kept units scaled by 1/(1-p) in "
                          "training (inverted dropout) and the MLP's output scaled by 1-p in "
                          "inference too (classic dropout's test-time scaling), so the branch "
                          "is 1-p of the spec's in inference",
                          "classic": "classic (non-inverted) dropout: kept units not scaled in "
                          "training, every unit scaled by 1-p in inference (Srivastava et al. "
                          "2014)"},
        "dropout_rate": _dropout_rate_words,
        "sites": {("dropout1", "dropout2"): "dropout after the activation and the second Dense",
                  ("dropout1",): "dropout only after the activation",
                  # the dropout probe sets the first Dense's kernel to 0: a dropout on that
                  # Dense's input shows in the staged probe's record instead
                  # (rootcause._input_site), which adds "input" to the sites
                  ("dropout2",): "dropout only after the second Dense, none after the "
                  "activation",
                  (): "no dropout",
                  **{("input", *sites): "a dropout on the first Dense's input (the normalised "
                     "features)" + said for sites, said in (
                         (("dropout1", "dropout2"), " as well as after the activation and the "
                          "second Dense"),
                         (("dropout1",), " and after the activation, none after the second "
                          "Dense"),
                         (("dropout2",), " and after the second Dense, none after the "
                          "activation"),
                         ((), " only"))}},
        "dropout_inference": {False: "no dropout in inference",
                              True: "dropout active in inference"},
        "shared_mask": {False: "independent masks per site",
                        True: "one mask shared by both dropout sites"},
        "mask_axis": {None: "a dropout decision per element",
                      **{a: f"one dropout mask broadcast along the {a} axis"
                         for a in ("batch", "time", "channel")}},
        "residual": {"input": "the residual adding the input",
                     "normalised": "the residual adding the normalised input",
                     "none": "no residual connection",
                     "twice": "the input added twice (x + x + branch: a residual added in the "
                     "block and again around it)"},
        "residual_dropout": {False: "the second dropout on the MLP's output, before the "
                             "residual add",
                             True: "the second dropout on the residual sum (dropping the "
                             "input's share too)"},
        "map_swap": {None: "each weight where it belongs",
                     "stats": "the moving mean and the moving variance exchanged " + SWAP_WHERE,
                     "affine": "gamma and beta exchanged " + SWAP_WHERE},
        "norm_clip": lambda c: ("the normalisation's output used as it is" if c is None else
                                f"the normalisation's output gamma z + beta clipped to "
                                f"[-{c:g}, {c:g}] (a clip after the BatchNorm; in training "
                                f"its values stay inside, in inference they need not)"),
        "clip": lambda c: ("the standardised features used as they are" if c is None else
                           f"the standardised features (x - mean) / sqrt(var + eps) clipped to "
                           f"[-{c:g}, {c:g}] before the scale and offset"),
        "batch_one": {"batch": "a training batch of one normalised with its own statistics",
                      "moving": "a training batch of one normalised as in inference (moving "
                      "statistics used and left unchanged)",
                      "frozen": "a training batch of one normalised with its own statistics "
                      "but the moving statistics left unchanged by it (the update skipped for "
                      "a batch of one)"},
        "transpose": TRANSPOSE,
    },
)

GFF_SPACE = Space(
    gff_forward,
    GFF_DEFAULTS,
    {
        "concat": ["ba"],
        "roles": ["b-gated", "both", "residual", "precedence", "logits", "lerp-from-a",
                  "lerp-from-b", "complement-clamped", "complement-clipped"],
        "bias": [False],
        "activation": list(gff.ACTIVATIONS),
        "axis": [0, 1, "implicit", "all"],
        "sees": ["a", "b", "aa", "bb"],
        "sigmoid": ["hard", "hard-keras2"],
        "tanh": ["rescaled"],
        "activation_site": ["input"],
        "width": ["one"],
        "gate_clip": ["fit"],
        "softmax": ["log"],
        "gate_scale": list(GATE_SCALES),
        "halves_transposed": [True],
        "transpose": [True, "reshape", "reshape-in"],
    },
    {
        "concat": {"ab": "the gate seeing concat([a, b])",
                   "ba": "the gate seeing concat([b, a]), in the layer or in the weight map (a "
                   "kernel joined from its halves in the other order)"},
        "roles": {"a-gated": "gate * a + (1 - gate) * b",
                  "b-gated": "gate roles swapped (gate * b + (1 - gate) * a)",
                  "both": "the gate multiplying both inputs (gate * a + gate * b)",
                  "residual": "a gated residual (a + gate * b)",
                  "precedence": "gate * a + 1 - gate * b (the complement's parentheses "
                  "missing)",
                  "logits": "gate * a + (1 - z) * b (the complement taken of the gate's "
                  "pre-activation z, not of the gate)",
                  "lerp-from-a": "a + gate * (a - b), an interpolation started from the wrong "
                  "end (b + gate * (a - b) is the spec's): the output is (1 + gate) a - gate "
                  "b",
                  "lerp-from-b": "b + gate * (b - a), an interpolation with its difference "
                  "reversed (b + gate * (a - b) is the spec's): the output is (1 + gate) b - "
                  "gate a",
                  "complement-clamped": "gate * a + max(1 - gate, 0) * b, the complement "
                  "clamped at 0 (b's weight 0 where a gate passes 1, as relu, softplus or "
                  "linear can; the spec's complement is 1 - gate, unclamped)",
                  "complement-clipped": "gate * a + clip(1 - gate, 0, 1) * b, the complement "
                  "clipped to [0, 1] (b's weight 0 where a gate passes 1, as relu, softplus "
                  "or linear can, and 1 where it falls below 0, as tanh can; the spec's "
                  "complement is 1 - gate, unclipped)"},
        "bias": {True: "a gate bias", False: "no gate bias"},
        "activation": {None: "the configured activation",
                       **{a: f"a {a} gate whatever the activation parameter says"
                          for a in gff.ACTIVATIONS}},
        "axis": {-1: "softmax over the last axis", 0: "softmax over the first (batch) axis",
                 1: "softmax over axis 1",
                 "implicit": "torch's implicit softmax axis (F.softmax without dim: axis 0 at "
                 "rank 3, axis 1 at rank 2 and 4)",
                 "all": "softmax over the whole array, every axis at once (no axis given: "
                 "exp(z) / exp(z).sum())"},
        "sees": {"both": "the gate seeing both inputs", "a": "the gate seeing only a",
                 "b": "the gate seeing only b", "aa": "the gate seeing concat([a, a]) (b "
                 "never reaches it)", "bb": "the gate seeing concat([b, b]) (a never reaches "
                 "it)"},
        "sigmoid": {"logistic": "the logistic sigmoid 1/(1+exp(-z))",
                    "hard": "a hard sigmoid clip(z/6 + 0.5, 0, 1) (Keras 3's hard_sigmoid, "
                    "jax.nn.hard_sigmoid, torch's Hardsigmoid)",
                    "hard-keras2": "Keras 2's hard sigmoid clip(0.2*z + 0.5, 0, 1)"},
        "tanh": {"plain": "a tanh gate tanh(z)",
                 "rescaled": "a tanh gate rescaled to (tanh(z) + 1) / 2 (sigmoid(2z))"},
        "width": {"features": "a gate per feature (a Dense of F units)",
                  "one": "one scalar gate per sample broadcast over the features (a Dense of "
                  "one unit)"},
        "activation_site": {"gate": "the activation on the gate's Dense output",
                            "input": "the activation on concat([a, b]) before the gate's "
                            "Dense (the gate unbounded)"},
        "gate_clip": lambda e: ("the gate as the activation gives it" if e is None else
                                f"the gate clamped to [{e:g}, {1 - e:g}]"),
        "softmax": {"plain": "a softmax gate", "log": "log_softmax for the softmax gate (log-"
                    "probabilities, not in [0, 1])"},
        "gate_scale": lambda k: ("the gate's pre-activation as the Dense gives it" if k is None
                                 else f"the gate's pre-activation multiplied by {k} (a "
                                 "temperature)"),
        "halves_transposed": {False: "the gate kernel's two halves (F, F) as (in, out)",
                              True: "each (F, F) half of the gate kernel transposed, in the "
                              "layer or in the weight map (a concat() of (in, out) halves "
                              "mapped with transpose)"},
        "transpose": TRANSPOSE,
    },
)

SPACES = {fm.SPEC.name: FM_SPACE, gff.SPEC.name: GFF_SPACE}

# The canonical weights a choice leaves unused: a port that does not hold them (its adapter
# declares them ``absent``) computes that choice, whatever values the probe fills in for them.
UNUSED = {
    fm.SPEC.name: [({"biases": ("dense2",)}, {"dense1.bias"}),
                   ({"biases": ("dense1",)}, {"dense2.bias"}),
                   ({"biases": ()}, {"dense1.bias", "dense2.bias"}),
                   ({"affine": False}, {"norm.gamma", "norm.beta"}),
                   ({"affine": "scale"}, {"norm.beta"}),
                   ({"affine": "offset"}, {"norm.gamma"})],
    gff.SPEC.name: [({"bias": False}, {"gate.bias"})],
}


def required(layer: str, absent: set) -> dict:
    """The choices that the weights a port lacks force (the one whose unused weights are
    exactly ``absent``), or {} where none or several do."""
    found = [choice for choice, unused in UNUSED.get(layer, []) if unused == set(absent)]
    return found[0] if len(found) == 1 else {}


# The parts of a layer a choice belongs to: choices of one part can be one design (a
# LayerNorm after the residual with its own epsilon), choices of different parts are
# independent mistakes, each its own root cause.
AREAS = {
    fm.SPEC.name: {
        **dict.fromkeys(("norm", "affine", "position", "eps", "eps_where", "momentum",
                         "var_momentum", "var_ddof", "update_ddof", "train_stats",
                         "infer_stats", "update", "norm_training", "flatten", "var_update",
                         "clip", "norm_clip", "batch_one", "train_mean", "batch_stats",
                         "state_shape"),
                        "normalisation"),
        "training_flag": "training flag",
        **dict.fromkeys(("activation", "biases", "transpose"), "MLP"),
        **dict.fromkeys(("dropout_scale", "dropout_rate", "sites", "dropout_inference",
                         "shared_mask", "mask_axis", "residual_dropout"), "dropout"),
        "residual": "residual",
        "map_swap": "weight map",
    },
    gff.SPEC.name: {
        **dict.fromkeys(("concat", "sees", "transpose", "halves_transposed"), "gate input"),
        **dict.fromkeys(("bias", "activation", "axis", "sigmoid", "tanh", "activation_site",
                         "width", "gate_clip", "softmax", "gate_scale"),
                        "gate function"),
        "roles": "fusion",
    },
}


# Choices of different parts that one slip makes together, said as that slip: the second
# Dense fed the first Dense's output h where the activated, dropped-out units were meant (a
# variable mixed up) skips the activation and the first dropout alike.
JOINT = [
    ({"activation": "identity", "sites": ("dropout2",)},
     "the second Dense reads the first Dense's output h as it was before the activation and "
     "the first dropout (dense2(h) where dense2(dropout(act(h))) was meant: the activated "
     "units are unused)"),
]


def _joint(diff: dict) -> tuple[dict, str] | None:
    for choices, said in JOINT:
        if choices.items() <= diff.items():
            return choices, said
    return None


def parts(layer: str, diff: dict) -> list[dict]:
    """``diff`` split by the part of the layer each choice belongs to, in the diff's order; the
    choices of one slip (``JOINT``) stay together."""
    out: dict = {}
    joint = _joint(diff)
    for k, v in diff.items():
        area = "joint" if joint and k in joint[0] else AREAS[layer].get(k, k)
        out.setdefault(area, {})[k] = v
    return list(out.values())


def word(space: Space, choice: str, value) -> str:
    phrase = space.words[choice]
    return phrase(value) if callable(phrase) else phrase[value]


def describe(space: Space, diff: dict) -> str:
    """'<what the port does> instead of <what the spec says>' for each choice in ``diff``, the
    last pair after ", and" (each choice's own words next to the spec's); the choices of one slip
    (``JOINT``) said as that slip, instead of the spec's words for all of them."""
    joint = _joint(diff)
    pairs = [f"{joint[1]} instead of "
             + ", ".join(word(space, k, space.defaults[k]) for k in diff if k in joint[0])
             ] if joint else []
    pairs += [f"{word(space, k, v)} instead of {word(space, k, space.defaults[k])}"
              for k, v in diff.items() if not (joint and k in joint[0])]
    said = pairs[0] if len(pairs) == 1 else f"{', '.join(pairs[:-1])}, and {pairs[-1]}"
    return said + _exchanged(space, diff)


def _exchanged(space: Space, diff: dict) -> str:
    """Words where the port's epsilon is the spec's momentum and its momentum the spec's
    epsilon (both as the share of the old value kept, or in PyTorch's sense): two
    hyperparameters passed in each other's place."""
    eps, keep = diff.get("eps"), diff.get("momentum")
    if "eps" not in space.defaults or not isinstance(eps, float) or not isinstance(keep, float):
        return ""
    spec_eps, spec_keep = space.defaults["eps"], fm.SPEC.momentum
    for sense, spec_m in (("", spec_keep), (" in PyTorch's sense", 1.0 - spec_keep)):
        m = keep if not sense else 1.0 - keep
        if math.isclose(eps, spec_m, rel_tol=1e-6) and math.isclose(m, spec_eps, rel_tol=1e-6):
            return (f" (each the other's value{sense}: epsilon and momentum passed in each "
                    "other's place, as positional arguments in another order than the "
                    "constructor's)")
    return ""
