"""Reports of a list of Results: terminal table, JSON, Markdown, JUnit XML and one HTML page.

Every format shows the same thing: clauses (rows, in spec order) x implementations (columns),
each cell passed / failed / skipped, then each failure with its message and diagnosis and each
skip with its reason. A skip is never shown as a pass; a clause of a layer an implementation
does not provide is shown as not run. Where portability was checked, the writer x reader
matrix of the portable-weights clause follows, rows and columns in one order. Given the
metadata block (``portspec.meta.collect``: versions, commit, port files' sha256, CPU, profile,
options, date), every file format carries it: JSON ``meta``, a "What was checked" table in
Markdown and HTML, ``<properties>`` in JUnit.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import sys
import textwrap
from collections import Counter
from xml.etree import ElementTree as ET

from portspec.layers import LAYERS

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SYMBOL = {"passed": "✓", "failed": "✗", "skipped": "skip", None: "·"}
CLAUSE_TEXT = {c.id: c.text for spec in LAYERS.values() for c in spec.clauses}


def grid(results):
    """(clause IDs in spec order, implementations in order of appearance, {(clause, impl): r})."""
    cells = {(r.clause, r.impl): r for r in results}
    seen = {r.clause for r in results}
    clauses = [c for c in CLAUSE_TEXT if c in seen]
    clauses += sorted(seen - set(clauses))  # LOAD, export:<Layer>
    impls = list(dict.fromkeys(r.impl for r in results))
    return clauses, impls, cells


def counts(results) -> Counter:
    return Counter(r.status for r in results)


def summary_line(results) -> str:
    """The spec's clauses by status; a failed step that is no clause (a port that cannot be
    loaded, LOAD; its portable weights not written, export:<Layer>) is named after them, not
    counted as one."""
    n = counts(r for r in results if r.clause in CLAUSE_TEXT)
    steps = [f"{r.clause} [{r.impl}]" for r in results
             if r.clause not in CLAUSE_TEXT and r.status == "failed"]
    line = f"{n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"
    return line + (f"; failed besides: {', '.join(steps)}" if steps else "")


def ok(results) -> bool:
    """Everything applicable passed: no failure, and at least one pass."""
    n = counts(results)
    return n["failed"] == 0 and n["passed"] > 0


def portability(results) -> dict[str, tuple[list, list, dict]]:
    """Per layer prefix: (writers, readers, {(writer, reader): 'ok' or what differs})."""
    out = {}
    for r in results:
        pairs = r.details.get("pairs") if r.clause.endswith("-PORTABLE") else None
        if not pairs:
            continue
        prefix = r.clause.removesuffix("-PORTABLE")
        writers, readers, cells = out.setdefault(prefix, ([], [], {}))
        for pair, verdict in pairs.items():
            writer, reader = pair.split(" -> ")
            cells[(writer, reader)] = verdict
            if writer not in writers:
                writers.append(writer)
            if reader not in readers:
                readers.append(reader)
    # rows and columns in one order (implementations as the results list them, then the
    # others as met), so that the diagonal is each implementation reading its own weights
    impls = list(dict.fromkeys(r.impl for r in results))
    for prefix, (writers, readers, cells) in out.items():
        order = {name: i for i, name in enumerate(dict.fromkeys([*impls, *writers, *readers]))}
        out[prefix] = (sorted(writers, key=order.get), sorted(readers, key=order.get), cells)
    return out


def not_judged_line(results, prefix) -> list[str]:
    """The sentence under a portability matrix whose rows include other ports of the run:
    their cells are shown, and fail no reader (spec/suite/areas/portability.py)."""
    writers = sorted({pair.split(" -> ")[0] for r in results
                      if r.clause == f"{prefix}-PORTABLE"
                      for pair in r.details.get("not_judged", ())})
    if not writers:
        return []
    return [f"Rows {', '.join(writers)}: another port of this run wrote them; shown, not "
            "judged (a reader fails only on the built-ins' exports and its own)."]


def _pair_mark(verdict) -> tuple[str, str]:
    """(mark, status) of one writer -> reader cell of the portability matrix."""
    if verdict is None:
        return "·", "none"
    return ("✓", "passed") if verdict == "ok" else ("✗", "failed")


def one_line(text: str | None) -> str:
    """A message on one line, without the terminal escapes some frameworks put in errors."""
    return " ".join(ANSI.sub("", text or "").split())


def quote(text: str | None, width: int = 200) -> str:
    """An error quoted inside a verdict: on one line, and past ``width`` characters cut at a
    word with " ..." (textwrap.shorten), never mid-word unless its first word is longer."""
    line = one_line(text)
    short = textwrap.shorten(line, width, placeholder=" ...")
    return short if short.strip(". ") or not line else line[:width - 4] + " ..."


def _skips(results):
    """Skips grouped by (implementation, reason): one line for many clauses."""
    groups: dict[tuple[str, str], list[str]] = {}
    for r in results:
        if r.status == "skipped":
            groups.setdefault((r.impl, r.message), []).append(r.clause)
    return groups


def title_of(results, meta: dict | None = None) -> str:
    """'portspec: <what was checked>': the port files' names, else the implementations'."""
    ports = [p.get("path") or p["target"] for p in (meta or {}).get("ports", [])]
    names = [_short(p) for p in ports] or list(dict.fromkeys(r.impl for r in results))
    return "portspec: " + (", ".join(names) or "no implementation")


def _short(path: str) -> str:
    """A port file as 'folder/PORT.py', enough to tell ports apart in a title."""
    parts = path.replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:])


def meta_rows(meta: dict | None) -> list[tuple[str, str]]:
    """The metadata block as (key, value) text rows, nested keys joined with dots, ports one
    row each: what Markdown, HTML and JUnit show."""
    rows: list[tuple[str, str]] = []
    for key, value in (meta or {}).items():
        if key == "ports":
            for port in value:
                text = port.get("path", port["target"])
                text += " (built-in)" if port.get("builtin") else f" sha256 {port.get('sha256')}"
                if port.get("package"):
                    text += f", wraps {port['package']} {port.get('package_version') or '?'}"
                rows.append(("port", text))
        elif key == "cpu" and isinstance(value, dict):
            have = [f for f, on in value.get("features", {}).items() if on]
            rows.append(("cpu", f"{value.get('model')}; features: {' '.join(have) or 'none'}"))
        elif isinstance(value, dict):
            rows += [(f"{key}.{k}", _text(v)) for k, v in value.items()]
        else:
            rows.append((key, _text(value)))
    return rows


def _text(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def root_causes(results) -> list[tuple[str, str, list[str]]]:
    """(implementation, root cause, failing clauses it explains), the root causes first and
    each implementation's unexplained failures last (portspec.rootcause). One mistake that
    both layers of a port make (weights stored in float16, an unseeded initialiser) reads
    ``FeatureMixing and GatedFeatureFusion: <the same words>``: one finding, with each
    layer's evidence in brackets where they differ."""
    from portspec.rootcause import root_causes as found

    return _across_layers(found(results))


