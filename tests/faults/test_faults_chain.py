"""Faults around whole chains: kill -9 and resume, two runs at once, Ctrl-C, a damaged executed
notebook, a batch with one damaged subject. Small chapters calling the real steps, small worlds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _notebooks import cell, chapter
from _table import record

from nsdlib.batch import run_batch
from nsdlib.config import RunConfig
from nsdlib.nsd import NSDLayout
from nsdlib.pipeline import data
from nsdlib.runner import run_chain

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: Trials of the two-runs-at-once test (the issue asks for 10: NSDLIB_FAULT_TRIALS=10).
TRIALS = int(os.environ.get("NSDLIB_FAULT_TRIALS", "2"))

SETUP = "from nsdlib.pipeline import betas, data"
GLM = cell("betas.write_betas(cfg, progress=False)")
DATA = cell("d = data.subject_data(cfg, progress=False)\nimport time\ntime.sleep(1)\nprint(d.n_voxels)")
SLEEP = cell("import time\ntime.sleep(float(__import__('os').environ.get('NSDLIB_FAULT_SLEEP', '2')))")
TRUTH = cell("from nsdlib import mini\nprint(mini.truth(cfg.nsd_root, cfg.subject).amplitudes.shape)")


def _chapters(folder: Path, **named: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, cells in named.items():
        (folder / f"{name}.md").write_text(chapter(name, SETUP, *cells))
    return folder


def _argv(w: Path, nb: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nsdlib", "run", "--workdir", str(w), "--param", "quick=true",
            "--notebooks-dir", str(nb), "--runs", str(runs), *extra]


def _start(argv, **kw) -> subprocess.Popen:
    return subprocess.Popen(argv, env={**ENV, **kw}, cwd=REPO, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(p: subprocess.Popen, ready, what: str, timeout: float = 600) -> None:
    """SIGKILL the run's whole process group (runner and kernel) as soon as ``ready()``."""
    t0 = time.monotonic()
    while not ready():
        if p.poll() is not None:
            pytest.fail(f"the run ended before the kill point ({what}): {p.communicate()}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"no kill point ({what}) in {timeout} s")
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate()


def _results(w: Path) -> dict[str, np.ndarray]:
    """Every array the chain produced: the betas files and the prepared subject data."""
    cfg = RunConfig(workdir=w, quick=True)
    out = {f"betas{s}": np.asarray(nib.load(Path(cfg.nsd_root) / NSDLayout.betas_file(1, s)).dataobj)
           for s in (1, 2)}
    out.update(data.subject_data(cfg, progress=False).to_arrays())
    info = json.loads(str(out.pop("info")))
    info.pop("root")  # the dataset's folder: each run has its own
    out["info"] = np.array(json.dumps(info, sort_keys=True))
    return out


@pytest.mark.slow
@pytest.mark.fault("kill-9")
def test_kill_9_at_three_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    nb = _chapters(tmp_path / "nb", **{"01_glm": [GLM], "02_data": [DATA]})
    ref = subprocess.run(_argv(tmp_path / "ref", nb, tmp_path / "ref-runs"), env=ENV, cwd=REPO,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    w, runs = tmp_path / "w", tmp_path / "runs"
    tmp = tmp_path / "tmp"  # the runs' temporary folder: a killed run must not leave its working copies there
    tmp.mkdir()
    env = {**ENV, "TMPDIR": str(tmp)}
    points = {  # kill points, in the order the run reaches them
        "mini-NSD being generated": lambda: any(w.glob(".mini-nsd-small.tmp-*")),
        "the GLM's first session stored": lambda: any((w / "mini" / "subj01" / "glm_session").glob("*.npz")),
        "chapter 02 running": lambda: any((runs / "mini" / "subj01").glob(".02_data.running-*")),
    }
    for what, ready in points.items():
        _kill_when(_start(_argv(w, nb, runs), TMPDIR=str(tmp)), ready, what)
    resumed = subprocess.run(_argv(w, nb, runs), env=env, cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    expected, got = _results(tmp_path / "ref"), _results(w)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    left = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".running" in p.name]
    assert not left, f"temporary files left: {left}"
    strays = [p.name for p in tmp.iterdir() if p.name.startswith("nsdlib")]
    assert not strays, f"the killed runs left working copies in the temporary folder: {strays}"
    record("kill-9", f"{len(expected)} arrays equal")


@pytest.mark.slow
@pytest.mark.fault("concurrent-runs")
def test_two_runs_at_once_on_one_run_directory(tmp_path):
    nb = _chapters(tmp_path / "nb", **{"01_sleep": [SLEEP]})
    outcomes = []
    for trial in range(TRIALS):
        runs = tmp_path / f"runs{trial}"
        procs = [_start(_argv(tmp_path / "w", nb, runs, "--no-resume")) for _ in range(2)]
        ends = [(p.wait(600), *p.communicate()) for p in procs]
        codes = sorted(rc for rc, _, _ in ends)
        assert codes in ([0, 0], [0, 2]), ends
        for rc, _, err in ends:
            if rc == 2:
                lines = [ln for ln in err.splitlines() if "IPKernelApp" not in ln]
                assert len(lines) == 1 and "is in use by process" in lines[0], err
        assert json.loads((runs / "mini" / "subj01" / "01_sleep.done.json").read_text())["notebook_sha256"]
        assert not list((runs / "mini" / "subj01").glob(".*running*"))
        outcomes.append(codes)
    record("concurrent-runs", f"{TRIALS} trials: {outcomes}")


@pytest.mark.slow
@pytest.mark.fault("ctrl-c")
def test_ctrl_c_exits_130_with_one_line_and_the_same_command_resumes(tmp_path):
    nb = _chapters(tmp_path / "nb", **{"01_sleep": [SLEEP]})
    runs = tmp_path / "runs"
    p = _start(_argv(tmp_path / "w", nb, runs), NSDLIB_FAULT_SLEEP="20")
    t0 = time.monotonic()
    while not any((runs / "mini" / "subj01").glob(".01_sleep.running-*")) and time.monotonic() - t0 < 600:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    lines = [ln for ln in err.splitlines() if "IPKernelApp" not in ln]
    assert p.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], (p.returncode, err)
    again = subprocess.run(_argv(tmp_path / "w", nb, runs), env=ENV, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0 and "01_sleep: done" in again.stdout, again.stdout + again.stderr
    record("ctrl-c", lines[0])


@pytest.mark.slow
@pytest.mark.fault("notebook")
def test_a_damaged_executed_notebook_is_run_again(tmp_path):
    nb = _chapters(tmp_path / "nb", **{"01_sleep": [SLEEP]})
    cfg, runs = RunConfig(workdir=tmp_path / "w", quick=True), tmp_path / "runs"
    assert [r.status for r in run_chain(cfg, notebooks_dir=nb, runs_root=runs).results] == ["done"]
    assert [r.status for r in run_chain(cfg, notebooks_dir=nb, runs_root=runs).results] == ["skipped"]
    out = runs / "mini" / "subj01" / "01_sleep.ipynb"
    out.write_text(out.read_text()[:100])  # truncated: invalid JSON
    assert [r.status for r in run_chain(cfg, notebooks_dir=nb, runs_root=runs).results] == ["done"]
    json.loads(out.read_text())  # whole again
    record("notebook")


@pytest.mark.slow
@pytest.mark.fault("batch-bad-subject")
def test_a_batch_with_one_damaged_subject_finishes_the_other(world, tmp_path):
    nb = _chapters(tmp_path / "nb", **{"01_truth": [TRUTH]})
    truth2 = world / "ground_truth" / "subj02" / "truth.npz"
    truth2.write_bytes(truth2.read_bytes()[:1000])
    result = run_batch({"dataset": "mini", "workdir": str(tmp_path / "w"), "nsd_root": str(world)}, [1, 2],
                       notebooks_dir=nb, runs_root=tmp_path / "runs", jobs=1, gpus_per_job=0, progress=False)
    by = {o.subject: o for o in result.outcomes}
    assert by[1].status == "ok" and by[2].status == "failed", result.summary()
    assert f"{truth2} is damaged" in (by[2].error or ""), by[2].error
    assert result.exit_code() == 1
    record("batch-bad-subject", by[2].error)
