"""Each `nsdlib` sub-command turns a user's mistake into one sentence and exit code 2."""

import os
import signal
import time

import pytest

from nsdlib import cli
from nsdlib.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_book_without_executed_notebooks(capsys, tmp_path):
    code, err = run(capsys, "book", "--run", str(tmp_path / "runs" / "mini" / "subj01"))
    assert code == 2
    assert "lacks executed notebooks 00_mini_models" in err and "run `nsdlib run` for them first" in err


def test_fetch_nsd_needs_subject_and_root(capsys):
    code, err = run(capsys, "fetch", "nsd")
    assert code == 2 and "`nsdlib fetch nsd` needs --subject N and --root DIR" in err


def test_train_models_on_a_folder_that_is_not_mini_nsd(capsys, tmp_path):
    code, err = run(capsys, "mini", "train-models", "--root", str(tmp_path), "--workdir", str(tmp_path / "w"))
    assert code == 2 and f"{tmp_path} is not a mini-NSD root" in err and "nsdlib mini generate --root" in err


def test_betas_for_real_nsd_explain_that_nsd_ships_them(capsys, tmp_path):
    code, err = run(capsys, "betas", "--dataset", "nsd", "--subject", "1", "--workdir", str(tmp_path))
    assert code == 2 and "NSD ships its single-trial betas" in err


def test_unknown_asset_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fetch", "weights"])
    assert exc.value.code == 2 and "invalid choice: 'weights'" in capsys.readouterr().err


def test_a_crash_inside_a_dependency_is_not_disguised_as_a_user_error(monkeypatch, tmp_path):
    import numpy as np

    import nsdlib.cli as cli

    def broken(args):
        return np.reshape(np.arange(3), (2, 2))  # numpy's own ValueError: a bug, not a bad parameter

    monkeypatch.setattr(cli, "_cmd_betas", broken)
    parser_default = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser_default(), broken))
    with pytest.raises(ValueError, match="cannot reshape"):
        main(["betas", "--workdir", str(tmp_path)])


def _with_func(parser, func):
    parser.set_defaults(func=func)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            sub.set_defaults(func=func)
    return parser


def test_no_book_found_from_the_working_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv in (["run", "--workdir", str(tmp_path / "w")], ["book"], ["batch", "--subjects", "1"]):
        code, err = run(capsys, *argv)
        assert code == 2
        assert f"no book found from {tmp_path.resolve()}: expected notebooks/ and _toc.yml; pass --book-root" in err
    code, err = run(capsys, "book", "--book-root", str(tmp_path))
    assert code == 2 and f"--book-root {tmp_path} is not a book: expected notebooks/ and _toc.yml" in err


def test_installed_layout_uses_the_book_of_the_working_directory(capsys, tmp_path, monkeypatch):
    # nsdlib's sources are elsewhere (this checkout); the book is a folder of its own
    book = tmp_path / "mybook"
    (book / "notebooks").mkdir(parents=True)
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "notebooks" / "01_only.md").write_text("# only\n")
    monkeypatch.chdir(book / "notebooks")
    code, err = run(capsys, "book")
    assert code == 2
    assert f"run {book.resolve() / 'runs' / 'mini' / 'subj01'} lacks executed notebooks 01_only" in err
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    code, err = run(capsys, "book", "--book-root", str(book))
    assert code == 2 and "lacks executed notebooks 01_only" in err


# ------------------------------------------------------------------- score
@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    from _mini_worlds import truth_world

    return truth_world(request, tmp_path_factory)


def _score_args(world, workdir, *extra):
    return ["score", *extra, "--dataset", "mini", "--subject", "1", "--root", str(world), "--workdir", str(workdir),
            "--param", "quick=true"]


def test_score_prints_the_pipelines_scores_and_writes_the_row(capsys, world, tmp_path):
    import numpy as np

    from nsdlib import RunConfig
    from nsdlib.pipeline import context, results
    from nsdlib.pipeline import evaluation as E

    cfg = RunConfig(dataset="mini", subject=1, quick=True, workdir=str(tmp_path / "pipeline"), nsd_root=str(world))
    gt = E.ground_truth(cfg)
    recs = (gt // 2 + 64).astype(np.uint8)
    rows, _ = E.evaluate(cfg, reconstructions={("gru", 15, "none"): recs}, progress=False, write=False)
    ids = np.asarray(context.get(cfg).subject().test_ids)
    np.save(tmp_path / "theirs.npy", np.moveaxis(recs[::-1], 3, 1))
    np.savetxt(tmp_path / "order.txt", ids[::-1], fmt="%d")
    code = main(_score_args(world, tmp_path / "work", str(tmp_path / "theirs.npy"),
                            "--ids", str(tmp_path / "order.txt")))
    out = capsys.readouterr().out
    assert code == 0
    assert f"file:theirs.npy: {len(ids)} test images of mini subject 1 (mini models), compared at 128 px, " \
           "protocol brain-diffuser" in out
    assert "SSIM ↑" in out and f"{rows.iloc[0]['ssim']:.4f}" in out and f"{rows.iloc[0]['pixcorr']:.4f}" in out
    assert "CLIP ↑                   n/a [" in out
    assert "] not available: the mini model zoo has not trained a small CLIP" in out
    written = results.read_results(tmp_path / "work" / "mini" / "subj01" / "results.json")[1].iloc[0]
    assert written["regressor"] == "file:theirs.npy" and written["ssim"] == rows.iloc[0]["ssim"]
    assert "row 'file:theirs.npy' written to" in out


def test_score_refuses_an_unknown_protocol(capsys, tmp_path):
    code, err = run(capsys, "score", str(tmp_path / "recons.pt"), "--protocol", "mindeye2", "--workdir", str(tmp_path))
    assert code == 2 and "protocol must be one of brain-diffuser, mindeye; found 'mindeye2'" in err


def test_score_of_a_bad_file_is_one_sentence(capsys, world, tmp_path):
    import numpy as np

    x = np.full((3, 3, 16, 16), 0.5, np.float32)
    x[1, 0, 2, 2] = np.nan
    np.save(tmp_path / "recons.npy", x)
    (tmp_path / "recons.ids.txt").write_text("3 13 34")
    code, err = run(capsys, *_score_args(world, tmp_path / "work", str(tmp_path / "recons.npy")))
    assert code == 2
    assert err.strip() == (f"nsdlib: error: {tmp_path / 'recons.npy'}: expected finite pixels; found 1 NaN or "
                           "infinite values in 1 of 3 images")


@pytest.mark.parametrize("swallowed", [False, True])
def test_ctrl_c_exits_130_with_one_line_even_when_a_dependency_swallows_it(monkeypatch, capsys, swallowed):
    def fetch(args):  # Ctrl-C arrives while the command runs; some library may catch it and go on
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises here
        except KeyboardInterrupt:
            if not swallowed:
                raise
        return 0

    monkeypatch.setattr(cli, "_cmd_fetch", fetch)
    before = signal.getsignal(signal.SIGINT)
    assert cli.main(["fetch", "nsd"]) == 130
    assert capsys.readouterr().err.strip() == cli._INTERRUPTED
    assert signal.getsignal(signal.SIGINT) is before  # Python's own handler is back
