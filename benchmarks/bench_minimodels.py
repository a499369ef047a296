"""The mini model zoo: training time on this machine and the held-out quality figures.

Runs `nsdlib mini train-models` (the full recipe) on a default mini-NSD and prints, from the
manifest the training run writes, the seconds each model took and the held-out figures of
issue #9, each beside its baseline measured in the same run:

- small VDVAE: reconstruction SSIM vs the SSIM of shuffled pairs (also with only the first 15
  blocks from the posterior, the rest from the prior);
- small CLIP: own caption ranked first among 10 vs chance (0.1);
- small diffusion: 2-way identification (small-CLIP features) of samples from true embeddings vs 0.5.

With --compare it then trains the same recipe again in one process (parallel=False) into
<workdir>/sequential and prints the wall-clock ratio of the two (the peer: the sequential
training, same script, same recipe). That doubles the run time (about 35 minutes on 2 cores).

Usage: python benchmarks/bench_minimodels.py [--workdir work] [--root work/mini-nsd] [--compare]
(reuses models already trained there; delete <workdir>/models/mini to time a fresh training).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from nsdlib import mini
from nsdlib.mini.zoo import read_models_manifest, train_models


def _report(label: str, man: dict) -> None:
    ev, secs = man["evaluation"], man["seconds"]
    print(f"[{label}] parallel={man.get('parallel')} torch threads {man['torch_threads']}; training seconds "
          f"{json.dumps(secs)}")
    print(f"[{label}] VDVAE reconstruction SSIM {ev['vdvae_ssim']:.3f} vs shuffled pairs "
          f"{ev['vdvae_ssim_shuffled']:.3f}; first 15 blocks only {ev['vdvae_ssim_15']:.3f} vs "
          f"{ev['vdvae_ssim_15_shuffled']:.3f}")
    print(f"[{label}] CLIP own caption top-1 of 10 {ev['clip_top1_of_10']:.3f} vs chance {ev['clip_chance']:.3f}")
    print(f"[{label}] diffusion 2-way identification {ev['diffusion_identification']:.3f} vs chance 0.5 "
          f"({ev['diffusion_steps']} DDIM steps, guidance {ev['diffusion_guidance_scale']}, {ev['n_images']} images)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="work")
    ap.add_argument("--root", default=None, help="mini-NSD root (default <workdir>/mini-nsd)")
    ap.add_argument("--compare", action="store_true", help="also train sequentially and print the time ratio")
    args = ap.parse_args()
    root = args.root or f"{args.workdir}/mini-nsd"
    t0 = time.perf_counter()
    mini.generate(root, seed=0, size="default", progress=False)
    print(f"mini-NSD ready in {time.perf_counter() - t0:.0f} s")
    man = read_models_manifest(train_models(root, workdir=args.workdir, quick=False))
    _report("default", man)
    if args.compare:
        seq = read_models_manifest(train_models(root, workdir=f"{args.workdir}/sequential", quick=False,
                                                parallel=False))
        _report("sequential", seq)
        print(f"wall-clock: default {man['seconds']['wall_s']:.0f} s, sequential {seq['seconds']['wall_s']:.0f} s "
              f"(ratio {seq['seconds']['wall_s'] / man['seconds']['wall_s']:.2f}x)")
    print(f"torch threads in this process: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