_LAYER_CAUSE = re.compile(r"^(?P<layer>[A-Za-z]+): (?P<what>.*?)(?: \[(?P<evidence>[^\[\]]*)\])?$")


def _across_layers(causes):
    """Merge an implementation's root causes that differ in their layer (and the bracketed
    evidence) only, or in the bracketed evidence of one layer (one mistake shown by several
    clauses' evidence); the first one's place in the order is kept."""
    groups: dict[tuple[str, str], tuple[str, str, list, list]] = {}  # in order of first cause
    for impl, cause, ids in causes:
        m = _LAYER_CAUSE.match(cause)
        if not (m and m["layer"] in LAYERS):
            groups[(impl, cause)] = (impl, cause, [], list(ids))
            continue
        _, _, shown, clauses = groups.setdefault((impl, m["what"]), (impl, cause, [], []))
        shown.append((m["layer"], m["evidence"]))
        clauses.extend(ids)
    lines = []
    for (_, what), (impl, cause, shown, ids) in groups.items():
        if len(shown) <= 1:
            lines.append((impl, cause, ids))
            continue
        names = " and ".join(dict.fromkeys(layer for layer, _ in shown))
        evidence = list(dict.fromkeys(e for _, e in shown if e))
        if len(evidence) == 1:
            tail = f" [{evidence[0]}]"
        elif evidence and " and " not in names:  # one layer's evidence, from several clauses
            tail = " [" + "; ".join(evidence) + "]"
        elif evidence:
            tail = " [" + "; ".join(f"{layer}: {e}" for layer, e in shown if e) + "]"
        else:
            tail = ""
        lines.append((impl, f"{names}: {what}{tail}", ids))
    return lines


