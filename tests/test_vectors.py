"""Golden vectors: regenerated bit-identically, and exactly the oracle's output."""

import numpy as np

from portspec import golden
from portspec.layers import LAYERS


def test_vectors_regenerate_bit_identically(tmp_path):
    written = golden.generate(tmp_path)
    checked_in = sorted(p.name for p in golden.DIRECTORY.glob("*.safetensors"))
    assert sorted(p.name for p in written) == checked_in
    for path in written:
        assert path.read_bytes() == (golden.DIRECTORY / path.name).read_bytes(), path.name


def test_every_layer_has_vectors_that_match_the_oracle():
    for name, spec in LAYERS.items():
        files = golden.files_for(name)
        assert files, name
        for path in files:
            v = golden.read(path)
            for training, expected in v.expected.items():
                out, state = spec.forward(v.config, v.weights, v.inputs, training=training)
                np.testing.assert_array_equal(out, expected)
            for key, value in v.state[True].items():
                np.testing.assert_array_equal(state[key], value)


def test_vectors_are_not_pickles():
    for path in golden.DIRECTORY.glob("*"):
        assert path.suffix == ".safetensors"
        assert path.read_bytes()[:1] != b"\x80"
