"""portspec bench: the ratio and spread arithmetic, and one tiny end-to-end run (its output's
shape, never its timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from portspec import bench

PORT = Path(__file__).parent / "ports_fixtures" / "torch_fm_port.py"


def test_paired_ratios_pair_round_by_round_over_the_shorter_run():
    assert bench.paired_ratios([2.0, 3.0, 8.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError, match="at least one round"):
        bench.paired_ratios([], [1.0])


def test_percentile_interpolates_between_ranks():
    values = [float(v) for v in range(1, 12)]  # 1..11: rank k holds k + 1
    assert bench.percentile(values, 10) == 2.0
    assert bench.percentile(values, 90) == 10.0
    assert bench.percentile([1.0, 2.0], 50) == 1.5


def test_a_slower_port_reads_ratio_of_medians_and_paired_range():
    # medians 3 and 2; paired ratios 1.0, 1.5, 2.0 -> 10th/90th percentiles 1.1 and 1.9
    verdict = bench.Verdict.of([2.0, 3.0, 4.0], [2.0, 2.0, 2.0])
    assert verdict.ratio == 1.5
    assert verdict.low == pytest.approx(1.1)
    assert verdict.high == pytest.approx(1.9)
    assert verdict.sentence("the reference", "torch eager, medium, train-step") == (
        "1.50x (1.10-1.90) slower than the reference, torch eager, medium, train-step"
    )


def test_a_faster_port_reads_the_inverse():
    # ours takes half the time in every round: 2x faster, the range inverted and swapped
    verdict = bench.Verdict.of([1.0, 1.0, 1.0], [2.0, 2.0, 2.0])
    assert verdict.sentence("neuralforecast", "torch eager, small, inference") == (
        "2.00x (2.00-2.00) faster than neuralforecast, torch eager, small, inference"
    )
    # medians 1 and 4; paired 0.5, 0.25, 0.25 -> percentiles 0.25 and 0.45, inverted 4.00, 2.22
    spread = bench.Verdict.of([1.0, 1.0, 1.0], [2.0, 4.0, 4.0])
    assert spread.sentence("x", "y") == "4.00x (2.22-4.00) faster than x, y"


def test_layer_names_take_the_prefix_and_refuse_the_unknown():
    assert bench.layer_name("fm") == "FeatureMixing"
    assert bench.layer_name("GatedFeatureFusion") == "GatedFeatureFusion"
    with pytest.raises(ValueError, match="unknown layer 'Dense'"):
        bench.layer_name("Dense")


def _touch_fresh_pages(size: int) -> None:
    """Map ``size`` bytes of fresh anonymous memory and write a byte in each page. A Python
    object of that size may take memory its process holds resident already (a large free chunk
    at the top of the heap, after other tests), which would add nothing to the peak; fresh
    pages always do."""
    import mmap

    with mmap.mmap(-1, size) as pages:
        for at in range(0, size, mmap.PAGESIZE):
            pages[at] = 1


def test_peak_memory_sees_an_allocation():
    peak = bench.peak_mib(lambda: _touch_fresh_pages(64 * 2**20))
    if peak is None:
        pytest.skip("this kernel has no /proc/self/clear_refs")
    assert peak >= 32  # 64 MiB touched at once: at least half of it resident at the peak


def test_tiny_bench_of_a_torch_port_end_to_end(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "portspec.cli", "bench", str(PORT), "--size", "tiny",
           "--mode", "inference", "--mode", "train-step", "--execution", "eager",
           f"--benchmark-json={out}", "--benchmark-max-time=0.02", "--benchmark-min-rounds=3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    roles = {(b["extra_info"]["role"], b["extra_info"]["contender"]) for b in report["benchmarks"]}
    assert roles >= {("port", "small-torch-port"), ("reference", "torch")}
    for b in report["benchmarks"]:
        assert b["stats"]["rounds"] >= 3
        assert "peak_mib" in b["extra_info"]
    against = " than the reference (torch), FeatureMixing eager, tiny, "
    lines = [ln for ln in done.stdout.splitlines()
             if ln.startswith("small-torch-port: ") and against in ln]
    assert {ln.rsplit(", ", 1)[1] for ln in lines} == {"inference", "train-step"}


def test_a_busy_machine_is_named_in_the_summary():
    quiet = "load average 0.5 at the start, 1.2 at the end, on 2 CPUs"
    assert bench.busy_note(0.5, 1.2, 2) == quiet
    assert bench.busy_note(3.0, 1.0, 2).endswith("not to be trusted; run again idle")
    assert bench.busy_note(None, 1.0, 2) == "load average: unknown"
