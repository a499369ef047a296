"""The simulated experiment: its sizes and timing (:class:`MiniSpec`), and its trial design.

Everything random in mini-NSD comes from one seed, through an independent generator per
component of the world (:func:`rng_for`), so the order of use does not matter. The design
follows NSD's conventions: ``masterordering`` (one 1-based index per trial into a subject's
image list, the same for every subject), ``subjectim`` (8 rows of 1-based 73k ids, the shared
images first) and, per run, the onset volume of each trial.

mini-NSD's own files (beside NSD's layout, which :class:`nsdlib.nsd.NSDLayout` names) are
named here: the manifest :data:`MANIFEST` and the ground truth under :data:`GROUND_TRUTH`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..guard import reading
from ..names import SUBJECTS
from ..nsd import NSDLayout, check_subject
from ..nsd.layout import MINI_MANIFEST, mini_generate_command
from .world import Scene

__all__ = [
    "GENERATOR_VERSION",
    "GROUND_TRUTH",
    "MANIFEST",
    "STIM_DUR",
    "TR",
    "TRIAL_DUR",
    "MiniRootError",
    "MiniSpec",
    "basic_counts",
    "image_assignment",
    "master_ordering",
    "read_manifest",
    "read_scenes",
    "rng_for",
    "run_onsets",
    "spec_for",
    "truth_dir",
]

#: Version of the simulation; a root written by another version is not reused.
GENERATOR_VERSION = 3
#: Repetition time (s), stimulus duration (s) and trial duration (s: 3 on, 1 off).
TR, STIM_DUR, TRIAL_DUR = 1.0, 3.0, 4.0
#: mini-NSD's manifest (seed, size, version, spec), at the root.
MANIFEST = MINI_MANIFEST
#: Folder of the ground truth (what each image shows, what each subject's simulation used).
GROUND_TRUTH = "ground_truth"


def truth_dir(subject: int) -> str:
    """``ground_truth/subjNN``: the folder of one subject's truth, relative to the root."""
    return f"{GROUND_TRUTH}/{NSDLayout.subject_dir(check_subject(subject))}"


class MiniRootError(ValueError):
    """A mini-NSD root cannot be used as asked (other seed or size, not a mini-NSD folder...)."""