def root_cause_lines(results) -> list[str]:
    """'[impl] root cause: clauses' for each root cause, the unexplained failures last: the
    Root causes that open the terminal verdict of ``verify`` and close a failing pytest run."""
    return [_cause_line(*c) for c in root_causes(results)]


def _cause_line(impl, cause, ids) -> str:
    return f"[{impl}] {cause}: {', '.join(ids)}"


def _cause_of(r) -> str:
    """The failure's root cause as the root-cause stage set it ('' where it did not run); a
    bare 'unexplained' says what it means (a variant found for the layer's forward computation
    may explain other clauses: this one it does not)."""
    cause = getattr(r, "cause", None) or ""
    if cause == "unexplained":
        return "unexplained (no variant of the layer's computation fails this clause the same way)"
    return cause


def _explained(r, number: dict) -> list[tuple[str, object]]:
    """What every report says of a failure after its message: ("cause", n) where its root
    cause is numbered above (``cause_numbers``), else ("diagnosis", text) and ("root cause",
    text), each where it is set."""
    n = number.get((r.impl, r.clause))
    if n is not None:
        return [("cause", n)]
    return [(kind, v) for kind, v in (("diagnosis", r.diagnosis), ("root cause", _cause_of(r)))
            if v]


def detail_lists(details: dict | None) -> list[tuple[str, list[str]]]:
    """(key, items) for every list of text a clause left in its details (the bad inputs it
    tried, ...), each item on one line: the message names the first few only, the Markdown and
    HTML reports show them whole."""
    return [
        (key, [one_line(v) for v in value])
        for key, value in (details or {}).items()
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value)
    ]


def _not_shown(r) -> int:
    """How many items of the failure's detail lists its one-line message leaves out."""
    message = one_line(r.message)
    return sum(item not in message for _, items in detail_lists(r.details) for item in items)


# -- terminal --------------------------------------------------------------------------------


def terminal(results, color: bool | None = None, reports: list[str] | tuple = ()) -> str:
    """The grid, the portability matrices, each failure on a line or three and the skips.
    A failure's message names the first few of a long list: the line says how many more and
    where they are (the ``reports`` being written, else the options that write one)."""
    where = ", ".join(reports) if reports else "--markdown FILE or --html FILE"
    color = sys.stdout.isatty() if color is None else color
    paint = {"passed": "32", "failed": "31", "skipped": "33"}
    clauses, impls, cells = grid(results)
    width = max([len("clause"), *map(len, clauses)])
    widths = [max(len(i), 4) for i in impls]
    lines = [
        " ".join(["clause".ljust(width), *(i.ljust(w) for i, w in zip(impls, widths, strict=True))])
    ]
    for clause in clauses:
        row = [clause.ljust(width)]
        for impl, w in zip(impls, widths, strict=True):
            status = cells[(clause, impl)].status if (clause, impl) in cells else None
            text = SYMBOL[status].ljust(w)
            row.append(f"\033[{paint[status]}m{text}\033[0m" if color and status else text)
        lines.append(" ".join(row))
    for prefix, (writers, readers, pcells) in portability(results).items():
        lines += ["", f"{prefix}-PORTABLE: rows write portable weights, columns read them"]
        lines += _matrix_lines(writers, readers, pcells)
        lines += not_judged_line(results, prefix)
    causes = root_causes(results)
    number = cause_numbers(causes)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines += ["", "Failures:"]
        same = _same_errors(failed)
        for r in failed:
            if same.get(id(r)) == ():
                continue  # said with the first clause that raised it
            more = _not_shown(r)
            more = f" ({more} more, see the report: {where})" if more else ""
            lines.append(f"✗ {r.clause} [{r.impl}]: {one_line(r.message)}{more}")
            if same.get(id(r)):
                ids = same[id(r)]
                lines.append(f"    the same error (names' numbers aside) in {len(ids)} more: "
                             f"{', '.join(ids)}")
            lines += [f"    root cause: ({v}) above" if kind == "cause" else f"    {kind}: {v}"
                      for kind, v in _explained(r, number)]
        lines += cases_named(failed)
    skips = _skips(results)
    if skips:
        lines += ["", "Skipped:"]
        for (impl, reason), ids in skips.items():
            lines.append(f"skip [{impl}] {', '.join(ids)}: {reason}")
    lines += ["", summary_line(results)]
    head = ["Root causes:", *(f"({n}) {_cause_line(*c)}" for n, c in enumerate(causes, 1)), ""]
    return "\n".join((head if causes else []) + lines)


