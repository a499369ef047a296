"""nsdlib.report.cross_subject: the mean over subjects beside the paper's Tables 4/5, the
Markdown report, chapter 09's mean over subjects, and the Sphinx hook that fills the book's page."""

from types import SimpleNamespace

import pandas as pd
import pytest
from _results_files import variant, write_subject_results

from nsdlib import names, paper
from nsdlib.report import cross_subject
from nsdlib.report.cross_subject import (
    REPORT_MARKERS,
    collect_results,
    cross_subject_table,
    fill_report_page,
    mean_over_subjects,
    write_report,
)


def test_report_means_over_subjects_and_keeps_paper_apart(tmp_path):
    w = tmp_path / "w"
    write_subject_results(w, 1, [variant(ssim=0.30), variant("ridge", 31, ssim=0.40), variant(noise="8", ssim=0.2)])
    write_subject_results(w, 2, [variant(ssim=0.50), variant("ridge", 31, ssim=0.60)], csv_only=True)
    write_subject_results(w, 5, [variant(ssim=0.10), variant(n_layers=31, ssim=0.9, quick=True)])
    res = collect_results(w, "mini")
    assert sorted(res["subject"].unique()) == [1, 2, 5]
    table = cross_subject_table(res)
    ours = table[table["source"] == "ours"]
    gru = ours[(ours["regressor"] == "gru") & (ours["noise"] == "none") & (ours["subject"] == "mean")].iloc[0]
    assert gru["ssim"] == pytest.approx(0.3) and gru["subjects"] == "1,2,5" and gru["n_subjects"] == 3
    ridge = ours[(ours["regressor"] == "ridge") & (ours["subject"] == "mean")].iloc[0]
    assert ridge["ssim"] == pytest.approx(0.5) and ridge["subjects"] == "1,2"
    quick = ours[ours["quick"] & (ours["subject"] == "mean")].iloc[0]  # a quick run is never averaged in
    assert quick["ssim"] == pytest.approx(0.9) and quick["subjects"] == "5"
    noisy = ours[(ours["noise"] == "8") & (ours["subject"] == "mean")].iloc[0]
    assert noisy["ssim"] == pytest.approx(0.2) and noisy["subjects"] == "1"
    # the paper's Table 5 rows are there, labelled, with the published values
    p5 = table[table["source"] == "paper (Table 5)"]
    gru15 = p5[(p5["regressor"] == "gru") & (p5["n_layers"] == 15)].iloc[0]
    published = next(r for r in paper.TABLE5 if r["regressor"] == "gru" and r["n_layers"] == 15)
    assert gru15["pixcorr"] == published["pixcorr"] and gru15["subjects"] == "1,2,5,7"

    csv, md = write_report(res, tmp_path / "runs" / "mini", dataset="mini", sources=[str(w / "mini")])
    back = pd.read_csv(csv)
    assert len(back) == len(table) and set(back["source"]) == {"ours", "paper (Table 5)", "paper (Table 4)"}
    text = md.read_text()
    assert "## Mean over subjects: mini-NSD (simulated), models=mini" in text
    assert "| ours | GRU | 15 | 1, 2, 5 | 0.300 |" in text
    assert "| paper (Table 5) | GRU | 15 | 1, 2, 5, 7 | 0.361 | 0.202 |" in text
    assert "1 per-subject rows with noise added" in text
    assert "## Mean over subjects: mini-NSD (simulated), models=mini, quick=True" in text
    assert not list((tmp_path / "runs" / "mini").glob(".*tmp-*"))  # written atomically


def test_report_without_results_says_so(tmp_path):
    res = collect_results(tmp_path / "nothing", "mini")
    assert res.empty
    _, md = write_report(res, tmp_path, dataset="mini")
    text = md.read_text()
    assert "No results file was found" in text and "| ours |" not in text


def test_book_page_filled_only_when_a_report_exists(tmp_path):
    start, end = REPORT_MARKERS
    page = f"# Cross-subject results\n\n{start}\nNo batch report yet.\n{end}\n\nAfter.\n"
    missing = tmp_path / "runs" / "mini" / "report.md"
    assert fill_report_page(page, [missing]) == page
    missing.parent.mkdir(parents=True)
    missing.write_text("# Cross-subject report: mini\n\n## Mean over subjects\n\n| a |\n")
    filled = fill_report_page(page, [missing])
    assert "No batch report yet" not in filled and "## Cross-subject report: mini" in filled
    assert "### Mean over subjects" in filled and filled.endswith(f"{end}\n\nAfter.\n")
    with pytest.raises(ValueError, match="lacks the markers"):
        fill_report_page("# no markers", [missing])


# ------------------------------------------------------------------ batches


