"""Dropout: both sites, inverted scaling, off in inference, rate 1.

The probe makes every dropout decision visible in the output. With gamma = 0 and beta = 1
BatchNorm outputs 1; with the first Dense's kernel 0 and bias 1 every hidden unit is 1; with
the second Dense's kernel the identity on the first N hidden units and bias 1, channel c of the
branch is m2 / (1-p) * (m1 / (1-p) + 1), where m1 and m2 are the keep decisions of site 1
(hidden unit c) and site 2 (output c). The branch therefore takes one of three values:
0 (site 2 dropped), 1/(1-p) (site 1 dropped) and (1/(1-p) + 1)/(1-p) (both kept). A port
whose activation gives a = act(1) other than ReLU's 1 (GELU: 0.841) has (a/(1-p) + 1)/(1-p)
for both kept, a read off its own training call at dropout 0: another activation is
FM-INFERENCE's finding, not a dropout one.
"""

from __future__ import annotations

import numpy as np

from portspec.adapter import set_held_weights
from portspec.clauses import ClauseFailure, NotApplicable
from portspec.layers import Case
from portspec.suite.areas.structure import branch_zeroed
from portspec.suite.checks import check
from portspec.tolerances import FORWARD, close

P = 0.3
# 64 x 8 x 16 = 8192 site-2 decisions: the binomial sd of a rate is 0.005; tested at 6 sd.
CASE = Case(
    {"n_series": 16, "input_size": 8, "dropout": P, "ff_dim": 32}, ((64, 8, 16),), "dropout probe"
)


def probe_weights(config):
    n, length, h = config["n_series"], config["input_size"], config["ff_dim"]
    k2 = np.zeros((h, n))
    k2[np.arange(n), np.arange(n)] = 1.0
    return {
        "norm.gamma": np.zeros(length * n),
        "norm.beta": np.ones(length * n),
        "norm.moving_mean": np.zeros(length * n),
        "norm.moving_variance": np.ones(length * n),
        "dense1.kernel": np.zeros((n, h)),
        "dense1.bias": np.ones(h),
        "dense2.kernel": k2,
        "dense2.bias": np.ones(n),
    }


def _branch(handle, x, training):
    return np.asarray(handle.forward(x, training=training), dtype=np.float64) - x


def _rate_ok(count, n, p):
    """Is ``count`` drops of ``n`` decisions rate ``p`` at 6 sd? No decision (site 2 dropped
    every unit, so site 1 shows none) contradicts no rate."""
    return n == 0 or abs(count / n - p) <= 6 * np.sqrt(p * (1 - p) / n)


