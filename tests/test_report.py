"""Reports: the same verdicts in every format, skips shown as skips with their reason."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from portspec import report
from portspec.suite.runner import Result

RESULTS = [
    Result("FM-SHAPE", "alpha", "passed", seconds=0.5),
    Result("FM-SHAPE", "beta", "passed"),
    Result(
        "FM-BN-UPDATE",
        "beta",
        "failed",
        "norm.moving_mean after one training call: max |error| 3.29",
        "the moving mean keeps 0.99 of its old value",
    ),
    Result("FM-BN-UPDATE", "alpha", "passed"),
    Result("FM-COMPILE", "alpha", "skipped", "this implementation has no compiled execution"),
    Result("FM-COMPILE", "beta", "passed"),
    Result("GFF-SHAPE", "alpha", "failed", "\x1b[1mbold\x1b[0m error\nover two lines"),
    Result(
        "FM-PORTABLE",
        "alpha",
        "passed",
        details={"pairs": {"alpha -> alpha": "ok", "beta -> alpha": "ok"}},
    ),
    Result(
        "FM-PORTABLE",
        "beta",
        "failed",
        "alpha -> beta: norm.moving_mean after the step differs by 2.6",
        details={"pairs": {"alpha -> beta": "moving mean differs", "beta -> beta": "ok"}},
    ),
]


def test_terminal_table_marks_every_cell_and_lists_failures_and_skips():
    text = report.terminal(RESULTS, color=False)
    lines = [line.split() for line in text.splitlines() if line.startswith(("FM-", "GFF-"))]
    rows = {cells[0]: cells[1:] for cells in lines}
    assert rows["FM-SHAPE"] == ["✓", "✓"]
    assert rows["FM-BN-UPDATE"] == ["✓", "✗"]  # columns in order of appearance: alpha, beta
    assert rows["FM-COMPILE"] == ["skip", "✓"]
    assert rows["GFF-SHAPE"] == ["✗", "·"]  # beta has no GatedFeatureFusion: not run
    # spec order, not the order of the results
    order = [cells[0] for cells in lines]
    assert order[:5] == ["FM-SHAPE", "FM-BN-UPDATE", "FM-COMPILE", "FM-PORTABLE", "GFF-SHAPE"]
    assert "✗ FM-BN-UPDATE [beta]: norm.moving_mean" in text
    assert "diagnosis: the moving mean keeps 0.99" in text
    assert "skip [alpha] FM-COMPILE: this implementation has no compiled execution" in text
    assert "bold error over two lines" in text and "\x1b" not in text
    assert text.endswith("5 passed, 3 failed, 1 skipped")


def test_portability_matrix():
    writers, readers, cells = report.portability(RESULTS)["FM"]
    assert writers == ["alpha", "beta"] and readers == ["alpha", "beta"]
    assert cells[("alpha", "beta")] == "moving mean differs"
    text = report.terminal(RESULTS, color=False)
    assert "FM-PORTABLE: rows write portable weights, columns read them" in text


def test_a_skip_is_never_a_pass():
    skipped = [r for r in RESULTS if r.status == "skipped"]
    assert not report.ok(skipped)
    assert "| FM-COMPILE | skip | ✓ |" in report.to_markdown(RESULTS)
    junit = ET.fromstring(report.to_junit(RESULTS))
    case = junit.find(".//testcase[@classname='alpha'][@name='FM-COMPILE']")
    assert case.find("skipped").get("message") == "this implementation has no compiled execution"


def test_ok_needs_no_failure_and_one_pass():
    assert not report.ok(RESULTS)
    assert report.ok([r for r in RESULTS if r.status == "passed"])
    assert not report.ok([])


def test_markdown():
    text = report.to_markdown(RESULTS, title="verdicts")
    assert text.startswith("## verdicts\n\n| clause | alpha | beta |\n|---|---|---|\n")
    assert "| FM-BN-UPDATE | ✓ | ✗ |" in text
    assert "*Diagnosis:* the moving mean keeps 0.99" in text
    assert "max \\|error\\| 3.29" in text  # a pipe in a message does not break the table
    assert "| writer \\ reader | alpha | beta |" in text


def test_junit_names_clause_and_implementation():
    root = ET.fromstring(report.to_junit(RESULTS))
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {"alpha", "beta"}
    assert suites["beta"].get("failures") == "2" and suites["alpha"].get("skipped") == "1"
    failure = root.find(".//testcase[@classname='beta'][@name='FM-BN-UPDATE']/failure")
    assert failure.get("message").startswith("norm.moving_mean")
    assert "diagnosis: the moving mean keeps 0.99" in failure.text
    assert "FM-BN-UPDATE: One training call sets" in failure.text  # the clause's sentence


def test_json_round_trips_every_result():
    doc = json.loads(report.to_json(RESULTS, meta={"command": "verify"}))
    assert doc["summary"] == {"passed": 5, "failed": 3, "skipped": 1}
    assert [Result(**r) for r in doc["results"]] == RESULTS
    assert report.verdicts(RESULTS)["beta"]["FM-BN-UPDATE"] == "failed"


def test_html_is_one_self_contained_page():
    page = report.to_html(RESULTS)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http" not in page and "<link" not in page
    assert '<td class="skipped"' in page and '<td class="failed"' in page
    assert "Diagnosis: the moving mean keeps 0.99" in page
    assert "x &lt; y" in report.to_html([Result("FM-SHAPE", "a", "failed", "x < y")])


def test_write_creates_the_files(tmp_path):
    paths = {fmt: str(tmp_path / "sub" / f"r.{fmt}") for fmt in report.WRITERS}
    assert sorted(report.write(RESULTS, {**paths, "html": None})) == sorted(
        p for f, p in paths.items() if f != "html"
    )


META = {
    "portspec": {"version": "0.1.0", "commit": "abc123"},
    "ports": [{"target": "B/PORT.py", "path": "/x/B/PORT.py", "sha256": "f00d",
               "package": "neuralforecast", "package_version": "3.3.0"}],
    "frameworks": {"numpy": "2.4.6", "torch": "2.13.0"},
    "python": "CPython 3.11.7",
    "platform": "Linux-x86_64",
    "cpu": {"model": "EPYC", "features": {"avx2": True, "avx512f": False}},
    "profile": "tsmixer",
    "options": {"clause": ["FM-BN-*"], "timeout": 120.0},
    "date": "2026-12-01T13:00:00+00:00",
}


def test_every_format_carries_the_metadata_block():
    assert json.loads(report.to_json(RESULTS, meta=META))["meta"] == META
    markdown = report.to_markdown(RESULTS, meta=META)
    assert markdown.startswith("## portspec: B/PORT.py\n")
    assert "| port | /x/B/PORT.py sha256 f00d, wraps neuralforecast 3.3.0 |" in markdown
    assert "| cpu | EPYC; features: avx2 |" in markdown  # AVX-512 absent: not listed
    assert "| profile | tsmixer |" in markdown and "| options.clause | FM-BN-* |" in markdown
    root = ET.fromstring(report.to_junit(RESULTS, meta=META))
    for suite in root.findall("testsuite"):  # every suite, for tools that read one
        props = {p.get("name"): p.get("value") for p in suite.find("properties")}
        assert props["portspec.commit"] == "abc123" and props["frameworks.torch"] == "2.13.0"
        assert props["date"] == META["date"] and props["python"] == "CPython 3.11.7"
    page = report.to_html(RESULTS, meta=META)
    assert "<title>portspec: B/PORT.py</title>" in page
    assert "<td>port</td><td>/x/B/PORT.py sha256 f00d, wraps neuralforecast 3.3.0</td>" in page
    assert "<td>portspec.commit</td><td>abc123</td>" in page


def test_without_ports_the_title_names_the_implementations():
    assert "<title>portspec: alpha, beta</title>" in report.to_html(RESULTS)
    no_commit = {**META, "portspec": {"version": "0.1.0", "commit": None}}
    assert "| portspec.commit | none |" in report.to_markdown(RESULTS, meta=no_commit)


def test_html_links_each_failed_cell_to_its_entry_and_shows_lists_whole():
    problems = [f"config {{'dropout': {i}}}: accepted" for i in range(22)]
    results = [*RESULTS, Result("FM-CONFIG", "alpha", "failed", "22 of 22 bad inputs: "
                                + " | ".join(problems[:4]), details={"problems": problems})]
    page = report.to_html(results)
    for r in results:
        if r.status == "failed":
            anchor = f"fail-{r.clause}--{r.impl}"
            assert f'<a href="#{anchor}">✗</a>' in page and f'<li id="{anchor}">' in page
    assert all(p.replace("'", "&#x27;") in page for p in problems)  # all 22, not 4
    assert "<summary>problems (22)</summary>" in page


def test_portability_rows_and_columns_come_in_one_order():
    pairs = {"gamma -> beta": "ok", "beta -> alpha": "ok", "alpha -> gamma": "ok",
             "beta -> gamma": "ok", "gamma -> alpha": "ok", "alpha -> beta": "ok"}
    results = [Result("FM-SHAPE", name, "passed") for name in ("alpha", "beta", "gamma")]
    results.append(Result("FM-PORTABLE", "gamma", "passed", details={"pairs": pairs}))
    writers, readers, _ = report.portability(results)["FM"]
    assert writers == readers == ["alpha", "beta", "gamma"]  # the diagonal is the diagonal


def test_markdown_shows_a_clauses_list_whole_and_the_terminal_says_how_many_more():
    problems = [f"config {{'dropout': {i}}}: accepted" for i in range(22)]
    failed = Result("FM-CONFIG", "alpha", "failed", "22 of 22 bad inputs: "
                    + " | ".join(problems[:4]), details={"problems": problems})
    markdown = report.to_markdown([*RESULTS, failed])
    assert "  - problems (22):" in markdown
    assert all(f"    - {p}" in markdown.splitlines() for p in problems)  # all 22, not 4
    text = report.terminal([*RESULTS, failed], color=False, reports=["r.md"])
    line = next(x for x in text.splitlines() if x.startswith("✗ FM-CONFIG"))
    assert line.endswith(" | ".join(problems[:4]) + " (18 more, see the report: r.md)")
    text = report.terminal([*RESULTS, failed], color=False)
    assert "(18 more, see the report: --markdown FILE or --html FILE)" in text
    whole = Result("FM-CONFIG", "alpha", "failed", "2 of 2: " + " | ".join(problems[:2]),
                   details={"problems": problems[:2]})
    assert "more, see the report" not in report.terminal([whole], color=False)
    assert "problems (2)" not in report.to_markdown([whole])  # the message holds them all


def test_a_bare_unexplained_says_what_it_means_on_each_failure():
    results = [Result("FM-INIT", "port", "failed", "kernel not Glorot", cause="unexplained")]
    meaning = "unexplained (no variant of the layer's computation fails this clause the same way)"
    assert f"    root cause: {meaning}" in report.terminal(results, color=False)
    for fmt in ("markdown", "html", "junit"):
        assert meaning.replace("'", "&#x27;" if fmt == "html" else "'") in \
            report.WRITERS[fmt](results).replace("&apos;", "'"), fmt


def test_one_mistake_in_both_layers_is_one_root_cause():
    """The same words after the layer's name are one finding: the layers named together, each
    layer's evidence kept where it differs; other root causes stay as they are."""
    from portspec.report import root_causes

    def failed(clause, cause):
        return Result(clause, "port", "failed", cause=cause)

    lines = root_causes([
        failed("FM-DETERMINISM", "FeatureMixing: the seed is not used"),
        failed("GFF-DETERMINISM", "GatedFeatureFusion: the seed is not used"),
        failed("FM-INFERENCE", "FeatureMixing: computed in float32 [max error 2.5e-05]"),
        failed("GFF-FORWARD", "GatedFeatureFusion: computed in float32 [max error 5e-07]"),
        failed("FM-SHAPE", "FeatureMixing: the output is squeezed"),
        failed("GFF-CONVEX", "unexplained"),
    ])
    assert lines == [
        ("port", "FeatureMixing and GatedFeatureFusion: the seed is not used",
         ["FM-DETERMINISM", "GFF-DETERMINISM"]),
        ("port", "FeatureMixing and GatedFeatureFusion: computed in float32 [FeatureMixing: "
         "max error 2.5e-05; GatedFeatureFusion: max error 5e-07]",
         ["FM-INFERENCE", "GFF-FORWARD"]),
        ("port", "FeatureMixing: the output is squeezed", ["FM-SHAPE"]),
        ("port", "unexplained", ["GFF-CONVEX"]),
    ]


