"""Portable weights: what one implementation writes as safetensors, another reads and agrees with.

The writer builds the layer with its own initialisers, saves the canonical weights with its own
``save_weights``, takes one training step (a training call, which moves the BatchNorm
statistics, then SGD on the gradients of sum(output * cotangent)) and saves again. The reader
loads the first file with its own ``load_weights``, must reproduce the writer's inference
output, then takes the same step and must arrive at the writer's weights and outputs.

Writers are every implementation importable in this process, plus those exported by other
processes into ``$PORTSPEC_EXCHANGE`` (``portspec matrix`` does this, so Keras on three
backends and the other frameworks meet in one matrix).

A reader is judged on the built-in implementations' exports and its own. Other ports verified
in the same run (two adapters in one file) export too, and their pairs are shown, but a port
that computes otherwise writes outputs no conforming reader can reproduce: such a pair does
not fail the reader (each export says whether its writer is a built-in).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from portspec import profiles, registry
from portspec.adapter import read_weights
from portspec.clauses import ClauseFailure
from portspec.suite.areas import serialization
from portspec.suite.checks import cast, check
from portspec.tolerances import FORWARD, max_violation

LEARNING_RATE = 0.05
EXCHANGE = "PORTSPEC_EXCHANGE"


def training_step(handle, x, cot, lr=LEARNING_RATE, *, compiled=False):
    _, grads = (handle.grad_compiled if compiled else handle.grad)(x, cot, training=True)
    weights = handle.get_weights()
    handle.set_weights(
        {
            k: np.asarray(weights[k], np.float64) - lr * np.asarray(g, np.float64)
            for k, g in grads.items()
        }
    )


def _case(spec):
    case = spec.cases()[0]
    config = {**case.config, "dropout": 0.0} if "dropout" in case.config else case.config
    return case, config


def export(adapter, spec, directory: Path) -> Path:
    """Write this adapter's weights before and after one step, with the probe and its outputs;
    through the framework's compiler where the adapter's ``export_compiled`` says so."""
    case, config = _case(spec)
    rng = np.random.default_rng(23)
    x = cast(spec.make_inputs(case, rng), "float32")
    probe = cast(spec.make_inputs(case, rng), "float32")
    cot = rng.standard_normal(case.input_shapes[0]).astype(np.float32)
    handle = adapter.build(
        spec.name, config, input_shapes=case.input_shapes, seed=21, dtype="float32"
    )
    stem = directory / f"{adapter.name}.{spec.name}"
    compiled = getattr(adapter, "export_compiled", False)
    forward = handle.forward_compiled if compiled else handle.forward
    handle.save_weights(f"{stem}.w0.safetensors")
    y0 = forward(probe, training=False)
    training_step(handle, x, cot, compiled=compiled)
    handle.save_weights(f"{stem}.w1.safetensors")
    y1 = forward(probe, training=False)
    arrays = (
        {"x": x, "probe": probe}
        if not spec.multi_input
        else {
            **{f"x.{i}": v for i, v in enumerate(x)},
            **{f"probe.{i}": v for i, v in enumerate(probe)},
        }
    )
    arrays.update({"cot": cot, "y0": np.asarray(y0, np.float32), "y1": np.asarray(y1, np.float32)})
    save_file(
        arrays,
        f"{stem}.probe.safetensors",
        metadata={"portspec": json.dumps({"writer": adapter.name, "layer": spec.name,
                                          "builtin": is_builtin(adapter)})},
    )
    return stem


def is_builtin(adapter) -> bool:
    """Is ``adapter`` one of portspec's own implementations (``portspec.impls``), not a port
    (a port's adapter class is defined in its own file, even where it subclasses ours)?"""
    return type(adapter).__module__.split(".")[:2] == ["portspec", "impls"]


def _probe_meta(stem) -> dict:
    """The export's metadata: ``writer``, ``layer`` and ``builtin`` (absent from exports made
    before it was written: those count as built-ins', as they did)."""
    with safe_open(f"{stem}.probe.safetensors", framework="numpy") as f:
        return json.loads(f.metadata()["portspec"])


def _load_probe(stem):
    arrays = read_weights(f"{stem}.probe.safetensors")
    meta = _probe_meta(stem)

    def pick(name):
        if name in arrays:
            return arrays[name]
        return [arrays[k] for k in sorted(a for a in arrays if a.startswith(name + "."))]

    return meta["writer"], pick("x"), pick("probe"), arrays["cot"], arrays["y0"], arrays["y1"]


def read_and_compare(adapter, spec, stem) -> str | None:
    """None when ``adapter`` reproduces the writer at ``stem``; else what differs."""
    case, config = _case(spec)
    writer, x, probe, cot, y0, y1 = _load_probe(stem)
    tol = FORWARD["float32"]
    handle = adapter.build(
        spec.name, config, input_shapes=case.input_shapes, seed=0, dtype="float32"
    )
    handle.load_weights(f"{stem}.w0.safetensors")
    checks = [("inference output", handle.forward(probe, training=False), y0)]
    training_step(handle, x, cot)
    after = handle.get_weights()
    w1, y1 = _after_step(spec, config, stem, x, probe, y1)
    checks += [(f"{k} after the step", after[k], v) for k, v in w1.items()]
    checks.append(("inference output after the step", handle.forward(probe, training=False), y1))
    for what, got, want in checks:
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            flipped = got.shape == want.shape[::-1]
            hint = " (transposed: a kernel layout mismatch)" if flipped else ""
            return f"{what} has shape {got.shape}, the writer's {want.shape}{hint}"
        err, ratio = max_violation(got, want, tol)
        if ratio > 1.0:
            return f"{what} differs by {err:.3g}"
    return None


def _after_step(spec, config, stem, x, probe, y1):
    """The writer's weights and output after the step, as the reader must arrive at them.

    The writers are layers of the default profile (kmr). Under another profile the state a
    training call moves (the moving statistics) is that profile's update of the writer's
    weights before the step, and the output after the step follows from it (the oracle's, in
    float64); the trained weights are the writer's either way."""
    w1 = read_weights(f"{stem}.w1.safetensors")
    if profiles.active().name == profiles.DEFAULT:
        return w1, y1
    w0 = {k: np.asarray(v, np.float64) for k, v in read_weights(f"{stem}.w0.safetensors").items()}
    _, moved = spec.forward(config, w0, np.asarray(x, np.float64), training=True)
    state = {k: v for k, v in moved.items() if k in w1 and not np.array_equal(v, w0[k])}
    if not state:  # nothing a training call moves: the profile changes nothing here
        return w1, y1
    w1 = {**w1, **state}
    out, _ = spec.forward(config, w1, np.asarray(probe, np.float64), training=False)
    return w1, out


def writers(adapter, spec, tmp: Path, errors: dict | None = None) -> list[Path]:
    """The writers' exported stems; a writer whose export raises goes into ``errors``
    (writer name -> message) instead of taking the check down."""
    exchange = os.environ.get(EXCHANGE)
    errors = {} if errors is None else errors
    stems = []
    if exchange:
        stems = sorted(
            {
                Path(str(p)[: -len(".probe.safetensors")])
                for p in Path(exchange).glob(f"*.{spec.name}.probe.safetensors")
            }
        )
    if not stems:
        seen = set()
        for other in [adapter, *registry.default()]:
            if isinstance(other, registry.Unavailable) or other.name in seen:
                continue
            if spec.name in other.layers:
                seen.add(other.name)
                try:
                    stems.append(export(other, spec, tmp))
                except Exception as exc:  # noqa: BLE001 - reported per writer below
                    errors[other.name] = f"{type(exc).__name__}: {exc}"
    return stems


@check("portable")
def portable(ctx):
    with tempfile.TemporaryDirectory() as tmp:
        pairs, errors = {}, {}
        stems = writers(ctx.adapter, ctx.spec, Path(tmp), errors)
        own = ctx.adapter.name
        if own in errors:  # the port's own export: its cell says so, and its column stays
            pairs[f"{own} -> {own}"] = f"this port's own export raised {errors.pop(own)}"
        if errors:  # another writer that cannot export is no fault of this port
            ctx.details["writers_not_run"] = errors
        others = []  # pairs whose writer is another port of this run: shown, not judged
        for stem in stems:
            meta = _probe_meta(stem)
            pair = f"{meta['writer']} -> {ctx.adapter.name}"
            try:
                verdict = read_and_compare(ctx.adapter, ctx.spec, stem) or "ok"
            except (ValueError, TypeError, KeyError) as exc:
                verdict = f"reading raised {type(exc).__name__}: {exc}"
            pairs[pair] = verdict
            if meta["writer"] != own and not meta.get("builtin", True):
                others.append(pair)
        if others:
            ctx.details["not_judged"] = others
    failed = {k: v for k, v in pairs.items() if v != "ok" and k not in others}
    if failed:
        layout = serialization.file_layout(ctx)  # tested: the port's own file read raw
        raise ClauseFailure(
            "; ".join(f"{k}: {v}" for k, v in failed.items()), diagnosis=layout,
            details={"pairs": pairs, **({"not_judged": others} if others else {})},
            checked=layout is not None,
        )
    ctx.details["pairs"] = pairs