def cause_numbers(causes) -> dict[tuple[str, str], int]:
    """{(implementation, clause): n} for the clauses the n-th root cause explains. Every
    report writes each root cause once, numbered; a failure it explains refers to its number
    (its diagnosis is that cause's evidence seen from one clause), an unexplained one says
    all."""
    return {(impl, clause): n for n, (impl, cause, ids) in enumerate(causes, 1)
            for clause in ids if not cause.startswith("unexplained")}


def _same_errors(failed) -> dict[int, tuple[str, ...]]:
    """{id(failure): the clauses after it} for the first of an implementation's failures that
    raised the same exception with the same root cause, its message equal but for the numbers
    that end names (an adapter error raised by every clause, naming a layer Keras numbered anew
    in each build, say); () for those after it, which the terminal leaves out. Failures that
    did not raise are each shown."""
    groups: dict[tuple[str, str], list] = {}
    for r in failed:
        if (r.message or "").startswith("raised "):
            # the numbers of names masked (Keras's dense_18, dense_20: not fc1 and fc2, nor
            # a shape), and the first 200 characters: a longer number shortens the rest
            key = (r.impl, re.sub(r"(?<=\w_)\d+\b", "#", one_line(r.message))[:200],
                   _cause_of(r))
            groups.setdefault(key, []).append(r)
    out: dict[int, tuple[str, ...]] = {}
    for rs in groups.values():
        if len(rs) > 1:
            out[id(rs[0])] = tuple(r.clause for r in rs[1:])
            out.update(dict.fromkeys((id(r) for r in rs[1:]), ()))
    return out


def cases_named(failed) -> list[str]:
    """One line, "cases named: expand = n_series=5, ...", for the layers' numeric cases whose
    labels the failure messages start with (the labels say nothing by themselves)."""
    from portspec.meta import case_text

    named = [f"{case.label} = {case_text(case)}"
             for spec in LAYERS.values() for case in spec.cases()
             if any(r.clause.startswith(spec.prefix + "-")
                    and re.match(rf"{re.escape(case.label)}\b", r.message) for r in failed)]
    return [f"cases named: {'; '.join(named)}"] if named else []


def _matrix_lines(writers, readers, cells) -> list[str]:
    width = max(len(w) for w in writers)
    lines = [" ".join([" " * width, *readers])]
    for writer in writers:
        row = [writer.ljust(width)]
        for reader in readers:
            row.append(_pair_mark(cells.get((writer, reader)))[0].ljust(len(reader)))
        lines.append(" ".join(row))
    return lines


# -- JSON ------------------------------------------------------------------------------------


def to_json(results, meta: dict | None = None) -> str:
    n = counts(results)
    doc = {
        "meta": meta or {},
        "root_causes": [
            {"impl": impl, "cause": cause, "clauses": ids}
            for impl, cause, ids in root_causes(results)
        ],
        "summary": {k: n[k] for k in ("passed", "failed", "skipped")},
        "results": [r.to_dict() for r in results],
    }
    return json.dumps(doc, indent=2, default=str)


def verdicts(results) -> dict[str, dict[str, str]]:
    """{implementation: {clause: status}}: what ``portspec verify --expect`` compares."""
    out: dict[str, dict[str, str]] = {}
    for r in results:
        out.setdefault(r.impl, {})[r.clause] = r.status
    return out


# -- Markdown --------------------------------------------------------------------------------


def _md(text: str) -> str:
    return one_line(text).replace("|", "\\|")


