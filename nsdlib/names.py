"""The paper's vocabulary: the one place that spells subjects, datasets, models and metrics.

Every key a run, a results file or a table uses is defined here once, with the labels the
book prints for it. Other modules import these names; none defines its own copy. This
module imports nothing, so any module of nsdlib may use it.

Keys and labels
---------------
- Subjects: the four NSD subjects that completed all 40 sessions (mini-NSD simulates the
  same four).
- Datasets: ``"mini"`` (mini-NSD, simulated) and ``"nsd"`` (the Natural Scenes Dataset);
  model sets: ``"mini"`` (small models trained on mini-NSD) and ``"pretrained"`` (the
  published weights).
- Regressors (stage 1): ``"gru"`` (the paper's), ``"ridge"`` (Brain-Diffuser's, the paper's
  reference [21]), ``"cnn"`` and ``"transformer"`` (the variants of the paper's Table 2),
  each predicting the latents of the first 15 or 31 VDVAE decoder blocks.
- Noise levels (Table 6): ``"none"``, the added amplitudes ``"8"`` ... ``"64"`` (grey levels)
  and ``"256"``, the paper's "pure noise" (no first guess).
- Image metrics, in the paper's column order: ``ssim``, ``pixcorr`` (low level),
  ``alexnet2``, ``alexnet5``, ``inceptionv3``, ``clip`` (2-way identification, a fraction
  in 0-1), ``efficientnet``, ``swav`` (mean correlation distance, lower is better); beside
  them ``ssim_2d`` (the true 2-D SSIM, reported next to the paper's column SSIM) and the
  latent errors ``mse`` and ``mae`` of stage 1 (Tables 2 and 3).

Each metric has a long label (:data:`METRIC_LABELS`, as the book's tables print it), a
short one (:data:`METRIC_SHORT_LABELS`, for narrow Markdown tables) and a direction
(:data:`HIGHER_IS_BETTER`, printed as :data:`METRIC_ARROWS`); :data:`METRIC_HEADERS` and
:data:`METRIC_SHORT_HEADERS` join label and arrow.

The EfficientNet metric is named for the network it runs, EfficientNet-B1 (Tan & Le 2019;
Brain-Diffuser's evaluation, the source of the paper's metric code, uses ``efficientnet_b1``).
The paper's tables print its header as "EfficientNet-B"; the book prints "EfficientNet-B1".
"""

__all__ = [
    "DATASETS",
    "DATASET_LABELS",
    "DISTANCE_METRICS",
    "HIGHER_IS_BETTER",
    "IDENTIFICATION_METRICS",
    "IMAGE_METRICS",
    "LATENT_METRICS",
    "METRIC_LEVELS",
    "METRICS",
    "METRIC_ARROWS",
    "METRIC_HEADERS",
    "METRIC_LABELS",
    "METRIC_SHORT_HEADERS",
    "METRIC_SHORT_LABELS",
    "MODEL_SETS",
    "MODEL_SET_LABELS",
    "NOISE_AMPLITUDES",
    "NOISE_LABELS",
    "NOISE_LEVELS",
    "PIXEL_METRICS",
    "N_LAYERS",
    "PURE_NOISE_AMPLITUDE",
    "REGRESSORS",
    "REGRESSOR_LABELS",
    "REGRESSOR_PAPER_LABELS",
    "SSIM_MODES",
    "SUBJECTS",
]

# ---------------------------------------------------------------- runs
#: NSD subjects that completed all 40 sessions; mini-NSD simulates the same four.
SUBJECTS = (1, 2, 5, 7)
#: Datasets: mini-NSD (simulated, generated locally) and the real Natural Scenes Dataset.
DATASETS = ("mini", "nsd")
DATASET_LABELS = {"mini": "mini-NSD (simulated)", "nsd": "NSD"}
#: Model sets: small models trained on mini-NSD, or the published pretrained weights.
MODEL_SETS = ("mini", "pretrained")
MODEL_SET_LABELS = {"mini": "mini models", "pretrained": "pretrained models"}
#: Number of VDVAE decoder blocks whose latents stage 1 predicts.
N_LAYERS = (15, 31)

