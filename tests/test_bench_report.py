"""benchmarks/_protocol.py and benchmarks/report.py: RESULTS.md's tables are those of
benchmarks/results/*.json, and the protocol's bookkeeping (no benchmark is run, nothing is timed)."""

from __future__ import annotations

import json
import sys

import pytest
from _bench_scripts import BENCH, load_bench

report = load_bench("report")
protocol = load_bench("_protocol")


def test_results_md_is_generated_from_the_results_files():
    text = (BENCH / "RESULTS.md").read_text()
    generated = report.blocks()
    assert generated, "benchmarks/results/ holds no results file"
    new, changed, missing = report.render(text, generated)
    assert not missing, f"blocks without a results file or results without a marker: {missing}"
    assert not changed, f"RESULTS.md is out of date with benchmarks/results/ in {changed}: run make bench-report"
    assert new == text


def test_every_results_file_was_written_under_the_protocol():
    for path in sorted((BENCH / "results").glob("*.json")):
        meta = json.loads(path.read_text())["meta"]
        for key in ("date", "machine", "threads", "versions", "load_start", "load_end", "load_limit", "loaded"):
            assert key in meta, f"{path.name} lacks {key!r} in its metadata; found {sorted(meta)}"
        assert meta["loaded"] == (meta["load_start"] > meta["load_limit"]), path.name


def test_cells_and_tables_render_known_text():
    assert report.cell(None) == "—"
    assert report.cell(2.345, "{:.1f}×") == "2.3×"
    assert report.cell({"median": 1.5, "min": 1.25, "max": 2.0, "n": 3}, "{:.2f}") == "1.50 (1.25–2.00)"
    assert report.cell("text", "{:.2f}") == "text"
    tab = {"title": "T", "columns": ["a", "b"], "formats": ["{}", "{:.1f}"], "rows": [["x", 1.26]], "note": "n."}
    assert report.table_md(tab) == "**T**\n\n| a | b |\n|---|---|\n| x | 1.3 |\n\nn.\n"


def test_render_replaces_marked_blocks_only(tmp_path):
    text = ("prose\n<!-- bench:r:t -->\nold\n<!-- /bench:r:t -->\nmore prose\n"
            "<!-- bench:gone:t -->\nx\n<!-- /bench:gone:t -->\n")
    new, changed, missing = report.render(text, {"r:t": "new\n", "r:u": "u\n"})
    assert new == text.replace("old\n", "new\n")
    assert changed == ["r:t"]
    assert missing == ["gone:t", "r:u (no marker in RESULTS.md)"]


def test_session_interleaves_repeats_and_writes_json_atomically(tmp_path):
    calls = []
    run = protocol.Session("unit", "tests", argv=[], threads=2)
    stats, outs = run.compare(("peer", lambda: calls.append("p") or "P"),
                              [("a", lambda: calls.append("a") or "A"), ("b", lambda: calls.append("b") or "B")],
                              repeats=4)
    assert calls == ["p", "a", "b", "a", "b", "p"] * 2  # peer first on even repeats, last on odd ones
    assert outs == {"peer": "P", "a": "A", "b": "B"}
    assert stats["a"]["ratio"]["n"] == 4 and len(stats["peer"]["raw"]) == 4
    with pytest.raises(ValueError, match="at least 3 repeats"):
        run.compare(("peer", lambda: 0), [("a", lambda: 0)], repeats=2)
    run.table("t", "T", ["x"], [[1.0]], ["{:.1f}"])
    with pytest.raises(ValueError, match="need 1 cells"):
        run.table("u", "U", ["x"], [[1.0, 2.0]])
    path = run.write(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["name"] == "unit" and doc["tables"][0]["rows"] == [[1.0]]
    assert [p.name for p in tmp_path.iterdir()] == ["unit.json"]  # no temporary file left behind


def test_spread_is_median_and_range():
    assert protocol.spread([3.0, 1.0, 2.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0, "n": 4}
    with pytest.raises(ValueError, match="at least one value"):
        protocol.spread([])


def test_peak_memory_counts_what_a_child_touched_after_the_reset():
    # in a fresh child, as the benchmarks measure: in this process, garbage of earlier tests freed
    # while the block is allocated would lower the resident memory the peak is compared with
    code = (f"import sys, json; sys.path.insert(0, {str(BENCH)!r}); import numpy as np, _protocol as p\n"
            "reset = p.reset_peak_rss(); before = p.peak_rss()\n"
            "block = np.ones(64 << 20, dtype=np.uint8)\n"
            "print(json.dumps({'reset': reset, 'extra': p.peak_rss() - before}))")
    try:
        out = protocol.child_json([sys.executable, "-c", code])
    except RuntimeError:
        pytest.skip("the peak-RSS counter cannot be reset here (/proc/self/clear_refs)")
    assert (60 << 20) <= out["extra"] < (80 << 20)  # the 64 MiB block, touched page by page


def test_a_memory_child_whose_counter_was_not_reset_is_refused():
    code = "import json; print('noise'); print(json.dumps({'peak': 5, 'reset': %s}))"
    assert protocol.child_json([sys.executable, "-c", code % "True"]) == {"peak": 5, "reset": True}
    with pytest.raises(RuntimeError, match="could not be reset"):
        protocol.child_json([sys.executable, "-c", code % "False"])