def to_markdown(results, title: str | None = None, meta: dict | None = None) -> str:
    clauses, impls, cells = grid(results)
    title = title or (title_of(results, meta) if meta else None)
    lines = [f"## {title}", ""] if title else []
    causes = root_causes(results)
    number = cause_numbers(causes)
    if causes:
        lines += ["**Root causes**", ""]
        lines += [f"- **({n})** ({impl}) {_md(cause)}: {', '.join(ids)}"
                  for n, (impl, cause, ids) in enumerate(causes, 1)]
        lines += [""]
    lines += ["| clause | " + " | ".join(impls) + " |", "|---" * (len(impls) + 1) + "|"]
    for clause in clauses:
        marks = [SYMBOL[cells[(clause, i)].status if (clause, i) in cells else None] for i in impls]
        lines.append(f"| {clause} | " + " | ".join(marks) + " |")
    lines += [
        "",
        summary_line(results) + ". ✓ passed, ✗ failed, skip: did not apply (reasons below), "
        "· not run (the implementation does not provide the layer).",
    ]
    for prefix, (writers, readers, pcells) in portability(results).items():
        lines += ["", f"**{prefix}-PORTABLE** (rows write portable weights, columns read them)", ""]
        lines += ["| writer \\ reader | " + " | ".join(readers) + " |"]
        lines += ["|---" * (len(readers) + 1) + "|"]
        for w in writers:
            marks = [_pair_mark(pcells.get((w, reader)))[0] for reader in readers]
            lines.append(f"| {w} | " + " | ".join(marks) + " |")
        note = not_judged_line(results, prefix)
        lines += ["", *note] if note else []
    failed = [r for r in results if r.status == "failed"]
    if failed:
        lines += ["", "**Failures**", ""]
        same = _same_errors(failed)
        for r in failed:
            if same.get(id(r)) == ():
                continue  # said with the first clause that raised it
            line = f"- **{r.clause}** ({r.impl}): {_md(r.message)}"
            if same.get(id(r)):
                line += (f"  \n  the same error (names' numbers aside) in {len(same[id(r)])} "
                         f"more: {', '.join(same[id(r)])}")
            line += "".join(f"  \n  *Root cause:* ({v}) above" if kind == "cause"
                            else f"  \n  *{kind.capitalize()}:* {_md(v)}"
                            for kind, v in _explained(r, number))
            lines.append(line)
            for key, items in detail_lists(r.details) if _not_shown(r) else ():  # whole
                lines.append(f"  - {_md(key)} ({len(items)}):")
                lines += [f"    - {_md(item)}" for item in items]
    skips = _skips(results)
    if skips:
        lines += ["", "**Skipped**", ""]
        for (impl, reason), ids in skips.items():
            lines.append(f"- {', '.join(ids)} ({impl}): {_md(reason)}")
    if meta:
        lines += ["", "**What was checked**", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {_md(value)} |" for key, value in meta_rows(meta)]
    return "\n".join(lines) + "\n"


# -- JUnit XML -------------------------------------------------------------------------------


def to_junit(results, meta: dict | None = None) -> str:
    """One testsuite per implementation; testcase name = clause ID, classname = implementation.
    The metadata block is each testsuite's ``<properties>`` (one ``<property>`` per row)."""
    root = ET.Element("testsuites", name=title_of(results, meta) if meta else "portspec")
    _, impls, _ = grid(results)
    for impl in impls:
        mine = [r for r in results if r.impl == impl]
        n = counts(mine)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=impl,
            tests=str(len(mine)),
            failures=str(n["failed"]),
            errors="0",
            skipped=str(n["skipped"]),
            time=f"{sum(r.seconds for r in mine):.3f}",
        )
        if meta:
            properties = ET.SubElement(suite, "properties")
            for key, value in meta_rows(meta):
                ET.SubElement(properties, "property", name=key, value=value)
        for r in mine:
            case = ET.SubElement(
                suite, "testcase", classname=impl, name=r.clause, time=f"{r.seconds:.3f}"
            )
            if r.status == "failed":
                failure = ET.SubElement(case, "failure", message=one_line(r.message))
                text = [ANSI.sub("", r.message)]
                if r.diagnosis:
                    text.append(f"diagnosis: {r.diagnosis}")
                if _cause_of(r):
                    text.append(f"root cause: {_cause_of(r)}")
                if r.clause in CLAUSE_TEXT:
                    text.append(f"{r.clause}: {CLAUSE_TEXT[r.clause]}")
                failure.text = "\n".join(text)
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=one_line(r.message))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")


