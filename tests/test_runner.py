"""The papermill chain: injection, resume, cache reuse and the failure report."""

import json
import os

import nbformat
import pytest
from _notebooks import cell, chapter

from nsdlib import runner
from nsdlib.cli import main
from nsdlib.config import RunConfig
from nsdlib.runner import RUN_HOLDER, RunLockedError, RunnerError, run_chain, run_lock, select_notebooks
from nsdlib.store import Store

SETUP = "from nsdlib import Store"
STORE = cell("store = Store.for_config(cfg)")

COMPUTE = """
```{code-cell} ipython3
import numpy as np
out = store.arrays("squares", {"seed": cfg.seed}, lambda: {"x": np.arange(5) ** 2 + cfg.seed})
print(int(out["x"].sum()))
```
"""

FAIL = """
```{code-cell} ipython3
raise ValueError("boom: the simulated step failed")
```
"""


@pytest.fixture
def chapters(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "01_compute.md").write_text(chapter("Compute", SETUP, STORE) + COMPUTE)
    (nb / "02_fail.md").write_text(chapter("Fail", SETUP, STORE) + FAIL)
    (nb / "03_after.md").write_text(chapter("After", SETUP, STORE) + COMPUTE)
    return nb


def test_selection(chapters):
    assert [p.stem for p in select_notebooks("1,3", chapters)] == ["01_compute", "03_after"]
    assert [p.stem for p in select_notebooks("01-02", chapters)] == ["01_compute", "02_fail"]
    with pytest.raises(RunnerError, match="no notebook numbered 07"):
        select_notebooks("07", chapters)
    with pytest.raises(RunnerError, match="takes numbers like"):
        select_notebooks("first", chapters)


@pytest.mark.slow
def test_injection_resume_and_reuse(chapters, tmp_path):
    cfg = RunConfig(workdir=tmp_path / "w", subject=2, seed=4)
    runs = tmp_path / "runs"
    first = run_chain(cfg, "01", notebooks_dir=chapters, runs_root=runs)
    assert first.ok and [r.status for r in first.results] == ["done"]
    out = runs / "mini" / "subj02" / "01_compute.ipynb"
    assert not list(out.parent.glob(".*.ipynb")), "the working copies are removed"
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "subject = 2" in injected[0].source and "seed = 4" in injected[0].source
    assert "50" in "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))  # 0+1+4+9+16 + 5*4

    # an identical rerun skips the completed notebook
    again = run_chain(cfg, "01", notebooks_dir=chapters, runs_root=runs)
    assert [r.status for r in again.results] == ["skipped"]
    # forced re-execution reuses the artifact: nothing is recomputed
    store = Store.for_config(cfg)
    mtime = store.path("squares", {"seed": 4}).stat().st_mtime_ns
    forced = run_chain(cfg, "01", notebooks_dir=chapters, runs_root=runs, resume=False)
    assert [r.status for r in forced.results] == ["done"]
    assert [e["event"] for e in store.events()] == ["computed", "reused"]
    assert store.path("squares", {"seed": 4}).stat().st_mtime_ns == mtime
    # a changed parameter runs again and computes a new artifact
    changed = run_chain(cfg.replace(seed=5), "01", notebooks_dir=chapters, runs_root=runs)
    assert [r.status for r in changed.results] == ["done"]
    assert store.events()[-1]["event"] == "computed"
    marker = json.loads((runs / "mini" / "subj02" / "01_compute.done.json").read_text())
    assert marker["params"]["seed"] == 5


