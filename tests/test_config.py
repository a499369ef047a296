import os

import pytest

from nsdlib.config import ConfigError, RunConfig, default_workdir


def test_defaults_are_the_embedded_run(tmp_path):
    cfg = RunConfig(workdir=tmp_path)
    assert (cfg.dataset, cfg.subject, cfg.models, cfg.n_layers, cfg.regressor) == ("mini", 1, "mini", 15, "gru")
    assert cfg.run_dir == tmp_path.resolve() / "mini" / "subj01"
    assert cfg.nsd_root == str(tmp_path.resolve() / "mini-nsd")
    assert RunConfig(dataset="nsd", workdir=tmp_path).nsd_root == "s3://natural-scenes-dataset"
    assert RunConfig(workdir=tmp_path, quick=True).nsd_root == str(tmp_path.resolve() / "mini-nsd-small")


def test_strings_from_the_command_line_are_coerced(tmp_path):
    params = {"subject": "5", "n_layers": "31", "quick": "true", "seed": "3", "workdir": str(tmp_path)}
    cfg = RunConfig.from_params(params)
    assert (cfg.subject, cfg.n_layers, cfg.quick, cfg.seed) == (5, 31, True, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"subject": 3}, "subject must be 1, 2, 5 or 7; found 3 (subjects 3, 4, 6 and 8 did not complete"),
        ({"subject": 9}, "subject must be 1, 2, 5 or 7; found 9"),
        ({"subject": "one"}, "subject must be an integer; found 'one'"),
        ({"dataset": "hcp"}, "dataset must be one of mini, nsd; found 'hcp'"),
        ({"models": "huge"}, "models must be one of mini, pretrained; found 'huge'"),
        ({"n_layers": 20}, "n_layers must be 15 or 31; found 20"),
        ({"regressor": "lstm"}, "regressor must be one of gru, ridge, cnn, transformer; found 'lstm'"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; found 'tpu'"),
        ({"quick": "maybe"}, "quick must be true or false; found 'maybe'"),
    ],
)
def test_bad_parameters_give_one_clear_error(tmp_path, kwargs, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(workdir=tmp_path, **kwargs)
    assert message in str(err.value)


def test_unknown_parameter_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown run parameter.*subjekt"):
        RunConfig.from_params({"subjekt": 1, "workdir": str(tmp_path)})


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_workdir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ConfigError, match="is not a writable folder"):
        RunConfig(workdir=ro / "inner")


def test_workdir_that_is_a_file_is_not_writable(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=f"workdir '{f}' is not a writable folder: File exists"):
        RunConfig(workdir=f)


def test_default_workdir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NSDLIB_WORKDIR", str(tmp_path / "w"))
    assert default_workdir() == tmp_path / "w"
    assert RunConfig().workdir == str((tmp_path / "w").resolve())


def test_replace_validates_again(tmp_path):
    cfg = RunConfig(workdir=tmp_path)
    assert cfg.replace(subject=2).subject == 2
    # a default dataset root follows the parameters it depends on; a given one is kept
    assert cfg.replace(dataset="nsd").nsd_root == "s3://natural-scenes-dataset"
    assert cfg.replace(quick=True).nsd_root.endswith("mini-nsd-small")
    assert cfg.replace(workdir=tmp_path / "w2").nsd_root == str((tmp_path / "w2").resolve() / "mini-nsd")
    given = RunConfig(workdir=tmp_path, nsd_root=str(tmp_path / "mine"))
    assert given.replace(quick=True).nsd_root == str(tmp_path / "mine")
    with pytest.raises(ConfigError):
        cfg.replace(subject=4)


def test_cuda_asked_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = RunConfig(workdir=tmp_path, device="cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        cfg.torch_device()
    assert RunConfig(workdir=tmp_path).torch_device().type == "cpu"


def _book(folder):
    (folder / "notebooks").mkdir(parents=True)
    (folder / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    return folder


def test_book_root_is_found_from_the_working_directory(monkeypatch, tmp_path):
    from nsdlib.config import find_book_root

    book = _book(tmp_path / "elsewhere" / "mybook")  # an installed nsdlib: the book is not beside its sources
    assert find_book_root(book / "notebooks") == book.resolve()
    assert find_book_root(book) == book.resolve()
    assert find_book_root(tmp_path) is None
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "notebooks").mkdir()  # notebooks/ without _toc.yml is not a book
    assert find_book_root(tmp_path / "half") is None
    monkeypatch.chdir(book / "notebooks")
    assert find_book_root() == book.resolve()


def test_default_workdir_follows_the_book_not_the_sources(monkeypatch, tmp_path):
    monkeypatch.delenv("NSDLIB_WORKDIR", raising=False)
    book = _book(tmp_path / "mybook")
    monkeypatch.chdir(book / "notebooks")  # papermill runs chapters from notebooks/
    assert default_workdir() == book.resolve() / "work"
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_workdir() == tmp_path / "home" / ".cache" / "nsdlib"