@check("dropout-sites")
def dropout_sites(ctx):
    config = CASE.config
    handle = ctx.build(CASE, seed=3, dtype="float64")
    # dense1.kernel 0: the hidden units are 1 whatever the norm gives (it may keep its own)
    held = set_held_weights(handle, probe_weights(config))
    if "dense2.bias" in held.absent:  # its bias is what tells a site-2 drop from site 1's
        raise NotApplicable("the port holds no dense2.bias: without it the dropout probe "
                            "cannot tell a drop at the second site from drops at the first "
                            f"(both give 0) [{held.absent['dense2.bias']}]")
    dense = [n for n in held.own if n.startswith("dense")]
    if dense:  # the probe's values need the Dense layers as the spec has them
        raise NotApplicable(f"the port holds {', '.join(dense)} at another shape or meaning: "
                            "the dropout probe's weights cannot be written there")
    x = np.zeros(CASE.input_shapes[0])
    branch = _branch(handle, x, True)
    labels = _labels(branch)
    stray = labels == ""
    hidden = _hidden(ctx, x) if stray.any() else 1.0  # the levels of the port's own
    if hidden != 1.0 and not (_labels(branch, hidden) == "").any():  # activation (GELU's
        labels, stray = _labels(branch, hidden), np.zeros_like(stray)  # 0.841 for ReLU's 1)
    if stray.any():
        seen = np.unique(np.round(branch[stray], 4))[:6]
        inverted = flag_inverted(ctx)
        # a scaling that fits the port's own activation's levels, else ReLU's: the message
        # quotes the levels it was read against
        said = None if inverted or hidden == 1.0 else _scaling_diagnosis(branch, hidden)
        if not said:
            hidden, said = 1.0, None if inverted else _scaling_diagnosis(branch)
        raise ClauseFailure(
            f"branch values {seen.tolist()} are none of "
            f"{sorted(set(levels(hidden).values()))}",
            diagnosis=FLAG_INVERTED if inverted else said,
            checked=inverted,
        )
    problems = _rate_problems(labels)
    if problems:
        # A wrong rate at one position may be draws shared with the other site or broadcast
        # along an axis: the independence probe tells, before a rate is blamed.
        found, why = _independence(handle, config, x)
        (dropped2, n), (dropped1, kept2) = _counts(labels)
        raise ClauseFailure(
            "; ".join(problems + found),
            diagnosis="; ".join(why) or _rate_diagnosis(dropped2 / n, dropped1 / kept2
                                                         if kept2 else None),
            checked=bool(why),  # the independence probe's 6-sigma agreement, not the rate
        )
    if np.array_equal(branch, _branch(handle, x, True)):
        # a third call tells a key never advanced from two calls that happened to agree
        # (8192 decisions at p = 0.3: chance nil)
        again = np.array_equal(branch, _branch(handle, x, True))
        raise ClauseFailure(
            "two training calls drew the same dropout masks"
            + (" (and a third call too)" if again else ""),
            diagnosis=KEY_REUSED if again else "the dropout RNG key/seed is reused instead "
            "of advanced",
            checked=again,
        )
    found, why = _independence(handle, config, x)
    if found:  # the rates are right: the neighbours' agreement, 6 sigma off, is the evidence
        raise ClauseFailure("; ".join(found), diagnosis="; ".join(why), checked=bool(why))


# The probe's branch (output - input, input 0) at each drop decision: site 2 drops the
# output unit (0); site 1 drops the hidden unit that feeds it (dense2's bias 1 alone, scaled
# by 1/(1-p) at site 2); both keep ((1/(1-p) + 1)/(1-p)). No dropout at all gives 2.
_KEEP = 1.0 / (1.0 - P)
LEVELS = {"site 2 dropped": 0.0, "site 1 dropped": _KEEP, "both kept": (_KEEP + 1) * _KEEP}


def levels(hidden: float = 1.0) -> dict[str, float]:
    """The probe's levels where the activation gives ``hidden`` for the hidden units'
    pre-activation 1 (ReLU: 1, ``LEVELS``; GELU: 0.841): both kept is (hidden/(1-p) + 1)/(1-p),
    the others do not depend on it."""
    return {**LEVELS, "both kept": (hidden * _KEEP + 1) * _KEEP}


def _labels(branch, hidden: float = 1.0):
    """Each element's drop decisions, by the level it takes ('' for none)."""
    labels = np.full(branch.shape, "", dtype=object)
    for name, value in levels(hidden).items():
        labels[np.isclose(branch, value, rtol=1e-6, atol=1e-9)] = name
    return labels


def _hidden(ctx, x) -> float:
    """What the port's activation gives the probe's hidden units, read off a training call of
    the same layer at dropout 0 (its branch is hidden + 1 everywhere): 1 for ReLU, where the
    call cannot tell (a branch not one constant, or one that leaves nothing for the hidden
    units), or the port cannot be run so. Another activation is FM-INFERENCE's finding, not
    a reason for the drop levels to differ."""
    try:
        still = ctx.build(CASE, seed=3, dtype="float64", config={**CASE.config, "dropout": 0.0})
        set_held_weights(still, probe_weights(CASE.config))
        branch = _branch(still, x, True)
    except Exception:  # noqa: BLE001 - not read: the ReLU's levels
        return 1.0
    hidden = float(np.median(branch)) - 1.0
    # one value, to the labels' own tolerance (SIMD lanes may round an element differently)
    if not (np.isfinite(hidden) and hidden > 0
            and np.allclose(branch, hidden + 1.0, rtol=1e-9, atol=0.0)):
        return 1.0
    return hidden