# ------------------------------------------------------------------------- the spec
@dataclasses.dataclass(frozen=True)
class MiniSpec:
    """The sizes and timing of one mini-NSD variant (see :func:`spec_for`).

    Attributes
    ----------
    size : {"default", "small"}
    n_shared : int
        Shared (test) images, seen by every subject.
    n_train : int
        Training images per subject (different for each subject).
    n_repeats : int
        Presentations of every image (NSD: up to 3).
    n_sessions, n_runs : int
        Sessions per subject and runs per session.
    n_blank : int
        Blank 4-s slots per run (no stimulus), placed among the trials.
    rest_start, rest_end : int
        Seconds of rest before the first and after the last slot of a run.
    image_size : int
        Height and width of the stimuli (pixels).
    n_voxels : tuple of (subject, count)
        nsdgeneral voxels per subject (about a tenth of NSD's 15,724 / 14,278 / 13,039 / 12,682
        by default).
    volume_shapes : tuple of (subject, (X, Y, Z))
        Grid of each subject's functional volume.
    noise_scale : tuple of (subject, factor)
        Multiplies the thermal and physiological noise (subject 7 the noisiest).
    """

    size: str
    n_shared: int
    n_train: int
    n_repeats: int
    n_sessions: int
    n_runs: int
    n_blank: int
    n_voxels: tuple
    volume_shapes: tuple
    noise_scale: tuple = ((1, 1.0), (2, 1.15), (5, 1.3), (7, 1.6))
    rest_start: int = 4
    rest_end: int = 12
    image_size: int = 128
    tr: float = TR
    stim_dur: float = STIM_DUR
    trial_dur: float = TRIAL_DUR

    def __post_init__(self):
        if self.n_trials % (self.n_sessions * self.n_runs):
            raise ValueError(f"{self.n_trials} trials do not split into {self.n_sessions} sessions x "
                             f"{self.n_runs} runs")

    @property
    def n_per_subject(self) -> int:
        """Images per subject (shared + training): the length of a ``subjectim`` row."""
        return self.n_shared + self.n_train

    @property
    def n_trials(self) -> int:
        """Trials per subject (= length of ``masterordering``)."""
        return self.n_per_subject * self.n_repeats

    @property
    def n_images(self) -> int:
        """Rows of ``imgBrick``: the shared images and every subject's training images."""
        return self.n_shared + len(SUBJECTS) * self.n_train

    @property
    def trials_per_session(self) -> int:
        return self.n_trials // self.n_sessions

    @property
    def trials_per_run(self) -> int:
        return self.trials_per_session // self.n_runs

    @property
    def run_volumes(self) -> int:
        """Volumes (TRs) per run."""
        slot = int(round(self.trial_dur / self.tr))
        return int(round((self.rest_start + self.rest_end) / self.tr)) + slot * (self.trials_per_run + self.n_blank)

    def voxels(self, subject: int) -> int:
        return dict(self.n_voxels)[check_subject(subject)]

    def volume_shape(self, subject: int) -> tuple[int, int, int]:
        return tuple(dict(self.volume_shapes)[check_subject(subject)])

    def noise(self, subject: int) -> float:
        return float(dict(self.noise_scale)[check_subject(subject)])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("n_voxels", "volume_shapes", "noise_scale"):
            d[k] = {str(s): (list(v) if isinstance(v, tuple) else v) for s, v in d[k]}
        d.update(n_per_subject=self.n_per_subject, n_trials=self.n_trials, n_images=self.n_images,
                 trials_per_run=self.trials_per_run, run_volumes=self.run_volumes)
        return d


_SPECS = {
    "default": MiniSpec(
        size="default", n_shared=100, n_train=1000, n_repeats=3, n_sessions=10, n_runs=6, n_blank=5,
        n_voxels=((1, 1572), (2, 1428), (5, 1304), (7, 1268)),
        volume_shapes=((1, (18, 22, 17)), (2, (18, 21, 16)), (5, (17, 21, 16)), (7, (17, 20, 16))),
    ),
    "small": MiniSpec(
        size="small", n_shared=20, n_train=60, n_repeats=3, n_sessions=2, n_runs=3, n_blank=4,
        n_voxels=((1, 200), (2, 182), (5, 166), (7, 161)),
        volume_shapes=((1, (9, 11, 9)), (2, (9, 11, 8)), (5, (9, 10, 8)), (7, (8, 10, 8))),
    ),
}


def spec_for(size: str) -> MiniSpec:
    """The :class:`MiniSpec` of ``size`` ("default" or "small")."""
    if size not in _SPECS:
        raise ValueError(f"size must be 'default' or 'small'; found {size!r}")
    return _SPECS[size]


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one component of the world (order of use does not matter)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in keys)))



# ------------------------------------------------------------------ experiment design
def master_ordering(spec: MiniSpec, seed: int) -> np.ndarray:
    """1-based indices into a subject's image list, one per trial, the same for every subject.

    Each image is shown ``n_repeats`` times; repeats fall within about a quarter of the
    experiment of the first showing (so many repeat within a session, as the GLM's
    cross-validation needs) and never on consecutive trials.
    """
    rng = rng_for(seed, 2)
    n = spec.n_per_subject
    span = 0.25
    first = rng.uniform(0, 1 - span, size=n)
    keys = np.concatenate([first] + [first + rng.uniform(0, span, size=n) for _ in range(spec.n_repeats - 1)])
    ids = np.tile(np.arange(1, n + 1), spec.n_repeats)
    order = ids[np.argsort(keys, kind="stable")]
    n_tr = order.size
    for i in range(1, n_tr):  # no image on two consecutive trials: swap with the nearest fitting trial
        if not _clash(order, i):
            continue
        for j in [*range(i + 1, n_tr), *range(i - 2, -1, -1)]:
            order[i], order[j] = order[j], order[i]
            if not any(_clash(order, k) for k in (i, i + 1, j, j + 1)):
                break
            order[i], order[j] = order[j], order[i]
    return order.astype(np.int64)