def test_the_case_labels_failures_start_with_are_spelled_out():
    """"expand float32 training=True: ..." says nothing by itself: the terminal lists each
    case a failure names with its config and input shapes, and only those."""
    failed = [Result("FM-INFERENCE", "p", "failed", "expand float32 training=False: max |error|"),
              Result("GFF-FORWARD", "p", "failed", "rank3 float64 training=False: max |error|"),
              Result("FM-RESIDUAL", "p", "failed", "output differs from the input by up to 1")]
    text = report.terminal(failed)
    assert ("cases named: expand = n_series=5, input_size=6, dropout=0.1, ff_dim=16, input "
            "(8, 6, 5); rank3 = activation='sigmoid', input (3, 5, 6) and (3, 5, 6)") in text
    assert "bottleneck" not in text and "rank2" not in text
    assert "cases named" not in report.terminal(failed[2:])


def test_the_same_raised_error_in_many_clauses_is_shown_once():
    """An adapter error every clause raises, equal but for numbers (a path naming a layer
    Keras numbered anew in each build), is one failure line naming the other clauses; a
    different error, or the same one under another root cause, keeps its own line."""
    error = ("raised ValueError: the weight map names 'fc1.kernel' for 'dense1.kernel', but the "
             "port has no 'fc1.kernel' (did you mean 'fc1.dense_{}.kernel'?)")
    results = [Result(c, "p", "failed", error.format(n), cause="FeatureMixing: the map")
               for c, n in (("FM-SHAPE", 8), ("FM-INIT", 16), ("FM-GRAD", 112))]
    results += [Result("FM-DTYPE", "p", "failed", "raised TypeError: another", cause="other"),
                Result("FM-VECTORS", "p", "failed", error.format(7), cause="other"),
                Result("FM-CALL", "p", "failed", "bad inputs 5 of 5"),
                # another name (fc2, dense2) or shape: another error, though only digits differ
                Result("FM-TRAINING", "p", "failed", error.format(8).replace("fc1", "fc2"),
                       cause="FeatureMixing: the map"),
                Result("FM-BN-UPDATE", "p", "failed", "raised ValueError: shape (5, 16)",
                       cause="x"),
                Result("FM-BN-FROZEN", "p", "failed", "raised ValueError: shape (16, 5)",
                       cause="x")]
    failures = report.terminal(results, color=False).split("Failures:")[1].splitlines()
    shown = [line for line in failures if line.startswith("✗")]
    assert [line.split(" [")[0] for line in shown] == [
        "✗ FM-SHAPE", "✗ FM-DTYPE", "✗ FM-VECTORS", "✗ FM-CALL", "✗ FM-TRAINING",
        "✗ FM-BN-UPDATE", "✗ FM-BN-FROZEN"]
    assert "    the same error (names' numbers aside) in 2 more: FM-INIT, FM-GRAD" in failures
    # the Markdown report alike: one entry, the others named under it
    md = report.to_markdown(results).split("**Failures**")[1]
    assert [line.split(" (p)")[0] for line in md.splitlines() if line.startswith("- **")] == [
        "- **FM-SHAPE**", "- **FM-DTYPE**", "- **FM-VECTORS**", "- **FM-CALL**",
        "- **FM-TRAINING**", "- **FM-BN-UPDATE**", "- **FM-BN-FROZEN**"]
    assert "the same error (names' numbers aside) in 2 more: FM-INIT, FM-GRAD" in md


