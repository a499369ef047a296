"""Batch runs over subjects: isolation, resume, the Slurm path (through submitit), GPU pinning,
and what a bad results file does to a batch (the report itself: tests/test_report_cross_subject.py).
The chains are tiny MyST notebooks written here, not the chapters."""

import json
import time

import pandas as pd
import pytest
from _notebooks import chapter
from _results_files import variant, write_subject_results

from nsdlib.batch import batch_status, gpu_slots, run_batch
from nsdlib.cli import main
from nsdlib.config import ConfigError
from nsdlib.pipeline.results import ResultsFormatError
from nsdlib.report.cross_subject import report_rows
from nsdlib.runner import RunnerError

SETUP = "import json, os\nfrom pathlib import Path"

PREPARE = """
```{code-cell} ipython3
print("prepared subject", cfg.subject, "gpus", os.environ.get("CUDA_VISIBLE_DEVICES"))
```
"""

# metrics that depend on the subject in a known way: SSIM = subject / 10 (GRU), + 0.05 for ridge
RESULTS = """
```{code-cell} ipython3
if (Path(cfg.workdir) / f"fail_subj{cfg.subject:02d}").exists():
    raise RuntimeError(f"injected failure for subject {cfg.subject}")
# the layout of nsdlib.pipeline.results.write_results
rows = [{"dataset": cfg.dataset, "models": cfg.models, "subject": cfg.subject, "regressor": reg,
         "n_layers": cfg.n_layers, "noise": "none", "n_images": 10, "size": 128, "ssim_mode": "columns",
         "ssim": cfg.subject / 10 + extra, "pixcorr": 0.2, "alexnet2": 0.8, "alexnet5": 0.9, "inceptionv3": 0.7,
         "clip": 0.75, "efficientnet": 0.85, "swav": 0.5, "ssim_2d": None, "latent_mse": None,
         "latent_mae": None, "seed": cfg.seed, "quick": cfg.quick}
        for reg, extra in (("gru", 0.0), ("ridge", 0.05))]
cfg.run_dir.mkdir(parents=True, exist_ok=True)
doc = {"schema": 1, "dataset": cfg.dataset, "subject": cfg.subject, "ssim_mode": "columns", "rows": rows}
(cfg.run_dir / "results.json").write_text(json.dumps(doc))
```
"""


@pytest.fixture
def chapters(tmp_path):
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "01_prepare.md").write_text(chapter("Prepare", SETUP) + PREPARE)
    (nb / "02_results.md").write_text(chapter("Results", SETUP) + RESULTS)
    return nb


def _statuses(outcome):
    return [n["status"] for n in outcome.notebooks]


# ------------------------------------------------------------------ GPU assignment


def test_gpu_slots_one_subject_per_gpu():
    assert gpu_slots(["0", "1", "2", "3"], 1, 4) == ["0", "1", "2", "3"]
    assert gpu_slots(["0", "1", "2", "3"], 2, 4) == ["0,1", "2,3"]  # only two disjoint pairs
    assert gpu_slots(["0", "1", "2", "3"], 1, 2) == ["0", "1"]
    assert gpu_slots(["4", "6"], 1, 3) == ["4", "6"]  # ids taken from CUDA_VISIBLE_DEVICES, never reused
    assert gpu_slots(["0", "1", "2"], 2, 2) == ["0,1"]  # the odd GPU is left idle, not shared


def test_gpu_slots_cpu_and_errors():
    assert gpu_slots([], 0, 3) == [None, None, None]  # no GPUs: the environment is left alone
    assert gpu_slots(["0", "1"], 0, 2) == ["", ""]  # CPU asked for on a GPU machine: GPUs hidden
    with pytest.raises(ConfigError, match="2 GPU\\(s\\) per subject were asked for, but 1 is visible"):
        gpu_slots(["0"], 2, 1)
    with pytest.raises(ConfigError, match="but 0 are visible"):
        gpu_slots([], 1, 1)
    with pytest.raises(ConfigError, match="jobs must be at least 1; found 0"):
        gpu_slots(["0"], 1, 0)


# ------------------------------------------------------------------ the report


