"""Writing mini-NSD: every file in NSD's layout and formats, through :class:`nsdlib.nsd.NSDLayout`'s names.

:func:`generate` writes the world (:mod:`~nsdlib.mini.world`), the design
(:mod:`~nsdlib.mini.experiment`) and each subject's brain and runs (:mod:`~nsdlib.mini.brain`)
where the real NSD keeps them, so that one loader reads both. Every path of NSD's tree comes
from :class:`~nsdlib.nsd.NSDLayout` (this module spells none); mini-NSD's own files are its
manifest (:data:`~nsdlib.mini.experiment.MANIFEST`) and its ground truth
(:data:`~nsdlib.mini.experiment.GROUND_TRUTH`).

The writers are deterministic: gzip and zip without time stamps, a fixed MATLAB header, HDF5
without times, so the same seed and size give byte-identical files on the same machine and
library versions.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
from filelock import FileLock
from scipy.io import savemat
from tqdm.auto import tqdm

from ..hrf import hrf_library
from ..names import SUBJECTS
from ..nsd import NSDLayout
from ..store import atomic_write, file_sha256
from .brain import NOISE, PRF_LABELS, STREAM_LABELS, RunSimulator, make_brain, trial_amplitudes
from .experiment import (
    GENERATOR_VERSION,
    GROUND_TRUTH,
    MANIFEST,
    STIM_DUR,
    TR,
    TRIAL_DUR,
    MiniRootError,
    MiniSpec,
    basic_counts,
    image_assignment,
    master_ordering,
    read_manifest,
    rng_for,
    run_onsets,
    spec_for,
    truth_dir,
)
from .world import SEMANTIC_FEATURES, draw_scene, early_features, render_scene, scene_captions, semantic_features

__all__ = ["ROI_VOLUMES", "damaged_files", "generate", "restore"]

#: The ROI volumes written for each subject: NSD's file name -> key of :func:`~nsdlib.mini.brain.make_brain`.
ROI_VOLUMES = {"nsdgeneral": "nsdgeneral", "prf-visualrois": "prf", "streams": "streams"}


def _write_nifti(path: Path, data: np.ndarray, zooms: tuple) -> None:
    affine = np.diag([1.8, 1.8, 1.8, 1.0])
    affine[:3, 3] = -0.9 * (np.asarray(data.shape[:3]) - 1)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:  # gzip with mtime 0: same bytes for the same data
        fh.write(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def _write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` without time stamps (fixed zip dates), so the file is reproducible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for k in sorted(arrays):
            a = np.asarray(arrays[k])
            if a.dtype == object:
                raise TypeError(f"array {k!r} has dtype object")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, a, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _write_mat(path: Path, arrays: dict, seed: int) -> None:
    """A MATLAB 5 file like NSD's; the header's date is replaced so the bytes are reproducible."""
    buf = io.BytesIO()
    savemat(buf, arrays, format="5", do_compression=False, oned_as="row")
    data = bytearray(buf.getvalue())
    text = f"MATLAB 5.0 MAT-file, written by nsdlib.mini (mini-NSD, seed {seed})".encode()
    data[:116] = text.ljust(116, b" ")[:116]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


def _hrf_digest() -> str:
    """A short hash of the HRF library the time series are convolved with (it lives in nsdlib.hrf)."""
    return hashlib.sha256(np.round(hrf_library(tr=TR, stim_dur=STIM_DUR), 8).tobytes()).hexdigest()[:16]


def _manifest(spec: MiniSpec, seed: int, files: dict) -> dict:
    return {"generator": "nsdlib.mini", "version": GENERATOR_VERSION, "seed": int(seed), "size": spec.size,
            "spec": spec.to_dict(), "hrf_library": {"tr": TR, "stim_dur": STIM_DUR, "digest": _hrf_digest()},
            "files": files, "note": "mini-NSD is a simulated world for teaching and testing, not a brain."}


def _digest(path: Path) -> list | None:
    """``[size, sha256]`` of a file, or None when it is absent."""
    if not path.is_file():
        return None
    return [path.stat().st_size, file_sha256(path)]


def _file_digests(root: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file written under ``root`` (the manifest aside)."""
    return {p.relative_to(root).as_posix(): _digest(p) for p in sorted(root.rglob("*"))
            if p.is_file() and p != root / MANIFEST}


def damaged_files(root) -> list[str] | None:
    """The files of a mini-NSD root that are missing or differ from what was written.

    Returns
    -------
    list of str or None
        Relative paths, checked against the digests of the root's manifest; None when the
        manifest keeps no digests (written by an older nsdlib), so nothing can be said.
    """
    root = Path(root)
    expected = (read_manifest(root) or {}).get("files")
    if expected is None:
        return None
    return [rel for rel, d in expected.items() if _digest(root / rel) != d]


