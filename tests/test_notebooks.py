"""Smoke runs of every chapter through papermill with quick=True, on a small mini-NSD, and the
chapters' shape (read from their MyST sources, fast).

The chain runs once per session, in order (each chapter reuses what the previous ones cached);
each chapter is then reported as its own test.
"""

import ast
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

from nsdlib.config import RunConfig
from nsdlib.runner import list_notebooks, run_chain
from nsdlib.store import Store

BOOK = Path(__file__).resolve().parent.parent  # this checkout is the book
CHAPTERS = [p.stem for p in list_notebooks(BOOK / "notebooks")]
MAX_CELL_LINES = 15  # non-blank lines of a code cell, as ../shared/tools/house.py counts them


def _code_cells(chapter):
    nb = jupytext.read(next(p for p in list_notebooks(BOOK / "notebooks") if p.stem == chapter))
    return nb, [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_shape(chapter):
    """A parameters cell, then one imports cell, short cells that call nsdlib, and "What this shows"."""
    nb, cells = _code_cells(chapter)
    assert "parameters" in cells[0].metadata.get("tags", []), f"{chapter}: the first code cell is the parameters"
    with_imports = [i for i, c in enumerate(cells)
                    if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(ast.parse(c.source)))]
    assert with_imports == [1], f"{chapter}: imports belong in the cell after the parameters; found {with_imports}"
    long = {i: n for i, c in enumerate(cells) if (n := sum(1 for line in c.source.splitlines() if line.strip()))
            > MAX_CELL_LINES}
    assert not long, f"{chapter}: code cells over {MAX_CELL_LINES} lines (cell: lines): {long}"
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if re.match(r"#+ ", line)]
    assert headings[-1] == "## What this shows", f"{chapter}: the last section is {headings[-1]!r}"


#: Seconds a quick chapter's cell may run: the slowest takes under a minute on 2 loaded cores.
QUICK_CELL_TIMEOUT = 600


@pytest.fixture(scope="session")
def quick_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    cfg = RunConfig(workdir=root / "work", quick=True, device="cpu")
    result = run_chain(cfg, cell_timeout=QUICK_CELL_TIMEOUT, timeout_retries=1, book_root=BOOK,
                       runs_root=root / "runs")
    return cfg, root / "runs", result


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_quick(quick_chain, chapter):
    cfg, runs, result = quick_chain
    status = {r.name: r for r in result.results}
    if chapter not in status:
        pytest.fail(f"{chapter} was not reached: the chain stopped at {result.failed.name}: {result.failed.error}")
    r = status[chapter]
    assert r.status == "done", f"{chapter} failed: {r.error} (see {r.output})"
    nb = nbformat.read(r.output, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "quick = True" in injected[0].source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{chapter} must have exactly one cell tagged parameters"


@pytest.mark.slow
def test_rerun_of_a_chapter_recomputes_nothing(quick_chain):
    cfg, runs, result = quick_chain
    assert result.ok, result.summary()
    store = Store.for_config(cfg)
    before = len(store.events())
    again = run_chain(cfg, "01", book_root=BOOK, runs_root=runs, resume=False)
    assert again.ok, again.summary()
    new = store.events()[before:]
    assert new, "chapter 01 asked the store for nothing"
    assert {e["event"] for e in new} == {"reused"}, new