def _clash(order: np.ndarray, k: int) -> bool:
    """Whether trial ``k`` shows the same image as trial ``k - 1``."""
    return bool(0 < k < order.size and order[k] == order[k - 1])


def image_assignment(spec: MiniSpec, seed: int):
    """0-based ids: sorted shared ids, each data subject's training ids, and 8 subjectim rows."""
    rng = rng_for(seed, 3)
    perm = rng.permutation(spec.n_images)
    shared = np.sort(perm[: spec.n_shared])
    train = {s: perm[spec.n_shared + k * spec.n_train: spec.n_shared + (k + 1) * spec.n_train]
             for k, s in enumerate(SUBJECTS)}
    pool = np.concatenate([train[s] for s in SUBJECTS])
    rows = []
    for s in range(1, 9):
        extra = train[s] if s in train else rng.choice(pool, size=spec.n_train, replace=False)
        rows.append(np.concatenate([shared, extra]))
    return shared, train, np.stack(rows)


def run_onsets(spec: MiniSpec, seed: int) -> list[np.ndarray]:
    """Per run (session-major), the onset volume of each of its trials (same for all subjects)."""
    slot = int(round(spec.trial_dur / spec.tr))
    start = int(round(spec.rest_start / spec.tr))
    out = []
    for r in range(spec.n_sessions * spec.n_runs):
        rng = rng_for(seed, 4, r)
        n_slots = spec.trials_per_run + spec.n_blank
        blanks = 1 + rng.choice(n_slots - 1, size=spec.n_blank, replace=False)
        slots = np.setdiff1d(np.arange(n_slots), blanks)
        out.append(start + slot * slots)
    return out



def basic_counts(spec: MiniSpec, master: np.ndarray) -> np.ndarray:
    """Per session: trials of images shown for the first, second and third time (3 x n_sessions)."""
    seen = np.zeros(spec.n_per_subject + 1, int)
    cnt = np.zeros((spec.n_repeats, spec.n_sessions), np.int32)
    for i, m in enumerate(master):
        cnt[min(seen[m], spec.n_repeats - 1), i // spec.trials_per_session] += 1
        seen[m] += 1
    return cnt


def read_manifest(root) -> dict | None:
    """The ``mini_nsd.json`` of a mini-NSD root (seed, size, version, spec), or None if absent."""
    p = Path(root) / MANIFEST
    if not p.is_file():
        return None
    with reading(p, "mini-NSD's JSON manifest", f"delete it and write the world again with "
                 f"`nsdlib mini generate --root {root} --overwrite`"):
        return json.loads(p.read_text())


def read_scenes(root) -> list[Scene]:
    """Every image's scene description, from ``<root>/ground_truth/scenes.json``.

    Returns
    -------
    list of Scene
        Index ``i`` describes 0-based nsdId ``i`` (row ``i`` of ``imgBrick``).

    Raises
    ------
    MiniRootError
        When the file is absent (not a mini-NSD root, or one written before it was kept).
    """
    p = Path(root) / GROUND_TRUTH / "scenes.json"
    if not p.is_file():
        raise MiniRootError(f"{p} not found: {root} is not a complete mini-NSD root; generate it with "
                            f"{mini_generate_command(root)}")
    with reading(p, "a JSON list of scenes", f"restore it with {mini_generate_command(root)}"):
        return [Scene.from_dict(d) for d in json.loads(p.read_text())]
