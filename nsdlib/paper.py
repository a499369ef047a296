"""The paper's published numbers, as data.

Every number here is copied from Veronese et al. (Tables 2-6) or from the published
results of the other systems the paper compares with. The book puts them beside the
numbers a run produces, always labelled "paper" (or with the system's name), so that a
reader never mistakes a published value for one computed here. Nothing in nsdlib computes
a result from these numbers.

Conventions
-----------
- Keys and labels come from :mod:`nsdlib.names`: metric keys (``ssim``, ``pixcorr``,
  ``alexnet2``, ``alexnet5``, ``inceptionv3``, ``clip``: 2-way identification, a fraction in
  0-1; ``efficientnet``, ``swav``: mean correlation distance, lower is better), regressor
  keys (``gru``, ``ridge``, ``cnn``, ``transformer``) with the paper's row labels
  (:data:`~nsdlib.names.REGRESSOR_PAPER_LABELS`), and noise levels with Table 6's row labels.
- Identification scores that a source prints in percent (e.g. 94.2) are stored as
  fractions (0.942), the way the paper's own tables print them.
- A value the source does not report is ``None``.
- Each row of Tables 4-6 and of the other systems names the evaluation protocol it claims
  (``protocol``; :mod:`nsdlib.protocols`), so that a table never puts numbers of two
  protocols side by side without saying so.
- The book's column headers are :data:`nsdlib.names.METRIC_HEADERS`; the paper prints
  "EfficientNet-B" where the book prints the network's full name, "EfficientNet-B1".

One oddity of the source, kept as published: the "no noise" row of Table 6 (captioned
"subject 1") repeats the GRU 15-layer row of Table 5 (the mean of four subjects), not the
one of Table 4 (subject 1).
"""

from __future__ import annotations

from .names import IMAGE_METRICS, NOISE_LABELS
from .names import REGRESSOR_PAPER_LABELS as _LABELS

__all__ = [
    "OTHER_SYSTEMS",
    "OWN_PROTOCOL",
    "PAPER_PROTOCOL",
    "TABLE2",
    "TABLE3",
    "TABLE4",
    "TABLE5",
    "TABLE6",
    "as_frame",
    "table",
]


#: The evaluation protocol the paper's own rows claim (:mod:`nsdlib.protocols`): its Section 3.5
#: computes the metrics "as described in" Brain-Diffuser [21]; its evaluation code is not published.
PAPER_PROTOCOL = "brain-diffuser (claimed)"
#: The protocol a row of another system claims: its own evaluation, not stated in the paper.
OWN_PROTOCOL = "own (not stated)"


def _row(values, *, protocol: str = PAPER_PROTOCOL, **keys) -> dict:
    if len(values) != len(IMAGE_METRICS):
        raise ValueError(f"expected {len(IMAGE_METRICS)} metric values, found {len(values)}")
    return {**keys, "protocol": protocol, **dict(zip(IMAGE_METRICS, values))}


#: Table 2: stage-1 latents (VDVAE, 15 layers), subject 1, MSE and MAE.
TABLE2 = [
    {"regressor": "cnn", "label": _LABELS["cnn"], "n_layers": 15, "subject": 1,
     "val_mse": 0.0687, "val_mae": 0.1392, "test_mse": 0.0683, "test_mae": 0.1389},
    {"regressor": "transformer", "label": _LABELS["transformer"], "n_layers": 15, "subject": 1,
     "val_mse": 0.0690, "val_mae": 0.1392, "test_mse": 0.0685, "test_mae": 0.1389},
    {"regressor": "gru", "label": _LABELS["gru"], "n_layers": 15, "subject": 1,
     "val_mse": 0.0685, "val_mae": 0.1390, "test_mse": 0.0681, "test_mae": 0.1388},
]

#: Table 3: ridge (Brain-Diffuser, the paper's reference [21]) against the GRU, subject 1.
TABLE3 = [
    {"regressor": "ridge", "label": _LABELS["ridge"], "n_layers": 15, "subject": 1,
     "val_mse": 0.0695, "val_mae": 0.1184, "test_mse": 0.0690, "test_mae": 0.1182},
    {"regressor": "gru", "label": _LABELS["gru"], "n_layers": 15, "subject": 1,
     "val_mse": 0.0685, "val_mae": 0.1390, "test_mse": 0.0681, "test_mae": 0.1388},
]