@pytest.mark.slow
def test_failure_is_reported_and_stops_the_chain(chapters, tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = ["run", "--dataset", "mini", "--subject", "1", "--workdir", str(tmp_path / "w"),
            "--notebooks-dir", str(chapters), "--runs", str(runs)]
    assert main(argv) == 1
    report = capsys.readouterr().out
    assert "01_compute: done" in report
    assert "FAILED at 02_fail: ValueError: boom: the simulated step failed" in report
    assert "03_after" not in report  # the chain stopped
    failed = runs / "mini" / "subj01" / "02_fail.failed.ipynb"
    assert failed.exists() and not (runs / "mini" / "subj01" / "02_fail.ipynb").exists()
    hidden = sorted(p.name for p in (runs / "mini" / "subj01").glob(".*.ipynb"))
    assert hidden == [], f"a finished chain (done, then failed) leaves no working copy behind: {hidden}"


def test_cli_reports_bad_parameters(capsys, tmp_path):
    assert main(["run", "--dataset", "mini", "--subject", "3", "--workdir", str(tmp_path)]) == 2
    assert "subject must be 1, 2, 5 or 7; found '3'" in capsys.readouterr().err
    assert main(["run", "--param", "n_layers", "--workdir", str(tmp_path)]) == 2
    assert "--param takes key=value" in capsys.readouterr().err
    assert main(["run", "--timeout-retries", "-1", "--workdir", str(tmp_path), "--notebooks-dir", str(tmp_path),
                 "--runs", str(tmp_path / "runs")]) == 2
    assert "--timeout-retries at least 0; found cell_timeout=3600, timeout_retries=-1" in capsys.readouterr().err


def test_a_chain_needs_a_book_root_or_both_folders(tmp_path):
    cfg = RunConfig(workdir=tmp_path / "w")
    with pytest.raises(RunnerError, match="a chain needs book_root"):
        run_chain(cfg, "01")
    with pytest.raises(RunnerError, match="a chain needs book_root"):
        run_chain(cfg, "01", notebooks_dir=tmp_path)


@pytest.mark.slow
def test_installed_layout_runs_the_book_of_the_working_directory(chapters, tmp_path, monkeypatch, capsys):
    # the book (tmp_path: notebooks/ and _toc.yml) lies away from nsdlib's sources; run from inside it
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    monkeypatch.chdir(chapters)
    assert main(["run", "--dataset", "mini", "--subject", "1", "--workdir", str(tmp_path / "w"),
                 "--notebooks", "01"]) == 0
    assert "01_compute: done" in capsys.readouterr().out
    assert (tmp_path / "runs" / "mini" / "subj01" / "01_compute.ipynb").exists()


def test_a_second_chain_on_a_locked_run_directory_refuses_naming_the_holder(chapters, tmp_path, capsys):
    cfg = RunConfig(workdir=tmp_path / "w", subject=1)
    out_dir = tmp_path / "runs" / "mini" / "subj01"
    out_dir.mkdir(parents=True)
    (out_dir / ".01_compute.running-999999.ipynb").write_text("{}")  # left by a run killed earlier
    with run_lock(out_dir):
        assert not list(out_dir.glob(".*.running*.ipynb"))  # no live run can own it: the lock was free
        with pytest.raises(RunLockedError, match=f"in use by process {os.getpid()} on "):
            run_chain(cfg, "01", notebooks_dir=chapters, runs_root=tmp_path / "runs")
        argv = ["run", "--workdir", str(tmp_path / "w"), "--notebooks", "01", "--notebooks-dir", str(chapters),
                "--runs", str(tmp_path / "runs")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is in use by process" in err[0] and "--wait" in err[0], err
    with run_lock(out_dir):  # released: free again
        pass
    assert not (out_dir / RUN_HOLDER).exists()


def test_the_book_copy_of_a_chapter_is_prepared_and_the_run_copy_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"needs": "CPU"})
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"),
                nbformat.v4.new_code_cell("seed = 0  # the seed", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("# Parameters\nseed = 3\n", metadata={"tags": ["injected-parameters"]})]
    executed = run / "01_x.ipynb"
    nbformat.write(nb, executed)
    (run / "01_x.done.json").write_text(json.dumps({"seconds": 190.2}))
    counts = runner._stage_chapter(executed, tmp_path / "book.ipynb")
    assert counts == {"parameters": 1, "progress": 0, "widgets": 0}
    book = nbformat.read(tmp_path / "book.ipynb", as_version=4)
    assert [c.cell_type for c in book.cells] == ["markdown", "markdown", "code"]
    assert "**Run time:** 3 min 10 s in the run shown here" in book.cells[1].source
    assert "**Needs:** CPU" in book.cells[1].source
    assert book.cells[2].source.splitlines()[1:] == ["seed = 3  # the seed"]
    assert len(nbformat.read(executed, as_version=4).cells) == 3, "the run's own notebook is left as it was"


