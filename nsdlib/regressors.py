"""Stage-1 regressors: fMRI betas -> VDVAE latents (the paper's Table 1 and its ablation).

Four regressors behind one scikit-learn-like interface (``fit(X, Y)`` / ``predict(X)``,
fitted attributes ending in ``_``):

- :class:`NeuralRegressor` with ``arch="gru"``: the paper's network (Table 1). The whole voxel
  vector is one time step of a sequence of length 1: bidirectional GRU (100 per direction)
  -> LayerNorm -> Dropout(0.5) -> bidirectional GRU -> LayerNorm -> Linear(200, 200) ->
  BatchNorm -> ReLU -> Dropout(0.5) -> Linear(200, n_latents). For subject 1 (15,724 voxels)
  and 15 VDVAE blocks (13,344 latents) it has exactly 12,400,344 parameters.
- ``arch="cnn"``: the paper's convolutional variant: between the two GRUs a block of two
  Conv1d + ReLU + MaxPool layers over the 200 GRU features (treated as a 1-channel signal).
- ``arch="transformer"``: the paper's Transformer variant: between the two GRUs one
  multi-head self-attention encoder layer (residual connections, LayerNorm) over the 200
  GRU features cut into tokens.
  The paper gives no sizes for the two variants; ours are listed in :class:`CNNNet` and
  :class:`TransformerNet`, chosen so the second GRU and the head keep the GRU network's shapes.
- :class:`RidgeRegressor`: ridge regression in kernel form (:func:`nsdlib.ridge.ridge_predict`,
  no weight matrix), the paper's baseline from Brain-Diffuser.

:func:`make_regressor` is the one front door: stage 1 builds all four regressors with it.

Training (:meth:`NeuralRegressor.fit`): a validation split carved from the training rows
(:func:`validation_split`), AdamW on the mean squared error of *standardised* targets
(each latent dimension z-scored with the training split's mean and standard deviation;
predictions are mapped back, so every reported error is in the latents' own units, as the
paper reports them), a learning rate halved when the validation loss stalls
(``ReduceLROnPlateau``), early stopping that keeps the best epoch's weights, and a
checkpoint after every epoch written atomically and loadable with
``torch.load(weights_only=True)``. A fit interrupted at any point and started again with
the same ``checkpoint_dir`` resumes after the last completed epoch and ends with the same
weights as an uninterrupted fit (shuffling and dropout are seeded per epoch).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .guard import reading
from .ridge import restandardize, ridge_predict, select_alpha
from .store import array_key, atomic_path

__all__ = [
    "ARCHITECTURES",
    "CNNNet",
    "GRUNet",
    "NeuralRegressor",
    "RidgeRegressor",
    "TransformerNet",
    "build_network",
    "count_parameters",
    "make_regressor",
    "regression_metrics",
    "validation_split",
]

ARCHITECTURES = ("gru", "cnn", "transformer")


# ------------------------------------------------------------------------------ networks
class _Head(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Dropout -> Linear."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(n_in, n_hidden)
        self.bn = nn.BatchNorm1d(n_hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(n_hidden, n_out)

    def forward(self, h):
        return self.fc2(self.drop(self.act(self.bn(self.fc1(h)))))


class _TwoGRU(nn.Module):
    """GRU -> LayerNorm -> Dropout -> [middle] -> GRU -> LayerNorm -> head, on one time step."""

    def __init__(self, n_inputs: int, n_outputs: int, hidden: int, fc: int, dropout: float,
                 middle: nn.Module | None, middle_out: int):
        super().__init__()
        if n_inputs < 1 or n_outputs < 1:
            raise ValueError(f"n_inputs and n_outputs must be positive; found {n_inputs}, {n_outputs}")
        self.n_inputs, self.n_outputs = n_inputs, n_outputs
        self.gru1 = nn.GRU(n_inputs, hidden, batch_first=True, bidirectional=True)
        self.norm1 = nn.LayerNorm(2 * hidden)
        self.drop1 = nn.Dropout(dropout)
        self.middle = middle
        self.gru2 = nn.GRU(middle_out, hidden, batch_first=True, bidirectional=True)
        self.norm2 = nn.LayerNorm(2 * hidden)
        self.head = _Head(2 * hidden, fc, n_outputs, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (batch, n_inputs) or (batch, 1, n_inputs) -> (batch, n_outputs)."""
        if x.ndim == 2:
            x = x.unsqueeze(1)
        h, _ = self.gru1(x)
        h = self.drop1(self.norm1(h))
        if self.middle is not None:
            h = self.middle(h)
        h, _ = self.gru2(h)
        h = self.norm2(h)
        return self.head(h.flatten(1))


