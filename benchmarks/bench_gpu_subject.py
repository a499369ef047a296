"""One subject's whole run at NSD's size: time and peak memory of every stage, measured in pieces.

Made to run the moment a GPU machine is lent (``--device auto`` picks CUDA when present):
full-size, real-format models built from their configurations with random weights (no
download), a synthetic subject at NSD's shapes, each stage timed on a bounded piece and
extrapolated to the whole subject. The whole script is meant to end within about 6 minutes on
an H100; at ``--scale tiny`` it runs on the CPU in the test suite so that it never rots.

Stages (nsdlib's own code paths), the piece measured and what it is extrapolated to:

====================  ===============================================  =====================================
stage                 piece (k and 2k units, k doubled while short)   one subject (NSD, subject 1)
====================  ===============================================  =====================================
glm                   GLMSingle (models A-D) on one session's runs,    37 sessions x 15,724 voxels
                      1/4 and 1/2 of the voxels (unit: voxels)
ridge_text            ridge_predict (alpha 50,000, kernel form) on     1 fit on 8,859 x 15,724, predicting
                      1 and 2 batches of target columns                982 rows, 59,136 (77 x 768) targets
ridge_vision          the same                                         197,376 (257 x 768) targets
gru_epoch             NeuralRegressor("gru").fit, 1 epoch, on 1/4      one epoch on 8,859 rows
                      and 1/2 of the rows (unit: rows)                 (x 50 epochs at most = the subject)
vdvae_encode          encode_latents (31 blocks), 1 and 2 batches     8,859 + 982 stimuli at 64 px
vdvae_decode          decode_latents (31 blocks), 1 and 2 batches     982 x 2 (15 and 31 layers)
vd_img2img            DualGuidedDiffusion.reconstruct, 37 of 50        982 x 6 (the first guess and the
                      DDIM steps, 512 px, 1 and 2 batches              5 noise levels 8, 16, 32, 64, 256)
metrics               ImageEvaluator, the eight metrics, on 1 and 2   982 x 7 image sets (the 6 above and
                      batches (ground truth + reconstructions)         the first guesses)
====================  ===============================================  =====================================

Counts not in the table are not included (CLIP embeddings of the stimuli, the ridge stage 1,
the CNN and Transformer variants, 31-layer GRU). NSD's 1.8 mm time series: 12 runs of 226
volumes (TR 4/3 s) and 750 trials per session (the issue's "750 volumes per run" is the 750
trials of a session). The GLM is numpy: it runs on the CPU on every machine.

Time: ``torch.cuda.synchronize`` then ``time.perf_counter`` around every piece, after one
untimed warm-up piece. A stage's time for ``k`` units is fitted as ``a + b k`` from the pieces
``k1`` and ``2 k1`` and evaluated at the whole count (see ``_linear`` for the two fallbacks);
``k1`` starts at the table's piece and doubles while a piece takes under 0.25 s (and stays
under a quarter of the whole); a piece shorter than 1 s is timed ``--repeats`` times and the
median kept; both wall and process CPU seconds are recorded. Memory: on CUDA the peak of
``torch.cuda.max_memory_allocated`` from the end of building the models to the end of the
pieces (models, inputs and activations; the allocator's reserve above it is not counted, nor
the float32 transient of casting random weights to float16); always also the peak resident set size of the
process above its level at the stage's start, sampled every 5 ms by a thread (``psutil``;
the GLM's only memory figure, and the one compared with ``--fit`` budgets on the CPU).

Models at ``--scale full``: VDVAE ImageNet-64 (nsdlib.vdvae.IMAGENET64, 125,005,860
parameters), Versatile Diffusion's image UNet (SD-1 layout: channels 320/640/1280/1280, 2 layers
per block, 8 heads, cross-attention 768, 64 x 64 latents), its text UNet's transformers at the
same places (the rest of the text UNet is built with 4 input channels: only its transformers
are used), the KL-f8 VAE (128/256/512/512), CLIP ViT-L/14 (text 768 wide, 12 layers, 12 heads;
vision 1024 wide, 24 layers, 16 heads, 224 px, 14 px patches; projection 768), the GRU of
Table 1 (12,400,344 parameters), torchvision AlexNet, InceptionV3, EfficientNet-B1 and ResNet-50
(SwAV). ``--scale`` s < 1 shrinks every count, width and image side by s (with floors, each
stated in the JSON); the torchvision networks and the token counts of stage 2 (77, 257) keep
their size.

``--fit GiB [GiB ...]``: each stage also walks its ladder of settings (batch sizes, fp16,
attention slicing, CPU offload, ridge target batches, GLM voxel chunks), measuring for each
rung the peak memory and the time of the same piece of work (stage 2: on 4 DDIM steps, the
default re-measured likewise); offloading to the CPU is tried only when nothing else fits the
smallest budget. For each budget it reports the first rung that fits (the ladder runs from
fastest to most frugal) and its time against the default's; when none fits, the last rung,
marked ``fits: false``. Memory compared: the CUDA peak on a GPU (the GLM: its RSS rise, it runs
on the host), the RSS rise on the CPU.

``--direct``: run every stage's whole count (one session, one fit, one epoch, one pass) at the
given scale instead of pieces (the test's check of the extrapolation; only for small scales).

Run: ``.venv/bin/python benchmarks/bench_gpu_subject.py [--device auto] [--scale auto]
[--fit 24 12] [--out gpu_subject.json]`` (``--scale auto``: full on CUDA, tiny on the CPU, so
that ``make bench`` on a CPU machine stays short).

``--check-direct`` (the default at ``--scale tiny``): after the estimate, run every stage's whole
pass too, in the same process, and tabulate the estimate against it (small scales only). On the
CPU the libraries get one thread unless ``--threads`` says otherwise.

Unlike the other benchmarks, this one prints absolute estimates, not ratios against a peer:
the question it answers is a planning one (how long, how much memory), and there is no peer
(nothing else runs this pipeline); its check is the comparison of the extrapolation with direct
whole passes (``--check-direct``). Under the benchmark protocol (``_protocol.py``) it records the
date, machine, threads, versions and load, and writes its tables to
``benchmarks/results/gpu_subject_<device>[_fit].json`` (``--results`` chooses the folder) for
``make bench-report``; ``--out`` also writes the whole record (every piece, every rung).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import threading
import time
import warnings

import numpy as np
import psutil
import torch
from _protocol import Session
from threadpoolctl import threadpool_limits

GiB = float(1 << 30)

# NSD's counts for one subject (reference.md): the public release's 37 sessions
NSD = dict(n_train=8_859, n_test=982, n_voxels=15_724, n_sessions=37, n_runs=12, n_vols=226, tr=4.0 / 3.0,
           text_tokens=77, vision_tokens=257, clip_dim=768, gru_epochs=50, gru_batch=64, vdvae_batch=32,
           vd_batch=4, vd_passes=6, metric_sets=7, metric_batch=32, vd_size=512, gt_size=425, vdvae_decodes=2,
           ridge_batches_text=8, ridge_batches_vision=27, glm_chunk=20_000)
TINY = 0.005
FLOORS = dict(n_train=40, n_test=4, n_voxels=400, n_sessions=1, n_runs=3, text_tokens=2, vision_tokens=4, clip_dim=16,
              gru_batch=4, vdvae_batch=4, vd_batch=2, metric_batch=4, vd_size=64, gt_size=32, glm_chunk=16)
FIXED = ("n_vols", "tr", "gru_epochs", "vd_passes", "metric_sets", "vdvae_decodes", "ridge_batches_text",
         "ridge_batches_vision")


def dims(scale: float) -> dict:
    """NSD's counts times ``scale`` (rounded, with the floors of :data:`FLOORS`); counts of passes stay."""
    out = {}
    for k, v in NSD.items():
        if k in FIXED or scale >= 1.0:
            out[k] = v
        else:
            out[k] = max(FLOORS.get(k, 1), int(round(v * scale)))
    out["vd_size"] = 64 * max(1, round(out["vd_size"] / 64))  # VAE f8 x three UNet downsamplings
    return out


