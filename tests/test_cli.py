"""Each `nsdlib` sub-command turns a user's mistake into one sentence and exit code 2."""

import pytest

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