def test_mean_over_subjects_is_chapter_09s_table_5_input(tmp_path):
    w = tmp_path / "w"
    write_subject_results(w, 1, [variant(ssim=0.30), variant("ridge", 31, ssim=0.40), variant(noise="8", ssim=0.2)])
    write_subject_results(w, 2, [variant(ssim=0.50), variant(n_layers=31, models="pretrained", ssim=0.9)])
    write_subject_results(w, 7, [variant("ridge", 31, ssim=0.60)])
    mean, subjects = mean_over_subjects(collect_results(w, "mini"), models="mini")
    assert subjects == [1, 2, 7] and len(mean) == 2  # the pretrained row and the noisy row are left out
    by = mean.set_index(["regressor", "n_layers"])
    assert by.loc[("gru", 15), "ssim"] == pytest.approx(0.4) and by.loc[("ridge", 31), "ssim"] == pytest.approx(0.5)
    assert by.loc[("gru", 15), "clip"] == pytest.approx(0.75) and set(mean["noise"]) == {"none"}
    assert list(mean.columns) == ["regressor", "n_layers", *names.IMAGE_METRICS, "noise"]
    empty, none = mean_over_subjects(collect_results(tmp_path / "nothing", "mini"), models="mini")
    assert empty.empty and none == []


def test_protocols_are_never_averaged_together_nor_set_beside_the_papers(tmp_path):
    w = tmp_path / "w"
    write_subject_results(w, 1, [variant(ssim=0.30), variant(ssim=0.50, protocol="mindeye")])
    write_subject_results(w, 2, [variant(ssim=0.40), variant(ssim=0.70, protocol="mindeye")])
    res = collect_results(w, "mini")
    mean, _ = mean_over_subjects(res, models="mini")
    assert mean["ssim"].tolist() == pytest.approx([0.35])  # Brain-Diffuser's rows only (the default)
    mean, _ = mean_over_subjects(res, models="mini", protocol="mindeye")
    assert mean["ssim"].tolist() == pytest.approx([0.60])
    table = cross_subject_table(res)
    ours = table[(table["source"] == "ours") & (table["subject"] == "mean")]
    assert sorted(ours["protocol"]) == ["brain-diffuser", "mindeye"]
    _, md = write_report(res, tmp_path / "runs" / "mini", dataset="mini")
    text = md.read_text()
    head = "## Mean over subjects: mini-NSD (simulated), models=mini, protocol="
    bd, me = text.split(head + "brain-diffuser")[1], text.split(head + "mindeye")[1]
    me = me.split("## Mean over subjects")[0]
    assert "| paper (Table 5) |" in bd.split(head)[0] and "| paper (Table 5) |" not in me
    assert "computed under the brain-diffuser protocol, these under mindeye" in me
    assert "Protocol card: protocol mindeye (MindEye2's evaluation code); images: each subject's own test set" in me
    assert "Protocol card: protocol brain-diffuser (Brain-Diffuser's evaluation code)" in bd.split(head)[0]


def test_sphinx_hook_looks_in_the_setting_then_nsdlib_runs_then_the_book(tmp_path, monkeypatch):
    def report(root, dataset):
        (root / dataset).mkdir(parents=True)
        (root / dataset / "report.md").write_text(f"# {dataset} report\n")
        return root / dataset / "report.md"

    book = tmp_path / "book"
    in_book = report(book / "runs", "mini")
    app = SimpleNamespace(confdir=str(book), config=SimpleNamespace(nsdlib_runs_dir=""))
    monkeypatch.delenv("NSDLIB_RUNS", raising=False)
    assert cross_subject._report_files(app) == [in_book]
    from_env = report(tmp_path / "env", "nsd")
    monkeypatch.setenv("NSDLIB_RUNS", str(tmp_path / "env"))  # what `nsdlib book` sets
    assert cross_subject._report_files(app) == [from_env]
    app.config.nsdlib_runs_dir = str(book / "runs")  # the Sphinx setting wins
    assert cross_subject._report_files(app) == [in_book]
    source = [f"{REPORT_MARKERS[0]}\nnone yet\n{REPORT_MARKERS[1]}\n"]
    cross_subject._on_source_read(app, cross_subject.REPORT_PAGE, source)
    assert "## mini report" in source[0] and "none yet" not in source[0]


def test_region_and_ledger_rows_join_the_report(tmp_path):
    """Chapters 11 and 12 write rows "roi: <region>" and "ledger: <row>"; the report averages them over
    subjects like the models' rows."""
    w = tmp_path / "w"
    for s, v in ((1, 0.2), (2, 0.4)):
        write_subject_results(w, s, [variant(ssim=0.3), variant("roi: early (V1–hV4)", ssim=v),
                                     variant("ledger: + stage-2 regression", ssim=v + 0.1)])
    table = cross_subject_table(collect_results(w, "mini"))
    mean = table[(table["source"] == "ours") & (table["subject"] == "mean")].set_index("regressor")
    assert mean.loc["roi: early (V1–hV4)", "ssim"] == pytest.approx(0.3)
    assert mean.loc["roi: early (V1–hV4)", "subjects"] == "1,2"
    assert mean.loc["ledger: + stage-2 regression", "ssim"] == pytest.approx(0.4)
    _, md = write_report(collect_results(w, "mini"), tmp_path / "runs" / "mini", dataset="mini")
    assert "| ours | roi: early (V1–hV4) | 15 | 1, 2 | 0.300 |" in md.read_text()
