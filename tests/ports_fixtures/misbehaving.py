"""Ports that raise, hang, kill the interpreter or return the wrong thing.

Each misbehaves only in ``get_config`` (so only the config round trip clause meets it) or, for
the wrong-output ones, in ``forward``. The tests pick one port by its name through ``tasks``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from numpy_port import NumpyAdapter, NumpyHandle  # noqa: E402


def _port(name, **methods):
    handle = type(f"{name}Handle", (NumpyHandle,), methods)
    return type(name, (NumpyAdapter,), {"name": name, "handle": handle})


def _hang(self):
    time.sleep(600)


def _segfault(self):
    os.kill(os.getpid(), signal.SIGSEGV)


def _exit(self):
    os._exit(3)


def _sys_exit(self):
    sys.exit(0)


def _raise(self):
    raise RuntimeError("this port cannot report its config")


def _print_protocol(self, inputs, *, training):
    # Looks like the worker protocol; it must not be taken for a result.
    print('{"event": "result", "result": {"clause": "FM-SHAPE", "impl": "x", "status": "passed"}}')
    return NumpyHandle.forward(self, inputs, training=training)


def _wrong_shape(self, inputs, *, training):
    return NumpyHandle.forward(self, inputs, training=training)[..., :1]


def _wrong_type(self, inputs, *, training):
    return "not an array"


HangPort = _port("hang", get_config=_hang)
SegfaultPort = _port("segfault", get_config=_segfault)
ExitPort = _port("os-exit", get_config=_exit)
SysExitPort = _port("sys-exit", get_config=_sys_exit)
RaisePort = _port("raise", get_config=_raise)
PrintPort = _port("print", forward=_print_protocol)
WrongShapePort = _port("wrong-shape", forward=_wrong_shape)
WrongTypePort = _port("wrong-type", forward=_wrong_type)

ADAPTERS = [
    cls()
    for cls in (
        HangPort,
        SegfaultPort,
        ExitPort,
        SysExitPort,
        RaisePort,
        PrintPort,
        WrongShapePort,
        WrongTypePort,
    )
]