def _width(c: int, scale: float, floor: int = 32, mult: int = 32) -> int:
    return c if scale >= 1.0 else max(floor, mult * round(c * scale / mult))


# ------------------------------------------------------------------------------ measuring
class Meter:
    """Peak CUDA memory (``max_memory_allocated``) and peak RSS rise (a 5 ms sampling thread)."""

    def __init__(self, dev: torch.device):
        self.dev = dev

    def __enter__(self):
        gc.collect()
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)
        proc = psutil.Process()
        self.base = proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, proc.memory_info().rss)
                time.sleep(0.005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)
        self.rss_gib = (self.peak - self.base) / GiB
        self.cuda_gib = torch.cuda.max_memory_allocated(self.dev) / GiB if self.dev.type == "cuda" else None
        return False

    def models_built(self) -> None:
        """Restart the CUDA peak here: what is resident (the models) counts, transients of building them do not
        (random weights are built in float32 and cast; real weights load in their own precision)."""
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.dev)

    def compared(self) -> float:
        return self.cuda_gib if self.cuda_gib is not None else self.rss_gib


def _timed(fn, dev) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``fn()`` (CUDA synchronised before and after)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t0, time.process_time() - c0


def _typical(fn, dev, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) of ``repeats`` timings when one takes under 1 s, else the one timing."""
    first = _timed(fn, dev)
    if first[0] >= 1.0 or repeats < 2:
        return first
    times = [first] + [_timed(fn, dev) for _ in range(repeats - 1)]
    return tuple(float(np.median([t[i] for t in times])) for i in (0, 1))


def _free(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------ model configs
def vdvae_config(scale: float):
    from nsdlib.vdvae import IMAGENET64, VDVAEConfig

    if scale >= 1.0:
        return IMAGENET64
    return VDVAEConfig.from_dict({**IMAGENET64.to_dict(), "width": _width(512, scale, floor=16, mult=8),
                                  "zdim": max(1, round(16 * scale))})


def vd_components(scale: float, d: int, size: int, dev) -> dict:
    """Versatile Diffusion's image UNet, text UNet and KL-f8 VAE (random weights), built on ``dev``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.pipelines.deprecated.versatile_diffusion.modeling_text_unet import UNetFlatConditionModel

    ch = tuple(_width(c, scale) for c in (320, 640, 1280, 1280))
    common = dict(sample_size=size // 8, in_channels=4, out_channels=4, block_out_channels=ch, layers_per_block=2,
                  cross_attention_dim=d, attention_head_dim=8, norm_num_groups=32, flip_sin_to_cos=True, freq_shift=0)
    vae_ch = tuple(_width(c, scale) for c in (128, 256, 512, 512))
    with torch.device(dev), torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(0)
        vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=vae_ch, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, norm_num_groups=32, sample_size=size, scaling_factor=0.18215)
        image_unet = UNet2DConditionModel(down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                          up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, **common)
        text_unet = UNetFlatConditionModel(down_block_types=("CrossAttnDownBlockFlat",) * 3 + ("DownBlockFlat",),
                                           up_block_types=("UpBlockFlat",) + ("CrossAttnUpBlockFlat",) * 3, **common)
    # scheduler_config None: DualGuidedDiffusion takes Versatile Diffusion's DDIM settings
    return dict(vae=vae, image_unet=image_unet, text_unet=text_unet, scheduler_config=None)


