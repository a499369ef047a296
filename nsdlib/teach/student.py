"""The student copy of the book: every chapter with its solutions replaced by an answer cell.

A solution in a chapter is a ``sphinx-exercise`` gated block::

    :::{solution-start} ex-01-trials
    :class: dropdown
    :::
    (code cells calling nsdlib.teach.<name> and printing nsdlib.teach.check_<name>)
    :::{solution-end}
    :::

:func:`strip_solutions` replaces each such block with one code cell, ``answer = None`` and the
exercise's check, which the student fills in; :func:`student_copy` writes the book's sources
that way (MyST chapters, and the same as ``.ipynb`` notebooks) into a new folder.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import jupytext
import nbformat
import pandas as pd

__all__ = ["SOLUTION", "read_feedback", "solution_names", "strip_solutions", "student_copy"]

#: One gated solution block (the label, then its body up to the closing fence of solution-end).
SOLUTION = re.compile(r"^:::\{solution-start\} *(?P<label>\S+)\n(?P<body>.*?)^:::\{solution-end\}\n:::\n",
                      re.MULTILINE | re.DOTALL)
_CHECK = re.compile(r"teach\.check_(\w+)\(")
_BOOK_FILES = ("_config.yml", "_toc.yml")
_BOOK_DIRS = ("book",)


def solution_names(text: str) -> list[tuple[str, str]]:
    """(label, exercise name) of each solution block of a chapter's MyST text, in order."""
    out = []
    for m in SOLUTION.finditer(text):
        found = _CHECK.findall(m.group("body"))
        if len(found) != 1:
            raise ValueError(f"solution {m.group('label')}: one teach.check_<name>(...) call expected; "
                             f"found {found or 'none'}")
        out.append((m.group("label"), found[0]))
    return out


def _answer_cell(label: str, name: str) -> str:
    return (f"```{{code-cell}} ipython3\nanswer = None  # your answer to the exercise above ({label})\n"
            f"print(teach.check_{name}(answer, cfg))\n```\n")


def strip_solutions(text: str) -> str:
    """A chapter's MyST text with every solution block replaced by an answer cell and its check."""
    names = dict(solution_names(text))
    return SOLUTION.sub(lambda m: _answer_cell(m.group("label"), names[m.group("label")]), text)


def student_copy(book_root, out) -> list[Path]:
    """Write the book's sources without solutions into ``out`` (a new or empty folder).

    The chapters (``notebooks/*.md``, solutions replaced by answer cells, and each also as a
    ``.ipynb`` notebook for Jupyter), the prose pages (``book/``), ``_config.yml`` and
    ``_toc.yml``: a book students can open, run and build like the lecturer's.

    Returns
    -------
    list of Path
        The chapters written (MyST files).

    Raises
    ------
    FileExistsError
        ``out`` exists and is not empty (a copy is never written over other files).
    """
    root, out = Path(book_root), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give the student copy a new folder")
    chapters = sorted((root / "notebooks").glob("[0-9][0-9]_*.md"))
    if not chapters:
        raise FileNotFoundError(f"no chapters (notebooks/NN_*.md) under {root}")
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for name in _BOOK_FILES:
        shutil.copy2(root / name, out / name)
    for name in _BOOK_DIRS:
        shutil.copytree(root / name, out / name, dirs_exist_ok=True)
    written = []
    for path in chapters:
        target = out / "notebooks" / path.name
        target.write_text(strip_solutions(path.read_text()))
        jupytext.write(jupytext.read(target), target.with_suffix(".ipynb"))
        written.append(target)
    return written


def read_feedback(notebook) -> pd.DataFrame:
    """The check lines an executed chapter printed: one row per answer cell (``teach.check_<name>``).

    Parameters
    ----------
    notebook : path
        An executed ``.ipynb`` (a student's copy of a chapter, run with Jupyter or ``nsdlib run``).

    Returns
    -------
    pandas.DataFrame
        ``exercise``, ``right`` (bool; False where the cell printed no check line) and
        ``feedback`` (the line, or what went wrong).
    """
    nb = nbformat.read(Path(notebook), as_version=4)
    rows = []
    for c in nb.cells:
        found = _CHECK.findall(c.source) if c.cell_type == "code" else []
        if len(found) != 1:
            continue
        text = "".join(o.get("text", "") for o in c.get("outputs", []) if o.get("output_type") == "stream")
        errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        lines = [ln for ln in text.splitlines() if ln.startswith(("✓", "✗"))]
        line = lines[-1] if lines else (errors[0] if errors else "✗ no check line: the cell was not run")
        rows.append({"exercise": found[0], "right": line.startswith("✓"), "feedback": line})
    return pd.DataFrame(rows, columns=["exercise", "right", "feedback"])
