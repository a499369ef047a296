"""Multi-target ridge regression at NSD scale.

Both stages of the paper map fMRI betas to very wide targets with ridge regression: VDVAE
latents (91,168 values), CLIP-text (77 x 768) and CLIP-vision (257 x 768) embeddings, from
about 9,000 training images and 15,724 voxels. Brain-Diffuser fits scikit-learn's ``Ridge``
once per CLIP token with a fixed alpha; this module solves all targets at once.

How it works
------------
With ``X`` centred (when an intercept is fitted), ridge predictions for new rows ``Z`` are::

    Z W = Z (X'X + alpha I)^-1 X'Y = Z X' (X X' + alpha I)^-1 Y     (kernel form)

so one ``(n_test, n_train)`` matrix ``M = Z X' (X X' + alpha I)^-1`` turns the training targets
into test predictions, whatever their number: ``M`` is built from one Cholesky factor of the
``(n, n)`` kernel (or of the ``(p, p)`` covariance when there are more samples than features)
and then applied to batches of target columns streamed from host memory. The weight matrix
``W`` (12 GB in float32 for subject 1's CLIP-vision regression) is never formed unless asked
for (:class:`Ridge` computes it as ``X'(XX' + alpha I)^-1 Y``, by the same streaming).

Cross-validation shares its factorisations across all targets. Leave-one-out and generalised
cross-validation (GCV) use one eigendecomposition ``K = V S V'`` of the training kernel for
every alpha as well: each alpha only rescales the projected targets ``V'Y`` (for GCV, at a
cost per alpha of one pass over ``V'Y``'s squares). k-fold in the kernel form takes each
fold's training and validation kernels as slices of the whole kernel (re-centred on the fold's
training rows, exactly) and decomposes each fold's kernel once, ``Ktr = U S U'``; each alpha
then costs one product ``(Kva U) diag(1/(s + alpha)) U'Y``. That decomposition runs in float32
when the working dtype is float32 and ``s_max / min(alphas) <= 1e3`` (rounding stays about
1e-4 relative); otherwise, and in the primal form, each fold and alpha gets a float64 Cholesky
factor and the ``(n_val, n_train)`` map it gives. Errors can be pooled per target, per token
(all but the last target axis) or over the whole regression; a pooled group wider than the
number of samples is first compressed to an ``(n, n)`` matrix with (to rounding) the same Gram
matrix ``YY'``, which leaves every squared error unchanged.

Products run in the requested ``dtype`` (float32 by default) on the requested device; Gram
matrices are accumulated in float64 over blocks and every factorisation and solve runs in
float64, except the k-fold decompositions above.

:class:`Ridge` keeps the kernel form after ``fit`` (centred X, its Gram matrix, the alphas and
a reference to Y) and streams the targets at ``predict``; its weights are formed on first read
of ``coef_`` (or with ``weights=True``), so a fit at subject 1's CLIP-vision shape holds the
inputs, one centred copy of X and (once cross-validating or predicting) the n x n Gram matrix,
not the t x p weights (benchmarks/RESULTS.md, "Ridge", measures and models it).

Brain-Diffuser re-standardises each output dimension of its test predictions to the mean
and standard deviation of the training targets (``normalize="test"``, which uses the test
set's own statistics and is therefore transductive). ``normalize="train"`` and
``normalize="loo"`` are non-transductive variants that take the prediction statistics from
in-sample, or leave-one-out, predictions of the training set instead.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from .guard import reading

__all__ = ["Ridge", "restandardize", "ridge_predict", "select_alpha"]

ALPHA_PER = ("regression", "target", "token")
NORMALIZE = (None, "test", "train", "loo")
_CV_NAMES = ("loo", "gcv")
_BATCH_BYTES = 2**28  # default device memory for one batch of target columns (256 MiB)
_GRAM_CHUNK = 2048  # features (or rows) per block of a float64-accumulated Gram matrix
_F32_COND = 1e3  # largest s_max / alpha for which k-fold CV in float32 decomposes a fold kernel in float32
_FORMAT = "nsdlib.ridge/1"


# --------------------------------------------------------------------------------------
# input checks


def _resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; found {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for, but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return dev


def _resolve_dtype(dtype) -> torch.dtype:
    table = {"float32": torch.float32, "float64": torch.float64, torch.float32: torch.float32,
             torch.float64: torch.float64, np.float32: torch.float32, np.float64: torch.float64}
    try:
        return table[dtype]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; found {dtype!r}") from None


def _as_array(name: str, a):
    """A numpy array or a torch tensor of floats, left where it is (no copy if possible)."""
    if isinstance(a, torch.Tensor):
        if not (a.is_floating_point() or a.dtype in (torch.int32, torch.int64, torch.bool)):
            raise ValueError(f"{name} must hold real numbers; found a tensor of {a.dtype}")
        return a.detach()
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must hold real numbers; found an array of dtype {arr.dtype}")
    return arr


def _check_finite(name: str, a) -> None:
    """Raise if ``a`` holds NaN or inf; checks blocks of rows to keep the memory bounded."""
    per_row = max(1, int(np.prod(a.shape[1:], dtype=np.int64)))
    step = max(1, _BATCH_BYTES // (8 * per_row))
    count, first = 0, None
    for start in range(0, a.shape[0], step):
        block = a[start:start + step]
        bad = ~torch.isfinite(block) if isinstance(block, torch.Tensor) else ~np.isfinite(block)
        n_bad = int(bad.sum())
        if n_bad:
            count += n_bad
            if first is None:
                bad = bad.cpu().numpy() if isinstance(bad, torch.Tensor) else bad
                first = np.argwhere(bad)[0]
                first[0] += start
    if count:
        raise ValueError(f"{name} must be finite, but holds {count} NaN or infinite value(s); "
                         f"the first at index {tuple(int(i) for i in first)}")


def _check_alpha(name: str, value) -> float:
    try:
        a = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number; found {value!r}") from None
    if not math.isfinite(a) or a <= 0:
        raise ValueError(f"{name} must be a positive, finite number; found {value!r}")
    return a


def _check_alphas(alphas) -> np.ndarray | None:
    if alphas is None:
        return None
    arr = np.atleast_1d(np.asarray(alphas, dtype=float))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D list of positive numbers; found shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"every alpha must be positive and finite; found {arr.tolist()}")
    return arr


def _check_cv(cv, n: int):
    if isinstance(cv, str):
        if cv not in _CV_NAMES:
            raise ValueError(f"cv must be an integer number of folds (>= 2), 'loo' or 'gcv'; found {cv!r}")
        return cv
    if isinstance(cv, bool) or not isinstance(cv, (int, np.integer)) or cv < 2:
        raise ValueError(f"cv must be an integer number of folds (>= 2), 'loo' or 'gcv'; found {cv!r}")
    if cv > n:
        raise ValueError(f"cv={cv} folds need at least {cv} samples; found {n}")
    return int(cv)


def _check_common(alpha_per, normalize, fit_intercept):
    if alpha_per not in ALPHA_PER:
        raise ValueError(f"alpha_per must be one of {ALPHA_PER}; found {alpha_per!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}; found {normalize!r}")
    if normalize is not None and not fit_intercept:
        raise ValueError("normalize needs fit_intercept=True (the statistics assume centred targets); "
                         f"found normalize={normalize!r} with fit_intercept=False")


def _check_xy(X, Y, fit_intercept: bool):
    X = _as_array("X", X)
    Y = _as_array("Y", Y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); found shape {tuple(X.shape)}")
    if Y.ndim < 1:
        raise ValueError(f"Y must have a first axis of samples, (n_samples, ...); found shape {tuple(Y.shape)}")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same number of samples; found X with {X.shape[0]} "
                         f"(shape {tuple(X.shape)}) and Y with {Y.shape[0]} (shape {tuple(Y.shape)})")
    min_n = 2 if fit_intercept else 1
    if X.shape[0] < min_n or X.shape[1] < 1:
        raise ValueError(f"X needs at least {min_n} sample(s) and 1 feature; found shape {tuple(X.shape)}")
    if int(np.prod(Y.shape[1:], dtype=np.int64)) < 1:
        raise ValueError(f"Y needs at least one target; found shape {tuple(Y.shape)}")
    _check_finite("X", X)
    _check_finite("Y", Y)
    return X, Y


def _check_test(Z, n_features: int, name: str = "X_test"):
    Z = _as_array(name, Z)
    if Z.ndim != 2 or Z.shape[1] != n_features:
        raise ValueError(f"{name} must have shape (n_samples, {n_features}) like the training X; "
                         f"found shape {tuple(Z.shape)}")
    _check_finite(name, Z)
    return Z


# --------------------------------------------------------------------------------------
# linear algebra helpers


def _gram_rows(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``A @ B.T`` accumulated in float64 over blocks of features."""
    if A.dtype == torch.float64:
        return A @ B.T
    out = torch.zeros(A.shape[0], B.shape[0], dtype=torch.float64, device=A.device)
    for s in range(0, A.shape[1], _GRAM_CHUNK):
        out += (A[:, s:s + _GRAM_CHUNK] @ B[:, s:s + _GRAM_CHUNK].T).double()
    return out


