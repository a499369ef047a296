"""nsdlib.teach: every exercise's solution run on a small mini-NSD world whose betas are the
simulation's truth (``_mini_worlds.truth_world``), each answer judged right by its check, and
each exercise's typical mistake judged wrong; the student copy holds no solution; every
chapter has its opening block and its exercises, each solved in the book by its own functions."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from _mini_worlds import truth_world

from nsdlib import RunConfig, teach
from nsdlib.cli import main
from nsdlib.pipeline import context

BOOK = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((BOOK / "notebooks").glob("[0-9][0-9]_*.md"))


@pytest.fixture(scope="module")
def cfg(request, tmp_path_factory):
    root = truth_world(request, tmp_path_factory)
    yield RunConfig(quick=True, workdir=str(tmp_path_factory.mktemp("work")), nsd_root=str(root), device="cpu")
    context.forget()


@pytest.fixture(scope="module")
def answers(cfg):
    return {name: e.solve(cfg) for name, e in teach.EXERCISES.items()}


@pytest.mark.parametrize("name", list(teach.EXERCISES))
def test_solution_is_right_and_the_mistake_wrong(cfg, answers, name):
    e = teach.exercise(name)
    line = e.check(answers[name], cfg)
    assert line.startswith(teach.exercises.RIGHT), f"{name}: the solution's answer {answers[name]!r} was judged: {line}"
    assert "\n" not in line, f"{name}: feedback must be one line; found {line!r}"
    wrong = e.check(e.mistake(answers[name]), cfg)
    assert wrong.startswith(teach.exercises.WRONG), f"{name}: the mistake {e.mistake(answers[name])!r} passed: {wrong}"
    assert teach.exercises.WRONG in e.check(None, cfg), f"{name}: no answer must be told it is missing"


def test_answers_hold_on_the_truth(cfg, answers):
    """Claims the exercises teach, against the world's truth (betas = true amplitudes here)."""
    t = teach.exercises._truth(cfg)
    assert answers["trials_per_session"] * 2 == len(t.trial_session)  # the small world has two sessions
    assert answers["repeat_gain"]["three"] > answers["repeat_gain"]["one"]
    assert answers["position_by_population"]["early"] > answers["position_by_population"]["higher"]
    assert answers["image_feature_share"]["early"] > answers["image_feature_share"]["higher"]
    sizes = list(answers["rf_size_by_area"].values())
    assert sizes == sorted(sizes), f"receptive fields should grow from V1 to hV4; found {answers['rf_size_by_area']}"
    levels = list(answers["noise_pixcorr"].values())
    assert levels == sorted(levels, reverse=True), f"PixCorr must fall with noise; found {answers['noise_pixcorr']}"
    assert answers["glm_loss"] > 0.9  # truth betas, up to their int16 rounding
    assert 0 < answers["truth_ceiling"] < 1


def test_checks_speak_plainly_off_mini_nsd(cfg):
    nsd = cfg.replace(dataset="nsd")
    assert "mini-NSD's truth" in teach.check_hrf_within_one(0.5, nsd)


def test_grade_lists_every_exercise(cfg, answers):
    table = teach.grade({"trials_per_session": answers["trials_per_session"], "steps_run": 50}, cfg)
    assert len(table) == len(teach.EXERCISES) >= 25
    right = dict(zip(table["exercise"], table["right"]))
    assert right["trials_per_session"] and not right["steps_run"] and not right["glm_loss"]
    with pytest.raises(KeyError, match="no exercise named nope"):
        teach.grade({"nope": 1}, cfg)


# ------------------------------------------------------------------- the chapters
def _blocks(path: Path) -> list[tuple[str, str]]:
    return teach.solution_names(path.read_text())


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_opens_with_objectives_and_has_exercises(path):
    text = path.read_text()
    head = text.split("```{code-cell}", 1)[0]
    for what in ("You will be able to", "Assumes", "Time"):
        assert what in head, f"{path.stem}: the opening block (before the first code cell) lacks {what!r}"
    blocks = _blocks(path)
    assert 2 <= len(blocks) <= 4, f"{path.stem}: 2 to 4 exercises expected; found {len(blocks)}"
    exercise_labels = re.findall(r"^:::\{exercise\}\n:label: (\S+)", text, re.MULTILINE)
    assert [b[0] for b in blocks] == exercise_labels, f"{path.stem}: each exercise needs its solution, in order"
    for label, name in blocks:
        assert teach.exercise(name).chapter == path.stem, f"{label}: {name} belongs to {teach.exercise(name).chapter}"
        assert f"teach.{name}(cfg)" in text, f"{label}: the solution must compute the answer with teach.{name}(cfg)"