def test_every_report_writes_a_root_cause_once_and_refers_to_it_by_number():
    """A root cause explaining many failures is written once, numbered, in each format; each
    failure it explains refers to its number instead of repeating it (and its diagnosis, that
    cause seen from one clause); an unexplained failure keeps its diagnosis and says so."""
    cause = "FeatureMixing: " + "a long account of the one mistake " * 8
    results = [Result(c, "p", "failed", f"{c} differs", diagnosis="the clause's own view",
                      cause=cause) for c in ("FM-INFERENCE", "FM-TRAINING", "FM-VECTORS")]
    results.append(Result("FM-GRAD", "p", "failed", "grad differs", diagnosis="a hint",
                          cause="unexplained"))
    for text in (report.terminal(results, color=False), report.to_markdown(results),
                 report.to_html(results)):
        assert text.count("a long account") == 8, text  # the one cause line, once
        assert "the clause's own view" not in text
        assert "a hint" in text and "unexplained (no variant" in text
    md = report.to_markdown(results)
    assert md.count("*Root cause:* (1) above") == 3
    assert report.to_html(results).count('href="#cause-1"') == 3


def test_a_failed_step_that_is_no_clause_is_named_not_counted():
    """A port's portable weights not written (export:<Layer>) or a worker lost while loading
    (LOAD) fail the run, and the summary counts the spec's clauses and names those apart."""
    results = [*RESULTS, Result("export:FeatureMixing", "beta", "failed", "raised ValueError")]
    line = report.summary_line(results)
    assert line == "5 passed, 3 failed, 1 skipped; failed besides: export:FeatureMixing [beta]"
    assert not report.ok(results)