class GRUNet(_TwoGRU):
    """The paper's GRU network (Table 1).

    Parameters
    ----------
    n_inputs : int
        Voxels (subject 1: 15,724).
    n_outputs : int
        Latent values (15 VDVAE blocks: 13,344).
    hidden : int
        GRU units per direction (100).
    fc : int
        Units of the first fully connected layer (200).
    dropout : float
        Dropout after the first LayerNorm and in the head (0.5).
    """

    def __init__(self, n_inputs: int, n_outputs: int, *, hidden: int = 100, fc: int = 200, dropout: float = 0.5):
        super().__init__(n_inputs, n_outputs, hidden, fc, dropout, None, 2 * hidden)


class _ConvBlock(nn.Module):
    def __init__(self, length: int, channels: int, kernel: int):
        super().__init__()
        if length % 4:
            raise ValueError(f"the convolutional block halves its input twice; {length} features is not divisible by 4")
        self.conv1 = nn.Conv1d(1, channels, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool1d(2)

    def forward(self, h):  # (B, 1, L) -> (B, 1, channels * L / 4)
        h = self.pool(self.act(self.conv1(h)))
        h = self.pool(self.act(self.conv2(h)))
        return h.flatten(1).unsqueeze(1)


class CNNNet(_TwoGRU):
    """The paper's convolutional variant.

    Between the GRUs: the 200 features of the first GRU as a one-channel signal ->
    Conv1d(1, ``channels``, ``kernel``) -> ReLU -> MaxPool(2) -> Conv1d(``channels``,
    ``channels``, ``kernel``) -> ReLU -> MaxPool(2), flattened (``channels * 50`` features;
    200 with the default 4 channels) into the second GRU.

    Parameters
    ----------
    n_inputs, n_outputs, hidden, fc, dropout
        As in :class:`GRUNet`.
    channels : int
        Convolution channels (4).
    kernel : int
        Convolution width (5).
    """

    def __init__(self, n_inputs: int, n_outputs: int, *, hidden: int = 100, fc: int = 200, dropout: float = 0.5,
                 channels: int = 4, kernel: int = 5):
        length = 2 * hidden
        super().__init__(n_inputs, n_outputs, hidden, fc, dropout, _ConvBlock(length, channels, kernel),
                         channels * (length // 4))


class _AttentionBlock(nn.Module):
    def __init__(self, length: int, n_tokens: int, d_model: int, n_heads: int, ff: int, dropout: float):
        super().__init__()
        if length % n_tokens:
            raise ValueError(f"{length} features cannot be cut into {n_tokens} equal tokens")
        self.n_tokens, self.token_dim = n_tokens, length // n_tokens
        self.embed = nn.Linear(self.token_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.layer = nn.TransformerEncoderLayer(d_model, n_heads, dim_feedforward=ff, dropout=dropout,
                                                batch_first=True)
        self.unembed = nn.Linear(d_model, self.token_dim)

    def forward(self, h):  # (B, 1, L) -> (B, 1, L)
        b = h.shape[0]
        t = self.embed(h.reshape(b, self.n_tokens, self.token_dim)) + self.pos
        t = self.unembed(self.layer(t))
        return h + t.reshape(b, 1, -1)


class TransformerNet(_TwoGRU):
    """The paper's Transformer variant.

    Between the GRUs: the 200 features cut into ``n_tokens`` tokens, embedded to
    ``d_model`` with a learned position embedding, one Transformer encoder layer
    (``n_heads``-head self-attention and a feed-forward layer, each with a residual
    connection and LayerNorm), projected back and added to its input (a residual around
    the whole module).

    Parameters
    ----------
    n_inputs, n_outputs, hidden, fc, dropout
        As in :class:`GRUNet`.
    n_tokens : int
        Tokens the 200 features are cut into (20, of 10 features each).
    d_model, n_heads, ff : int
        Width (32), heads (4) and feed-forward width (64) of the encoder layer.
    attn_dropout : float
        Dropout inside the encoder layer (0.1).
    """

    def __init__(self, n_inputs: int, n_outputs: int, *, hidden: int = 100, fc: int = 200, dropout: float = 0.5,
                 n_tokens: int = 20, d_model: int = 32, n_heads: int = 4, ff: int = 64, attn_dropout: float = 0.1):
        length = 2 * hidden
        super().__init__(n_inputs, n_outputs, hidden, fc, dropout,
                         _AttentionBlock(length, n_tokens, d_model, n_heads, ff, attn_dropout), length)


_NETWORKS = {"gru": GRUNet, "cnn": CNNNet, "transformer": TransformerNet}


def build_network(arch: str, n_inputs: int, n_outputs: int, **options) -> nn.Module:
    """A stage-1 network by name: ``"gru"``, ``"cnn"`` or ``"transformer"``."""
    if arch not in _NETWORKS:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; found {arch!r}")
    return _NETWORKS[arch](n_inputs, n_outputs, **options)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameter values (buffers such as BatchNorm statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ helpers
def validation_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation set from ``n`` training rows.

    Returns
    -------
    train_idx, val_idx : ndarray of int64, sorted
        ``round(val_fraction * n)`` (at least 1 when ``val_fraction > 0``) random rows for
        validation, the rest for training.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); found {val_fraction!r}")
    n_val = int(round(val_fraction * n))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 2:
        raise ValueError(f"{n} training rows leave fewer than 2 for training after a "
                         f"{val_fraction:.0%} validation split")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, *, chunk: int = 256) -> dict[str, float]:
    """Mean squared and mean absolute error over every value, in the targets' units.

    Parameters
    ----------
    y_true, y_pred : ndarray of shape (n, n_targets)

    Returns
    -------
    dict with ``mse`` and ``mae`` (float)
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; found {y_true.shape} and {y_pred.shape}")
    se = ae = 0.0
    for s in range(0, len(y_true), chunk):
        d = y_true[s:s + chunk].astype(np.float64) - y_pred[s:s + chunk]
        se += float(np.square(d).sum())
        ae += float(np.abs(d).sum())
    n = max(y_true.size, 1)
    return {"mse": se / n, "mae": ae / n}


def _check_xy(X, Y=None):
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X (betas) must have shape (n_samples, n_voxels); found {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X (betas) contains NaN or infinite values")
    if Y is None:
        return X
    Y = np.asarray(Y)
    if Y.ndim != 2 or len(Y) != len(X):
        raise ValueError(f"Y (latents) must have shape ({len(X)}, n_targets) to match X {X.shape}; found {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y (latents) contains NaN or infinite values")
    return X, Y


def _train_val_rows(n: int, val_fraction: float, seed: int, val_indices=None) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows: the seeded :func:`validation_split`, or the given ``val_indices``."""
    if val_indices is None:
        return validation_split(n, val_fraction, seed)
    val_idx = np.unique(np.asarray(val_indices, dtype=np.int64))
    if len(val_idx) == 0 or val_idx.min() < 0 or val_idx.max() >= n:
        raise ValueError(f"val_indices must be non-empty rows of X (0 to {n - 1}); found {len(val_idx)} rows "
                         f"from {val_idx.min(initial=0)} to {val_idx.max(initial=0)}")
    return np.setdiff1d(np.arange(n), val_idx), val_idx


def _check_columns(X: np.ndarray, n_features: int) -> None:
    if X.shape[1] != n_features:
        raise ValueError(f"X must have {n_features} columns (voxels) like the training betas; found {X.shape[1]}")


# ------------------------------------------------------------------------------ neural
@dataclasses.dataclass
class _TrainingData:
    """One fit's tensors: all rows on the host, validation targets standardised on the device."""

    X: torch.Tensor  # (n, n_voxels) float32, host
    Y: torch.Tensor  # (n, n_targets) float32, host
    train_rows: torch.Tensor  # (n_train,) int64
    X_val: torch.Tensor  # (n_val, n_voxels) float32, host
    Y_val_std: torch.Tensor  # (n_val, n_targets) float32, device
    mean: torch.Tensor  # (n_targets,) device
    scale: torch.Tensor  # (n_targets,) device


@dataclasses.dataclass
class _Training:
    """The network, its optimiser and schedule, the best weights so far and the checkpointed progress."""

    model: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    best_state: dict
    progress: dict  # epoch, best_val, best_epoch, bad_epochs, stopped_early, history


class NeuralRegressor:
    """Train a stage-1 network (GRU, CNN or Transformer variant) from betas to latents.

    Parameters
    ----------
    arch : {"gru", "cnn", "transformer"}
    network_options : dict, optional
        Keyword arguments of the network class (e.g. ``hidden``, ``dropout``).
    max_epochs : int
        Upper bound on epochs (early stopping usually ends sooner).
    batch_size : int
    lr : float
        Initial AdamW learning rate.
    weight_decay : float
        AdamW decoupled weight decay.
    patience : int
        Stop after this many epochs without a better validation loss.
    lr_factor, lr_patience, min_lr : float, int, float
        ``ReduceLROnPlateau``: multiply the learning rate by ``lr_factor`` after
        ``lr_patience`` epochs without improvement, down to ``min_lr``.
    val_fraction : float
        Share of the training rows kept for validation (see :func:`validation_split`).
    standardize : bool
        Train on per-dimension z-scored targets (the predictions are mapped back).
    seed : int
        Seeds the split, the initial weights, shuffling and dropout.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    amp : bool
        bfloat16 autocast on CUDA (ignored on the CPU).
    checkpoint_dir : path, optional
        Where ``checkpoint.pt`` is written after each epoch and read to resume.
    progress : bool
        Show a tqdm bar over epochs.

    Attributes
    ----------
    model_ : nn.Module
        The network with the weights of the best validation epoch, in eval mode.
    history_ : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``val_loss`` (MSE of standardised targets), ``lr``, ``seconds``.
    best_epoch_ : int
    train_indices_, val_indices_ : ndarray of int64
        Rows of ``X`` used for training and for validation.
    target_mean_, target_scale_ : ndarray of shape (n_targets,)
    n_features_in_ : int
    resumed_from_epoch_ : int or None
        The last epoch read from a checkpoint, if the fit resumed.
    """

    def __init__(self, arch: str = "gru", *, network_options: dict | None = None, max_epochs: int = 50,
                 batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 1e-2, patience: int = 6,
                 lr_factor: float = 0.5, lr_patience: int = 2, min_lr: float = 1e-6, val_fraction: float = 0.1,
                 standardize: bool = True, seed: int = 0, device="cpu", amp: bool = False,
                 checkpoint_dir: str | Path | None = None, progress: bool = True):
        self.arch = arch
        self.network_options = network_options
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.lr_factor = lr_factor
        self.lr_patience = lr_patience
        self.min_lr = min_lr
        self.val_fraction = val_fraction
        self.standardize = standardize
        self.seed = seed
        self.device = device
        self.amp = amp
        self.checkpoint_dir = checkpoint_dir
        self.progress = progress

    # -------------------------------------------------------------- internals
    def _device(self) -> torch.device:
        if str(self.device) == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} was asked for, but no CUDA GPU is visible")
        return dev

    def _signature(self, X, Y, val_idx) -> dict:
        """What must match for a checkpoint to be resumed (max_epochs, device, progress may change)."""
        return {"arch": self.arch, "network_options": repr(sorted((self.network_options or {}).items())),
                "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay,
                "patience": self.patience, "lr_factor": self.lr_factor, "lr_patience": self.lr_patience,
                "min_lr": self.min_lr, "standardize": self.standardize, "seed": self.seed,
                "data": array_key(X, Y, val_idx)}

    def _epoch_seed(self, epoch: int) -> int:
        return int(np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, 7, epoch]).generate_state(1)[0])

    def _on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch's checkpoint is written (a hook for tests and callers)."""

    def _autocast(self, dev):
        if self.amp and dev.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _predict_std(self, model, X_t: torch.Tensor, dev, batch: int = 512) -> torch.Tensor:
        model.eval()
        outs = []
        with torch.no_grad():
            for s in range(0, len(X_t), batch):
                with self._autocast(dev):
                    outs.append(model(X_t[s:s + batch].to(dev, non_blocking=True)).float())
        return torch.cat(outs) if outs else torch.empty(0)

    # -------------------------------------------------------------- public API
    def fit(self, X: np.ndarray, Y: np.ndarray, *, val_indices: Sequence[int] | None = None) -> NeuralRegressor:
        """Train on betas ``X`` (n, n_voxels) and latents ``Y`` (n, n_targets), float.

        ``val_indices`` (rows of ``X`` to validate on) overrides the seeded split, so that
        several regressors can share one validation set.
        """
        X, Y = _check_xy(X, Y)
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}; found {self.arch!r}")
        tr_idx, val_idx = _train_val_rows(len(X), self.val_fraction, self.seed, val_indices)
        self.train_indices_, self.val_indices_ = tr_idx, val_idx
        self.n_features_in_ = X.shape[1]
        dev = self._device()
        data = self._training_data(X, Y, tr_idx, val_idx, dev)
        signature = self._signature(X, Y, val_idx)
        ckpt = Path(self.checkpoint_dir) / "checkpoint.pt" if self.checkpoint_dir is not None else None
        run = self._start(X.shape[1], Y.shape[1], dev, ckpt, signature)
        progress = run.progress
        epochs = range(0) if progress["stopped_early"] else range(progress["epoch"] + 1, self.max_epochs)
        done = progress["epoch"] + 1  # a resumed fit that had stopped early has nothing left to run
        bar = tqdm(total=done if progress["stopped_early"] else self.max_epochs, initial=done,
                   desc=f"{self.arch} training", unit="epoch", disable=not self.progress)
        for epoch in epochs:
            t0 = time.perf_counter()
            train_loss = self._train_epoch(run, data, epoch, dev)
            val_loss = float(torch.mean((self._predict_std(run.model, data.X_val, dev) - data.Y_val_std) ** 2))
            self._end_epoch(run, epoch, train_loss, val_loss, time.perf_counter() - t0)
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            bar.update()
            if ckpt is not None:
                self._save_checkpoint(ckpt, run, signature)
            self._on_epoch_end(epoch)
            if progress["stopped_early"]:
                bar.set_description(f"{self.arch} training, stopped early (best epoch {progress['best_epoch'] + 1})")
                bar.total = bar.n  # the bar ends where training ended, not short of a limit it never meant to reach
                break
        bar.close()
        run.model.load_state_dict(run.best_state)
        self.model_ = run.model.eval()
        self.n_params_ = count_parameters(self.model_)
        self.history_ = list(progress["history"])
        self.best_epoch_ = int(progress["best_epoch"])
        self.best_val_loss_ = float(progress["best_val"])
        return self

    def predict(self, X: np.ndarray, *, batch_size: int = 512) -> np.ndarray:
        """Latents (n, n_targets), float32, in the units of the training targets."""
        if not hasattr(self, "model_"):
            raise RuntimeError("this NeuralRegressor is not fitted yet; call fit(X, Y) first")
        X = _check_xy(X)
        _check_columns(X, self.n_features_in_)
        dev = next(self.model_.parameters()).device
        pred = self._predict_std(self.model_, torch.from_numpy(np.ascontiguousarray(X, np.float32)), dev, batch_size)
        return (pred.cpu().numpy() * self.target_scale_ + self.target_mean_).astype(np.float32)

    def predict_sets(self, Xs: Sequence[np.ndarray], *, return_raw: bool = False):
        """:meth:`predict` of each set of rows (the interface of :meth:`RidgeRegressor.predict_sets`).

        A network's predictions are not re-standardised, so with ``return_raw`` the raw
        predictions are the same arrays.
        """
        preds = [self.predict(X) for X in Xs]
        return (preds, preds) if return_raw else preds

    # -------------------------------------------------------------- training steps
    def _training_data(self, X, Y, tr_idx, val_idx, dev) -> _TrainingData:
        """Set the target standardisation (``target_mean_``, ``target_scale_``) and build the tensors."""
        Y_tr = Y[tr_idx].astype(np.float64)
        mean = Y_tr.mean(0) if self.standardize else np.zeros(Y.shape[1])
        scale = Y_tr.std(0) if self.standardize else np.ones(Y.shape[1])
        scale = np.where(scale > 1e-8, scale, 1.0)
        del Y_tr
        self.target_mean_, self.target_scale_ = mean.astype(np.float32), scale.astype(np.float32)
        mean_t = torch.from_numpy(self.target_mean_).to(dev)
        scale_t = torch.from_numpy(self.target_scale_).to(dev)
        X_t = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        Y_t = torch.from_numpy(np.ascontiguousarray(Y, dtype=np.float32))
        val_t = torch.from_numpy(val_idx)
        return _TrainingData(X=X_t, Y=Y_t, train_rows=torch.from_numpy(tr_idx), X_val=X_t[val_t],
                             Y_val_std=(Y_t[val_t].to(dev) - mean_t) / scale_t, mean=mean_t, scale=scale_t)

    def _start(self, n_inputs: int, n_outputs: int, dev, ckpt: Path | None, signature: dict) -> _Training:
        """A freshly seeded network, optimiser and schedule, or the state of a matching checkpoint."""
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(self.seed)
            model = build_network(self.arch, n_inputs, n_outputs, **(self.network_options or {})).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=self.lr_factor, patience=self.lr_patience,
                                                           min_lr=self.min_lr)
        progress = {"epoch": -1, "best_val": float("inf"), "best_epoch": -1, "bad_epochs": 0,
                    "stopped_early": False, "history": []}
        run = _Training(model, opt, sched, copy.deepcopy(model.state_dict()), progress)
        self.resumed_from_epoch_ = None
        if ckpt is None or not ckpt.exists():
            return run
        with reading(ckpt, "a training checkpoint written by this fit (torch.save, no pickled objects)",
                     "delete it; the fit starts again from the first epoch"):
            saved = torch.load(ckpt, map_location=dev, weights_only=True)
        if saved.get("signature") != signature:
            diff = sorted(k for k in signature if saved.get("signature", {}).get(k) != signature[k])
            raise ValueError(f"checkpoint {ckpt} was written by a fit with other settings or data "
                             f"(differs in: {', '.join(diff)}); delete it or use another checkpoint_dir")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        run.best_state = saved["best_state"]
        run.progress = {k: saved[k] for k in progress}
        self.resumed_from_epoch_ = run.progress["epoch"]
        return run

    def _train_epoch(self, run: _Training, data: _TrainingData, epoch: int, dev) -> float:
        """One pass over the training rows in a seeded order; returns the mean training loss."""
        seed = self._epoch_seed(epoch)
        n_tr = len(data.train_rows)
        perm = data.train_rows[torch.randperm(n_tr, generator=torch.Generator().manual_seed(seed))]
        model, opt = run.model, run.opt
        model.train()
        total, count = 0.0, 0
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            for s in range(0, n_tr, self.batch_size):
                rows = perm[s:s + self.batch_size]
                if len(rows) < 2:  # BatchNorm needs two samples; a lone last row waits for the next epoch
                    continue
                xb = data.X[rows].to(dev, non_blocking=True)
                yb = (data.Y[rows].to(dev, non_blocking=True) - data.mean) / data.scale
                with self._autocast(dev):
                    loss = torch.mean((model(xb).float() - yb) ** 2)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(rows)
                count += len(rows)
        return total / max(count, 1)

    def _end_epoch(self, run: _Training, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        """Step the schedule, keep the best weights, count stalled epochs and log the epoch."""
        run.sched.step(val_loss)
        progress = run.progress
        if val_loss < progress["best_val"]:
            progress.update(best_val=val_loss, best_epoch=epoch, bad_epochs=0)
            run.best_state = copy.deepcopy(run.model.state_dict())
        else:
            progress["bad_epochs"] += 1
        progress["epoch"] = epoch
        progress["stopped_early"] = progress["bad_epochs"] >= self.patience
        progress["history"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                    "lr": float(run.opt.param_groups[0]["lr"]), "seconds": seconds})

    @staticmethod
    def _save_checkpoint(ckpt: Path, run: _Training, signature: dict) -> None:
        with atomic_path(ckpt) as tmp:
            torch.save({"format": 1, "signature": signature, "model": run.model.state_dict(),
                        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
                        "best_state": run.best_state, **run.progress}, tmp)