#: Table 4: the full pipeline, subject 1. "GRU (CLIP)" is a variant the paper lists as
#: "Ours (CLIP)" without further description.
TABLE4 = [
    _row((.358, .286, .935, .962, .881, .925, .772, .413), regressor="ridge", label=_LABELS["ridge"], n_layers=15,
         subjects="1"),
    _row((.367, .305, .967, .974, .878, .925, .768, .415), regressor="ridge", label=_LABELS["ridge"], n_layers=31,
         subjects="1"),
    _row((.357, .230, .870, .922, .860, .916, .778, .437), regressor="gru", label="GRU (CLIP)", n_layers=15,
         subjects="1"),
    _row((.370, .242, .904, .942, .868, .924, .779, .421), regressor="gru", label=_LABELS["gru"], n_layers=15,
         subjects="1"),
    _row((.374, .207, .880, .929, .890, .958, .768, .416), regressor="gru", label=_LABELS["gru"], n_layers=31,
         subjects="1"),
]

#: Table 5: the full pipeline, mean of subjects 1, 2, 5 and 7, with the other systems the
#: paper lists (their numbers as the paper prints them; None where it prints a dash).
TABLE5 = [
    _row((None, None, None, None, .782, None, None, None), regressor=None, label="Lin et al. [14]",
         n_layers=None, protocol=OWN_PROTOCOL, subjects="1,2,5,7"),
    _row((None, None, .830, .830, .760, .770, None, None), regressor=None, label="Takagi et al. [35]",
         n_layers=None, protocol=OWN_PROTOCOL, subjects="1,2,5,7"),
    _row((.150, .325, None, None, None, None, .862, .465), regressor=None, label="Gu et al. [9]",
         n_layers=None, protocol=OWN_PROTOCOL, subjects="1,2,5,7"),
    _row((.356, .254, .942, .962, .872, .915, .775, .423), regressor="ridge", label=_LABELS["ridge"], n_layers=31,
         subjects="1,2,5,7"),
    _row((.361, .202, .878, .931, .862, .914, .786, .434), regressor="gru", label=_LABELS["gru"], n_layers=15,
         subjects="1,2,5,7"),
    _row((.360, .177, .864, .923, .869, .922, .785, .434), regressor="gru", label=_LABELS["gru"], n_layers=31,
         subjects="1,2,5,7"),
]

#: Table 6: noise added to the 15-layer GRU first guess before stage 2 (captioned subject 1).
TABLE6 = [
    _row((.361, .202, .878, .931, .862, .914, .786, .434), noise="none", label=NOISE_LABELS["none"]),
    _row((.311, .197, .907, .948, .879, .946, .767, .400), noise="8", label=NOISE_LABELS["8"]),
    _row((.287, .191, .903, .946, .870, .946, .773, .401), noise="16", label=NOISE_LABELS["16"]),
    _row((.256, .180, .894, .944, .866, .949, .759, .409), noise="32", label=NOISE_LABELS["32"]),
    _row((.207, .167, .864, .950, .877, .954, .755, .410), noise="64", label=NOISE_LABELS["64"]),
    _row((.140, .090, .783, .924, .907, .939, .766, .435), noise="256", label=NOISE_LABELS["256"]),
]

#: Other systems on the same eight metrics, mean of subjects 1, 2, 5, 7 (identification as fractions).
OTHER_SYSTEMS = [
    _row((.356, .254, .942, .962, .872, .915, .775, .423), label="Brain-Diffuser (Ozcelik & VanRullen 2023)",
         subjects="1,2,5,7", protocol="brain-diffuser (its own code)"),
    _row((.431, .322, .961, .986, .954, .930, .619, .344), label="MindEye2, 40 sessions (Scotti et al. 2024)",
         subjects="1,2,5,7", protocol="mindeye (its own code)"),
]

_TABLES = {"2": TABLE2, "3": TABLE3, "4": TABLE4, "5": TABLE5, "6": TABLE6, "other": OTHER_SYSTEMS}


def as_frame(rows: list[dict], *, source: str = "paper"):
    """A :class:`pandas.DataFrame` of published rows with a ``source`` column.

    Parameters
    ----------
    rows : list of dict
        One of this module's tables.
    source : str
        Value of the ``source`` column, ``"paper"`` by default, so that published numbers
        stay labelled when concatenated with a run's own.
    """
    import pandas as pd

    df = pd.DataFrame([dict(r) for r in rows])
    df.insert(0, "source", source)
    return df


def table(name: str | int):
    """A paper table by number (2-6) or ``"other"`` for :data:`OTHER_SYSTEMS`, as a DataFrame."""
    key = str(name)
    if key not in _TABLES:
        raise KeyError(f"the paper has tables 2, 3, 4, 5, 6 (and 'other' for other systems); found {name!r}")
    return as_frame(_TABLES[key])