def test_a_clause_quoting_a_coloured_error_over_lines_says_it_on_one_line():
    """A port's error quoted in a clause's message or diagnosis (Keras's carry terminal colours
    and blank lines) reaches every report on one line, without the colour codes."""
    from types import SimpleNamespace

    from portspec.clauses import ClauseFailure
    from portspec.layers import LAYERS
    from portspec.suite import runner

    spec = LAYERS["FeatureMixing"]
    clause = spec.clauses[0]
    quoted = "Exception encountered.\n\n\x1b[1mcannot compute AddV2\x1b[0m\n\n  • x=tensor"

    def fails(ctx):
        raise ClauseFailure(f"bfloat16: raised {quoted}", diagnosis=f"the port's ({quoted})")

    adapter = SimpleNamespace(name="p", framework="torch")
    r = runner.run_clause(adapter, spec, clause, fails)
    assert r.message == "bfloat16: raised Exception encountered. cannot compute AddV2 • x=tensor"
    assert r.diagnosis == "the port's (Exception encountered. cannot compute AddV2 • x=tensor)"


def test_an_error_quoted_in_a_verdict_is_cut_at_a_word():
    """An error too long to quote whole is cut at a word and marked " ...": never mid-word,
    as "... argument or cl" once read; one word longer than the width is cut inside it."""
    from portspec.report import quote

    flax = ("`deterministic` is False, but no `rngs` argument was provided to Dropout as "
            "either a __call__ argument or class attribute.")
    assert quote(flax) == flax  # 128 characters: whole
    cut = quote(flax, 80)
    assert cut == "`deterministic` is False, but no `rngs` argument was provided to Dropout as ..."
    assert len(cut) <= 80 and flax.startswith(cut[:-4])
    assert quote("\x1b[1mshape\x1b[0m\n\n (3,)") == "shape (3,)"
    assert quote("x" * 300, 50) == "x" * 46 + " ..."
    assert quote(None) == ""



def test_one_refusal_met_by_every_dtype_is_said_once():
    """FM-DTYPE tries up to eight calls: an adapter refusal every one of them meets is one
    sentence after their labels, not eight; other failures keep their own words and order."""
    from portspec.clauses import ClauseFailure
    from portspec.suite.areas.numerics import _raised_once

    refusal = "raised ValueError: 'dense1.kernel' maps to fc1.kernel of shape (6, 16)"
    failures = [ClauseFailure(f"{label}: {refusal}", details={"label": label})
                for label in ("float64", "bfloat16 training=False", "bfloat16 update")]
    failures.insert(1, ClauseFailure("default: output dtype float64, expected float32"))
    assert _raised_once(failures) == (
        f"float64, bfloat16 training=False, bfloat16 update: {refusal}; default: output dtype "
        "float64, expected float32")
