"""nsdlib: the library behind the NSD two-stage decoding book.

One module per step of the paper: ``glm`` (single-trial betas), ``nsd`` (the dataset),
``mini`` (the simulated dataset), ``ridge``, ``vdvae``, ``regressors`` (stage 1), ``clip``
and ``diffusion`` (stage 2), ``noise``, ``metrics``; ``config``, ``store`` and ``runner``
organise runs, and ``pipeline`` holds the cached steps the notebooks call.
"""

from .config import ConfigError, RunConfig, resolve_device
from .store import Store

__version__ = "0.1.0"

__all__ = ["ConfigError", "RunConfig", "Store", "__version__", "resolve_device"]
