"""Chapter 11: the decoder run from the voxels of one region at a time.

- :func:`default_regions`: the regions the chapter compares (:data:`nsdlib.nsd.ROI_SETS`):
  early visual cortex (V1-hV4), the ventral, lateral and parietal streams together, all of
  nsdgeneral and, on the real NSD, the three streams one by one and the category-selective
  ``floc`` regions.
- :func:`region_mask`: which columns of the subject's betas lie in a region, read from NSD's
  label files through :func:`nsdlib.nsd.select_voxels` (both datasets; one clear error for a
  file or label the subject lacks).
- :func:`region_voxels`: how many voxels each region has and, on mini-NSD, what the
  simulation's truth says they encode (:func:`population_encoding`).
- :func:`region_images`: first guesses and stage-2 images decoded from one region's voxels
  (ridge at stage 1, :mod:`nsdlib.pipeline.decode`); all of nsdgeneral is the run's own ridge
  pipeline, taken from its caches.
- :func:`matched_first_guesses`: a region's first guesses from a given number of its voxels, so
  that regions of different sizes compare with as many voxels each.
- :func:`evaluate_regions`: every region scored with the eight metrics (and the scene score on
  mini-NSD), rows ``"roi: <region>"`` merged into the run's results file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import mini
from ..config import RunConfig
from ..nsd import ROI_SETS, select_voxels
from . import context, data, decode, evaluation, stage1, stage2
from .results import RESULT_COLUMNS, provenance, result_row, write_results

__all__ = ["CONTRAST", "REGION_PREFIX", "default_regions", "evaluate_regions", "matched_first_guesses",
           "population_encoding", "region_images", "region_mask", "region_voxels"]

#: The ``regressor`` of a region's row in the results file: ``"roi: <region>"``.
REGION_PREFIX = "roi: "
#: The two regions chapter 11 sets against each other: early visual cortex and the higher streams.
CONTRAST = ("early (V1–hV4)", "higher (ventral, lateral, parietal)")


def default_regions(cfg: RunConfig) -> dict[str, str]:
    """Region name -> spec: every region of :data:`nsdlib.nsd.ROI_SETS` on NSD; on mini-NSD (no ``floc``
    regions; a CPU book) the early voxels, the three higher streams together and all of nsdgeneral.

    On mini-NSD each region costs a stage-2 pass over the test set on the CPU (nsdgeneral none: it is
    the run's own ridge pipeline), so the streams one by one are left to the ``rois`` parameter.
    """
    if cfg.dataset == "nsd":
        return dict(ROI_SETS)
    return {k: ROI_SETS[k] for k in (*CONTRAST, "nsdgeneral")}


def _regions(cfg: RunConfig, rois) -> dict[str, str]:
    """``rois`` as name -> spec: None (the defaults), a dict, or a list of names of ROI_SETS or specs."""
    if rois is None:
        return default_regions(cfg)
    if isinstance(rois, dict):
        return {str(k): str(v) for k, v in rois.items()}
    if isinstance(rois, str):
        rois = [rois]
    return {r: ROI_SETS.get(r, r) for r in rois}


def region_mask(cfg: RunConfig, spec: str) -> np.ndarray:
    """Which columns of the run's betas lie in the region ``spec`` (a name of ROI_SETS or a spec).

    Returns
    -------
    ndarray of shape (n_voxels,), bool

    Raises
    ------
    nsdlib.nsd.NSDDataError
        A label file or a label the subject's files do not have (:func:`nsdlib.nsd.select_voxels`).
    """
    sd = context.get(cfg).subject()
    return select_voxels(data.ensure_dataset(cfg, progress=False), cfg.subject, ROI_SETS.get(spec, spec),
                         sd.roi_ijk[sd.voxel_index], sd.grid_shape)


def population_encoding(cfg: RunConfig, mask: np.ndarray) -> dict:
    """What mini-NSD's truth says the voxels of ``mask`` encode.

    Early voxels (V1-hV4) have receptive fields on the image and respond to its local contrast,
    luminance and colour (weights ``early_weights``); higher voxels respond to semantic features of
    the scene (``semantic_weights``: shape category, colour, count...). Returns the shares of the
    region's voxels with image (pixel-level) weights and with semantic weights, and the share of
    early voxels. NaN on NSD, which has no truth.
    """
    if cfg.dataset != "mini":
        return {"image features": np.nan, "semantic features": np.nan, "early voxels": np.nan}
    sd = context.get(cfg).subject()
    t = mini.truth(cfg.nsd_root, cfg.subject)
    cols = sd.voxel_index
    if not np.array_equal(t.voxel_ijk[cols], sd.roi_ijk[cols]):
        raise ValueError("mini-NSD's truth and the subject's betas list the nsdgeneral voxels in different orders")
    sel = cols[np.asarray(mask, bool)]
    return {"image features": float((np.abs(t.arrays["early_weights"][sel]).sum(1) > 0).mean()),
            "semantic features": float((np.abs(t.arrays["semantic_weights"][sel]).sum(1) > 0).mean()),
            "early voxels": float((t.population[sel] == "early").mean())}


def region_voxels(cfg: RunConfig, rois=None) -> pd.DataFrame:
    """One row per region: its spec, its voxels among the betas' and, on mini-NSD, what they encode."""
    sd = context.get(cfg).subject()
    rows = []
    for name, spec in _regions(cfg, rois).items():
        mask = region_mask(cfg, spec)
        rows.append({"region": name, "spec": spec, "voxels": int(mask.sum()), "share": float(mask.mean()),
                     **population_encoding(cfg, mask)})
    out = pd.DataFrame(rows).set_index("region")
    out.attrs["n_voxels"] = sd.n_voxels
    return out


def region_images(cfg: RunConfig, spec: str, *, progress: bool = False) -> dict[str, np.ndarray]:
    """First guesses and stage-2 images of the test set decoded from one region's voxels.

    Stage 1 is ridge (:func:`nsdlib.pipeline.stage1.first_guesses_from_betas`), stage 2 the run's
    from its first guesses and the CLIP embeddings predicted from the same voxels. All of
    nsdgeneral is the run's own ridge pipeline (``stage1.first_guesses(cfg, "ridge")``, stage 2
    from it), read from the caches chapters 05-09 filled.

    Returns
    -------
    dict
        ``first_guesses`` and ``images`` (uint8, one per test image), ``voxels`` (int).
    """
    mask = region_mask(cfg, spec)
    if mask.all():
        fg = stage1.first_guesses(cfg, regressor="ridge")
        return {"first_guesses": fg, "images": stage2.stage2_images(cfg, fg, progress=progress),
                "voxels": int(mask.sum())}
    sd = context.get(cfg).subject()
    out = decode.decode_betas(cfg, sd.train_betas[:, mask], sd.test_betas[:, mask], progress=progress)
    return {"first_guesses": out["first_guesses"], "images": out["images"], "voxels": int(mask.sum())}


def matched_first_guesses(cfg: RunConfig, spec: str, n_voxels: int, *, seed: int | None = None) -> np.ndarray:
    """First guesses decoded from ``n_voxels`` voxels of a region drawn at random (seeded), so that two
    regions of different sizes can be compared with as many voxels each (stage 1 only: no stage-2 pass).

    Returns
    -------
    uint8 ndarray of shape (n_test, s, s, 3)
    """
    cols = np.flatnonzero(region_mask(cfg, spec))
    if not 0 < n_voxels <= len(cols):
        raise ValueError(f"{spec!r} has {len(cols)} voxels; asked for {n_voxels}")
    keep = np.sort(np.random.default_rng(cfg.seed if seed is None else seed).choice(cols, n_voxels, replace=False))
    sd = context.get(cfg).subject()
    return stage1.first_guesses_from_betas(cfg, sd.train_betas[:, keep], sd.test_betas[:, keep])["images"]


def _matched(cfg: RunConfig, regions: dict, images: dict, first: dict, progress: bool) -> dict | None:
    """The contrast's two regions at the same voxel count: the larger one's first guesses from as many of its
    voxels as the smaller has (region -> MetricReport), or None without both regions or with equal sizes."""
    if not all(r in regions for r in CONTRAST):
        return None
    (big, small) = sorted(CONTRAST, key=lambda r: -images[r]["voxels"])
    if images[big]["voxels"] == images[small]["voxels"]:
        return None
    fg = matched_first_guesses(cfg, regions[big], images[small]["voxels"])
    return {big: evaluation.score(cfg, fg, progress=progress), small: first[small]}


def evaluate_regions(cfg: RunConfig, rois=None, *, write: bool = True, progress: bool = False) -> dict:
    """Every region decoded and scored: the eight metrics, and the scene score on mini-NSD.

    Parameters
    ----------
    rois : None, dict, str or list
        Regions: None for :func:`default_regions`; names of :data:`nsdlib.nsd.ROI_SETS` or specs
        (``"streams:ventral"``); or a dict name -> spec.
    write : bool
        Merge one row per region into the run's results file (``regressor`` ``"roi: <name>"``,
        the run's ``n_layers``; the cross-subject report averages them like the others).

    Returns
    -------
    dict
        ``rows``: pandas.DataFrame of :data:`~nsdlib.pipeline.results.RESULT_COLUMNS` plus
        ``region`` and ``voxels``; ``reports``: region -> MetricReport of its stage-2 images;
        ``first_guess_reports``: the same of its first guesses (stage 1 alone); ``matched_reports``: the
        first guesses of the two regions of :data:`CONTRAST` with as many voxels each (the larger one's
        drawn at random, :func:`matched_first_guesses`; None without both or when they are equal);
        ``images``: region ->
        the output of :func:`region_images`; ``scene``: the scene score of each region's first guesses
        and stage 2 (:func:`nsdlib.pipeline.evaluation.scene_scores`, stages ``"<region>: first guess"``
        and ``"<region>: stage 2"``), or None without scene networks.
    """
    regions = _regions(cfg, rois)
    images = {name: region_images(cfg, spec, progress=progress) for name, spec in regions.items()}
    reports = {name: evaluation.score(cfg, im["images"], progress=progress) for name, im in images.items()}
    first = {name: evaluation.score(cfg, im["first_guesses"], progress=progress) for name, im in images.items()}
    rows = [{**result_row(cfg, REGION_PREFIX + name, cfg.n_layers, "none", reports[name]), "region": name,
             "voxels": images[name]["voxels"]} for name in regions]
    if write:
        write_results(cfg, [{k: r[k] for k in RESULT_COLUMNS} for r in rows], *provenance(reports.values()))
    scene = None
    if evaluation.scene_probe_info(cfg)["available"]:
        stages = {f"{name}: {part}": im[key] for name, im in images.items()
                  for part, key in (("first guess", "first_guesses"), ("stage 2", "images"))}
        scene = evaluation.scene_scores(cfg, stages=stages)
    return {"rows": pd.DataFrame(rows, columns=[*RESULT_COLUMNS, "region", "voxels"]), "reports": reports,
            "first_guess_reports": first, "matched_reports": _matched(cfg, regions, images, first, progress),
            "images": images, "scene": scene}
