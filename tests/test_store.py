import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from nsdlib.config import RunConfig
from nsdlib.store import Store, array_key, atomic_write, load_arrays, params_key, path_key, save_arrays


def test_params_key_ignores_order_and_sees_values():
    assert params_key({"a": 1, "b": 2}) == params_key({"b": 2, "a": 1})
    assert params_key({"a": 1}) != params_key({"a": 2})


def test_array_key_sees_every_value_shape_and_dtype():
    a = np.arange(6, dtype=np.float32)
    assert array_key(a) == array_key(a.copy())
    b = a.copy()
    b[3] += 1e-6
    assert array_key(b) != array_key(a)
    assert array_key(a.reshape(2, 3)) != array_key(a) != array_key(a.astype(np.float64))


def test_path_key_of_files_and_folders(tmp_path):
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights 1")
    assert path_key(f) == "model.pt:9"  # cheap: name and size
    by_content = path_key(f, content=True)
    assert len(by_content) == 16
    f.write_bytes(b"weights 2")  # same size, other bytes
    assert path_key(f) == "model.pt:9" and path_key(f, content=True) != by_content
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    key = path_key(folder)
    assert len(key) == 16 and path_key(folder) == key
    (folder / "weights.bin").write_bytes(b"x")
    assert path_key(folder) != key
    with pytest.raises(FileNotFoundError, match="expected a file or a folder to fingerprint; found nothing"):
        path_key(tmp_path / "absent")


def test_atomic_write_crash_keeps_previous_content(tmp_path):
    target = tmp_path / "artifact.bin"
    with atomic_write(target) as fh:
        fh.write(b"version 1")
    with pytest.raises(RuntimeError, match="simulated crash"):
        with atomic_write(target) as fh:
            fh.write(b"version 2, half writ")
            raise RuntimeError("simulated crash")
    assert target.read_bytes() == b"version 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.bin"]  # no temporary left


def test_crash_mid_write_leaves_no_partial_artifact(tmp_path):
    store = Store(tmp_path)

    def compute():
        raise KeyboardInterrupt  # interrupted before the arrays exist

    with pytest.raises(KeyboardInterrupt):
        store.arrays("latents", {"n": 1}, compute)
    assert not store.has("latents", {"n": 1})

    def crash_while_writing(path):
        path.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.file("image", {"n": 1}, crash_while_writing, ".png")
    assert not store.has("image", {"n": 1}, ".png")
    assert not [p for p in (tmp_path / "image").iterdir() if p.suffix == ".png"]


def test_arrays_are_reused_for_same_params_and_recomputed_for_new(tmp_path):
    store = Store(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(len(calls) + 2)}

    first = store.arrays("thing", {"alpha": 1}, compute)
    again = store.arrays("thing", {"alpha": 1}, compute)
    other = store.arrays("thing", {"alpha": 2}, compute)
    assert len(calls) == 2
    np.testing.assert_array_equal(first["x"], again["x"])
    assert other["x"].shape != first["x"].shape
    assert [e["event"] for e in store.events()] == ["computed", "reused", "computed"]
    meta = json.loads(store.path("thing", {"alpha": 2}, ".meta.json").read_text())
    assert meta["params"] == {"alpha": 2} and "numpy" in meta["versions"]


def test_json_and_file_artifacts(tmp_path):
    store = Store(tmp_path)
    out = store.json("table", {"k": 1}, lambda: {"mse": np.float32(0.5), "rows": np.arange(2)})
    assert out == {"mse": 0.5, "rows": [0, 1]}
    path = store.file("blob", {"k": 1}, lambda p: p.write_text("hello"), ".txt")
    assert path.read_text() == "hello"
    assert store.file("blob", {"k": 1}, lambda p: 1 / 0, ".txt") == path  # reused, writer not called


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="dtype object"):
        save_arrays(tmp_path / "a.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    save_arrays(tmp_path / "b.npz", {"s": np.array(["a", "bc"])})
    assert load_arrays(tmp_path / "b.npz")["s"].tolist() == ["a", "bc"]


def test_record_run_has_params_and_versions(tmp_path):
    cfg = RunConfig(workdir=tmp_path, subject=2)
    store = Store.for_config(cfg)
    rec = json.loads(store.record_run(cfg, note="x").read_text())
    assert rec["params"]["subject"] == 2 and rec["versions"]["numpy"] == np.__version__ and rec["note"] == "x"
    assert os.path.dirname(store.record_run(cfg)) == str(cfg.run_dir)


def _slow_square(root, out):
    """Compute one artifact slowly in a separate process; write what the store returned."""
    def compute():
        time.sleep(0.5)
        return {"x": np.arange(4) ** 2}

    res = Store(root).arrays("slow", {"p": 1}, compute)
    np.save(out, res["x"])


def test_two_processes_never_compute_the_same_artifact_at_once(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_slow_square, args=(tmp_path / "store", tmp_path / f"out{i}.npy")) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    events = sorted(e["event"] for e in Store(tmp_path / "store").events())
    assert events == ["computed", "reused"], events
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), [0, 1, 4, 9])
    assert not list((tmp_path / "store").rglob("*.tmp-*"))