# ------------------------------------------------------------------------------ ridge
class RidgeRegressor:
    """Ridge regression from betas to latents (the paper's baseline, after Brain-Diffuser).

    Kernel form, on :mod:`nsdlib.ridge`'s machinery: ``fit`` keeps the training rows and
    chooses alpha (cross-validated with :func:`nsdlib.ridge.select_alpha` when ``alphas`` is
    given); ``predict`` applies :func:`nsdlib.ridge.ridge_predict`'s map
    ``Z X'(XX' + alpha I)^-1`` to the training targets, so the weight matrix (n_voxels x
    n_latents: 5.7 GB for NSD's betas and 31 VDVAE blocks) is never formed. Like
    :class:`NeuralRegressor` it holds out a validation split, so that both report validation
    errors on rows they never fitted.

    Parameters
    ----------
    alpha : float
        Fixed regularisation when ``alphas`` is None. Brain-Diffuser uses 50,000 for the
        VDVAE latents of NSD.
    alphas : sequence of float, optional
        A grid chosen by cross-validation (``cv``) within the training split.
    cv : int, 'loo' or 'gcv'
        As in :func:`nsdlib.ridge.ridge_predict`.
    normalize : {None, 'test'}
        ``'test'``: Brain-Diffuser's rule, each predicted dimension re-standardised to the
        training targets' mean and standard deviation with the statistics of the predicted
        set itself (:func:`nsdlib.ridge.restandardize`). For the non-transductive variants
        use :class:`nsdlib.ridge.Ridge`.
    val_fraction : float
        Share of the training rows held out for validation; the ridge is fitted on the rest.
    seed : int
        Seeds the validation split.
    device : str
        Where the ridge's products run (``"auto"``, ``"cpu"``, ``"cuda"``).
    verbose : bool
        Progress bars of the ridge solver.

    Attributes
    ----------
    alpha_ : float
    cv_mse_ : ndarray of shape (n_alphas,) or None
        Cross-validated mean squared error of each alpha of ``alphas``.
    X_train_, Y_train_ : ndarray of shape (n_train, n_voxels), (n_train, n_targets)
        The training rows (the fitted model, in kernel form).
    target_mean_, target_std_ : ndarray of shape (n_targets,)
        Mean and population standard deviation of ``Y_train_`` (of its dtype).
    train_indices_, val_indices_ : ndarray of int64
    n_features_in_ : int
    n_params_ : int
        Values of the equivalent weights and intercept, ``(n_voxels + 1) * n_targets``.
    """

    def __init__(self, alpha: float = 50_000.0, *, alphas: Sequence[float] | None = None, cv=5,
                 normalize: str | None = None, val_fraction: float = 0.1, seed: int = 0, device="auto",
                 verbose: bool = False):
        self.alpha = alpha
        self.alphas = alphas
        self.cv = cv
        self.normalize = normalize
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.verbose = verbose

    def fit(self, X: np.ndarray, Y: np.ndarray, *, val_indices: Sequence[int] | None = None) -> RidgeRegressor:
        """Keep the training rows of betas ``X`` (n, n_voxels) and latents ``Y`` (n, n_targets); choose alpha."""
        X, Y = _check_xy(X, Y)
        if self.normalize not in (None, "test"):
            raise ValueError(f"normalize must be None or 'test' (Brain-Diffuser's rule); found {self.normalize!r}")
        tr_idx, val_idx = _train_val_rows(len(X), self.val_fraction, self.seed, val_indices)
        self.train_indices_, self.val_indices_ = tr_idx, val_idx
        self.X_train_, self.Y_train_ = X[tr_idx], Y[tr_idx]
        self.target_mean_, self.target_std_ = self.Y_train_.mean(0), self.Y_train_.std(0)
        self.cv_mse_ = None
        if self.alphas is None:
            self.alpha_ = float(self.alpha)
        else:
            alpha, self.cv_mse_ = select_alpha(self.X_train_, self.Y_train_, self.alphas, cv=self.cv,
                                               device=self.device, verbose=self.verbose)
            self.alpha_ = float(alpha)
        self.n_features_in_ = X.shape[1]
        self.n_params_ = int(X.shape[1] * Y.shape[1] + Y.shape[1])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Latents (n, n_targets), float32 (re-standardised by ``normalize``)."""
        return self.predict_sets([X])[0]

    def predict_sets(self, Xs: Sequence[np.ndarray], *, return_raw: bool = False):
        """Predictions for several sets of rows from one solve, each set re-standardised on its own.

        Parameters
        ----------
        Xs : sequence of ndarray of shape (n_i, n_voxels)
            E.g. the validation and the test betas.
        return_raw : bool
            Also return the predictions before re-standardisation.

        Returns
        -------
        preds : list of ndarray of shape (n_i, n_targets), float32
        raws : list of ndarray of shape (n_i, n_targets), float32; only with ``return_raw``
        """
        if not hasattr(self, "alpha_"):
            raise RuntimeError("this RidgeRegressor is not fitted yet; call fit(X, Y) first")
        Xs = [_check_xy(X) for X in Xs]
        for X in Xs:
            _check_columns(X, self.n_features_in_)
        raw = ridge_predict(self.X_train_, self.Y_train_, np.concatenate(Xs), self.alpha_, device=self.device,
                            verbose=self.verbose)
        raws = np.split(np.asarray(raw, np.float32), np.cumsum([len(X) for X in Xs])[:-1])
        preds = raws
        if self.normalize == "test":  # Brain-Diffuser's rule, on each predicted set separately
            preds = [restandardize(r, self.target_mean_, self.target_std_) for r in raws]
        return (preds, raws) if return_raw else preds


def make_regressor(name: str, *, checkpoint_dir: str | Path | None = None, **options):
    """A stage-1 regressor by name: ``"ridge"``, ``"gru"``, ``"cnn"`` or ``"transformer"``.

    Parameters
    ----------
    name : {"ridge", "gru", "cnn", "transformer"}
    checkpoint_dir : path, optional
        Where a network checkpoints each epoch (:class:`NeuralRegressor`); ridge solves in one
        pass and keeps no checkpoint.
    **options
        Arguments of :class:`RidgeRegressor` or :class:`NeuralRegressor`.

    Returns
    -------
    RidgeRegressor or NeuralRegressor
        Unfitted; both have ``fit(X, Y, val_indices=...)``, ``predict``, ``predict_sets`` and
        ``n_params_``.
    """
    if name == "ridge":
        return RidgeRegressor(**options)
    if name in ARCHITECTURES:
        return NeuralRegressor(name, checkpoint_dir=checkpoint_dir, **options)
    raise ValueError(f"regressor must be one of ridge, {', '.join(ARCHITECTURES)}; found {name!r}")