def restore(root, progress: bool = True) -> list[str]:
    """Rewrite every missing or damaged file of the mini-NSD at ``root``; return their paths.

    The world is deterministic: its own seed and size (read from the manifest) are drawn
    again in a temporary folder, and only the files that differ are moved into ``root``
    (betas written by the GLM, and anything else not generated, are left alone).

    Raises
    ------
    MiniRootError
        ``root`` holds no mini-NSD manifest.
    """
    root = Path(root).expanduser().absolute()
    man = read_manifest(root)
    if man is None:
        raise MiniRootError(f"{root} is not a mini-NSD root (no {MANIFEST}); generate one with "
                            f"`nsdlib mini generate --root {root}`")
    with _generating(root):
        if damaged_files(root) == []:
            return []
        return _rewrite_damaged(root, man, progress)


def _rewrite_damaged(root: Path, man: dict, progress: bool) -> list[str]:
    spec, seed = spec_for(man["size"]), int(man["seed"])
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        _write_all(tmp, spec, seed, progress)
        fresh = _file_digests(tmp)
        bad = [rel for rel, d in fresh.items() if _digest(root / rel) != d]
        for rel in bad:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, root / rel)
        if man.get("files") != fresh:
            with atomic_write(root / MANIFEST, "w") as fh:
                fh.write(json.dumps(_manifest(spec, seed, fresh), indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bad


def _same(man: dict | None, seed: int, size: str) -> bool:
    """Whether a manifest describes the world this code would write for ``seed`` and ``size``."""
    return (bool(man) and man.get("version") == GENERATOR_VERSION and man.get("seed") == seed
            and man.get("size") == size and man.get("hrf_library", {}).get("digest") == _hrf_digest())


def generate(root, seed: int = 0, size: str = "default", overwrite: bool = False, progress: bool = True) -> Path:
    """Write mini-NSD under ``root`` in NSD's layout (see the module docstring); return ``root``.

    The dataset is written into a temporary sibling folder and renamed into place, so
    ``root`` is either absent, or complete. One process at a time writes a root (a lock
    beside it); the temporary folder of a generation that was killed is removed by the next.
    If ``root`` already holds mini-NSD made with
    the same seed, size, generator version and HRF library, nothing is done. If it holds another one,
    this refuses (``MiniRootError``) unless ``overwrite=True``, which replaces it. A
    non-empty folder that is not a mini-NSD root is never touched.

    Parameters
    ----------
    root : str or Path
    seed : int
        Seed of everything random in the world (stimuli, brains, noise).
    size : {"default", "small"}
        "default": 100 shared + 1,000 training images per subject, 3 repeats, 10 sessions of
        6 runs (3,300 trials per subject), 1,572 / 1,428 / 1,304 / 1,268 nsdgeneral voxels.
        "small" (for tests): 20 + 60 images, 2 sessions of 3 runs, 200 / 182 / 166 / 161 voxels.
    overwrite : bool
        Replace a mini-NSD root made with another seed, size or version.
    progress : bool
        Show progress bars.

    Returns
    -------
    Path
        ``root``.
    """
    spec = spec_for(size)
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; found {seed!r}")
    seed = int(seed)
    root = Path(root).expanduser().absolute()
    with _generating(root):
        return _generate(root, spec, seed, size, overwrite, progress)


@contextlib.contextmanager
def _generating(root: Path) -> Iterator[None]:
    """Hold the lock of writing ``root`` (``filelock``); remove what a killed writer left.

    While the lock is held no other process writes this root, so a ``.<root>.tmp-*``
    folder beside it can only be the temporary folder of a generation that was killed.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        for stale in root.parent.glob(f".{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


def _generate(root: Path, spec: MiniSpec, seed: int, size: str, overwrite: bool, progress: bool) -> Path:
    """:func:`generate`'s work, with the root's lock held."""
    if root.exists():
        if not root.is_dir():
            raise MiniRootError(f"{root} exists and is not a folder")
        man = read_manifest(root)
        if _same(man, seed, size):
            return root
        if man is None and any(root.iterdir()):
            raise MiniRootError(f"{root} is not empty and is not a mini-NSD root (no {MANIFEST}); "
                                "choose a new or empty folder")
        if man is not None and not overwrite:
            raise MiniRootError(
                f"{root} already holds mini-NSD made with seed={man.get('seed')}, size={man.get('size')!r}, "
                f"version={man.get('version')}, HRF library {man.get('hrf_library', {}).get('digest')}; asked for "
                f"seed={seed}, size={size!r}, version={GENERATOR_VERSION}, HRF library {_hrf_digest()}. "
                "Use another root, or overwrite=True (`--overwrite`) to replace it.")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        _write_all(tmp, spec, seed, progress)
        _write_json(tmp / MANIFEST, _manifest(spec, seed, _file_digests(tmp)))
        _move_into_place(tmp, root, seed, size, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: Path, root: Path, seed: int, size: str, overwrite: bool) -> None:
    if root.exists() and not any(root.iterdir()):
        root.rmdir()
    if not root.exists():
        try:
            os.rename(tmp, root)
            return
        except OSError:
            if not root.exists():
                raise
    # root appeared meanwhile (another process) or is being replaced
    man = read_manifest(root)
    if _same(man, seed, size):
        return
    if man is None or not overwrite:
        raise MiniRootError(f"{root} was written by someone else while this mini-NSD was generated; "
                            "left it as it is")
    old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-"))
    os.rename(root, old / "data")
    os.rename(tmp, root)
    shutil.rmtree(old, ignore_errors=True)


def _tqdm(it: Iterable, progress: bool, **kw):
    return tqdm(it, disable=not progress, **kw)


def _write_all(out: Path, spec: MiniSpec, seed: int, progress: bool) -> None:
    """Every file of mini-NSD under ``out``: stimuli and captions, the design, then each subject."""
    shared, _, subjectim = image_assignment(spec, seed)
    master = master_ordering(spec, seed)
    caps, feats, sem = _write_stimuli(out, spec, seed, progress)
    _write_mat(out / NSDLayout.EXPDESIGN, {  # experiment design, 1-based like NSD
        "masterordering": master[None, :].astype(np.int32),
        "subjectim": (subjectim + 1).astype(np.int32),
        "sharedix": (shared + 1)[None, :].astype(np.int32),
        "basiccnt": basic_counts(spec, master),
    }, seed)
    coco, coco_split = _coco_links(spec, seed)
    _write_stim_info(out, spec, shared, subjectim, master, coco, coco_split)
    _write_captions(out, spec, seed, coco, coco_split, caps)

    onsets = run_onsets(spec, seed)
    lib = hrf_library(tr=TR, stim_dur=STIM_DUR)  # (n_lags, 20)
    common = {"seed": seed, "size": spec.size, "units": "percent signal change",
              "hrf_library": {"tr": TR, "stim_dur": STIM_DUR, "n": int(lib.shape[1])},
              "timing": {"tr": TR, "stim_dur": STIM_DUR, "trial_dur": TRIAL_DUR,
                         "rest_start": spec.rest_start, "rest_end": spec.rest_end,
                         "n_blank": spec.n_blank, "run_volumes": spec.run_volumes}}
    for s in SUBJECTS:
        ids = subjectim[s - 1]  # 0-based nsdIds in the subject's 10k-style order
        _write_subject(out, spec, seed, s, ids, master, onsets, lib, feats[ids], sem[ids], common, progress)


def _write_stimuli(out: Path, spec: MiniSpec, seed: int, progress: bool):
    """Draw and render every scene into ``imgBrick``; write what each shows to the ground truth.

    Returns
    -------
    captions : list of list of str
        Five captions per image.
    early : ndarray of shape (n_images, 4, size / 2, size / 2), float32
        :func:`~nsdlib.mini.world.early_features` of each image.
    semantic : ndarray of shape (n_images, n_features)
        :func:`~nsdlib.mini.world.semantic_features` of each scene.
    """
    n_img, size = spec.n_images, spec.image_size
    scenes, caps = [], []
    sem = np.empty((n_img, len(SEMANTIC_FEATURES)))
    feats = np.empty((n_img, 4, size // 2, size // 2), np.float32)
    path = out / NSDLayout.STIMULI
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", libver="earliest", track_order=False) as f:
        brick = f.create_dataset("imgBrick", shape=(n_img, size, size, 3), dtype=np.uint8,
                                 chunks=(1, size, size, 3), track_times=False)
        batch, start = [], 0
        for i in _tqdm(range(n_img), progress, desc="mini-NSD stimuli", unit="img"):
            scene = draw_scene(rng_for(seed, 1, i))
            img = render_scene(scene, size)
            scenes.append(scene)
            caps.append(scene_captions(scene, rng_for(seed, 5, i)))
            sem[i] = semantic_features(scene)
            feats[i] = early_features(img)
            batch.append(img)
            if len(batch) == 256 or i == n_img - 1:
                brick[start: start + len(batch)] = np.stack(batch)
                start += len(batch)
                batch = []
    _write_json(out / GROUND_TRUTH / "scenes.json", [s.to_dict() for s in scenes])
    _write_npz(out / GROUND_TRUTH / "semantic_features.npz",
               {"features": sem, "names": np.array(SEMANTIC_FEATURES), "nsd_ids": np.arange(n_img)})
    return caps, feats, sem


def _coco_links(spec: MiniSpec, seed: int):
    """A distinct made-up COCO id and a COCO split (about 20 % val2017) for each image."""
    rng = rng_for(seed, 6)
    n_img = spec.n_images
    coco = np.sort(rng.choice(np.arange(9, 581930), size=n_img, replace=False))
    coco = coco[rng.permutation(n_img)]
    split = np.where(rng.random(n_img) < 0.2, "val2017", "train2017")
    return coco, split


def _write_stim_info(out: Path, spec: MiniSpec, shared, subjectim, master, coco, split) -> None:
    """``nsd_stim_info_merged.csv`` with NSD's columns: COCO link, shared flag, subjects, repeats."""
    n_img = spec.n_images
    shared_set = set(shared.tolist())
    reps = np.zeros((8, n_img, spec.n_repeats), np.int64)
    for s in range(8):
        trial_ids = subjectim[s][master - 1]
        count = np.zeros(n_img, int)
        for t, nid in enumerate(trial_ids):
            reps[s, nid, count[nid]] = t + 1  # 1-based trial number
            count[nid] += 1
    member = np.zeros((8, n_img), int)
    for s in range(8):
        member[s, subjectim[s]] = 1
    header = ["", "cocoId", "cocoSplit", "cropBox", "loss", "nsdId", "flagged", "BOLD5000", "shared1000"]
    header += [f"subject{s}" for s in range(1, 9)]
    header += [f"subject{s}_rep{r}" for s in range(1, 9) for r in range(spec.n_repeats)]
    path = out / NSDLayout.STIM_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        for i in range(n_img):
            row = [i, int(coco[i]), split[i], "(0, 0, 0, 0)", 0.0, i, False, False, i in shared_set]
            row += [int(member[s, i]) for s in range(8)]
            row += [int(reps[s, i, r]) for s in range(8) for r in range(spec.n_repeats)]
            w.writerow(row)


def _write_captions(out: Path, spec: MiniSpec, seed: int, coco, split, caps) -> None:
    """COCO-style caption files, one per COCO split, images sorted by COCO id."""
    ann_id = 1
    for sp in NSDLayout.COCO_SPLITS:
        idx = np.flatnonzero(split == sp)
        idx = idx[np.argsort(coco[idx])]
        images, anns = [], []
        for i in idx:
            cid = int(coco[i])
            images.append({"id": cid, "file_name": f"{cid:012d}.jpg", "height": spec.image_size,
                           "width": spec.image_size, "license": 0})
            for c in caps[i]:
                anns.append({"image_id": cid, "id": ann_id, "caption": c})
                ann_id += 1
        _write_json(out / NSDLayout.captions_file(sp), {
            "info": {"description": f"mini-NSD captions ({sp}), simulated by nsdlib.mini, seed {seed}",
                     "version": str(GENERATOR_VERSION)},
            "licenses": [], "images": images, "annotations": anns})


def _write_subject(out, spec, seed, s, ids, master, onsets, lib, early_feats, sem_feats, common, progress) -> None:
    """One subject: its ROI volumes, the time series and design of every run, and its truth."""
    b = make_brain(spec, seed, s, early_feats, sem_feats)
    amps = trial_amplitudes(b, seed, s, master)
    for name, key in ROI_VOLUMES.items():
        _write_nifti(out / NSDLayout.roi_file(s, name), b[key], (1.8, 1.8, 1.8))
    sim = RunSimulator(b, lib, spec.run_volumes)
    physio = _write_runs(out, spec, seed, s, master, onsets, amps, sim, progress)
    _write_truth(out, spec, s, ids, master, onsets, amps, b, sim, physio)
    _write_settings(out, spec, s, master, b, sim, common)


def _write_runs(out, spec, seed, s, master, onsets, amps, sim: RunSimulator, progress) -> np.ndarray:
    """Each run's time series and design file; returns the physiological time courses (n_runs, T, K)."""
    physio = np.empty((len(onsets), spec.run_volumes, NOISE["n_physio"]), np.float32)
    tpr = spec.trials_per_run
    runs = [(ses, run) for ses in range(1, spec.n_sessions + 1) for run in range(1, spec.n_runs + 1)]
    for r, (ses, run) in enumerate(_tqdm(runs, progress, desc=f"mini-NSD subj{s:02d} runs", unit="run")):
        trials = np.arange(r * tpr, (r + 1) * tpr)
        data, physio[r] = sim.run(rng_for(seed, 12, s, r), amps[trials], onsets[r])
        _write_nifti(out / NSDLayout.timeseries_file(s, ses, run), data, (1.8, 1.8, 1.8, TR))
        design = np.zeros(spec.run_volumes, np.int64)
        design[onsets[r]] = master[trials]
        p = out / NSDLayout.design_file(s, ses, run)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(f"{v}\n" for v in design))
    return physio


def _write_truth(out, spec, s, ids, master, onsets, amps, b, sim: RunSimulator, physio) -> None:
    """``ground_truth/subjNN/truth.npz``: every array the simulation used (see :class:`Truth`)."""
    tpr = spec.trials_per_run
    trial_session = np.repeat(np.arange(1, spec.n_sessions + 1), spec.trials_per_session)
    trial_run = np.tile(np.repeat(np.arange(1, spec.n_runs + 1), tpr), spec.n_sessions)
    roi_rows = sim.roi_rows
    _write_npz(out / truth_dir(s) / "truth.npz", {
        "amplitudes": amps,
        "image_response": b["image_response"].astype(np.float32),
        "trial_image_index": master.astype(np.int64),
        "trial_nsd_id": ids[master - 1].astype(np.int64),
        "trial_session": trial_session.astype(np.int64),
        "trial_run": trial_run.astype(np.int64),
        "trial_onset_volume": np.concatenate(onsets).astype(np.int64),
        "image_nsd_id": ids.astype(np.int64),
        "voxel_ijk": b["ijk"].astype(np.int64),
        "hrf_index": sim.hrf_roi,
        "hrf_index_volume": b["hrf_volume"],
        "population": np.where(b["early"], "early", "higher"),
        "area": b["area"],
        "rf_x": b["rf_x"].astype(np.float32), "rf_y": b["rf_y"].astype(np.float32),
        "rf_sigma": b["rf_sigma"].astype(np.float32),
        "early_weights": b["early_weights"].astype(np.float32),
        "semantic_weights": b["semantic_weights"].astype(np.float32),
        "gain": b["gain"].astype(np.float32), "base": b["base"].astype(np.float32),
        "trial_sd": b["trial_sd"].astype(np.float32),
        "thermal_sd": b["thermal_sd"][roi_rows].astype(np.float32),
        "physio_sd": np.sqrt((b["physio_loadings"][:, roi_rows] ** 2).sum(0)).astype(np.float32),
        "mean_volume": b["mean_volume"],
        "brain_mask": b["brain"],
        "physio_loadings": b["physio_loadings"].astype(np.float32),
        "physio_timecourses": physio,
    })


def _write_settings(out, spec, s, master, b, sim: RunSimulator, common: dict) -> None:
    """``ground_truth/subjNN/settings.json``: noise settings, timing, label names, units."""
    _write_json(out / truth_dir(s) / "settings.json", {
        **common, "subject": s, "volume_shape": list(spec.volume_shape(s)), "n_voxels": int(b["roi"].sum()),
        "n_brain": int(sim.brain_flat.size), "n_trials": int(master.size), "noise_scale": spec.noise(s),
        "noise": {**NOISE, "physio_sd": NOISE["physio_sd"] * spec.noise(s),
                  "thermal_sd": NOISE["thermal_sd"] * spec.noise(s),
                  "thermal_note": "per-voxel sd = thermal_sd * sqrt(1000 / mean) * lognormal(0, 0.15)",
                  "drift": "Legendre polynomials of degree 0..2 per run and voxel, coefficient sd drift_sd",
                  "physio": "n_physio shared time courses (breathing, aliased pulse, AR(1)s) x smooth loadings"},
        "timeseries": {"dtype": "int16", "value": "round(mean_volume * (1 + psc / 100))",
                       "outside_brain": "outside_mean + outside_sd * N(0, 1), no signal"},
        "labels": {"prf-visualrois": PRF_LABELS, "streams": STREAM_LABELS,
                   "nsdgeneral": {"-1": "outside brain", "0": "brain, not ROI", "1": "ROI"}},
        "semantic_features": list(SEMANTIC_FEATURES), "early_features": ["energy", "luminance", "red-green",
                                                                         "blue-yellow"],
        "voxel_order": "C order of nsdgeneral == 1 (vol[mask] in numpy)",
        "rf_units": "image fraction: rf_x from the left, rf_y from the top, rf_sigma in image widths",
    })