def clip_model(scale: float, dev):
    """CLIP ViT-L/14 (``openai/clip-vit-large-patch14``'s sizes) with random weights."""
    from transformers import CLIPConfig, CLIPModel

    def w(c, heads):
        return c if scale >= 1.0 else max(heads * 8, heads * 8 * round(c * scale / (heads * 8)))

    text_h, vis_h = (12, 16) if scale >= 1.0 else (2, 2)
    layers_t, layers_v = (12, 24) if scale >= 1.0 else (max(1, round(12 * scale)), max(1, round(24 * scale)))
    image, patch = (224, 14) if scale >= 1.0 else (14 * max(2, round(16 * scale)), 14)
    proj = w(768, 1)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=49_408, hidden_size=w(768, text_h), intermediate_size=4 * w(768, text_h),
                         num_hidden_layers=layers_t, num_attention_heads=text_h, max_position_embeddings=77,
                         projection_dim=proj, hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=w(1024, vis_h), intermediate_size=4 * w(1024, vis_h),
                           num_hidden_layers=layers_v, num_attention_heads=vis_h, image_size=image, patch_size=patch,
                           projection_dim=proj, hidden_act="quick_gelu"),
        projection_dim=proj)
    with torch.device(dev):
        torch.manual_seed(0)
        return CLIPModel(cfg).eval()


# ------------------------------------------------------------------------------ stages
class Stage:
    """One stage: ``prepare(setting)`` builds what a piece needs, ``piece(k)`` runs ``k`` units."""

    name = ""
    unit = ""
    host_only = False

    def __init__(self, D: dict, scale: float, dev, data: dict):
        self.D, self.scale, self.dev, self.data = D, scale, dev, data

    def ladder(self) -> list[dict]:
        return [{}]

    def whole(self) -> int:  # units in one pass
        raise NotImplementedError

    def passes(self) -> int:  # passes in one subject
        return 1

    def count_text(self) -> str:
        raise NotImplementedError

    def k1(self) -> int:
        return 1

    def prepare(self, setting: dict) -> None:
        pass

    def piece(self, k: int) -> None:
        raise NotImplementedError

    def release(self) -> None:
        pass


