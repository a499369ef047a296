"""The mini model zoo: training time on this machine and the held-out quality figures.

Runs `nsdlib mini train-models` (the full recipe) on a default mini-NSD and prints, from the
manifest the training run writes, the seconds each model took and the three held-out figures of
issue #9, each beside its baseline measured in the same run:

- small VDVAE: reconstruction SSIM vs the SSIM of shuffled pairs;
- small CLIP: own caption ranked first among 10 vs chance (0.1);
- small diffusion: 2-way identification (small-CLIP features) of samples from true embeddings vs 0.5.

Usage: python benchmarks/bench_minimodels.py [--workdir work] [--root work/mini-nsd]
(reuses models already trained there; delete <workdir>/models/mini to time a fresh training).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="work")
    ap.add_argument("--root", default=None, help="mini-NSD root (default <workdir>/mini-nsd)")
    args = ap.parse_args()
    from nsdlib import mini
    from nsdlib.minimodels import read_models_manifest, train_models

    root = args.root or f"{args.workdir}/mini-nsd"
    t0 = time.perf_counter()
    mini.generate(root, seed=0, size="default", progress=False)
    print(f"mini-NSD ready in {time.perf_counter() - t0:.0f} s")
    out = train_models(root, workdir=args.workdir, quick=False)
    man = read_models_manifest(out)
    ev, secs = man["evaluation"], man["seconds"]
    print(f"torch threads: {torch.get_num_threads()}; training seconds: {json.dumps(secs)} "
          f"(total {sum(secs.values()):.0f} s, evaluation included in diffusion_s? no: separate)")
    print(f"VDVAE reconstruction SSIM {ev['vdvae_ssim']:.3f} vs shuffled pairs {ev['vdvae_ssim_shuffled']:.3f}")
    print(f"CLIP own caption top-1 of 10 {ev['clip_top1_of_10']:.3f} vs chance {ev['clip_chance']:.3f}")
    print(f"diffusion 2-way identification {ev['diffusion_identification']:.3f} vs chance 0.5 "
          f"({ev['diffusion_steps']} DDIM steps, guidance {ev['diffusion_guidance_scale']}, {ev['n_images']} images)")


if __name__ == "__main__":
    main()