def test_launch_buttons_show_only_with_their_addresses(monkeypatch):
    monkeypatch.delenv("NSDLIB_REPOSITORY_URL", raising=False)
    monkeypatch.delenv("NSDLIB_HUB_URL", raising=False)
    off = runner._launch_settings({"launch_buttons": {"jupyterhub_url": "https://hub"}, "html": {}})
    assert off["html"]["use_repository_button"] is False and off["launch_buttons"]["jupyterhub_url"] == ""
    monkeypatch.setenv("NSDLIB_REPOSITORY_URL", "https://github.com/o/r")
    repo_only = runner._launch_settings({})
    assert repo_only["html"]["use_repository_button"] is True and repo_only["launch_buttons"]["jupyterhub_url"] == ""
    monkeypatch.setenv("NSDLIB_HUB_URL", "https://hub.example.org")
    both = runner._launch_settings({"repository": {"url": ""}})
    assert both["repository"]["url"] == "https://github.com/o/r"
    assert both["launch_buttons"]["jupyterhub_url"] == "https://hub.example.org"


def test_a_chapter_that_hangs_once_is_run_once_more_and_the_chain_goes_on(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    marker = tmp_path / "hung-once"
    hang_once = cell(f"import pathlib, time\nm = pathlib.Path({str(marker)!r})\n"
                     "if not m.exists():\n    m.touch()\n    time.sleep(300)")
    (nb / "01_compute.md").write_text(chapter("Compute", SETUP, STORE) + COMPUTE)
    (nb / "02_hangs.md").write_text(chapter("Hangs", SETUP, STORE) + hang_once)
    (nb / "03_after.md").write_text(chapter("After", SETUP, STORE) + COMPUTE)
    cfg = RunConfig(workdir=tmp_path / "work")
    result = run_chain(cfg, cell_timeout=20, timeout_retries=1, notebooks_dir=nb, runs_root=tmp_path / "runs")
    assert marker.exists() and result.ok
    assert [(r.name, r.status, r.attempts) for r in result.results] == [
        ("01_compute", "done", 1), ("02_hangs", "done", 2), ("03_after", "done", 1)]
    assert "02_hangs: done" in result.summary() and "after 2 attempts" in result.summary()
    lost = {r.name: r.lost_seconds for r in result.results}
    assert lost["02_hangs"] >= 20 and lost["01_compute"] == lost["03_after"] == 0, lost
    assert f"({lost['02_hangs']:.0f} s lost to timed-out cells)" in result.summary()


def test_without_retries_a_hung_chapter_fails_as_timed_out(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "01_hangs.md").write_text(chapter("Hangs", SETUP, STORE) + cell("import time\ntime.sleep(300)"))
    result = run_chain(RunConfig(workdir=tmp_path / "work"), cell_timeout=10, notebooks_dir=nb,
                       runs_root=tmp_path / "runs")
    assert not result.ok and result.failed.timed_out and result.failed.attempts == 1
    assert "CellTimeoutError" in result.failed.error
    with pytest.raises(RunnerError, match=r"--cell-timeout must be at least 1 \(seconds\).*found cell_timeout=0"):
        run_chain(RunConfig(workdir=tmp_path / "work"), cell_timeout=0, notebooks_dir=nb, runs_root=tmp_path / "runs")


def test_a_chapter_that_fails_is_not_run_again(chapters, tmp_path):
    result = run_chain(RunConfig(workdir=tmp_path / "work"), cell_timeout=60, timeout_retries=1,
                       notebooks_dir=chapters, runs_root=tmp_path / "runs")
    assert [(r.name, r.status, r.attempts) for r in result.results] == [("01_compute", "done", 1),
                                                                        ("02_fail", "failed", 1)]
    assert not result.failed.timed_out