def _counts(labels) -> tuple[tuple[int, int], tuple[int, int]]:
    """(dropped, decided) at site 2, of every unit, and at site 1, of the units site 2 kept
    (a unit site 2 dropped shows nothing of site 1)."""
    n = labels.size
    dropped2 = int((labels == "site 2 dropped").sum())
    dropped1 = int((labels == "site 1 dropped").sum())
    return (dropped2, n), (dropped1, n - dropped2)


def _rate_problems(labels) -> list[str]:
    """The sites whose drop rate is not P (6 sd), from the probe's labels."""
    (dropped2, n), (dropped1, kept2) = _counts(labels)
    problems = []
    if not _rate_ok(dropped2, n, P):
        problems.append(f"site 2 (after the second Dense) drops {dropped2 / n:.3f}, p = {P}")
    if not _rate_ok(dropped1, kept2, P):
        problems.append(f"site 1 (after the ReLU) drops {dropped1 / kept2:.3f}, p = {P}")
    return problems


# -- dropout's training flag, tested both ways ------------------------------------------------
FLAG_INVERTED = (
    "the training flag is inverted for dropout: dropout in inference (both sites at rate p, "
    "kept units scaled by 1/(1-p)) and none in training"
)


def flag_inverted(ctx) -> bool:
    """Does the port drop in inference what training should drop, and nothing in training?
    On the sites probe: the training branch is that of the same layer built at dropout 0
    (twice alike), and the inference branch takes only the drop levels, at rate P at both
    sites. False where the port cannot be run so."""
    x = np.zeros(CASE.input_shapes[0])
    try:
        handle = ctx.build(CASE, seed=3, dtype="float64")
        still = ctx.build(CASE, seed=3, dtype="float64",
                          config={**CASE.config, "dropout": 0.0})
        for h in (handle, still):
            set_held_weights(h, probe_weights(CASE.config))
        train = _branch(handle, x, True)
        if not (np.array_equal(train, _branch(still, x, True))
                and np.array_equal(train, _branch(handle, x, True))):
            return False
        labels = _labels(_branch(handle, x, False))
    except Exception:  # noqa: BLE001 - a port that cannot be probed so is not judged
        return False
    return not (labels == "").any() and not _rate_problems(labels)


ACTIVE_IN_INFERENCE = "dropout is active in inference"


def random_in_inference(ctx, handle, case, config, weights, x, dtype="float64") -> str | None:
    """Why inference calls of ``handle`` (``case`` built with ``config``, holding ``weights``)
    differ, where the evidence shows dropout: the same layer at dropout 0 is deterministic.
    ``FLAG_INVERTED`` when training drops nothing and inference drops as training should
    (``flag_inverted``), else ``ACTIVE_IN_INFERENCE``; None where calls agree, the config has
    no dropout, or the layer at dropout 0 is random too."""
    if not config.get("dropout"):
        return None
    try:
        if np.array_equal(handle.forward(x, training=False), handle.forward(x, training=False)):
            return None
        still = ctx.build(case, dtype=dtype, config={**config, "dropout": 0.0})
        set_held_weights(still, weights)
        if not np.array_equal(still.forward(x, training=False),
                              still.forward(x, training=False)):
            return None  # random for another reason than dropout
    except Exception:  # noqa: BLE001 - a port that cannot be re-run so is not judged
        return None
    return FLAG_INVERTED if flag_inverted(ctx) else ACTIVE_IN_INFERENCE


KEY_REUSED = (
    "every training call draws the same dropout masks: the dropout RNG key/seed is reused "
    "instead of advanced between calls"
)