def _gram_cols(A: torch.Tensor) -> torch.Tensor:
    """``A.T @ A`` accumulated in float64 over blocks of rows."""
    if A.dtype == torch.float64:
        return A.T @ A
    out = torch.zeros(A.shape[1], A.shape[1], dtype=torch.float64, device=A.device)
    for s in range(0, A.shape[0], _GRAM_CHUNK):
        blk = A[s:s + _GRAM_CHUNK]
        out += (blk.T @ blk).double()
    return out


def _ridge_shift(G: torch.Tensor, alpha: float) -> torch.Tensor:
    R = G.clone()
    R.diagonal().add_(alpha)
    return R


class _Solver:
    """One Cholesky factor of the regularised Gram matrix; builds the linear maps ("smoothers")
    that turn centred training targets into predictions or weights for one alpha."""

    def __init__(self, Xc: torch.Tensor, G: torch.Tensor, kernel: bool, alpha: float):
        self.Xc, self.kernel, self.alpha = Xc, kernel, alpha
        self.L = torch.linalg.cholesky(_ridge_shift(G, alpha))

    def rows(self, Zc: torch.Tensor, Kz: torch.Tensor | None = None) -> torch.Tensor:
        """``Zc (X'X + aI)^-1 X'``, shape (n_z, n), float64."""
        if self.kernel:
            Kz = _gram_rows(Zc, self.Xc) if Kz is None else Kz
            return torch.cholesky_solve(Kz.T.contiguous(), self.L).T
        T = torch.cholesky_solve(Zc.T.double(), self.L)  # (p, n_z)
        return _gram_rows(T.T.to(self.Xc.dtype).contiguous(), self.Xc)

    def hat(self) -> torch.Tensor:
        """The hat matrix of the centred problem, ``X (X'X + aI)^-1 X'``, shape (n, n), float64."""
        if self.kernel:
            H = torch.cholesky_inverse(self.L).mul_(-self.alpha)
            H.diagonal().add_(1.0)
            return H
        return self.rows(self.Xc)

    def weights(self) -> torch.Tensor:
        """``(X'X + aI)^-1 X'``, shape (p, n), in the working dtype."""
        dt = self.Xc.dtype
        p = self.Xc.shape[1]
        if self.kernel:  # X' (XX' + aI)^-1, one block of features at a time
            out = torch.empty(p, self.Xc.shape[0], dtype=dt, device=self.Xc.device)
            for s in range(0, p, _GRAM_CHUNK):
                out[s:s + _GRAM_CHUNK] = torch.cholesky_solve(self.Xc[:, s:s + _GRAM_CHUNK].double(), self.L).T.to(dt)
            return out
        out = torch.empty(p, self.Xc.shape[0], dtype=dt, device=self.Xc.device)
        for s in range(0, self.Xc.shape[0], _GRAM_CHUNK):
            out[:, s:s + _GRAM_CHUNK] = torch.cholesky_solve(self.Xc[s:s + _GRAM_CHUNK].T.double(), self.L).to(dt)
        return out


