"""nsdlib: the library behind the NSD two-stage decoding book.

One module per step of the paper: ``glm`` (single-trial betas, with the HRF library of
``hrf``), ``nsd`` (the dataset), ``mini`` (the simulated dataset, with ``mini.zoo``, its small
models), ``ridge``, ``vdvae``, ``regressors`` (stage 1), ``clip`` and ``diffusion`` (stage 2),
``noise``, ``metrics`` (with ``features``, the networks of its high-level metrics, and
``protocols``, the named evaluation chains and the card that says which one scored a table); ``names``
is the paper's vocabulary (subjects, regressors, noise levels, metric keys and labels),
``images`` the one home of checking, resizing and converting image batches, ``reconstructions``
the reader of reconstruction files published by others; ``config``,
``store``, ``runner`` and ``batch`` organise runs, ``pipeline`` holds the cached steps the
notebooks call and ``report`` the tables, figures, explorer and cross-subject report that show
their results.

The main estimators and models are importable from the package itself
(``from nsdlib import GLMSingle, Ridge, VDVAE``); they are loaded on first use, so
``import nsdlib`` stays light.
"""

from importlib import import_module

from .config import ConfigError, RunConfig, resolve_device
from .store import Store

__version__ = "0.1.0"

_LAZY = {
    "GLMSingle": "glm", "hrf_library": "hrf", "canonical_hrf": "hrf",
    "NSDLayout": "nsd", "prepare_subject": "nsd", "generate_mini": ("mini", "generate"),
    "Ridge": "ridge", "ridge_predict": "ridge",
    "VDVAE": "vdvae", "VDVAEConfig": "vdvae", "load_vdvae": "vdvae",
    "GRUNet": "regressors", "CNNNet": "regressors", "TransformerNet": "regressors",
    "NeuralRegressor": "regressors", "RidgeRegressor": "regressors",
    "ClipEmbedder": "clip", "DualGuidedDiffusion": "diffusion", "add_noise": "noise",
    "run_chain": "runner", "run_batch": "batch",
}

__all__ = ["ConfigError", "RunConfig", "Store", "__version__", "resolve_device", *_LAZY]


def __getattr__(name):
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'nsdlib' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value