# -- independence: the right rate is not enough ----------------------------------------------
#
# The second probe reads two hidden units per output channel c: the Dense kernel maps hidden
# unit c (the position site 2 drops at, c < N) with weight 1 and hidden unit N + c with weight
# 2 onto output c, so the branch is m2/(1-p) * (1 + (m1[c] + 2 m1[N+c]) / (1-p)) and every
# combination of the three decisions shows as its own value. Independent decisions give
# (a) the same drop rate p for both hidden units where site 2 kept, whether or not the unit
# shares its position with site 2, and (b) neighbours that agree with probability
# p^2 + (1-p)^2 along the batch, time and channel axes (pairs (0,1), (2,3), ...: 4096 per axis
# here, sd 0.008, tested at 6 sd). A mask reused across sites fails (a), one drawn for fewer
# axes and broadcast fails (b) with agreement 1.
def _independence_weights(config):
    n, h = config["n_series"], config["ff_dim"]
    if h < 2 * n:
        raise ValueError("the independence probe needs ff_dim >= 2 * n_series")
    weights = probe_weights(config)
    k2 = np.zeros((h, n))
    k2[np.arange(n), np.arange(n)] = 1.0
    k2[n + np.arange(n), np.arange(n)] = 2.0
    weights["dense2.kernel"] = k2  # dense2.bias stays 1: the "+ 1" that keeps (0, 0) off 0
    return weights


def _decode(branch):
    """(site-2 kept, unit c kept, unit N+c kept) per element; None where a value is stray."""
    s = 1.0 / (1.0 - P)
    levels = {(m1a, m1b): s * (1.0 + s * (m1a + 2 * m1b)) for m1a in (0, 1) for m1b in (0, 1)}
    kept2 = ~np.isclose(branch, 0.0, atol=1e-9)
    m1a = np.zeros(branch.shape, bool)
    m1b = np.zeros(branch.shape, bool)
    known = ~kept2
    for (a, b), value in levels.items():
        hit = np.isclose(branch, value, rtol=1e-6, atol=1e-9)
        m1a |= hit & bool(a)
        m1b |= hit & bool(b)
        known |= hit
    return (kept2, m1a, m1b) if known.all() else None


def _agreement(mask, axis):
    m = np.moveaxis(mask, axis, 0)
    pairs = m.shape[0] // 2
    return float(np.mean(m[0 : 2 * pairs : 2] == m[1 : 2 * pairs : 2])), pairs * m[0].size


def _agreement_where(first, second, known, axis):
    """(agreement, pairs) of neighbours along ``axis`` of two masks, counted over the pairs
    where ``known`` holds at both elements."""
    moved = [np.moveaxis(m, axis, 0) for m in (first, second, known)]
    pairs = moved[0].shape[0] // 2
    both = moved[2][0:2 * pairs:2] & moved[2][1:2 * pairs:2]
    same = [(m[0:2 * pairs:2] == m[1:2 * pairs:2])[both] for m in moved[:2]]
    count = sum(v.size for v in same)
    return (float(sum(v.sum() for v in same)) / count if count else 0.0), count


