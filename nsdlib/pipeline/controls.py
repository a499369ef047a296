"""Controls beside the pipeline's scores (chapter 09): retrieval, shuffled betas, train-test overlap.

A reconstruction's scores mean decoding only if they beat what needs no decoding. Three
controls, each cached in the run's store:

- :func:`retrieval`: the retrieval baseline. For each test image, the *training* image whose
  CLIP-vision embedding is nearest (cosine) the embedding the CLIP ridge *predicted* from the
  test betas; scored with the same metrics, it says how far "show a typical training image of
  the decoded kind" goes. The vector compared is chosen by ``vector``: ``"class"`` (default),
  the class token, token 0 of the 257 the pipeline regresses: CLIP's image embedding, the
  vector CLIP retrieval compares; ``"flat"``, all 257 tokens flattened.
- :func:`shuffled_images`: the shuffled-betas null. The pipeline run on the test betas
  permuted across images by a seeded derangement (:func:`shuffle_permutation`: no image keeps
  its own betas): stage 1's fitted regressor and the CLIP ridges predict from the permuted
  betas (row by row, so their predictions are permuted rather than refitted), the first
  guesses are decoded and stage 2 run as usual, each position keeping its own noise seeds.
  Its scores are chance measured on this run's images, not assumed to be 0.5.
- :func:`overlap`: how close each test image is to the training set, the cosine of its
  nearest training image (CLIP-vision embedding, ``vector`` as above), beside each training
  image's nearest *other* training image for reference; :func:`overlap_dependence` says
  whether the per-image scores follow it (Spearman's rho). NSD's training and test images
  share semantic clusters (Shirakawa et al. 2024), so a decoder can score well by retrieving a
  cluster's typical image; a strong positive rho is the sign of it.
- :func:`evaluate_controls`: both controls scored (:func:`nsdlib.pipeline.evaluation.score`),
  rows labelled :data:`RETRIEVAL` and :data:`SHUFFLED` merged into the run's results file
  (:mod:`nsdlib.pipeline.results`), and the seconds each control added when it was computed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .. import metrics as M
from ..config import RunConfig
from ..names import IMAGE_METRICS
from ..nsd import read_stimuli
from ..store import array_key, params_key
from . import context, data, evaluation, stage1, stage2
from .results import RESULT_COLUMNS, provenance, result_row, write_results

__all__ = [
    "CONTROLS",
    "RETRIEVAL",
    "RETRIEVAL_LAYERS",
    "SHUFFLED",
    "VECTORS",
    "embedding_vectors",
    "evaluate_controls",
    "nearest_neighbours",
    "overlap",
    "overlap_dependence",
    "retrieval",
    "shuffle_permutation",
    "shuffled_images",
]

_VERSION = 1
#: The ``regressor`` of the controls' rows in the results file.
RETRIEVAL = "control: retrieval"
SHUFFLED = "control: shuffled betas"
CONTROLS = (RETRIEVAL, SHUFFLED)
#: The ``n_layers`` of the retrieval row: it predicts no VDVAE blocks (the shuffled row has the run's).
RETRIEVAL_LAYERS = 0
#: Which vector of the (n, 257, d) CLIP-vision embedding is compared: the class token or all tokens.
VECTORS = ("class", "flat")


# ------------------------------------------------------------------ arrays
def embedding_vectors(embeddings, vector: str = "class") -> np.ndarray:
    """Unit vectors of CLIP-vision embeddings, for cosine similarity.

    Parameters
    ----------
    embeddings : ndarray of shape (n, n_tokens, d)
    vector : {"class", "flat"}
        Token 0 (the class token) or all tokens flattened.

    Returns
    -------
    ndarray of shape (n, d) or (n, n_tokens * d), float32, each row of norm 1
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 3:
        raise ValueError(f"CLIP-vision embeddings of shape (n, n_tokens, d) expected; found shape {emb.shape}")
    if vector not in VECTORS:
        raise ValueError(f"vector must be one of {', '.join(VECTORS)}; found {vector!r}")
    v = (emb[:, 0] if vector == "class" else emb.reshape(len(emb), -1)).astype(np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or (norms == 0).any():
        bad = int(np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))[0])
        raise ValueError(f"embedding {bad} has norm {float(norms[bad, 0])}; a cosine needs a finite, non-zero vector")
    return (v / norms).astype(np.float32)