def _gram_root(G: torch.Tensor, eps: float) -> torch.Tensor:
    """A square matrix ``C`` with ``C C' = G`` for a positive semi-definite ``G`` (float64).

    The Cholesky factor of ``G + jitter I``: centred targets make ``G`` singular, and a Gram
    matrix of float32 products is only positive semi-definite up to its rounding errors. The
    jitter starts at ``eps`` (the working precision) times the mean diagonal and grows tenfold
    until the factorisation succeeds, so cross-validated errors move by about the rounding
    level of ``G`` itself; past 1e-3 an eigendecomposition is used instead.
    """
    scale = float(G.diagonal().mean().clamp_min(1e-300))
    rel = eps
    while rel <= 1e-3:
        L, info = torch.linalg.cholesky_ex(_ridge_shift(G, rel * scale))
        if int(info) == 0:
            return L
        rel *= 10.0
    lam, U = torch.linalg.eigh(G)
    return U * lam.clamp_min(0.0).sqrt()


@dataclass
class _Eig:
    """Thin eigendecomposition of the training kernel, ``Xc Xc' = V diag(s) V'`` (leave-one-out
    and GCV: one for all alphas and targets)."""

    s: torch.Tensor  # (r,) float64, >= 0
    V: torch.Tensor  # (n, r) working dtype
    V2: torch.Tensor  # V**2, float64 (the diagonal of the hat matrix)


@dataclass
class _Fold:
    """One k-fold split and what turns its centred training targets into validation predictions.

    Either ``M``, one map ``Xva (Xtr'Xtr + aI)^-1 Xtr'`` per alpha (primal form: one Cholesky
    factor per alpha), or the fold kernel's eigendecomposition ``Ktr = U diag(s) U'`` with
    ``A = Kva U`` (kernel form: one decomposition for every alpha; each alpha costs one product
    ``A (diag(1 / (s + a)) U'Ytr)``)."""

    train: np.ndarray
    val: np.ndarray
    M: list | None = None  # n_alphas tensors of shape (n_val, n_train), working dtype
    U: torch.Tensor | None = None  # (n_train, n_train), working dtype
    A: torch.Tensor | None = None  # (n_val, n_train), working dtype
    s: torch.Tensor | None = None  # (n_train,), float64, >= 0


def _fold_kernels(G: torch.Tensor, train: np.ndarray, val: np.ndarray, centre: bool):
    """The fold's training kernel and validation-by-training kernel from the whole kernel ``G``.

    With ``centre``, both are those of the rows centred on the training rows' mean ``mu``:
    ``(x_i - mu)(x_j - mu)' = G_ij - r_i - r_j + c``, with ``r_i`` the mean of ``G_ik`` over
    training rows ``k`` and ``c`` the mean of ``G`` over training pairs (float64, exact)."""
    tr = torch.as_tensor(train, device=G.device)
    va = torch.as_tensor(val, device=G.device)
    Ktr = G[tr][:, tr]
    Kva = G[va][:, tr]
    if centre:
        r_tr = Ktr.mean(1)
        c = r_tr.mean()
        Ktr = Ktr - r_tr[:, None] - r_tr[None, :] + c
        Kva = Kva - Kva.mean(1)[:, None] - r_tr[None, :] + c
    return Ktr, Kva


def _kernel_eig32(K: torch.Tensor, min_alpha: float):
    """``K = U diag(s) U'`` in float32, for ridge solves with alphas of at least ``min_alpha``,
    or None when ``s_max / min_alpha`` exceeds :data:`_F32_COND`.

    The float32 decomposition, and the float32 products that apply ``U diag(1 / (s + a)) U'``,
    err by about float32's epsilon times that ratio (at most about 1e-4 relative); past it, the
    caller uses one float64 Cholesky factor per alpha instead. Returns ``s`` (float64, >= 0)
    and ``U`` (float32).
    """
    s, U = torch.linalg.eigh(K.float())
    if float(s.max()) / min_alpha > _F32_COND:
        return None
    return s.double().clamp_min(0.0), U


def _thin_eig(Xc: torch.Tensor, G: torch.Tensor | None = None):
    """Eigendecomposition of ``Xc Xc'`` through whichever Gram matrix is smaller.

    Returns ``s`` (r,) float64 and ``V`` (m, r) float64 with orthonormal columns.
    """
    m, p = Xc.shape
    if m <= p:
        K = _gram_rows(Xc, Xc) if G is None else G
        s, V = torch.linalg.eigh(K)
        return s.clamp_min(0.0), V
    C = _gram_cols(Xc) if G is None else G
    s, W = torch.linalg.eigh(C)
    eps = torch.finfo(Xc.dtype).eps
    keep = s > s.max().clamp_min(0) * p * eps
    s, W = s[keep], W[:, keep]
    root = s.sqrt()
    V = torch.cat([(Xc[i:i + _GRAM_CHUNK].double() @ W) for i in range(0, m, _GRAM_CHUNK)]) / root
    return s, V


# --------------------------------------------------------------------------------------
# the engine shared by Ridge and ridge_predict


