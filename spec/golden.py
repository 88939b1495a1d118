"""Golden vectors: oracle inputs, weights and outputs stored as safetensors in spec/vectors/.

``portspec vectors`` regenerates them; the result is bit-identical to the checked-in files on
every CPU, since the oracle computes with ``portspec.exact`` (correctly rounded sums, exp and
tanh, no run-time SIMD dispatch). tests/test_vectors.py proves it on NumPy's dispatched and
baseline code paths and with glibc's FMA variants off. So the files are the oracle's output and
nothing else.
A port can be checked against them with no oracle and no framework of ours.

Layout of one file: tensors ``input`` (or ``input.0``, ``input.1``), ``weight.<canonical name>``,
``expected.inference``, ``expected.training``, ``state.<canonical name>`` (moving statistics
after the training call); metadata key ``portspec``: JSON with ``layer``, ``config`` and
``input_shapes``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from portspec.adapter import read_weights
from portspec.layers import LAYERS

DIRECTORY = Path(__file__).parent / "vectors"


@dataclass
class Vector:
    layer: str
    config: dict
    input_shapes: tuple
    inputs: object
    weights: dict
    expected: dict  # training flag -> output
    state: dict  # training flag -> {name: value}


def _seed(layer: str, label: str) -> int:
    return zlib.crc32(f"{layer}/{label}".encode())


def generate(directory: Path = DIRECTORY) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in LAYERS.values():
        for case in spec.cases():
            config = {**case.config, "dropout": 0.0} if "dropout" in case.config else case.config
            rng = np.random.default_rng(_seed(spec.name, case.label))
            weights = spec.random_weights(config, case.input_shapes, rng)
            inputs = spec.make_inputs(case, rng)
            tensors = {f"weight.{k}": v for k, v in weights.items()}
            if spec.multi_input:
                tensors.update({f"input.{i}": v for i, v in enumerate(inputs)})
            else:
                tensors["input"] = inputs
            tensors["expected.inference"] = spec.forward(config, weights, inputs, training=False)[0]
            out, state = spec.forward(config, weights, inputs, training=True)
            tensors["expected.training"] = out
            tensors.update(
                {f"state.{k}": v for k, v in state.items() if not np.array_equal(v, weights[k])}
            )
            # One metadata key: safetensors writes several in hash-map order, which would
            # make regeneration differ byte-wise from run to run.
            meta = {
                "portspec": json.dumps(
                    {"layer": spec.name, "config": config, "input_shapes": case.input_shapes},
                    sort_keys=True,
                )
            }
            path = directory / f"{spec.name}-{case.label}.safetensors"
            save_file(
                {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()},
                str(path),
                metadata=meta,
            )
            written.append(path)
    return written


def files_for(layer: str, directory: Path = DIRECTORY) -> list[Path]:
    return sorted(directory.glob(f"{layer}-*.safetensors"))


def read(path: Path) -> Vector:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = json.loads(f.metadata()["portspec"])
    tensors = read_weights(path)
    config = meta["config"]
    shapes = tuple(tuple(s) for s in meta["input_shapes"])
    if "input" in tensors:
        inputs = tensors["input"]
    else:
        inputs = [tensors[f"input.{i}"] for i in range(len(shapes))]
    weights = {k[len("weight.") :]: v for k, v in tensors.items() if k.startswith("weight.")}
    state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
    return Vector(
        meta["layer"],
        config,
        shapes,
        inputs,
        weights,
        {False: tensors["expected.inference"], True: tensors["expected.training"]},
        {True: state},
    )