def test_report_rows_rejects_bad_files(tmp_path):
    d = tmp_path / "mini" / "subj01"
    d.mkdir(parents=True)
    f = d / "results.json"
    f.write_text(json.dumps([{"regressor": "gru", "n_layers": 15, "accuracy": 1}]))
    with pytest.raises(ResultsFormatError, match="no metric columns; expected some of ssim"):
        report_rows(f)
    f.write_text(json.dumps([{"regressor": "gru", "n_layers": 15, "CLIP": 94.2}]))
    with pytest.raises(ResultsFormatError, match="fraction in 0-1; found 94.2"):
        report_rows(f)
    f.write_text(json.dumps({"rows": [{"n_layers": 15, "SSIM": 0.3}]}))
    with pytest.raises(ResultsFormatError, match="needs a 'regressor' column"):
        report_rows(f)
    f.write_text(json.dumps({"rows": [{"regressor": "gru", "n_layers": 15, "SSIM": 0.3, "noise": 0}]}))
    r = report_rows(f)  # subject and dataset from the folder, noise 0 means none
    assert r.loc[0, "subject"] == 1 and r.loc[0, "dataset"] == "mini" and r.loc[0, "noise"] == "none"
    assert r["swav"].isna().all()


def test_a_bad_results_file_does_not_hide_the_outcomes(tmp_path):
    from nsdlib.batch import BatchResult, SubjectOutcome, _report_into
    from nsdlib.config import RunConfig

    write_subject_results(tmp_path / "w", 1, [variant(clip=91.5)])  # a percentage: the reader rejects it
    result = BatchResult("mini", "local", [SubjectOutcome(1, "ok")], tmp_path / "batch.json")
    _report_into(result, tmp_path / "runs" / "mini", [RunConfig(workdir=tmp_path / "w")])
    assert result.report is None and "clip is a 2-way identification score" in result.report_error
    assert result.exit_code() == 1 and "report not written" in result.summary()