# -- HTML ------------------------------------------------------------------------------------

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222 }
table { border-collapse: collapse; margin: 1em 0 }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: center }
td:first-child, th:first-child { text-align: left; font-family: ui-monospace, monospace }
.passed { background: #e3f6e3; color: #16621b } .failed { background: #fbe3e3; color: #9b1c1c }
.skipped { background: #fdf5dc; color: #7a5b00 } .none { color: #999 }
li { margin: .4em 0 } .diag { color: #555 } code { font-size: 95% }
td a { color: inherit } table.meta td { text-align: left }
"""


def _anchor(r) -> str:
    """The id of a failure's entry: the cell of the grid links to it."""
    return "fail-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{r.clause}--{r.impl}")


def _html_details(details: dict) -> str:
    """Every list a clause left in its details, shown whole (``detail_lists``)."""
    esc = html_lib.escape
    parts = []
    for key, items in detail_lists(details):
        lis = "".join(f"<li>{esc(v)}</li>" for v in items)
        parts.append(f"<details><summary>{esc(key)} ({len(items)})</summary><ul>{lis}</ul>"
                     "</details>")
    return "".join(parts)


def to_html(results, title: str | None = None, meta: dict | None = None) -> str:
    esc = html_lib.escape
    title = title or title_of(results, meta)
    clauses, impls, cells = grid(results)
    rows = []
    for clause in clauses:
        tds = []
        for impl in impls:
            r = cells.get((clause, impl))
            status = r.status if r else None
            tip = esc(one_line(r.message), quote=True) if r else ""
            mark = SYMBOL[status]
            if status == "failed":
                mark = f'<a href="#{_anchor(r)}">{mark}</a>'
            tds.append(f'<td class="{status or "none"}" title="{tip}">{mark}</td>')
        text = esc(CLAUSE_TEXT.get(clause, ""), quote=True)
        rows.append(f'<tr><td title="{text}">{esc(clause)}</td>{"".join(tds)}</tr>')
    head = "".join(f"<th>{esc(i)}</th>" for i in impls)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>",
        f"<p>{esc(summary_line(results))}</p>",
        *(
            ["<h2>Root causes</h2><ul>"]
            + [f'<li id="cause-{n}"><b>({n})</b> ({esc(i)}) {esc(c)}: '
               f"<code>{esc(', '.join(ids))}</code></li>"
               for n, (i, c, ids) in enumerate(root_causes(results), 1)]
            + ["</ul>"]
            if root_causes(results) else []
        ),
        f"<table><tr><th>clause</th>{head}</tr>{''.join(rows)}</table>",
    ]
    for prefix, (writers, readers, pcells) in portability(results).items():
        parts.append(
            f"<h2>{esc(prefix)}-PORTABLE</h2><p>Rows write portable weights, columns "
            "read them.</p><table><tr><th>writer \\ reader</th>"
        )
        parts.append("".join(f"<th>{esc(r)}</th>" for r in readers) + "</tr>")
        for w in writers:
            tds = []
            for reader in readers:
                v = pcells.get((w, reader))
                mark, cls = _pair_mark(v)
                tds.append(f'<td class="{cls}" title="{esc(v or "", quote=True)}">{mark}</td>')
            parts.append(f"<tr><td>{esc(w)}</td>{''.join(tds)}</tr>")
        parts.append("</table>")
        parts += [f"<p>{esc(line)}</p>" for line in not_judged_line(results, prefix)]
    failed = [r for r in results if r.status == "failed"]
    if failed:
        parts.append("<h2>Failures</h2><ul>")
        number = cause_numbers(root_causes(results))
        for r in failed:
            item = f"<code>{esc(r.clause)}</code> ({esc(r.impl)}): {esc(one_line(r.message))}"
            # the cause once, above: each entry links to it
            item += "".join(f'<br><span class="diag">Root cause: <a href="#cause-{v}">({v})</a>'
                            "</span>" if kind == "cause" else
                            f'<br><span class="diag">{kind.capitalize()}: {esc(v)}</span>'
                            for kind, v in _explained(r, number))
            item += _html_details(r.details)
            parts.append(f'<li id="{_anchor(r)}">{item}</li>')
        parts.append("</ul>")
    skips = _skips(results)
    if skips:
        parts.append("<h2>Skipped</h2><ul>")
        for (impl, reason), ids in skips.items():
            parts.append(
                f"<li><code>{esc(', '.join(ids))}</code> ({esc(impl)}): {esc(reason)}</li>"
            )
        parts.append("</ul>")
    if meta:
        parts.append('<h2>What was checked</h2><table class="meta">')
        parts += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in meta_rows(meta)]
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


WRITERS = {"json": to_json, "markdown": to_markdown, "junit": to_junit, "html": to_html}


def write(results, paths: dict[str, str | None], meta: dict | None = None) -> list[str]:
    """Write each format whose path is given ({format: path}), each with the metadata block
    ``meta`` (portspec.meta.collect); return the paths written."""
    import os

    written = []
    for fmt, path in paths.items():
        if not path:
            continue
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(WRITERS[fmt](results, meta=meta))
        written.append(path)
    return written