def _independence(handle, config, x) -> tuple[list[str], list[str]]:
    """(what fails, the diagnoses) of the second probe; empty lists when independent."""
    set_held_weights(handle, _independence_weights(config))  # as the first probe: any norm
    decoded = _decode(_branch(handle, x, True))
    if decoded is None:
        return [], []  # values off the probe's levels: the first probe reports the scaling
    kept2, m1a, m1b = decoded
    n_kept = int(kept2.sum())
    if n_kept == 0:  # site 2 dropped every unit: site 1 shows nothing to compare
        return [], []
    same = float(1 - m1a[kept2].mean())  # drop rate of unit c where site 2 kept position c
    other = float(1 - m1b[kept2].mean())  # of unit N + c, a position site 2 does not have
    problems, diagnoses = [], []
    if not _rate_ok(round(same * n_kept), n_kept, P) and _rate_ok(round(other * n_kept), n_kept, P):
        problems.append(
            f"where site 2 keeps channel c, hidden unit c drops {same:.3f} and hidden unit "
            f"N + c drops {other:.3f}; independent sites give p = {P} for both"
        )
        diagnoses.append("the two dropout sites share their random draws (one mask reused)")
    expected = P**2 + (1 - P) ** 2

    def off(agree, pairs):
        return abs(agree - expected) > 6 * np.sqrt(expected * (1 - expected) / pairs)

    axes = ((0, "batch"), (1, "time"), (2, "channel"))
    found = {axis: _agreement(kept2, axis) for axis, _ in axes}
    # an axis whose neighbours all agree carries one decision broadcast along it: along the
    # other axes, each decision then counts once, not once per copy (nn.Dropout1d on
    # (B, L, C) draws one per sample and time step; counted per element, the batch axis's
    # pairs were C times too many and chance agreement read as shared decisions)
    copies = tuple(slice(0, 1) if found[axis][0] == 1.0 else slice(None) for axis, _ in axes)
    shared = []
    for axis, name in axes:
        agree, pairs = found[axis]
        if off(agree, pairs) and (agree == 1.0 or off(*_agreement(kept2[copies], axis))):
            problems.append(
                f"site 2's decisions of neighbours along the {name} axis agree {agree:.3f} of "
                f"the time; independent decisions agree p^2 + (1-p)^2 = {expected:.3f}"
            )
            shared.append(name)
    # the first site's decisions, read where site 2 kept (elsewhere they do not show): unit c
    # and unit N + c, one decision shared by every hidden unit where the two always agree
    rate1 = float(m1a[kept2].mean()) if n_kept else 0.0  # (every unit 0, say, shows no draw)
    units = bool(n_kept > 1 and 0.0 < rate1 < 1.0 and np.array_equal(m1a[kept2], m1b[kept2])
                 and off(1.0, n_kept))
    if units:
        problems.append(
            "site 1's decisions of hidden units c and N + c agree wherever site 2 kept "
            f"({n_kept} of them); independent decisions agree p^2 + (1-p)^2 = {expected:.3f}")
    # and of neighbours along batch and time (each decision once where the units share it)
    first = []
    for axis, name in ((0, "batch"), (1, "time")):
        agree, pairs = _agreement_where(m1a, m1a if units else m1b, kept2, axis)
        pairs //= 2 if units else 1
        if pairs and off(agree, pairs):
            problems.append(
                f"site 1's decisions of neighbours along the {name} axis agree {agree:.3f} of "
                f"the time (where site 2 kept both); independent decisions agree "
                f"p^2 + (1-p)^2 = {expected:.3f}")
            first.append(name)
    if first and not shared:
        diagnoses.append(
            f"the first dropout site's mask broadcast along the {' and '.join(first)} "
            f"{'axes' if len(first) > 1 else 'axis'}: one decision per hidden unit shared by "
            f"every {' and '.join('sample' if a == 'batch' else 'time step' for a in first)} "
            "(a noise_shape or broadcast_dims with 1 there, a mask drawn for fewer axes), "
            "where the spec drops each element; the second site's mask is per element")
    if shared == ["time", "channel"]:
        diagnoses.append(DROP_PATH)
    elif shared:  # the variant's words (variants.FM_SPACE's mask_axis), one reading
        diagnoses.append(
            f"one dropout mask broadcast along the {' and '.join(shared)} "
            f"{'axes' if len(shared) > 1 else 'axis'}: the mask is not drawn per element "
            "(drawn for fewer axes and broadcast)")
    if units and not first:  # after the second site's: the one a variant may word too
        diagnoses.append(
            "the first dropout site's mask broadcast along the hidden units: one decision per "
            "sample and time step shared by every hidden unit (nn.Dropout1d or "
            "Dropout2d, a noise_shape with 1 for the features), where the spec drops each "
            "element")
    return problems, list(dict.fromkeys(diagnoses))


DROP_PATH = (
    "the second dropout draws one decision per sample, broadcast over time and channels: it "
    "drops a sample's whole branch (drop path, stochastic depth; nnx.Dropout(broadcast_dims=(1, "
    "2))), where the spec drops each element"
)