def test_bad_batch_input_fails_before_anything_runs(tmp_path, chapters):
    with pytest.raises(ConfigError, match="subject must be 1, 2, 5 or 7; found '3'"):
        run_batch({"workdir": str(tmp_path)}, [1, "3"], notebooks_dir=chapters, runs_root=tmp_path / "r")
    with pytest.raises(ConfigError, match="--detach needs --executor slurm"):
        run_batch({"workdir": str(tmp_path)}, [1], detach=True, notebooks_dir=chapters, runs_root=tmp_path / "r")
    with pytest.raises(RunnerError, match="--timeout-retries at least 0; found cell_timeout=3600, timeout_retries=-1"):
        run_batch({"workdir": str(tmp_path)}, [1], timeout_retries=-1, notebooks_dir=chapters, runs_root=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_local_batch_isolates_a_failure_then_resumes(tmp_path, chapters, capsys):
    w, runs = tmp_path / "w", tmp_path / "runs"
    w.mkdir()
    (w / "fail_subj02").write_text("")
    argv = ["batch", "--dataset", "mini", "--subjects", "1", "2", "--workdir", str(w),
            "--notebooks-dir", str(chapters), "--runs", str(runs), "--jobs", "2"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "1 of 2 subjects ok, 1 failed" in out
    assert "FAILED at 02_results: RuntimeError: injected failure for subject 2" in out
    # subject 1 completed despite subject 2's failure; subject 2 kept what it finished
    assert (runs / "mini" / "subj01" / "02_results.ipynb").exists()
    assert (runs / "mini" / "subj02" / "02_results.failed.ipynb").exists()
    assert (runs / "mini" / "subj02" / "01_prepare.done.json").exists()
    state = json.loads((runs / "mini" / "batch.json").read_text())
    assert state["outcomes"]["2"]["notebook"] == "02_results" and state["outcomes"]["1"]["status"] == "ok"
    report = pd.read_csv(runs / "mini" / "report.csv")
    assert set(report[report["source"] == "ours"]["subjects"].astype(str)) == {"1"}

    # --status reads the recorded batch back
    assert main(["batch", "--status", "--dataset", "mini", "--runs", str(runs)]) == 1
    assert "FAILED at 02_results" in capsys.readouterr().out

    # the cause fixed, a rerun skips every completed notebook and finishes subject 2; this time two
    # (pretend) GPUs are handed out, one per subject, as CUDA_VISIBLE_DEVICES (no CUDA needed to check it)
    (w / "fail_subj02").unlink()
    result = run_batch({"workdir": str(w), "device": "auto"}, [1, 2], notebooks_dir=chapters, runs_root=runs,
                       gpus=["3", "5"], progress=False)
    assert result.ok and result.exit_code() == 0
    by = {o.subject: o for o in result.outcomes}
    assert _statuses(by[1]) == ["skipped", "skipped"]
    assert _statuses(by[2]) == ["skipped", "done"]
    assert sorted(o.gpus for o in result.outcomes) == ["3", "5"]
    for subject in (1, 2):
        chain = json.loads((runs / "mini" / f"subj{subject:02d}" / "chain.json").read_text())
        assert chain["cuda_visible_devices"] == by[subject].gpus
    table = pd.read_csv(result.report[0])
    mean = table[(table["source"] == "ours") & (table["subject"] == "mean") & (table["regressor"] == "gru")]
    assert mean["ssim"].iloc[0] == pytest.approx(0.15) and str(mean["subjects"].iloc[0]) == "1,2"
    md = result.report[1].read_text()
    assert "| ours | Ridge | 15 | 1, 2 | 0.200 |" in md
    assert "## Time per notebook" in md and "| 02_results |" in md  # measured by the runner, per subject


@pytest.mark.slow
def test_slurm_path_through_submitit_debug_executor(tmp_path, chapters):
    w, runs = tmp_path / "w", tmp_path / "runs"
    w.mkdir()
    (w / "fail_subj05").write_text("")
    result = run_batch({"workdir": str(w), "device": "cpu"}, [1, 5], executor="debug", gpus_per_job=0,
                       notebooks="02", notebooks_dir=chapters, runs_root=runs, cell_timeout=600, timeout_retries=1,
                       progress=False)
    by = {o.subject: o for o in result.outcomes}
    chain = json.loads((runs / "mini" / "subj01" / "chain.json").read_text())
    assert [(n["name"], n["attempts"]) for n in chain["notebooks"]] == [("02_results", 1)]
    assert by[1].status == "ok" and by[1].job_id.startswith("DEBUG_")
    assert by[5].status == "failed" and by[5].notebook == "02_results"
    assert "injected failure for subject 5" in by[5].error
    assert result.exit_code() == 1 and result.report is not None


@pytest.mark.slow
def test_a_batch_passes_its_cell_timeout_and_retries_to_each_subjects_chain(tmp_path, chapters):
    # a chapter that hangs on its first execution: a batch job times it out and runs it once more
    (tmp_path / "w").mkdir()
    hang_once = ("\n```{code-cell} ipython3\nimport time\nm = Path(cfg.workdir) / 'hung-once'\n"
                 "if not m.exists():\n    m.touch()\n    time.sleep(300)\n```\n")
    (chapters / "01_prepare.md").write_text(chapter("Prepare", SETUP) + hang_once)
    result = run_batch({"workdir": str(tmp_path / "w"), "device": "cpu"}, [1], executor="debug", gpus_per_job=0,
                       notebooks_dir=chapters, runs_root=tmp_path / "runs", cell_timeout=15, timeout_retries=1,
                       progress=False)
    assert result.ok, result.summary()
    chain = json.loads((tmp_path / "runs" / "mini" / "subj01" / "chain.json").read_text())
    assert [(n["name"], n["status"], n["attempts"]) for n in chain["notebooks"]] == [
        ("01_prepare", "done", 2), ("02_results", "done", 1)]
    assert chain["notebooks"][0]["lost_seconds"] >= 15 and chain["notebooks"][1]["lost_seconds"] == 0


@pytest.mark.slow
def test_detached_slurm_batch_checked_later(tmp_path, chapters):
    # submitit's "local" cluster stands in for Slurm: real job ids, real processes, no sbatch
    w, runs = tmp_path / "w", tmp_path / "runs"
    result = run_batch({"workdir": str(w), "device": "cpu"}, [1, 2], executor="slurm", cluster="local",
                       gpus_per_job=0, time_min=5, notebooks="01", notebooks_dir=chapters, runs_root=runs,
                       detach=True,
                       progress=False)
    assert not result.finished and result.report is None
    state = json.loads((runs / "mini" / "batch.json").read_text())
    assert state["status"] == "submitted" and all(s["job_id"] for s in state["subjects"].values())
    deadline = time.time() + 120
    status = batch_status("mini", runs)
    while not status.finished and time.time() < deadline:
        assert status.exit_code() == 3 and {o.status for o in status.outcomes} <= {"pending", "running", "ok"}
        time.sleep(1)
        status = batch_status("mini", runs)
    assert status.ok, status.summary()
    assert status.report is not None and status.report[0].exists()
    assert json.loads((runs / "mini" / "batch.json").read_text())["status"] == "finished"


def test_status_without_a_batch_is_a_clear_error(tmp_path, capsys):
    assert main(["batch", "--status", "--dataset", "nsd", "--runs", str(tmp_path)]) == 2
    assert "no batch recorded for dataset 'nsd'" in capsys.readouterr().err


def test_a_batch_needs_a_book_root_or_both_folders(tmp_path, chapters):
    with pytest.raises(ConfigError, match="a batch needs book_root"):
        run_batch({"workdir": str(tmp_path)}, [1], notebooks_dir=chapters)
    with pytest.raises(ConfigError, match="batch_status needs runs_root or book_root"):
        batch_status("mini")