def test_every_exercise_is_in_the_book():
    used = [name for p in CHAPTERS for _, name in _blocks(p)]
    assert sorted(used) == sorted(teach.EXERCISES), "each exercise appears in exactly one chapter"


def test_student_copy_has_no_solution(tmp_path):
    written = teach.student_copy(BOOK, tmp_path / "class")
    assert len(written) == len(CHAPTERS)
    for path in written:
        text = path.read_text()
        assert "solution-start" not in text and "solution-end" not in text, path.name
        for name in teach.EXERCISES:
            assert f"teach.{name}(" not in text, f"{path.name} still calls the solution teach.{name}"
        nb = path.with_suffix(".ipynb").read_text()
        assert "solution-start" not in nb and all(f"teach.{n}(" not in nb for n in teach.EXERCISES)
        assert text.count("answer = None") == len(_blocks(BOOK / "notebooks" / path.name))
    assert (tmp_path / "class" / "_toc.yml").is_file() and (tmp_path / "class" / "book").is_dir()
    with pytest.raises(FileExistsError, match="not empty"):
        teach.student_copy(BOOK, tmp_path / "class")


def test_strip_solutions_needs_one_check_per_solution():
    bad = ":::{solution-start} ex-x\n:class: dropdown\n:::\nno check here\n:::{solution-end}\n:::\n"
    with pytest.raises(ValueError, match="ex-x: one teach.check_<name>"):
        teach.strip_solutions(bad)
    good = bad.replace("no check here", "print(teach.check_steps_run(teach.steps_run(cfg), cfg))")
    assert teach.strip_solutions(good).count("answer = None") == 1


def test_verdict_compares_dicts_key_by_key():
    assert teach.exercises.verdict({"a": 1.0}, {"a": 1.004}, 0.01, "ok").startswith("✓")
    assert teach.exercises.verdict({"b": 1.0}, {"a": 1.0}, 0.01, "ok").startswith("✗")
    assert teach.exercises.verdict(float("nan"), 1.0, 0.01, "ok").startswith("✗")


def _executed(tmp_path, outputs: dict) -> Path:
    """A notebook with one answer cell per exercise name, printing ``outputs[name]``."""
    nb = nbformat.v4.new_notebook()
    for name, line in outputs.items():
        c = nbformat.v4.new_code_cell(f"answer = 1\nprint(teach.check_{name}(answer, cfg))")
        c.outputs = [] if line is None else [nbformat.v4.new_output("stream", name="stdout", text=f"1\n{line}\n")]
        nb.cells.append(c)
    path = tmp_path / "01_x.ipynb"
    nbformat.write(nb, path)
    return path


def test_read_feedback_and_the_grade_command(tmp_path, capsys):
    path = _executed(tmp_path, {"steps_run": "✓ 37 steps", "noise_sd": "✗ not yet: expected 31", "best_image": None})
    table = teach.read_feedback(path)
    assert table["exercise"].tolist() == ["steps_run", "noise_sd", "best_image"]
    assert table["right"].tolist() == [True, False, False]
    assert "not run" in table["feedback"].iloc[2]
    assert main(["teach", "grade", str(path)]) == 1
    assert "01_x.ipynb  steps_run: ✓ 37 steps" in capsys.readouterr().out
    ok = _executed(tmp_path, {"steps_run": "✓ 37 steps"})
    assert main(["teach", "grade", str(ok)]) == 0


def test_student_copy_command(tmp_path, capsys):
    assert main(["teach", "student-copy", str(tmp_path / "out"), "--book-root", str(BOOK)]) == 0
    assert f"student copy of {len(CHAPTERS)} chapters" in capsys.readouterr().out
    assert (tmp_path / "out" / "notebooks" / "01_glmsingle_betas.ipynb").is_file()
