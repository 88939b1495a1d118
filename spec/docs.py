"""Generate docs/spec.md from the layer specs: the clauses, weight tables and bad inputs tried.

The page is checked in; tests/test_docs.py fails when it is stale (``portspec docs`` rewrites
it). Shapes and parameter counts are computed by the spec's own code on symbols, so the page
cannot drift from what the suite checks.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from portspec import tolerances
from portspec.layers import LAYERS

# Relative to the checkout the command runs in (an installed spec/ has no docs/ beside it).
PAGE = Path("docs") / "spec.md"


class Sym:
    """A symbolic integer: enough arithmetic for weight tables and parameter counts."""

    def __init__(self, text: str, atomic: bool = True):
        self.text, self.atomic = text, atomic

    def _wrap(self):
        return self.text if self.atomic else f"({self.text})"

    def __mul__(self, other):
        if isinstance(other, int):
            return Sym(f"{other}{self._wrap()}" if other != 1 else self.text, self.atomic)
        return Sym(f"{self._wrap()}*{_text(other)}")

    def __rmul__(self, other):
        if isinstance(other, int):
            return self.__mul__(other)
        return Sym(f"{_text(other)}*{self._wrap()}")

    def __add__(self, other):
        return Sym(f"{self.text} + {_text(other)}", atomic=False)

    def __radd__(self, other):
        return Sym(f"{_text(other)} + {self.text}", atomic=False)

    def __str__(self):
        return self.text


def _text(value) -> str:
    return value.text if isinstance(value, Sym) else str(value)


SYMBOLS = {
    "FeatureMixing": (
        {"n_series": Sym("N"), "input_size": Sym("L"), "ff_dim": Sym("H"), "dropout": Sym("p")},
        ((Sym("B"), Sym("L"), Sym("N")),),
    ),
    "GatedFeatureFusion": ({"activation": "sigmoid"}, ((Sym("B"), Sym("F")),) * 2),
}


def _shape(shape) -> str:
    return "(" + ", ".join(_text(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _layer(spec) -> list[str]:
    config, shapes = SYMBOLS[spec.name]
    out = [
        f"## {spec.name} (`{spec.prefix}-*`)",
        "",
        spec.summary,
        "",
        "### Config",
        "",
        "| parameter | type and range |",
        "|---|---|",
    ]
    out += [f"| `{name}` | {desc} |" for name, desc in spec.config_params]
    out += [
        "",
        "### Weight table (canonical names and layouts)",
        "",
        "| name | shape | trainable | initializer |",
        "|---|---|---|---|",
    ]
    out += [
        f"| `{w.name}` | {_shape(w.shape)} | {'yes' if w.trainable else 'no'} | {w.init} |"
        for w in spec.weight_table(config, shapes)
    ]
    trainable, frozen = spec.param_counts(config, shapes)
    out += [
        "",
        f"Parameter count: trainable {_text(trainable)}, non-trainable {_text(frozen)}.",
        "",
        "### Clauses",
        "",
        "| ID | clause | why |",
        "|---|---|---|",
    ]
    out += [f"| `{c.id}` | {c.text} | {c.rationale} |" for c in spec.clauses]
    case = spec.cases()[0]
    out += [
        "",
        f"### Bad inputs tried by `{spec.prefix}-CONFIG` and `{spec.prefix}-CALL`",
        "",
        "| kind | input | the error must name |",
        "|---|---|---|",
    ]
    for bad_config, param in spec.invalid_configs():
        shown = {k: v for k, v in bad_config.items() if k == param} or f"`{param}` missing"
        out.append(
            f"| config | `{shown}` | `{param}` |"
            if isinstance(shown, dict)
            else f"| config | {shown} | `{param}` |"
        )
    for bad in spec.bad_calls(case.config):
        what = f"{bad.description}: shapes {bad.shapes}, dtype {bad.dtype}"
        out.append(
            f"| call (layer built for {case.input_shapes[0]}) | {what} | "
            + " or ".join(f"`{n}`" for n in bad.names)
            + " |"
        )
    return out + [""]


def render() -> str:
    lines = [
        "# portspec: the specification",
        "",
        "Generated from `spec/layers/` by `portspec docs`; do not edit by hand. Each clause ID",
        "is a test ID (`CLAUSE-ID[impl]`) and a row of every report.",
        "",
        "Symbols: B batch, L `input_size`, N `n_series`, H `ff_dim`, p `dropout`, F features.",
        "",
    ]
    for spec in LAYERS.values():
        lines += _layer(spec)
    lines += ["## Tolerances", "", "```", inspect.getdoc(tolerances), "```", ""]
    return "\n".join(lines)


def write(path: Path = PAGE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path


def is_current(path: Path = PAGE) -> bool:
    return path.exists() and path.read_text() == render()