# ---------------------------------------------------------- regressors
#: Stage-1 regressors: the paper's GRU, Brain-Diffuser's ridge, and the variants of Table 2.
REGRESSORS = ("gru", "ridge", "cnn", "transformer")
#: How the book's tables name our runs of each regressor.
REGRESSOR_LABELS = {"gru": "GRU", "ridge": "Ridge", "cnn": "CNN", "transformer": "Transformer"}
#: How the paper's Tables 2-5 name them ("[21]" cites Brain-Diffuser, whose ridge it is).
REGRESSOR_PAPER_LABELS = {"gru": "GRU", "ridge": "Ridge [21]", "cnn": "Convolutional", "transformer": "Transformer"}

# --------------------------------------------------------------- noise
#: Added-noise amplitudes of Table 6, in grey levels (0-255 scale).
NOISE_AMPLITUDES = (8, 16, 32, 64)
#: The amplitude the paper uses as a label for "pure noise, no first guess".
PURE_NOISE_AMPLITUDE = 256
#: Every level of Table 6 as a key: "none", the amplitudes, and "256" (pure noise).
NOISE_LEVELS = ("none", *(str(a) for a in NOISE_AMPLITUDES), str(PURE_NOISE_AMPLITUDE))
#: The row labels of the paper's Table 6.
NOISE_LABELS = {"none": "No noise", **{str(a): f"Added noise ({a})" for a in NOISE_AMPLITUDES},
                str(PURE_NOISE_AMPLITUDE): f"Pure noise ({PURE_NOISE_AMPLITUDE})"}

# ------------------------------------------------------------- metrics
#: The eight image metrics in the paper's column order (Tables 4-6).
IMAGE_METRICS = ("ssim", "pixcorr", "alexnet2", "alexnet5", "inceptionv3", "clip", "efficientnet", "swav")
#: The two metrics computed on the pixels themselves (scores, not identification or distances).
PIXEL_METRICS = ("ssim", "pixcorr")
#: The two halves of the eight metrics as the paper (after Brain-Diffuser) heads its tables: low-level
#: (pixels and AlexNet's early layers) and high-level (networks of categories and semantics).
METRIC_LEVELS = {"low": ("pixcorr", "ssim", "alexnet2", "alexnet5"),
                 "high": ("inceptionv3", "clip", "efficientnet", "swav")}
#: 2-way identification scores: fractions in 0-1, 0.5 is chance.
IDENTIFICATION_METRICS = ("alexnet2", "alexnet5", "inceptionv3", "clip")
#: Mean correlation distances ``1 - r``: lower is better.
DISTANCE_METRICS = ("efficientnet", "swav")
#: Stage-1 latent errors (Tables 2 and 3).
LATENT_METRICS = ("mse", "mae")
#: Every metric key with labels: the eight, the true 2-D SSIM and the latent errors.
METRICS = (*IMAGE_METRICS, "ssim_2d", *LATENT_METRICS)
#: SSIM variants: the true 2-D SSIM and Brain-Diffuser's column SSIM (behind the paper's numbers).
SSIM_MODES = ("2d", "columns")

HIGHER_IS_BETTER = {m: m not in (*DISTANCE_METRICS, *LATENT_METRICS) for m in METRICS}
METRIC_ARROWS = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in METRICS}
#: Long labels, as the book's tables print them.
METRIC_LABELS = {
    "ssim": "SSIM", "pixcorr": "PixCorr", "alexnet2": "AlexNet(2)", "alexnet5": "AlexNet(5)",
    "inceptionv3": "InceptionV3", "clip": "CLIP", "efficientnet": "EfficientNet-B1", "swav": "SwAV-ResNet50",
    "ssim_2d": "SSIM (2-D)", "mse": "MSE", "mae": "MAE",
}
#: Short labels, for narrow tables (the cross-subject report).
METRIC_SHORT_LABELS = {
    "ssim": "SSIM", "pixcorr": "PixCorr", "alexnet2": "Alex(2)", "alexnet5": "Alex(5)", "inceptionv3": "Incep",
    "clip": "CLIP", "efficientnet": "Eff", "swav": "SwAV", "ssim_2d": "SSIM (2-D)", "mse": "MSE", "mae": "MAE",
}
#: Column headers: the long label and the direction that is better ("SSIM ↑", "SwAV-ResNet50 ↓").
METRIC_HEADERS = {m: f"{METRIC_LABELS[m]} {METRIC_ARROWS[m]}" for m in METRICS}
METRIC_SHORT_HEADERS = {m: f"{METRIC_SHORT_LABELS[m]} {METRIC_ARROWS[m]}" for m in METRICS}
