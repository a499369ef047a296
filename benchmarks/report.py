"""RESULTS.md's measured tables, generated from ``benchmarks/results/*.json`` (``make bench-report``).

Each results file (written by a ``bench_*.py`` through :mod:`_protocol`) fills the blocks of
RESULTS.md between marker comments::

    <!-- bench:NAME:meta -->   ...   <!-- /bench:NAME:meta -->    when, where, threads, load
    <!-- bench:NAME:KEY -->    ...   <!-- /bench:NAME:KEY -->     the table KEY of NAME.json

so hand-written prose around the blocks stays. ``--check`` exits 1 (naming the blocks) when
RESULTS.md differs from what the JSON files give; tests/test_bench_report.py runs it.

Run: ``.venv/bin/python benchmarks/report.py [--check]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RESULTS_DIR = HERE / "results"
_BLOCK = re.compile(r"<!-- bench:(?P<id>[\w.-]+:[\w.-]+) -->\n(?P<body>.*?)<!-- /bench:(?P=id) -->", re.S)


def _num(fmt: str, v) -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def cell(value, fmt: str = "{}") -> str:
    """One table cell: a number in ``fmt``, a spread as ``median (min–max)``, None as a dash."""
    if value is None:
        return "—"
    if isinstance(value, dict) and "median" in value:
        return f"{_num(fmt, value['median'])} ({_num(fmt, value['min'])}–{_num(fmt, value['max'])})"
    return _num(fmt, value)


def meta_line(meta: dict) -> str:
    """The "measured when and where" sentence of one results file."""
    vers = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    load = (f"load average {meta['load_start']:.2f} at the start, {meta.get('load_end', float('nan')):.2f} "
            f"at the end")
    flag = (f" — **loaded** (the load at the start exceeded {meta['load_limit']}: seconds are upper bounds for a "
            "quiet machine; ratios compare interleaved runs under the same load)" if meta["loaded"] else "")
    args = " ".join(meta["argv"]) or "defaults"
    threads = f"{meta['threads']} thread(s) per library" if isinstance(meta["threads"], int) else meta["threads"]
    return (f"Measured by `{meta['script']}` ({args}) on {meta['date']}, {meta['machine']}, "
            f"{threads}; {vers}; {load}{flag}.\n")


def table_md(tab: dict) -> str:
    """A results table as markdown (title in bold, then the table, then its note)."""
    lines = [f"**{tab['title']}**", "", "| " + " | ".join(tab["columns"]) + " |",
             "|" + "---|" * len(tab["columns"])]
    for row in tab["rows"]:
        lines.append("| " + " | ".join(cell(v, f) for v, f in zip(row, tab["formats"])) + " |")
    if tab.get("note"):
        lines += ["", tab["note"]]
    return "\n".join(lines) + "\n"


def blocks(results_dir: Path = RESULTS_DIR) -> dict:
    """``{"NAME:KEY": markdown}`` for every results file and table, plus ``"NAME:meta"``."""
    out = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        doc = json.loads(path.read_text())
        out[f"{doc['name']}:meta"] = meta_line(doc["meta"])
        for tab in doc["tables"]:
            out[f"{doc['name']}:{tab['key']}"] = table_md(tab)
    return out


def render(text: str, generated: dict) -> tuple[str, list, list]:
    """RESULTS.md's text with every marked block replaced; returns (text, changed ids, missing ids).

    A marked block with no results file is left as it is and reported as missing.
    """
    changed, seen = [], set()

    def sub(m):
        bid = m.group("id")
        seen.add(bid)
        if bid not in generated:
            return m.group(0)
        if m.group("body") != generated[bid]:
            changed.append(bid)
        return f"<!-- bench:{bid} -->\n{generated[bid]}<!-- /bench:{bid} -->"

    new = _BLOCK.sub(sub, text)
    missing = sorted(seen - set(generated)) + [f"{b} (no marker in RESULTS.md)" for b in sorted(set(generated) - seen)]
    return new, changed, missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if RESULTS.md is not up to date")
    ap.add_argument("--results-md", type=Path, default=RESULTS_MD)
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    a = ap.parse_args(argv)
    text = a.results_md.read_text()
    new, changed, missing = render(text, blocks(a.results_dir))
    for m in missing:
        print(f"warning: block {m}", file=sys.stderr)
    if a.check:
        if changed:
            print(f"{a.results_md} is out of date with {a.results_dir} in: {', '.join(changed)}; "
                  "run make bench-report", file=sys.stderr)
            return 1
        return 0
    if new != text:
        a.results_md.write_text(new)
    print(f"{a.results_md}: {len(changed)} block(s) regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
