"""Modules a PyTorch port keeps in a plain list, tuple or dict are not registered: their
weights are read as the plain tensors they are (``TorchPortHandle._plain``), and named as
such; a list of modules the port does register (kept to iterate over) is not one."""

from __future__ import annotations

from pathlib import Path

import pytest

from portspec import registry

torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).parent / "ports_fixtures" / "single_mistakes_torch.py"
CONFIG = {"n_series": 3, "input_size": 4, "dropout": 0.0, "ff_dim": 5}


def _handle(name):
    adapters = {a.name: a for a in registry.load_file(str(FIXTURE))}
    return adapters[name].build("FeatureMixing", dict(CONFIG), input_shapes=[(2, 4, 3)], seed=0)


def test_modules_in_a_plain_list_are_named_with_their_weights():
    handle = _handle("dense-in-plain-list")
    assert handle.unregistered_containers() == ["mlp"]
    assert handle.plain_paths() == ["mlp.0.bias", "mlp.0.weight", "mlp.1.bias", "mlp.1.weight"]
    words = handle.plain_words()
    assert words.startswith("the port keeps modules in mlp, a plain Python container that "
                            "PyTorch does not register (nn.ModuleList or nn.ModuleDict does)")
    # the weights are the port's own: written through the map, read back as written
    kernel = handle.get_weights()["dense1.kernel"] + 1.0
    handle.set_weights({"dense1.kernel": kernel})
    assert (handle.get_weights()["dense1.kernel"] == kernel).all()


def test_a_list_of_registered_modules_is_not_a_plain_container():
    handle = _handle("conforming")
    handle.obj.both = [handle.obj.lin1, handle.obj.lin2]  # to iterate over: still registered
    handle.obj.table = {"first": handle.obj.lin1}
    assert handle.unregistered_containers() == []
    assert handle.plain_paths() == [] and handle.plain_words() is None
