"""The run's dataset on disk: NSD's layout at ``cfg.nsd_root``, and mini-NSD made on demand.

The bottom of :mod:`nsdlib.pipeline`: :mod:`~nsdlib.pipeline.betas` (which writes mini-NSD's
betas) and :mod:`~nsdlib.pipeline.data` (which reads any dataset's) both build on it, so
neither needs the other to find the files.

mini-NSD is generated with a fixed world seed, :data:`MINI_WORLD_SEED` (0), not with the
run's ``seed``: the world (stimuli, brains, noise) is the dataset, and changing the seed
of a run (model initialisation, random split) must not silently create another dataset.
``quick=True`` uses the "small" world, otherwise the "default" one.
"""

from __future__ import annotations

from pathlib import Path

from .. import mini
from ..config import RunConfig
from ..nsd import NSDDataError, NSDLayout

__all__ = ["MINI_WORLD_SEED", "dataset_layout", "ensure_mini_world", "mini_size", "mini_world_config"]

#: Seed of the mini-NSD world, the same for every run (see the module docstring).
MINI_WORLD_SEED = 0


def dataset_layout(cfg: RunConfig) -> NSDLayout:
    """The :class:`~nsdlib.nsd.NSDLayout` of the run's dataset (nothing is checked or made)."""
    return NSDLayout(cfg.nsd_root, dataset=cfg.dataset, cache_dir=Path(cfg.workdir) / "nsd-cache")


def mini_size(cfg: RunConfig) -> str:
    """The mini-NSD size a run uses: "small" for quick runs, "default" otherwise."""
    return "small" if cfg.quick else "default"


def mini_world_config(cfg: RunConfig) -> RunConfig:
    """The run whose mini-NSD the mini models are trained on: the run itself for
    ``dataset="mini"``; for ``dataset="nsd"``, the mini-NSD of the same work folder."""
    if cfg.dataset == "mini":
        return cfg
    return RunConfig(dataset="mini", subject=cfg.subject, workdir=cfg.workdir, quick=cfg.quick, seed=cfg.seed)


def ensure_mini_world(cfg: RunConfig, progress: bool = True) -> dict:
    """Generate the run's mini-NSD at ``cfg.nsd_root`` if absent; return its manifest.

    Raises
    ------
    NSDDataError
        ``cfg.nsd_root`` is not a local folder, or holds another mini-NSD.
    """
    if not dataset_layout(cfg).is_local:
        raise NSDDataError(f"mini-NSD is generated locally; nsd_root must be a folder, found {cfg.nsd_root!r}")
    try:
        mini.generate(cfg.nsd_root, seed=MINI_WORLD_SEED, size=mini_size(cfg), progress=progress)
    except mini.MiniRootError as exc:
        raise NSDDataError(f"{exc} (quick={cfg.quick} runs use the {mini_size(cfg)!r} mini-NSD; give this run "
                           "its own nsd_root)") from None
    return mini.read_manifest(cfg.nsd_root)