class GLMStage(Stage):
    name, unit, host_only = "glm", "voxels", True

    def __init__(self, D, scale, dev, data):
        super().__init__(D, scale, dev, data)
        self.n_per_run = [63 if r % 2 == 0 else 62 for r in range(D["n_runs"])]  # NSD: 62-63 trials per run
        self.n_trials = sum(self.n_per_run)

    def whole(self):
        return self.D["n_voxels"]

    def passes(self):
        return self.D["n_sessions"]

    def count_text(self):
        D = self.D
        return (f"{D['n_sessions']} sessions x {D['n_voxels']:,} voxels; a session = {D['n_runs']} runs x "
                f"{D['n_vols']} volumes, {self.n_trials} trials (CPU, numpy)")

    def k1(self):  # a quarter and a half of the voxels: the session's fixed costs are large
        return math.ceil(self.whole() / 4)

    def ladder(self):
        c = self.D["glm_chunk"]
        return [{"chunk_size": x} for x in (c, max(1, c // 4), max(1, c // 10), max(1, c // 20))]

    def prepare(self, setting):
        from nsdlib.glm import TrialDesign, hrf_library, trial_regressors

        D = self.D
        rng = np.random.default_rng(0)
        lib = hrf_library(D["tr"], 3.0)
        n_cond = max(2, self.n_trials // 3)
        conds = rng.permutation(np.resize(np.arange(n_cond), self.n_trials))
        V = self.whole()
        self.runs, self.designs, k = [], [], 0
        for n in self.n_per_run:
            on = 4.0 * np.arange(n) + 4.0
            self.designs.append(TrialDesign(on, conds[k:k + n]))
            k += n
            x = trial_regressors(D["n_vols"], D["tr"], on, lib[:, 10]).astype(np.float32)
            y = x @ (2.0 + rng.standard_normal((n, V), dtype=np.float32))
            y += rng.standard_normal((D["n_vols"], V), dtype=np.float32) * 3
            self.runs.append(1000.0 + 10.0 * y)
        self.setting = setting

    def piece(self, k):
        from nsdlib.glm import GLMSingle

        GLMSingle(tr=self.D["tr"], stim_dur=3.0, chunk_size=self.setting.get("chunk_size", self.D["glm_chunk"]),
                  keep_betas=("D",), verbose=False).fit([r[:, :k] for r in self.runs], self.designs)

    def release(self):
        self.runs = self.designs = None


class RidgeStage(Stage):
    unit = "target batches"

    def __init__(self, D, scale, dev, data, which):
        super().__init__(D, scale, dev, data)
        self.which = which
        self.name = f"ridge_{which}"
        self.tokens = D["text_tokens"] if which == "text" else D["vision_tokens"]
        self.T = self.tokens * D["clip_dim"]
        self.n_batches = D[f"ridge_batches_{which}"]
        self.batch = math.ceil(self.T / self.n_batches)

    def whole(self):
        return math.ceil(self.T / self.batch)

    def count_text(self):
        D = self.D
        return (f"1 fit: {D['n_train']:,} x {D['n_voxels']:,} betas -> {self.tokens} x {D['clip_dim']} = "
                f"{self.T:,} targets, {D['n_test']:,} test rows predicted, {self.whole()} batches of "
                f"{self.batch:,} target columns")

    def ladder(self):
        out = [{"batch_targets": x} for x in sorted({self.batch, max(1, self.batch // 2), max(1, self.batch // 4)},
                                                    reverse=True)]
        if self.dev.type == "cuda":
            out.append({"batch_targets": max(1, self.batch // 4), "device": "cpu (offload)", "last_resort": True})
        return out

    def prepare(self, setting):
        self.setting = setting
        b = setting.get("batch_targets", self.batch)
        rng = np.random.default_rng(1)
        # enough target columns for the largest piece (2 batches of the default size)
        self.Y = rng.standard_normal((self.D["n_train"], min(self.T, 2 * self.batch)), dtype=np.float32)
        self.b = b

    def piece(self, k):
        from nsdlib.ridge import ridge_predict

        cols = min(self.Y.shape[1], k * self.batch)
        dev = "cpu" if "device" in self.setting else str(self.dev)
        ridge_predict(self.data["X"], self.Y[:, :cols], self.data["X_test"], 50_000.0, device=dev,
                      batch_targets=self.b, verbose=False)

    def release(self):
        self.Y = None


class GRUStage(Stage):
    name, unit = "gru_epoch", "rows"

    def whole(self):
        return self.D["n_train"]

    def passes(self):
        return self.D["gru_epochs"]

    def count_text(self):
        D = self.D
        return (f"{D['gru_epochs']} epochs at most (early stopping), each on {D['n_train']:,} rows (10 % for "
                f"validation), batch {D['gru_batch']}, 15-layer latents ({self.data['Y15'].shape[1]:,})")

    def k1(self):  # a quarter and a half of the rows
        return math.ceil(self.whole() / 4)

    def ladder(self):
        return [{"amp": False}, {"amp": True}] if self.dev.type == "cuda" else [{"amp": False}]

    def prepare(self, setting):
        self.setting = setting

    def piece(self, k):
        from nsdlib.regressors import NeuralRegressor

        NeuralRegressor("gru", max_epochs=1, batch_size=self.D["gru_batch"], device=str(self.dev),
                        amp=self.setting.get("amp", False), progress=False).fit(self.data["X"][:k],
                                                                                 self.data["Y15"][:k])


class VDVAEStage(Stage):
    unit = "batches"

    def __init__(self, D, scale, dev, data, what):
        super().__init__(D, scale, dev, data)
        self.what = what
        self.name = f"vdvae_{what}"

    def whole(self):
        n = self.D["n_train"] + self.D["n_test"] if self.what == "encode" else self.D["n_test"]
        return math.ceil(n / self.D["vdvae_batch"])

    def passes(self):
        return 1 if self.what == "encode" else self.D["vdvae_decodes"]

    def count_text(self):
        D = self.D
        if self.what == "encode":
            return (f"{D['n_train'] + D['n_test']:,} stimuli at 64 px, posterior latents of 31 blocks, "
                    f"{self.whole()} batches of {D['vdvae_batch']}")
        return (f"{D['vdvae_decodes']} x {D['n_test']:,} first guesses (15 and 31 layers), {self.whole()} batches "
                f"of {D['vdvae_batch']}")

    def ladder(self):
        b = self.D["vdvae_batch"]
        return [{"batch_size": x} for x in sorted({b, max(1, b // 2), max(1, b // 4), max(1, b // 8)}, reverse=True)]

    def prepare(self, setting):
        from nsdlib.vdvae import VDVAE, n_latents

        self.setting = setting
        with torch.device(self.dev):
            torch.manual_seed(0)
            self.model = VDVAE(self.data["vdvae_config"]).eval()
        self.bs = setting.get("batch_size", self.D["vdvae_batch"])
        n = 2 * self.D["vdvae_batch"]
        rng = np.random.default_rng(2)
        self.images = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        self.latents = rng.standard_normal((n, n_latents(self.model.config, 31)), dtype=np.float32) * 0.1

    def piece(self, k):
        from nsdlib.vdvae import decode_latents, encode_latents

        n = k * self.D["vdvae_batch"]
        if self.what == "encode":
            encode_latents(self.model, self._rows(self.images, n), 31, batch_size=self.bs, progress=False)
        else:
            decode_latents(self.model, self._rows(self.latents, n), 31, batch_size=self.bs, progress=False)

    @staticmethod
    def _rows(a, n):
        return a[np.arange(n) % len(a)]

    def release(self):
        self.model = None


class VDStage(Stage):
    name, unit = "vd_img2img", "batches"
    short_fit = {"steps": 4}

    def whole(self):
        return math.ceil(self.D["n_test"] / self.D["vd_batch"])

    def passes(self):
        return self.D["vd_passes"]

    def count_text(self):
        D = self.D
        return (f"{D['vd_passes']} x {D['n_test']:,} images (first guess + noise 8, 16, 32, 64, 256) at "
                f"{D['vd_size']} px, 37 of 50 DDIM steps, guidance 7.5 (batch x 2), {self.whole()} batches of "
                f"{D['vd_batch']} per pass")

    def ladder(self):
        b = self.D["vd_batch"]
        out = [{"batch_size": x} for x in sorted({b, max(1, b // 2), 1}, reverse=True)]
        out.append({"batch_size": 1, "attention_slicing": True})
        if self.dev.type == "cuda":
            out.insert(1, {"batch_size": b, "fp16": False})  # what fp16 saves, against float32
            out.append({"batch_size": 1, "attention_slicing": True, "cpu_offload": True, "last_resort": True})
        return out

    def prepare(self, setting):
        from nsdlib.diffusion import DualGuidedDiffusion

        self.setting = setting
        D = self.D
        fp16 = setting.get("fp16", self.dev.type == "cuda")
        comps = vd_components(self.scale, D["clip_dim"], D["vd_size"], self.dev)
        self.model = DualGuidedDiffusion(**comps, device=self.dev,
                                         unet_dtype=torch.float16 if fp16 else torch.float32)
        del comps
        _free(self.dev)
        if setting.get("attention_slicing"):
            self.model.unet.set_attention_slice("auto")
            self.model.vae.enable_slicing()
        if setting.get("cpu_offload"):
            from accelerate import cpu_offload

            self.model.unet.to("cpu")
            _free(self.dev)
            cpu_offload(self.model.unet, execution_device=self.dev)
        self.bs = setting.get("batch_size", D["vd_batch"])
        n = 2 * D["vd_batch"]
        rng = np.random.default_rng(3)
        d = D["clip_dim"]
        self.first = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        self.text = rng.standard_normal((n, 77, d), dtype=np.float32)
        self.vision = rng.standard_normal((n, 257, d), dtype=np.float32)
        self.u_text, self.u_vision = self.text[0], self.vision[0]
        # the default's pieces run the 37 steps; in --fit, every rung (the default again included) is
        # compared on 4 steps, so that slow rungs (float32, offload) stay short
        self.steps = setting.get("steps", 37)

    def piece(self, k):
        n = k * self.D["vd_batch"]
        idx = np.arange(n) % len(self.first)
        self.model.reconstruct(self.first[idx], self.text[idx], self.vision[idx], self.u_text, self.u_vision,
                               strength=self.steps / 50, num_steps=50, guidance_scale=7.5, text_weight=0.4,
                               batch_size=self.bs, progress=False)

    def release(self):
        self.model = None


class MetricsStage(Stage):
    name, unit = "metrics", "batches"

    def whole(self):
        return math.ceil(self.D["n_test"] / self.D["metric_batch"])

    def passes(self):
        return self.D["metric_sets"]

    def count_text(self):
        D = self.D
        return (f"{D['metric_sets']} sets x {D['n_test']:,} images: ground truth {D['gt_size']} px against "
                f"reconstructions {D['vd_size']} px, 8 metrics (features of the ground truth counted in every set), "
                f"{self.whole()} batches of {D['metric_batch']}")

    def ladder(self):
        b = self.D["metric_batch"]
        return [{"batch_size": x} for x in sorted({b, max(1, b // 2), max(1, b // 4), max(1, b // 8)}, reverse=True)]

    def prepare(self, setting):
        from nsdlib.features import alexnet_network, clip_network, efficientnet_network, inception_network, swav_network

        self.setting = setting
        dev = self.dev
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.networks = [alexnet_network(pretrained=False, device=dev),
                             inception_network(pretrained=False, device=dev),
                             efficientnet_network(pretrained=False, device=dev), swav_network(False, device=dev),
                             clip_network(clip_model(self.scale, dev), description="CLIP ViT-L/14 sizes, random",
                                          trained=False, device=dev)]
        n = 2 * self.D["metric_batch"]
        rng = np.random.default_rng(4)
        g, r = self.D["gt_size"], self.D["vd_size"]
        self.gt = rng.integers(0, 256, (n, g, g, 3), dtype=np.uint8)
        self.rec = rng.integers(0, 256, (n, r, r, 3), dtype=np.uint8)
        self.bs = setting.get("batch_size", self.D["metric_batch"])

    def piece(self, k):
        from nsdlib.metrics import ImageEvaluator

        n = max(2, k * self.D["metric_batch"])  # identification needs two images
        idx = np.arange(n) % len(self.gt)
        ev = ImageEvaluator(self.gt[idx], networks=self.networks, batch_size=self.bs, device=self.dev,
                            progress=False, ssim_mode="2d")
        ev.evaluate(self.rec[idx])

    def release(self):
        self.networks = None


STAGES = ("glm", "ridge_text", "ridge_vision", "gru_epoch", "vdvae_encode", "vdvae_decode", "vd_img2img", "metrics")


def build_stages(D, scale, dev, data, names):
    make = {"glm": lambda: GLMStage(D, scale, dev, data),
            "ridge_text": lambda: RidgeStage(D, scale, dev, data, "text"),
            "ridge_vision": lambda: RidgeStage(D, scale, dev, data, "vision"),
            "gru_epoch": lambda: GRUStage(D, scale, dev, data),
            "vdvae_encode": lambda: VDVAEStage(D, scale, dev, data, "encode"),
            "vdvae_decode": lambda: VDVAEStage(D, scale, dev, data, "decode"),
            "vd_img2img": lambda: VDStage(D, scale, dev, data),
            "metrics": lambda: MetricsStage(D, scale, dev, data)}
    return [make[n]() for n in names]


# ------------------------------------------------------------------------------ running
def _linear(k1, t1, k2, t2, K):
    """Seconds at ``K`` units from two pieces: ``a + b K`` through both.

    If the larger piece was not slower (the work's own cost is below the timing noise), the
    cost is taken as fixed (``a = max(t1, t2)``, ``b = 0``); if the line would start below zero,
    it is drawn through zero and the larger piece (``a = 0``, ``b = t2 / k2``).
    """
    b = (t2 - t1) / (k2 - k1)
    a = t1 - b * k1
    if b <= 0:
        a, b = max(t1, t2), 0.0
    elif a < 0:
        a, b = 0.0, t2 / k2
    return a + b * K, a, b


MIN_PIECE_S = 0.25


def measure_setting(stage: Stage, setting: dict, *, pieces: tuple, repeats: int, warm: int,
                    grow_to: int | None = None) -> dict:
    """Prepare ``setting``, warm up on ``warm`` units, time each piece (see :func:`_typical`), meter it all.

    With ``grow_to`` (the whole count), the pieces are ``(k, 2 k)`` where ``k`` starts at
    ``pieces[0]`` and doubles while a piece of ``k`` takes under 0.25 s and ``4 k <= grow_to``
    (pieces too short to time well). ``pieces`` comes back as ``[k, wall s, CPU s]`` rows.
    """
    out = {"setting": setting}
    try:
        with Meter(stage.dev) as m:
            t0 = time.perf_counter()
            stage.prepare(setting)
            out["prepare_s"] = time.perf_counter() - t0
            m.models_built()
            stage.piece(warm)  # warm-up: first calls allocate, select kernels, fill caches
            if grow_to is not None:
                k = pieces[0]
                first = _typical(lambda: stage.piece(k), stage.dev, repeats)
                while first[0] < MIN_PIECE_S and 4 * k <= grow_to:
                    k *= 2
                    first = _typical(lambda k=k: stage.piece(k), stage.dev, repeats)
                out["pieces"] = [[k, *first], [2 * k, *_typical(lambda: stage.piece(2 * k), stage.dev, repeats)]]
            else:
                out["pieces"] = [[k, *_typical(lambda k=k: stage.piece(k), stage.dev, repeats)] for k in pieces]
        out["peak_cuda_gib"] = m.cuda_gib
        out["peak_rss_rise_gib"] = m.rss_gib
        out["compared_gib"] = m.rss_gib if stage.host_only else m.compared()
    except Exception as exc:  # a setting that fails (e.g. out of memory) is reported, not fatal
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    finally:
        stage.release()
        _free(stage.dev)
    return out


def run_stage(stage: Stage, *, direct: bool, budgets: list[float], repeats: int) -> dict:
    K = stage.whole()
    k1 = min(stage.k1(), K)
    res = {"stage": stage.name, "unit": stage.unit, "units_per_pass": K, "passes": stage.passes(),
           "count": stage.count_text(), "host_only": stage.host_only}
    if direct:
        base = measure_setting(stage, stage.ladder()[0], pieces=(K,), repeats=repeats, warm=k1)
    else:
        base = measure_setting(stage, stage.ladder()[0], pieces=(k1,), repeats=repeats, warm=k1, grow_to=K)
    res["default"] = base
    if "error" in base:
        return res
    res["pieces"] = base["pieces"]
    if direct:
        _, per_pass, per_pass_cpu = base["pieces"][0]
        res["method"] = "direct: the whole pass timed"
    else:
        (ka, ta, ca), (kb, tb, cb) = base["pieces"]
        per_pass, a, b = _linear(ka, ta, kb, tb, K)
        per_pass_cpu, _, _ = _linear(ka, ca, kb, cb, K)
        res["fit"] = {"fixed_s": a, "per_unit_s": b}
        res["method"] = f"pieces of {ka} and {kb} {stage.unit}, a + b k at k = {K}"
    res["pass_s"] = per_pass
    res["pass_cpu_s"] = per_pass_cpu
    res["subject_s"] = per_pass * stage.passes()
    res["peak_cuda_gib"] = base["peak_cuda_gib"]
    res["peak_rss_rise_gib"] = base["peak_rss_rise_gib"]
    if budgets and stage.host_only and stage.dev.type == "cuda":
        res["fit_settings"] = {"note": "runs on the host CPU: a GPU memory budget does not apply"}
    elif budgets:
        res["fit_settings"] = fit_ladder(stage, base, budgets, repeats)
    return res


def fit_ladder(stage: Stage, base: dict, budgets: list[float], repeats: int) -> dict:
    """Walk the ladder until a setting fits the smallest budget; the first fitting setting per budget.

    Every rung is timed on the same work (the first piece), so its time against the default's
    is what the setting costs.
    """
    k1 = base["pieces"][0][0]  # the default's first piece: every rung does the same work
    low = min(budgets)
    ladder = stage.ladder()
    short = getattr(stage, "short_fit", {})
    tried = [base if not short else measure_setting(stage, {**ladder[0], **short}, pieces=(k1,), repeats=repeats,
                                                    warm=k1)]
    for setting in ladder[1:]:
        fits = any("error" not in m and m["compared_gib"] <= low for m in tried)
        if setting.get("last_resort") and fits:
            continue  # offloading is tried only when nothing on the device fits
        tried.append(measure_setting(stage, {**setting, **short}, pieces=(k1,), repeats=repeats, warm=k1))
    ref = _seconds_per_unit(tried[0]) if "error" not in tried[0] else float("nan")
    rows = []
    for m in tried:
        row = {"setting": {k: v for k, v in m["setting"].items() if k not in short and k != "last_resort"}}
        if "error" in m:
            row["error"] = m["error"]
        else:
            row.update(peak_gib=m["compared_gib"], time_vs_default=_seconds_per_unit(m) / ref)
        rows.append(row)
    chosen = {}
    for g in budgets:
        pick = next((r for r in rows if "error" not in r and r["peak_gib"] <= g), None)
        if pick is None:  # nothing fits: the last working rung, the most frugal by the ladder's order
            last = next((r for r in reversed(rows) if "error" not in r), None)
            pick = {**(last or {"setting": None}), "fits": False}
        else:
            pick = {**pick, "fits": True}
        chosen[str(g)] = pick
    memory = "host RSS rise" if stage.host_only or stage.dev.type == "cpu" else "CUDA max_memory_allocated"
    return {"tried": rows, "chosen": chosen, "memory": memory}


def _seconds_per_unit(m: dict) -> float:
    """Seconds per unit of a setting's first piece (the same work whatever the setting's batch size)."""
    k, t, _ = m["pieces"][0]
    return t / k


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cuda or cpu")
    ap.add_argument("--scale", default="auto",
                    help="full, tiny (0.005) or a fraction of NSD's size; auto: full on CUDA, tiny on the CPU")
    ap.add_argument("--fit", type=float, nargs="*", default=[], metavar="GiB",
                    help="memory budgets: find the settings under which each stage stays (e.g. --fit 24 12)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--stages", nargs="*", default=list(STAGES), choices=STAGES)
    ap.add_argument("--direct", action="store_true", help="time each stage's whole pass (small scales only)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timings of a piece shorter than 1 s; the median is kept")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and BLAS CPU threads (default: the libraries' own)")
    ap.add_argument("--check-direct", action=argparse.BooleanOptionalAction, default=None,
                    help="also time every stage's whole pass and compare the estimate with it (small scales only; "
                    "default: on at the tiny scale)")
    ap.add_argument("--results", default=None,
                    help="folder of the protocol's results file (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(args.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    if args.scale == "auto":  # `make bench` on a CPU machine: the tiny check, not hours of full-size work
        args.scale = "full" if dev.type == "cuda" else "tiny"
    try:
        scale = 1.0 if args.scale == "full" else TINY if args.scale == "tiny" else float(args.scale)
    except ValueError:
        scale = -1.0
    if not 0 < scale <= 1:
        raise SystemExit(f"--scale must be auto, full, tiny or a fraction in (0, 1]; found {args.scale}")
    if args.threads is None and dev.type == "cpu":  # the protocol's one thread (on a GPU: the libraries' own)
        args.threads = 1
    if args.check_direct is None:  # `make bench` on a CPU machine: the tiny run and its check
        args.check_direct = scale == TINY and not args.direct and not args.fit
    if args.threads:
        torch.set_num_threads(args.threads)
    D = dims(scale)
    t_start = time.perf_counter()
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({platform.machine()})"
    print(f"bench_gpu_subject  {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC  {platform.node()}  {card}  "
          f"torch {torch.__version__}  scale {scale:g}  device {dev}  threads {torch.get_num_threads()}  "
          f"load {os.getloadavg()[0]:.1f}" + ("  DIRECT (whole passes)" if args.direct else ""))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((D["n_train"], D["n_voxels"]), dtype=np.float32)
    from nsdlib.vdvae import n_latents

    vcfg = vdvae_config(scale)
    data = {"X": X, "X_test": X[:D["n_test"]].copy(), "vdvae_config": vcfg,
            "Y15": rng.standard_normal((D["n_train"], n_latents(vcfg, 15)), dtype=np.float32)}
    # --threads also limits numpy's BLAS pool (the GLM, the ridges): idle BLAS threads spinning on a busy
    # machine would count in the process CPU time the tiny-scale check compares
    blas = threadpool_limits(limits=args.threads, user_api="blas") if args.threads else contextlib.nullcontext()
    threads = args.threads or "the libraries' own thread counts (not set)"
    run = Session(f"gpu_subject_{dev.type}" + ("_fit" if args.fit else "") + ("_direct" if args.direct else ""),
                  "benchmarks/bench_gpu_subject.py", argv=argv, threads=threads,
                  versions=("diffusers", "transformers", "torchvision"))
    with blas:
        results = _run_stages(D, scale, dev, data, args.stages, direct=args.direct, budgets=list(args.fit),
                              repeats=args.repeats)
        direct = (_run_stages(D, scale, dev, data, args.stages, direct=True, budgets=[], repeats=args.repeats)
                  if args.check_direct else None)
    total = sum(r.get("subject_s", 0.0) for r in results)
    out = {"schema": "nsdlib.bench_gpu_subject/1", "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(),
           "device": str(dev), "card": card, "torch": torch.__version__, "scale": scale, "dims": D,
           "direct": bool(args.direct), "budgets_gib": list(args.fit), "stages": results, "subject_s": total,
           "script_wall_s": time.perf_counter() - t_start,
           "memory": ("CUDA: torch.cuda.max_memory_allocated over the stage; host: peak RSS rise (psutil, 5 ms)"
                      if dev.type == "cuda" else "peak RSS rise over the stage (psutil, sampled every 5 ms)")}
    if direct is not None:
        out["check_direct"] = direct
    print_table(out)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
    record(run, out)
    run.write(args.results)
    return out


def _run_stages(D, scale, dev, data, names, *, direct: bool, budgets: list, repeats: int) -> list:
    results = []
    for stage in build_stages(D, scale, dev, data, names):
        t0 = time.perf_counter()
        r = run_stage(stage, direct=direct, budgets=budgets, repeats=repeats)
        r["wall_s"] = time.perf_counter() - t0
        results.append(r)
        err = r["default"].get("error")
        what = f"ERROR {err}" if err else "{:10.1f} s per subject".format(r["subject_s"])
        print(f"  {stage.name:13s} {what}  ({r['wall_s']:.1f} s to measure)", flush=True)
    return results


def stage_rows(out: dict) -> list:
    """The protocol table of one run: a row per stage and the whole subject (errors kept as text)."""
    rows = []
    for r in out["stages"]:
        if "error" in r["default"]:
            rows.append([r["stage"], r["count"], f"error: {r['default']['error']}", None, None, None])
            continue
        rows.append([r["stage"], r["count"], r["pass_s"], r["subject_s"], r["peak_cuda_gib"], r["peak_rss_rise_gib"]])
    rows.append(["**whole subject**", "", None, out["subject_s"], None, None])
    return rows


def direct_rows(out: dict) -> list:
    """Each stage's estimate of one whole pass against the whole pass timed (wall and process CPU seconds)."""
    by_stage = {r["stage"]: r for r in out["check_direct"] if "error" not in r["default"]}
    rows = []
    for r in out["stages"]:
        d = by_stage.get(r["stage"])
        if d is None or "error" in r["default"]:
            continue
        rows.append([r["stage"], r["pass_s"], d["pass_s"], r["pass_s"] / d["pass_s"], r["pass_cpu_s"],
                     d["pass_cpu_s"], r["pass_cpu_s"] / d["pass_cpu_s"]])
    est = sum(r["pass_s"] * r["passes"] for r in out["stages"] if r["stage"] in by_stage)
    dire = sum(by_stage[r["stage"]]["pass_s"] * r["passes"] for r in out["stages"] if r["stage"] in by_stage)
    rows.append(["**whole subject** (passes × one pass)", est, dire, est / dire, None, None, None])
    return rows


def record(run: Session, out: dict) -> None:
    """The run's tables (and headline values) in the protocol's results file."""
    where = f"{out['card']} ({out['device']}), scale {out['scale']:g}" + (", whole passes" if out["direct"] else "")
    run.values.update(card=out["card"], device=out["device"], scale=out["scale"], subject_s=out["subject_s"],
                      subject_h=out["subject_s"] / 3600, script_wall_s=out["script_wall_s"], dims=out["dims"])
    run.table("stages", f"One subject, stage by stage, on {where} (absolute estimates for planning; no peer)",
              ["stage", "count (one subject)", "one pass s", "subject s", "peak CUDA GiB", "peak RSS rise GiB"],
              stage_rows(out), ["{}", "{}", "{:.2f}", "{:.1f}", "{:.2f}", "{:.2f}"],
              note=f"The script took {out['script_wall_s']:.0f} s (wall clock) to measure all this.")
    if "check_direct" in out:
        run.table("direct", f"The estimate against direct whole passes, same process ({where})",
                  ["stage", "estimate s", "whole pass s", "estimate / whole", "estimate CPU s", "whole pass CPU s",
                   "estimate / whole, CPU"], direct_rows(out),
                  ["{}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}", "{:.2f}"])
    fits = [(r["stage"], g, c) for r in out["stages"] for g, c in r.get("fit_settings", {}).get("chosen", {}).items()]
    if fits:
        run.table("fit", f"The first setting under each memory budget ({where})",
                  ["stage", "budget GiB", "setting", "fits", "time vs the default"],
                  [[st, float(g), json.dumps(c["setting"]), "yes" if c["fits"] else "no (the most frugal rung)",
                    c.get("time_vs_default")] for st, g, c in fits], ["{}", "{:g}", "{}", "{}", "{:.2f}×"])


def print_table(out: dict) -> None:
    print(f"\nOne subject at scale {out['scale']:g} on {out['card']} ({out['device']})"
          + (" - direct whole passes" if out["direct"] else ""))
    print("| stage | count (one subject) | one pass s | subject s | peak CUDA GiB | peak RSS rise GiB |")
    print("|---|---|---|---|---|---|")
    for r in out["stages"]:
        if "error" in r["default"]:
            print(f"| {r['stage']} | {r['count']} | error: {r['default']['error']} | | | |")
            continue
        cuda = "-" if r["peak_cuda_gib"] is None else f"{r['peak_cuda_gib']:.2f}"
        print(f"| {r['stage']} | {r['count']} | {r['pass_s']:.2f} | {r['subject_s']:.1f} | {cuda} | "
              f"{r['peak_rss_rise_gib']:.2f} |")
    print(f"| **whole subject** | | | **{out['subject_s']:.0f} s = {out['subject_s'] / 3600:.2f} h** | | |")
    for r in out["stages"]:
        fs = r.get("fit_settings")
        if not fs:
            continue
        if "note" in fs:
            print(f"fit {r['stage']}: {fs['note']}")
            continue
        tried = "; ".join(f"{x['setting']}: " + (x["error"] if "error" in x else
                                                  f"{x['peak_gib']:.2f} GiB, time x{x['time_vs_default']:.2f}")
                          for x in fs["tried"])
        chosen = ", ".join(f"{g} GiB -> {c['setting']}" + ("" if c["fits"] else " (nothing fits)")
                           for g, c in fs["chosen"].items())
        print(f"fit {r['stage']} ({fs['memory']}): {chosen}  [tried {tried}]")
    print(f"script wall time {out['script_wall_s']:.0f} s")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
