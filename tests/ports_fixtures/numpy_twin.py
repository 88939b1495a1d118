"""A second NumPy port, so that a matrix of two has writers and readers to cross."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from numpy_port import NumpyAdapter  # noqa: E402


class NumpyTwin(NumpyAdapter):
    name = "numpy-twin"


ADAPTERS = [NumpyTwin()]