class _Engine:
    """Validated training data on the device, target streaming and the linear algebra."""

    def __init__(self, X, Y, *, fit_intercept: bool, device, dtype, batch_targets, verbose: bool):
        X, Y = _check_xy(X, Y, fit_intercept)
        self.device = _resolve_device(device)
        self.dtype = _resolve_dtype(dtype)
        self.fit_intercept = bool(fit_intercept)
        self.n, self.p = X.shape
        self.target_shape = tuple(Y.shape[1:])
        self.t = int(np.prod(self.target_shape, dtype=np.int64))
        # progress bars only for work that takes a while (about 1e12 multiply-adds)
        self.verbose = bool(verbose) and self.n * max(self.n, self.p) * self.t >= 1e12
        self.np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        self.Y = Y.reshape(self.n, self.t)  # a view when Y is contiguous
        if batch_targets is None:
            itemsize = torch.finfo(self.dtype).bits // 8
            batch_targets = max(1, _BATCH_BYTES // (self.n * itemsize))
        elif isinstance(batch_targets, bool) or not isinstance(batch_targets, (int, np.integer)) or batch_targets < 1:
            raise ValueError(f"batch_targets must be a positive integer or None; found {batch_targets!r}")
        self.batch = int(batch_targets)

        Xt = torch.as_tensor(X).to(device=self.device, dtype=self.dtype)
        if self.fit_intercept:
            self.x_mean = Xt.mean(0).double()
            Xt = Xt - self.x_mean.to(self.dtype)
        else:
            self.x_mean = torch.zeros(self.p, dtype=torch.float64, device=self.device)
        self.Xc = Xt
        self.kernel = self.n <= self.p
        self._G = self._K = None

        # one pass over the targets: mean and (population) std of every column
        self.y_mean = np.zeros(self.t)
        self.y_std = np.zeros(self.t)
        for s, e in self._batches(self.t, "target statistics"):
            var, mean = torch.var_mean(self._raw(slice(s, e)), dim=0, correction=0)
            var, mean = var.double(), mean.double()
            self.y_mean[s:e] = mean.cpu().numpy()
            self.y_std[s:e] = var.sqrt().cpu().numpy()
        if not self.fit_intercept:
            self.y_mean_fit = np.zeros(self.t)
        else:
            self.y_mean_fit = self.y_mean

    # ---- targets

    def _batches(self, total: int, desc: str, step: int | None = None):
        step = step or self.batch
        starts = range(0, total, step)
        bar = tqdm(starts, desc=desc, disable=(not self.verbose) or len(starts) <= 1, leave=False)
        for s in bar:
            yield s, min(s + step, total)

    def _raw(self, cols) -> torch.Tensor:
        """Target columns ``cols`` (slice or index array) on the device, in the working dtype."""
        if isinstance(self.Y, torch.Tensor):
            idx = cols if isinstance(cols, slice) else torch.as_tensor(cols, device=self.Y.device)
            yb = self.Y[:, idx]
        else:
            yb = torch.from_numpy(np.ascontiguousarray(self.Y[:, cols]))
        return yb.to(device=self.device, dtype=self.dtype)

    def centred(self, cols) -> torch.Tensor:
        yb = self._raw(cols)
        if self.fit_intercept:
            yb = yb - torch.as_tensor(self.y_mean[cols], device=self.device).to(self.dtype)
        return yb

    # ---- Gram matrix and rows

    @property
    def G(self) -> torch.Tensor:
        if self._G is None:
            self._G = _gram_rows(self.Xc, self.Xc) if self.kernel else _gram_cols(self.Xc)
        return self._G

    def kernel_gram(self) -> torch.Tensor:
        """``Xc Xc'`` (n, n), float64: ``G`` in the kernel form, computed apart in the primal one."""
        if self.kernel:
            return self.G
        if self._K is None:
            self._K = _gram_rows(self.Xc, self.Xc)
        return self._K

    def centre_rows(self, Z) -> torch.Tensor:
        Zt = torch.as_tensor(Z).to(device=self.device, dtype=self.dtype)
        return Zt - self.x_mean.to(self.dtype) if self.fit_intercept else Zt

    # ---- cross-validation

    def _decompose(self, cv, alphas: np.ndarray) -> list:
        if isinstance(cv, str):  # one decomposition of the whole training set
            s, V = _thin_eig(self.Xc, self.G)
            return [_Eig(s=s, V=V.to(self.dtype), V2=V.square())]
        out = []
        folds = np.array_split(np.arange(self.n), cv)
        for val in tqdm(folds, desc="cv folds", disable=not self.verbose, leave=False):
            train = np.setdiff1d(np.arange(self.n), val)
            if len(train) <= self.p:  # kernel form: slices of the whole kernel
                Ktr, Kva = _fold_kernels(self.kernel_gram(), train, val, self.fit_intercept)
                eig = _kernel_eig32(Ktr, float(np.min(alphas))) if self.dtype == torch.float32 else None
                if eig is not None:  # one decomposition for every alpha
                    s, U = eig
                    out.append(_Fold(train=train, val=val, U=U, A=Kva.float() @ U, s=s))
                    continue
                Ms = [torch.cholesky_solve(Kva.T.contiguous(), torch.linalg.cholesky(_ridge_shift(Ktr, float(a))))
                      .T.to(self.dtype) for a in alphas]
                out.append(_Fold(train=train, val=val, M=Ms))
                continue
            Xtr = self.Xc[train]
            Xva = self.Xc[val]
            if self.fit_intercept:
                mu = Xtr.mean(0)
                Xtr, Xva = Xtr - mu, Xva - mu
            G = _gram_cols(Xtr)
            Ms = [_Solver(Xtr, G, False, float(a)).rows(Xva).to(self.dtype) for a in alphas]
            out.append(_Fold(train=train, val=val, M=Ms))
        return out

    def _errors(self, decomps: list, cv, Yb: torch.Tensor, alphas: np.ndarray) -> torch.Tensor:
        """Summed squared validation errors, shape (n_alphas, n_columns), float64.

        ``Yb`` holds columns that are globally centred when an intercept is fitted (any
        row-linear transform of the targets, such as the compression of a group, is allowed).
        """
        err = torch.zeros(len(alphas), Yb.shape[1], dtype=torch.float64, device=self.device)
        dt = self.dtype
        if cv == "gcv":
            (d,) = decomps
            B = d.V.T @ Yb
            BB = B.double().square()
            # the part of Y outside the span of V (none when V is square) is never fitted
            if d.V.shape[1] < d.V.shape[0]:
                outside = (Yb.square().sum(0, dtype=torch.float64) - BB.sum(0)).clamp_min(0.0)
            else:
                outside = torch.zeros(Yb.shape[1], dtype=torch.float64, device=self.device)
            for i, a in enumerate(alphas):
                shrink = a / (d.s + a)
                rss = outside + shrink.square() @ BB
                df = float(self.fit_intercept) + float((d.s / (d.s + a)).sum())
                err[i] = rss / (1.0 - df / self.n) ** 2
            return err
        if cv == "loo":
            (d,) = decomps
            B = d.V.T @ Yb
            base = 1.0 / self.n if self.fit_intercept else 0.0
            for i, a in enumerate(alphas):
                f = d.s / (d.s + a)
                R = Yb - d.V @ (B * f.to(dt)[:, None])
                one_minus_h = 1.0 - base - d.V2 @ f
                err[i] = (R.double() / one_minus_h[:, None]).square().sum(0)
            return err
        for d in decomps:
            Ytr, Yva = Yb[d.train], Yb[d.val]
            if self.fit_intercept:
                mu = Ytr.mean(0)
                Ytr, Yva = Ytr - mu, Yva - mu
            if d.M is not None:
                for i, M in enumerate(d.M):
                    err[i] += (Yva - M @ Ytr).square().sum(0, dtype=torch.float64)
                continue
            B = d.U.T @ Ytr
            for i, a in enumerate(alphas):
                f = (1.0 / (d.s + a)).to(dt)
                err[i] += (Yva - d.A @ (B * f[:, None])).square().sum(0, dtype=torch.float64)
        return err

    def select(self, alphas: np.ndarray, cv, alpha_per: str):
        """Cross-validate ``alphas``; returns (alpha per target (t,), mean squared error per
        alpha and group (n_alphas, n_groups), group shape)."""
        if alpha_per == "token" and len(self.target_shape) < 2:
            raise ValueError("alpha_per='token' needs targets of shape (n_samples, n_tokens, ..., dim); "
                             f"found Y of shape {(self.n, *self.target_shape)}")
        if alpha_per == "regression":
            gsize, gshape = self.t, ()
        elif alpha_per == "token":
            gsize, gshape = self.target_shape[-1], self.target_shape[:-1]
        else:
            gsize, gshape = 1, self.target_shape
        n_groups = self.t // gsize
        decomps = self._decompose(cv, alphas)
        total = torch.zeros(len(alphas), n_groups, dtype=torch.float64, device=self.device)
        if gsize > self.n:
            # compress each group to n columns with the same Gram matrix: squared errors of any
            # row-linear prediction rule are unchanged, and they cost n instead of gsize columns
            for g in tqdm(range(n_groups), desc="cv groups", disable=(not self.verbose) or n_groups <= 1, leave=False):
                gram = torch.zeros(self.n, self.n, dtype=torch.float64, device=self.device)
                lo = g * gsize
                for s, e in self._batches(gsize, "group gram"):
                    yb = self.centred(slice(lo + s, lo + e))
                    gram += _gram_rows(yb, yb)
                del yb  # the last batch, before the root's n x n matrices
                comp = _gram_root(gram, torch.finfo(self.dtype).eps).to(self.dtype)
                del gram  # (n, n) float64, no longer needed while the folds are scored
                total[:, g] = self._errors(decomps, cv, comp, alphas).sum(1)
        else:
            step = max(gsize, (self.batch // gsize) * gsize)
            for s, e in self._batches(self.t, "cv targets", step):
                e_cols = self._errors(decomps, cv, self.centred(slice(s, e)), alphas)
                total[:, s // gsize:e // gsize] += e_cols.reshape(len(alphas), -1, gsize).sum(2)
        self._K = None
        mse = (total / (self.n * gsize)).cpu().numpy()
        best = np.asarray(alphas)[np.argmin(mse, axis=0)]
        return np.repeat(best, gsize), mse, gshape

    # ---- the streamed solve

    def solve(self, alpha_t: np.ndarray, *, Z=None, weights: bool = False, train_stats: str | None = None,
              keep: bool = False):
        """Stream the targets through the smoothers of each distinct alpha (unless ``keep``, call
        once: ``X`` and its Gram matrix are released before the last alpha's targets are streamed).

        Returns a dict with ``pred`` (n_z, t) when ``Z`` is given, ``coef`` (t, p) when
        ``weights`` (both in the working dtype), and ``pred_mean``/``pred_std`` (t,) float64 of the
        in-sample (``train_stats="train"``) or leave-one-out (``"loo"``) training predictions.
        """
        out = {}
        Zc = Kz = None
        if Z is not None:
            Zc = self.centre_rows(Z)
            out["pred"] = np.empty((Zc.shape[0], self.t), dtype=self.np_dtype)
            if self.kernel:
                Kz = _gram_rows(Zc, self.Xc)  # shared by every alpha
        if weights:
            out["coef"] = np.empty((self.t, self.p), dtype=self.np_dtype)
        if train_stats:
            out["pred_mean"] = np.empty(self.t)
            out["pred_std"] = np.empty(self.t)
        uniq = np.unique(alpha_t)
        for a in uniq:
            solver = _Solver(self.Xc, self.G, self.kernel, float(a))
            M = solver.rows(Zc, Kz).to(self.dtype) if Z is not None else None
            Wm = solver.weights() if weights else None
            H = one_minus_h = None
            if train_stats:
                Hd = solver.hat()
                if train_stats == "loo":
                    one_minus_h = (1.0 - (1.0 / self.n if self.fit_intercept else 0.0) - Hd.diagonal()).to(self.dtype)
                H = Hd.to(self.dtype)
                del Hd
            del solver
            if a == uniq[-1]:  # the factorisations are no longer needed: free them before streaming
                Kz = Zc = None
                if not keep:
                    self._G = self.Xc = None
            cols_all = np.arange(self.t) if len(uniq) == 1 else np.flatnonzero(alpha_t == a)
            for s, e in self._batches(cols_all.size, f"targets (alpha={a:g})"):
                if len(uniq) == 1:
                    cols = slice(s, e)
                else:
                    cols = cols_all[s:e]
                yb = self.centred(cols)
                ym = self.y_mean_fit[cols]
                if M is not None:
                    out["pred"][:, cols] = (M @ yb).cpu().numpy() + ym.astype(self.np_dtype)
                if Wm is not None:
                    out["coef"][cols] = (Wm @ yb).T.cpu().numpy()
                if H is not None:
                    fitted = H @ yb
                    if one_minus_h is not None:
                        fitted = yb - (yb - fitted) / one_minus_h[:, None]
                    var, mean = torch.var_mean(fitted, dim=0, correction=0)
                    var, mean = var.double(), mean.double()
                    out["pred_mean"][cols] = mean.cpu().numpy() + ym
                    out["pred_std"][cols] = var.sqrt().cpu().numpy()
            del M, Wm, H
        return out


# --------------------------------------------------------------------------------------
# public API


def restandardize(pred, target_mean, target_std, pred_mean=None, pred_std=None) -> np.ndarray:
    """Re-standardise predictions, one output dimension at a time.

    ``(pred - pred_mean) / pred_std * target_std + target_mean``. Without ``pred_mean`` and
    ``pred_std`` the statistics of ``pred`` itself are used (over its first axis), as
    Brain-Diffuser does with its test predictions; that makes each prediction depend on the
    rest of the batch. A dimension whose predictions do not vary is set to ``target_mean``.

    Parameters
    ----------
    pred : ndarray of shape (n_samples, *target_shape)
    target_mean, target_std : ndarray of shape target_shape
        Mean and population standard deviation of the training targets.
    pred_mean, pred_std : ndarray of shape target_shape, optional
        Statistics to standardise ``pred`` with; both or neither.

    Returns
    -------
    ndarray of shape (n_samples, *target_shape), float64 if ``pred`` is, float32 otherwise
    """
    pred = np.asarray(pred)
    if (pred_mean is None) != (pred_std is None):
        raise ValueError("give both pred_mean and pred_std, or neither")
    if pred_mean is None:
        if pred.shape[0] < 2:
            raise ValueError(f"standardising predictions by their own statistics needs at least 2 rows; "
                             f"found shape {pred.shape}")
        p64 = pred.astype(np.float64)
        pred_mean, pred_std = p64.mean(0), p64.std(0)
    shape = pred.shape[1:]
    for name, v in (("target_mean", target_mean), ("target_std", target_std),
                    ("pred_mean", pred_mean), ("pred_std", pred_std)):
        if np.shape(v) != shape:
            raise ValueError(f"{name} must have shape {shape} like one prediction; found {np.shape(v)}")
    pstd = np.asarray(pred_std, dtype=np.float64)
    scale = np.divide(np.asarray(target_std, dtype=np.float64), pstd, out=np.zeros_like(pstd), where=pstd > 0)
    out = (pred - np.asarray(pred_mean)) * scale + np.asarray(target_mean)
    return out.astype(np.float64 if pred.dtype == np.float64 else np.float32)


def _alpha_report(alpha_t: np.ndarray, alpha_per: str, target_shape: tuple):
    if alpha_per == "regression":
        return float(alpha_t[0])
    if alpha_per == "token":
        return alpha_t.reshape(target_shape)[..., 0].copy()
    return alpha_t.reshape(target_shape).copy()


def ridge_predict(X_train, Y_train, X_test, alpha: float = 1.0, *, alphas=None, cv=5,
                  alpha_per: str = "regression", fit_intercept: bool = True, normalize: str | None = None,
                  device="auto", dtype=torch.float32, batch_targets: int | None = None,
                  return_alpha: bool = False, verbose: bool = True):
    """Test predictions of ridge regression, without forming the weights.

    The predictions-only mode for wide targets: ``M = Z X'(XX' + alpha I)^-1`` (or its primal
    equivalent when there are more samples than features) is built once per alpha and applied
    to batches of target columns, so the memory is that of ``X``, ``M``, one batch and the output.

    Parameters
    ----------
    X_train : array of shape (n_samples, n_features)
        Training inputs (e.g. z-scored betas). numpy array or torch tensor.
    Y_train : array of shape (n_samples, *target_shape)
        Training targets of any trailing shape, e.g. (n, 257, 768) CLIP-vision tokens.
    X_test : array of shape (n_test, n_features)
    alpha : float
        Fixed regularisation, used when ``alphas`` is None (the paper: 50,000).
    alphas : sequence of float, optional
        Grid to choose from by cross-validation.
    cv : int, 'loo' or 'gcv'
        Contiguous k folds (no shuffling), exact leave-one-out, or generalised
        cross-validation (leave-one-out with the hat matrix's mean diagonal; the cheapest).
    alpha_per : {'regression', 'target', 'token'}
        Pool the validation errors over all targets, keep them per target, or pool them per
        token (all target axes but the last).
    fit_intercept : bool
        Centre X and Y with the training means (an unpenalised intercept).
    normalize : {None, 'test', 'train', 'loo'}
        Re-standardise each output dimension to the training targets' mean and std using the
        statistics of the test predictions themselves ('test', Brain-Diffuser's transductive
        choice), of the in-sample training predictions ('train') or of the leave-one-out
        training predictions ('loo').
    device : 'auto', 'cpu', 'cuda', 'cuda:N' or torch.device
    dtype : torch.float32 or torch.float64
        Working precision of the large products (Gram matrices are accumulated, and
        factorisations run, in float64).
    batch_targets : int, optional
        Target columns per batch (default: 256 MiB of one batch on the device).
    return_alpha : bool
        Also return the alpha used: a float, or an array of shape ``target_shape``
        ('target') or ``target_shape[:-1]`` ('token').
    verbose : bool
        Progress bars over batches.

    Returns
    -------
    pred : ndarray of shape (n_test, *target_shape), in the working dtype
    alpha : float or ndarray, only when ``return_alpha``
    """
    _check_common(alpha_per, normalize, fit_intercept)
    eng = _Engine(X_train, Y_train, fit_intercept=fit_intercept, device=device, dtype=dtype,
                  batch_targets=batch_targets, verbose=verbose)
    X_test = _check_test(X_test, eng.p)
    alpha_t, mse, _ = _alpha_vector(eng, alpha, alphas, cv, alpha_per)
    train_stats = normalize if normalize in ("train", "loo") else None
    res = eng.solve(alpha_t, Z=X_test, train_stats=train_stats)
    pred = res["pred"]
    if normalize == "test":
        pred = restandardize(pred, eng.y_mean, eng.y_std)
    elif train_stats:
        pred = restandardize(pred, eng.y_mean, eng.y_std, res["pred_mean"], res["pred_std"])
    pred = pred.reshape(pred.shape[0], *eng.target_shape)
    if return_alpha:
        return pred, _alpha_report(alpha_t, alpha_per if mse is not None else "regression", eng.target_shape)
    return pred


def select_alpha(X_train, Y_train, alphas, *, cv=5, alpha_per: str = "regression", fit_intercept: bool = True,
                 device="auto", dtype=torch.float32, batch_targets: int | None = None, verbose: bool = True):
    """The alpha(s) that cross-validation picks from ``alphas``, without predictions or weights.

    The same selection as :func:`ridge_predict` and :class:`Ridge` make with ``alphas``:
    ``ridge_predict(..., alpha=chosen)`` then gives the predictions that
    ``ridge_predict(..., alphas=alphas)`` gives.

    Parameters
    ----------
    X_train : array of shape (n_samples, n_features)
    Y_train : array of shape (n_samples, *target_shape)
    alphas : sequence of float
        Grid to choose from.
    cv, alpha_per, fit_intercept, device, dtype, batch_targets, verbose
        As in :func:`ridge_predict`.

    Returns
    -------
    alpha : float, or ndarray of shape ``target_shape`` ('target') or ``target_shape[:-1]`` ('token')
    cv_mse : ndarray of shape (n_alphas, *group_shape), or None for a one-alpha grid
    """
    _check_common(alpha_per, None, fit_intercept)
    if alphas is None:
        raise ValueError("alphas must be a grid of positive numbers to choose from; found None")
    eng = _Engine(X_train, Y_train, fit_intercept=fit_intercept, device=device, dtype=dtype,
                  batch_targets=batch_targets, verbose=verbose)
    alpha_t, mse, gshape = _alpha_vector(eng, None, alphas, cv, alpha_per)
    alpha = _alpha_report(alpha_t, alpha_per if mse is not None else "regression", eng.target_shape)
    return alpha, None if mse is None else mse.reshape(mse.shape[0], *gshape)


def _alpha_vector(eng: _Engine, alpha, alphas, cv, alpha_per):
    grid = _check_alphas(alphas)
    if grid is None:
        a = _check_alpha("alpha", alpha)
        return np.full(eng.t, a), None, None
    cv = _check_cv(cv, eng.n)
    if grid.size == 1:
        return np.full(eng.t, grid[0]), None, None
    return eng.select(grid, cv, alpha_per)


class Ridge(BaseEstimator):
    """Multi-target ridge regression with optional cross-validated alphas.

    A scikit-learn-style estimator for targets of any trailing shape. By default ``fit`` keeps
    the kernel (or primal) form: the centred training inputs, their Gram matrix, the chosen
    alphas and a reference to ``Y`` (not a copy: do not modify it in place before predicting);
    :meth:`predict` then streams batches of targets through one map per alpha, as
    :func:`ridge_predict` does, and the weight matrix (t x p: 11.6 GiB in float32 for subject 1's
    CLIP-vision regression) is formed only when ``coef_`` or ``intercept_`` is first read (or
    :meth:`save` is called), or at once with ``weights=True``.

    Parameters
    ----------
    alpha : float
        Fixed regularisation, used when ``alphas`` is None. The paper uses 50,000;
        Brain-Diffuser 50,000 (VDVAE), 100,000 (CLIP-text) and 60,000 (CLIP-vision).
    alphas : sequence of float, optional
        Grid of alphas chosen by cross-validation.
    cv : int, 'loo' or 'gcv'
        Contiguous k folds (no shuffling), exact leave-one-out, or generalised
        cross-validation. Factorisations are shared by all targets (see the module notes).
    alpha_per : {'regression', 'target', 'token'}
        One alpha for all targets, one per target, or one per token (all target axes but
        the last, e.g. 257 alphas for (n, 257, 768) targets).
    fit_intercept : bool
        Fit an unpenalised intercept (centre X and Y).
    normalize : {None, 'test', 'train', 'loo'}
        Post-hoc re-standardisation of each output dimension by :meth:`predict`, to the
        training targets' mean and std, using the statistics of the predicted batch itself
        ('test': Brain-Diffuser, transductive), of the in-sample training predictions
        ('train') or of the leave-one-out training predictions ('loo').
    device : 'auto', 'cpu', 'cuda', 'cuda:N' or torch.device
    dtype : torch.float32 or torch.float64
        Working precision of the large products; Gram matrices are accumulated in float64
        and factorisations run in float64.
    batch_targets : int, optional
        Target columns per batch (default: 256 MiB of one batch on the device).
    verbose : bool
        Progress bars over batches.
    weights : bool
        Form the weights in ``fit`` (and release the training data) rather than on first use.

    Attributes
    ----------
    coef_ : ndarray of shape (*target_shape, n_features), in the working dtype
        Weights, in scikit-learn's layout (one row of weights per target); formed on first read.
    intercept_ : float or ndarray of shape target_shape, in the working dtype
    alpha_ : float, or ndarray of shape target_shape ('target') or target_shape[:-1] ('token')
    cv_mse_ : ndarray of shape (n_alphas, *group_shape), or None
        Cross-validated mean squared error of each alpha (per group of ``alpha_per``).
    target_mean_, target_std_ : ndarray of shape target_shape, float64
        Training target statistics (population std).
    pred_mean_, pred_std_ : ndarray of shape target_shape, float64, or None
        Statistics of the training predictions ('train' or 'loo' normalisation).
    n_features_in_ : int
    target_shape_ : tuple
    """

    def __init__(self, alpha: float = 1.0, *, alphas=None, cv=5, alpha_per: str = "regression",
                 fit_intercept: bool = True, normalize: str | None = None, device="auto",
                 dtype=torch.float32, batch_targets: int | None = None, verbose: bool = True,
                 weights: bool = False):
        self.alpha = alpha
        self.alphas = alphas
        self.cv = cv
        self.alpha_per = alpha_per
        self.fit_intercept = fit_intercept
        self.normalize = normalize
        self.device = device
        self.dtype = dtype
        self.batch_targets = batch_targets
        self.verbose = verbose
        self.weights = weights

    def fit(self, X, Y) -> Ridge:
        """Fit the model (and choose alphas when ``alphas`` is given).

        Parameters
        ----------
        X : array of shape (n_samples, n_features)
        Y : array of shape (n_samples, *target_shape)

        Returns
        -------
        self
        """
        _check_common(self.alpha_per, self.normalize, self.fit_intercept)
        eng = _Engine(X, Y, fit_intercept=self.fit_intercept, device=self.device, dtype=self.dtype,
                      batch_targets=self.batch_targets, verbose=self.verbose)
        alpha_t, mse, gshape = _alpha_vector(eng, self.alpha, self.alphas, self.cv, self.alpha_per)
        train_stats = self.normalize if self.normalize in ("train", "loo") else None
        shape = eng.target_shape
        self._coef = self._intercept = None
        self._engine, self._alpha_t = eng, alpha_t
        if train_stats:
            res = eng.solve(alpha_t, train_stats=train_stats, keep=True)
        self.alpha_ = _alpha_report(alpha_t, self.alpha_per if mse is not None else "regression", shape)
        self.cv_mse_ = None if mse is None else mse.reshape(mse.shape[0], *gshape)
        self.target_mean_ = eng.y_mean.reshape(shape)
        self.target_std_ = eng.y_std.reshape(shape)
        self.pred_mean_ = res["pred_mean"].reshape(shape) if train_stats else None
        self.pred_std_ = res["pred_std"].reshape(shape) if train_stats else None
        self.n_features_in_ = eng.p
        self.target_shape_ = shape
        if self.weights:
            self._form_weights()
        return self

    def _form_weights(self) -> None:
        """Compute ``coef_`` and ``intercept_`` from the kept training data, then release it."""
        eng = self._engine
        coef = eng.solve(self._alpha_t, weights=True)["coef"]  # (t, p)
        x_mean = eng.x_mean.cpu().numpy()
        intercept = (eng.y_mean_fit - _rows_dot(coef, x_mean)).astype(coef.dtype)
        shape = eng.target_shape
        self._coef = coef.reshape(*shape, eng.p)
        self._intercept = intercept.reshape(shape) if shape else float(intercept[0])
        self._engine = self._alpha_t = None

    @property
    def coef_(self) -> np.ndarray:
        self._check_fitted()
        if self._coef is None:
            self._form_weights()
        return self._coef

    @coef_.setter
    def coef_(self, value) -> None:
        self._coef = value
        self._engine = self._alpha_t = None

    @property
    def intercept_(self):
        self._check_fitted()
        if self._coef is None:
            self._form_weights()
        return self._intercept

    @intercept_.setter
    def intercept_(self, value) -> None:
        self._intercept = value

    def _check_fitted(self):
        if not hasattr(self, "target_shape_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this Ridge is not fitted yet; call fit(X, Y) (or Ridge.load(path)) first")

    def predict(self, X) -> np.ndarray:
        """Predict targets, re-standardised when ``normalize`` is set.

        Parameters
        ----------
        X : array of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, *target_shape), in the working dtype
        """
        self._check_fitted()
        X = _check_test(X, self.n_features_in_, "X")
        shape = self.target_shape_
        t = int(np.prod(shape, dtype=np.int64))
        if self._coef is None:
            out = self._engine.solve(self._alpha_t, Z=X, keep=True)["pred"]
        else:
            out = self._predict_weights(X, t)
        if self.normalize == "test":
            out = restandardize(out, self.target_mean_.reshape(t), self.target_std_.reshape(t))
        elif self.normalize in ("train", "loo"):
            out = restandardize(out, self.target_mean_.reshape(t), self.target_std_.reshape(t),
                                self.pred_mean_.reshape(t), self.pred_std_.reshape(t))
        return out.reshape(out.shape[0], *shape)

    def _predict_weights(self, X, t: int) -> np.ndarray:
        """``X @ coef_.T + intercept_``, (n_samples, t), in batches of targets."""
        device, dtype = _resolve_device(self.device), _resolve_dtype(self.dtype)
        Xt = torch.as_tensor(X).to(device=device, dtype=dtype)
        coef = self.coef_.reshape(t, self.n_features_in_)
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        icpt = np.asarray(self.intercept_, dtype=np_dtype).reshape(t)
        out = np.empty((Xt.shape[0], t), dtype=np_dtype)
        step = self.batch_targets or max(1, _BATCH_BYTES // (4 * self.n_features_in_))
        for s in tqdm(range(0, t, step), desc="predict", disable=(not self.verbose) or t <= step, leave=False):
            w = torch.from_numpy(np.ascontiguousarray(coef[s:s + step])).to(device=device, dtype=dtype)
            out[:, s:s + step] = (Xt @ w.T).cpu().numpy() + icpt[s:s + step]
        return out

    # ---- persistence (safetensors: tensors plus a JSON header, no pickle)

    _ARRAYS = ("coef_", "intercept_", "alpha_", "cv_mse_", "target_mean_", "target_std_", "pred_mean_", "pred_std_")

    def save(self, path) -> Path:
        """Write the fitted model to a ``.safetensors`` file, atomically.

        Returns
        -------
        pathlib.Path
        """
        from safetensors.numpy import save_file

        self._check_fitted()
        path = Path(path)
        params = self.get_params()
        params["dtype"] = str(_resolve_dtype(params["dtype"])).removeprefix("torch.")
        params["device"] = str(params["device"])
        if params["alphas"] is not None:
            params["alphas"] = [float(a) for a in np.atleast_1d(params["alphas"])]
        tensors, shapes = {}, {}
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.asarray(value)
            shapes[name] = list(arr.shape)
            tensors[name] = np.ascontiguousarray(arr.reshape(-1))
        meta = {"format": _FORMAT, "params": params, "shapes": shapes,
                "n_features_in_": int(self.n_features_in_), "target_shape_": list(self.target_shape_)}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"nsdlib": json.dumps(meta)})
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path) -> Ridge:
        """Read a model written by :meth:`save`.

        Parameters
        ----------
        path : path to a ``.safetensors`` file
        """
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no saved Ridge model at {path}")
        with reading(path, "a safetensors file written by Ridge.save", "delete it and fit the model again"), \
                safe_open(str(path), framework="numpy") as fh:
            header = (fh.metadata() or {}).get("nsdlib")
            meta = json.loads(header) if header else {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a Ridge model saved by nsdlib (expected format {_FORMAT!r}, "
                                 f"found {meta.get('format')!r})")
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
        model = cls(**meta["params"])
        for name in cls._ARRAYS:
            if name not in arrays:
                setattr(model, name, None)
                continue
            arr = arrays[name].reshape(meta["shapes"][name])
            setattr(model, name, float(arr) if arr.ndim == 0 else arr)
        model.n_features_in_ = int(meta["n_features_in_"])
        model.target_shape_ = tuple(meta["target_shape_"])
        return model


def _rows_dot(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``coef @ x`` in float64, over blocks of rows of a (t, p) matrix."""
    out = np.empty(coef.shape[0])
    step = max(1, _BATCH_BYTES // (8 * max(1, coef.shape[1])))
    for s in range(0, coef.shape[0], step):
        out[s:s + step] = coef[s:s + step].astype(np.float64) @ x
    return out
