"""Teaching with the book: its exercises, their checks, and the student copy.

- :mod:`~nsdlib.teach.exercises`: one function per exercise computing its answer on a run
  (``teach.hrf_within_one(cfg)``), and ``teach.check_<exercise>(answer, cfg)``, one line of
  feedback against mini-NSD's truth (``"✓ ..."`` or ``"✗ ..."``); :data:`EXERCISES` lists
  them in book order; :func:`grade` checks a student's answers at once.
- :mod:`~nsdlib.teach.student`: the student copy (``nsdlib teach student-copy OUT``): the
  chapters with every solution replaced by an answer cell and its check, and
  :func:`read_feedback`, the check lines of a student's executed chapter (``nsdlib teach grade``).
"""

from __future__ import annotations

import pandas as pd

from ..config import RunConfig
from . import exercises
from .exercises import *  # noqa: F401,F403 (each exercise's solution and check: teach.<name>, teach.check_<name>)
from .exercises import EXERCISES, RIGHT, Exercise, exercise, verdict
from .student import read_feedback, solution_names, strip_solutions, student_copy

__all__ = ["EXERCISES", "Exercise", "exercise", "exercises", "grade", "verdict", "read_feedback", "solution_names",
           "strip_solutions", "student_copy",
           *[n for e in EXERCISES.values() for n in (e.name, f"check_{e.name}")]]


def grade(answers: dict, cfg: RunConfig) -> pd.DataFrame:
    """Check a student's answers: one row per exercise of the book.

    Parameters
    ----------
    answers : dict
        Exercise name -> the student's answer (missing ones are graded "no answer").
    cfg : RunConfig
        The run the answers were computed on (its dataset must be "mini": the checks read the truth).

    Returns
    -------
    pandas.DataFrame
        ``exercise``, ``chapter``, ``right`` (bool) and ``feedback`` (the check's line).
    """
    unknown = sorted(set(answers) - set(EXERCISES))
    if unknown:
        raise KeyError(f"no exercise named {', '.join(unknown)}; the book's exercises: {', '.join(EXERCISES)}")
    rows = []
    for e in EXERCISES.values():
        line = e.check(answers.get(e.name), cfg)
        rows.append({"exercise": e.name, "chapter": e.chapter, "right": line.startswith(RIGHT), "feedback": line})
    return pd.DataFrame(rows)