def _scaling_diagnosis(branch, hidden: float = 1.0):
    """Name a dropout scaling only when the branch values *and their frequencies* fit it.

    Two independent sites with drop rate r and kept units scaled by s give three levels,
    0 (site 2 dropped, frequency r), s (site 1 dropped, (1-r) r) and (a s + 1) s (both kept,
    (1-r)^2), a the activation's value at the probe's hidden units (``hidden``: 1 for ReLU);
    one site gives two. A layer whose values merely lie among these (normalising
    after the residual, say) gets no diagnosis: the root-cause stage decides.
    """
    values, counts = np.unique(np.round(branch, 9), return_counts=True)
    n = branch.size
    tol = 6 * np.sqrt(0.25 / n) + 1e-9

    def rate_of(dropped, out_of):
        return dropped / out_of if out_of else None

    if len(values) == 3 and values[0] == 0.0:
        s = values[1]
        r2 = rate_of(counts[0], n)
        r1 = rate_of(counts[1], n - counts[0])
        if not np.isclose(values[2], (hidden * s + 1) * s, rtol=1e-6) or abs(r1 - r2) > 2 * tol:
            return None
        r = (counts[0] + counts[1]) / (n + n - counts[0])
        if np.isclose(s, 1.0, rtol=1e-6):
            return f"kept values are not scaled (dropout is not inverted); the drop rate is {r:.3g}"
        if abs(r - P) <= tol and np.isclose(s, 1 / P, rtol=1e-6):
            return f"kept units are scaled by 1/p = {s:.4g} instead of 1/(1-p)"
        if abs(r - (1 - P)) <= tol and np.isclose(s, 1 / P, rtol=1e-6):
            return (f"the rate is used as the keep probability: {r:.3g} of the units are "
                    f"dropped and kept ones scaled by 1/{P}")
        return f"both sites drop {r:.3g} and scale kept units by {s:.4g}"
    keep = 1.0 / (1.0 - P)
    if len(values) == 2 and values[0] == 0.0 and np.isclose(values[1], (hidden + 1) * keep,
                                                             rtol=1e-6):
        if abs(counts[0] / n - P) <= tol:
            return "nothing is dropped after the ReLU: the first dropout site is missing"
    if len(values) == 2 and np.allclose(values, [1.0, hidden * keep + 1.0], rtol=1e-6):
        if abs(counts[0] / n - P) <= tol:
            return "nothing is dropped after the second Dense: the second dropout site is missing"
    return None


def _rate_diagnosis(rate2, rate1):
    """Words for the sites' drop fractions; ``rate1`` None where site 1 showed no decision."""
    if rate1 is None:
        return None
    if abs(rate2 - (1 - P)) < 0.05 or abs(rate1 - (1 - P)) < 0.05:
        return f"the drop fraction is near 1-p = {1 - P}: the rate is used as a keep probability"
    if rate1 < 0.05 or rate2 < 0.05:
        return "one of the two dropout sites drops nothing: a dropout layer is missing"
    return None


@check("dropout-inference")
def dropout_inference(ctx):
    rng = np.random.default_rng(12)
    config = {**CASE.config, "dropout": 0.5}
    handle = ctx.build(CASE, dtype="float64", config=config)
    weights = ctx.random_weights(config, CASE.input_shapes, rng)
    # judged against the port itself, so no norm values are needed (weights the port lacks
    # or holds otherwise keep its own, read back before any call)
    weights = set_held_weights(handle, weights)
    held = handle.get_weights()
    x = ctx.spec.make_inputs(CASE, rng)
    first = handle.forward(x, training=False)
    if not np.array_equal(first, handle.forward(x, training=False), equal_nan=True):
        # the control: the same layer without dropout is deterministic in inference
        still = ctx.build(CASE, dtype="float64", config={**config, "dropout": 0.0})
        still.set_weights(weights)
        rate = np.array_equal(still.forward(x, training=False), still.forward(x, training=False),
                              equal_nan=True)
        said = (FLAG_INVERTED if flag_inverted(ctx) else ACTIVE_IN_INFERENCE) if rate else None
        raise ClauseFailure(
            "inference with dropout 0.5 is not deterministic"
            + (" (with dropout 0 it is)" if rate else ""),
            diagnosis=said, checked=rate,
        )
    # Deterministic; and the rate must not matter: the same layer and weights at dropout 0
    # (a rate-dependent scaling, as dropout that is not inverted applies in inference, shows
    # here). Not the oracle: a mistake elsewhere in the layer is FM-INFERENCE's alone.
    still = ctx.build(CASE, dtype="float64", config={**config, "dropout": 0.0})
    still.set_weights(held)
    ctx.expect_close("inference with dropout 0.5 against the same layer and weights at dropout 0",
                     first, still.forward(x, training=False), FORWARD["float64"])