def nearest_neighbours(query, reference, *, exclude_self: bool = False, block: int = 1024
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's most similar reference row by cosine (rows already of norm 1).

    Parameters
    ----------
    query : ndarray of shape (n, d)
    reference : ndarray of shape (m, d)
    exclude_self : bool
        ``query`` is ``reference``: a row's own entry does not count (needs m >= 2).
    block : int
        Query rows per matrix product (memory: block x m).

    Returns
    -------
    index : int64 ndarray of shape (n,)
        Row of ``reference`` (ties: the lowest).
    cosine : float64 ndarray of shape (n,)
    """
    q, r = np.asarray(query, np.float32), np.asarray(reference, np.float32)
    if q.ndim != 2 or r.ndim != 2 or q.shape[1] != r.shape[1] or len(r) < 1 + exclude_self:
        raise ValueError(f"query (n, d) and reference (m, d) with the same d expected; found {q.shape} and {r.shape}")
    if exclude_self and len(q) != len(r):
        raise ValueError(f"exclude_self compares a set with itself; found {len(q)} and {len(r)} rows")
    index, cosine = np.empty(len(q), np.int64), np.empty(len(q), np.float64)
    for start in range(0, len(q), block):
        sims = q[start:start + block] @ r.T
        if exclude_self:
            rows = np.arange(len(sims))
            sims[rows, start + rows] = -np.inf
        index[start:start + block] = sims.argmax(1)
        cosine[start:start + block] = sims[np.arange(len(sims)), index[start:start + block]]
    return index, cosine


def shuffle_permutation(n: int, seed: int) -> np.ndarray:
    """A seeded random derangement of ``n`` images: no image keeps its own position.

    Permutations are drawn from ``np.random.default_rng(seed)`` until one has no fixed point
    (about e = 2.7 draws on average), so the result is uniform over derangements and the same
    for the same seed.

    Returns
    -------
    int64 ndarray of shape (n,)
        ``perm[i]``: the image whose betas position ``i`` receives.
    """
    if n < 2:
        raise ValueError(f"a shuffle needs at least 2 test images; found {n}")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm.astype(np.int64)


def overlap_dependence(similarity, report: M.MetricReport, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Whether each per-image score follows the test image's nearest-training-image similarity.

    Parameters
    ----------
    similarity : ndarray of shape (n_images,)
        From :func:`overlap` (``"cosine"``).
    report : MetricReport
        Per-image scores of one set of reconstructions of the same images.
    metrics : sequence of str, optional
        Default every metric the report computed, with ``ssim_2d``.

    Returns
    -------
    pandas.DataFrame
        Indexed by metric: ``rho`` (Spearman), ``p`` (two-sided), ``n``. A metric whose
        per-image values are constant has rho NaN.
    """
    sim = np.asarray(similarity, np.float64)
    shown = metrics or [m for m in (*IMAGE_METRICS, "ssim_2d") if report.status.get(m, "ok") == "ok"
                        and m in report.per_image]
    rows = []
    for m in shown:
        values = np.asarray(report.per_image[m], np.float64)
        if values.shape != sim.shape:
            raise ValueError(f"{m}: one score per image expected ({len(sim)}); found shape {values.shape}")
        if np.ptp(values) == 0 or np.ptp(sim) == 0:
            rho, p = float("nan"), float("nan")
        else:
            res = stats.spearmanr(sim, values)
            rho, p = float(res.statistic), float(res.pvalue)
        rows.append({"metric": m, "rho": rho, "p": p, "n": len(sim)})
    return pd.DataFrame(rows, columns=["metric", "rho", "p", "n"]).set_index("metric")


# ---------------------------------------------------------------- cached
def _embedding_key(cfg: RunConfig, vector: str) -> dict:
    """What the run's CLIP-vision embeddings of both splits depend on (as ``stage2.clip_embeddings`` keys them)."""
    subj = context.get(cfg).subject()
    return {"v": _VERSION, "dataset": cfg.dataset, "clip": context.get(cfg).source("clip").fingerprint,
            "train": params_key({"ids": np.asarray(subj.train_ids).tolist()}),
            "test": params_key({"ids": np.asarray(subj.test_ids).tolist()}), "vector": vector}


def _training_images(cfg: RunConfig, ids) -> np.ndarray:
    """Training stimuli by 73k id at their stored size, read one by one (not the whole training set)."""
    return read_stimuli(data.ensure_dataset(cfg, progress=False), ids, progress=False)


def retrieval(cfg: RunConfig, *, vector: str = "class", progress: bool = True) -> dict[str, np.ndarray]:
    """The retrieval baseline: for each test image, the training image nearest its predicted CLIP embedding.

    Parameters
    ----------
    vector : {"class", "flat"}
        See :func:`embedding_vectors`.

    Returns
    -------
    dict
        ``positions`` (n_test,): rows of the training set; ``train_ids``: their 73k ids;
        ``cosine``: similarity of each to the prediction; ``images``: uint8 (n_test, S, S, 3),
        the retrieved training stimuli at their stored size (S as the test stimuli).
    """
    subj = context.get(cfg).subject()
    name = stage2.resolve_alphas(cfg)[0]
    params = {**_embedding_key(cfg, vector), "alpha": name,
              "betas": array_key(subj.train_ids, subj.test_ids, subj.train_betas, subj.test_betas)}

    def compute():
        pred = stage2.clip_predictions(cfg, progress=progress)["vision"]
        train = stage2.clip_embeddings(cfg, "train", progress=progress)["vision"]
        pos, cos = nearest_neighbours(embedding_vectors(pred, vector), embedding_vectors(train, vector))
        ids = np.asarray(subj.train_ids, np.int64)[pos]
        return {"positions": pos, "train_ids": ids, "cosine": cos, "images": _training_images(cfg, ids)}

    return context.get(cfg).store.arrays("control_retrieval", params, compute)


def overlap(cfg: RunConfig, *, vector: str = "class", progress: bool = True) -> dict[str, np.ndarray]:
    """How close each test image is to the training set (CLIP-vision embeddings, cosine).

    Returns
    -------
    dict
        ``test_ids`` (n_test,); ``nearest_train_ids`` and ``cosine`` (n_test,): each test
        image's nearest training image and its similarity (1: a duplicate); ``train_cosine``
        (n_train,): each training image's nearest *other* training image, the reference of
        what "close" means among the training images themselves.
    """
    subj = context.get(cfg).subject()

    def compute():
        test = embedding_vectors(stage2.clip_embeddings(cfg, "test", progress=progress)["vision"], vector)
        train = embedding_vectors(stage2.clip_embeddings(cfg, "train", progress=progress)["vision"], vector)
        pos, cos = nearest_neighbours(test, train)
        _, train_cos = nearest_neighbours(train, train, exclude_self=True)
        return {"test_ids": np.asarray(subj.test_ids, np.int64),
                "nearest_train_ids": np.asarray(subj.train_ids, np.int64)[pos], "cosine": cos,
                "train_cosine": train_cos}

    return context.get(cfg).store.arrays("control_overlap", _embedding_key(cfg, vector), compute)


def shuffled_images(cfg: RunConfig, *, seed: int | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """The shuffled-betas null: the run's pipeline on its test betas permuted across images.

    Parameters
    ----------
    seed : int, optional
        Of the permutation (:func:`shuffle_permutation`); default the run's seed.

    Returns
    -------
    dict
        ``permutation`` (n_test,): position ``i`` got the betas of test image
        ``permutation[i]``; ``first_guesses`` and ``images`` (uint8), stage 1's and stage 2's
        output in test-set order, each cached where the pipeline caches its own.
    """
    n = len(context.get(cfg).subject().test_ids)
    perm = shuffle_permutation(n, cfg.seed if seed is None else seed)
    fg = stage1.first_guesses(cfg, permutation=perm)
    images = stage2.stage2_images(cfg, fg, permutation=perm, progress=progress)
    return {"permutation": perm, "first_guesses": fg, "images": images}


def _timed(cfg: RunConfig, name: str, params: dict, make: Callable[[], object]) -> tuple[object, float]:
    """``make()`` and the seconds it took the first time (recorded in the store; later calls reuse its caches)."""
    rec = context.get(cfg).store.json(f"{name}_seconds", params, lambda: {"seconds": _seconds(make)})
    return make(), float(rec["seconds"])


def _seconds(make: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    make()
    return time.perf_counter() - t0


def evaluate_controls(cfg: RunConfig, *, vector: str = "class", seed: int | None = None, write: bool = True,
                      progress: bool = True) -> dict:
    """Score both controls with the pipeline's metrics and measure the train-test overlap.

    Parameters
    ----------
    vector : {"class", "flat"}
        The CLIP-vision vector compared by retrieval and overlap (:func:`embedding_vectors`).
    seed : int, optional
        Of the shuffle (default the run's seed).
    write : bool
        Merge the two rows into the run's results file (``regressor`` :data:`RETRIEVAL`,
        ``n_layers`` :data:`RETRIEVAL_LAYERS`; :data:`SHUFFLED`, the run's ``n_layers``).

    Returns
    -------
    dict
        ``rows``: pandas.DataFrame of :data:`~nsdlib.pipeline.results.RESULT_COLUMNS`, one row
        per control (the shuffled row carries the latent errors of its permuted predictions);
        ``reports``: label -> MetricReport; ``retrieval``, ``shuffled``, ``overlap``: the
        outputs of :func:`retrieval`, :func:`shuffled_images`, :func:`overlap`; ``seconds``:
        label -> seconds each took when first computed, scoring included (``"overlap"`` too).
    """
    perm_seed = cfg.seed if seed is None else seed
    base = {"v": _VERSION, "regressor": cfg.regressor, "n_layers": cfg.n_layers, "seed": cfg.seed,
            "final": array_key(evaluation.final_images(cfg)), "vector": vector, "shuffle_seed": perm_seed}

    def ret():
        r = retrieval(cfg, vector=vector, progress=progress)
        return r, evaluation.score(cfg, r["images"], progress=progress)

    def shuf():
        s = shuffled_images(cfg, seed=perm_seed, progress=progress)
        return s, evaluation.score(cfg, s["images"], progress=progress)

    (r, r_rep), r_s = _timed(cfg, "control_retrieval", base, ret)
    (s, s_rep), s_s = _timed(cfg, "control_shuffled", base, shuf)
    ov, o_s = _timed(cfg, "control_overlap", base, lambda: overlap(cfg, vector=vector, progress=progress))
    lat = stage1.test_latents(cfg)
    rows = [result_row(cfg, RETRIEVAL, RETRIEVAL_LAYERS, "none", r_rep),
            result_row(cfg, SHUFFLED, cfg.n_layers, "none", s_rep,
                       M.latent_errors(lat["true"], lat["pred"][s["permutation"]]))]
    if write:
        write_results(cfg, rows, *provenance([r_rep, s_rep]))
    return {"rows": pd.DataFrame(rows, columns=list(RESULT_COLUMNS)), "reports": {RETRIEVAL: r_rep, SHUFFLED: s_rep},
            "retrieval": r, "shuffled": s, "overlap": ov,
            "seconds": {RETRIEVAL: r_s, SHUFFLED: s_s, "overlap": o_s}}