def _as_its_zeroed_branch(training_call, zeroed, out) -> bool:
    """Is the output at dropout 1.0 (``out``) what the same layer returns in training at
    dropout 0 with the second Dense's kernel and bias 0 (``zeroed``)? Both are the layer without
    its branch, whatever the rest does with the input: that it is the input itself is
    FM-RESIDUAL's, so a residual mistake (none, twice, of the normalised input) fails that
    clause, not this one. False where it is not, or cannot be asked (then the output is
    compared with the input)."""
    try:
        still = training_call(0.0, zeroed)[1]
    except Exception:  # noqa: BLE001 - a port that cannot be asked this is judged by the input
        return False
    return np.shape(still) == np.shape(out) and close(
        np.asarray(out, np.float64), np.asarray(still, np.float64), FORWARD["float64"])


ZERO_KEEP = (
    "at dropout 1.0 the kept units are divided by the keep probability 1 - rate = 0: the "
    "dropped ones become 0 / 0, NaN (x * mask / keep_prob with no case for rate 1), where the "
    "spec drops every unit and the layer returns its input; rate 0.5 gives finite values"
)


@check("dropout-one")
def dropout_one(ctx):
    rng = np.random.default_rng(13)
    config = {**CASE.config, "dropout": 1.0}
    weights = ctx.random_weights(config, CASE.input_shapes, rng)
    x = ctx.spec.make_inputs(CASE, rng)

    def training_call(rate, held=weights, inputs=x):
        handle = ctx.build(CASE, dtype="float64", config={**config, "dropout": rate})
        # every unit dropped: the output is the input whatever the norm (it may keep its own)
        set_held_weights(handle, held)
        return handle, handle.forward(inputs, training=True)

    try:
        handle, out = training_call(1.0)
    except NotApplicable:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the framework raises, in whatever words
        try:  # the evidence: the same layer at a rate below 1 builds and runs
            training_call(0.5)
        except Exception:  # noqa: BLE001 - refused at any rate: not about rate 1
            raise exc from None
        raise ClauseFailure(
            f"dropout 1.0: raised {type(exc).__name__}: {exc}",
            diagnosis="dropout 1.0 is refused where a rate below 1 runs; the spec requires it: "
            "every unit is dropped and the layer returns its input",
            checked=True,
        ) from None

    def not_the_input():
        inverted = flag_inverted(ctx)
        said, checked = (FLAG_INVERTED, True) if inverted else (None, False)
        if not inverted and not np.all(np.isfinite(out)):
            # the evidence: the same layer at rate 0.5 gives finite values
            half = training_call(0.5)[1]
            if np.all(np.isfinite(half)):
                said, checked = ZERO_KEEP, True
        return ClauseFailure(
            f"dropout 1.0 in training: output differs from the input by up to "
            f"{np.max(np.abs(np.asarray(out, np.float64) - x)):.3g}",
            diagnosis=said, checked=checked,
        )

    zeroed = branch_zeroed(weights)
    the_input = np.array_equal(out, x)
    if not the_input and not _as_its_zeroed_branch(training_call, zeroed, out):
        raise not_the_input()
    try:
        gx, gw = handle.grad(x, np.ones_like(x), training=True)
    except Exception:  # noqa: BLE001 - whatever the framework raises
        # an output that is not the input may not depend on it: with no residual it is 0 for
        # any input, a constant autograd cannot differentiate; its value was judged above
        if not the_input and np.array_equal(training_call(1.0, inputs=2.0 * x + 1.0)[1], out):
            return
        raise
    bad = [k for k, v in gw.items() if not np.all(np.isfinite(v))]
    if not np.all(np.isfinite(gx)):
        bad.append("input")
    if bad:
        # the same layer at rate 0.5 has finite gradients: the rate 1 is what breaks them
        half, _ = training_call(0.5)
        gx, gw = half.grad(x, np.ones_like(x), training=True)
        finite = all(np.all(np.isfinite(v)) for v in [gx, *gw.values()])
        raise ClauseFailure(
            f"dropout 1.0: non-finite gradients for {bad}"
            + (" (finite at dropout 0.5)" if finite else ""),
            diagnosis="dropout divides by the keep probability 1 - p = 0" if finite else None,
            checked=finite,
        )
