"""The optimiser step of stage 1's networks: fused AdamW, a candidate, against PyTorch's default.

``nsdlib.regressors.NeuralRegressor`` trains with ``torch.optim.AdamW`` in PyTorch's default
implementation, which on the CPU is a Python loop over the parameters, one tensor at a time
(``_single_tensor_adamw``): chapter 04's profile found it taking 28 % of the GRU's training time
(benchmarks/RESULTS.md, "The rendered book"). The candidate is the same optimiser with
``fused=True``: one kernel updates every parameter. It is measured here, not adopted: see
RESULTS.md, "The optimiser step", for why.

Two shapes, the GRU network of the paper (:class:`nsdlib.regressors.GRUNet`, batch 64):

- ``mini``: mini-NSD's subject 1 (1,572 voxels) to the mini VDVAE's first 31 blocks, the
  network ``make book`` trains in chapter 04;
- ``nsd``: subject 1 of NSD (15,724 voxels) to 13,344 latents (15 blocks), 12,400,344 parameters.

For each, under the protocol (one thread, interleaved repeats): the optimiser step alone
(gradients set once, ``--steps`` steps timed) and a whole training step (forward, backward,
optimiser step), peer / ours as a ratio of process CPU seconds and of wall seconds. The two
optimisers are also run side by side from the same weights on the same batch for ``--steps``
steps, and the largest difference between the two networks' predictions is reported
(:func:`agreement`): the fused kernel is a faster route to the same update, not another
optimiser.

Writes ``benchmarks/results/optimizer.json``. Run: ``.venv/bin/python benchmarks/bench_optimizer.py``.
"""

from __future__ import annotations

import argparse

import torch
from _protocol import Session, cpu_stats, cpu_timed

from nsdlib.mini.zoo import mini_vdvae_config
from nsdlib.regressors import build_network, count_parameters
from nsdlib.vdvae import n_latents

BATCH = 64
SHAPES = {"mini": (1_572, None), "nsd": (15_724, 13_344)}  # None: the mini VDVAE's 31-block latents


def shape(name: str) -> tuple[int, int]:
    """(voxels, latents) of a named shape."""
    n_in, n_out = SHAPES[name]
    return n_in, n_out if n_out is not None else n_latents(mini_vdvae_config(), 31)


def make(n_in: int, n_out: int, fused: bool):
    """The GRU network (seed 0) and its AdamW, fused or PyTorch's default."""
    torch.manual_seed(0)
    model = build_network("gru", n_in, n_out)
    kw = {"fused": True} if fused else {}
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01, **kw)


def max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest absolute difference between two arrays of predictions."""
    return float((a - b).abs().max())


def _batch(n_in: int, n_out: int):
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, n_in, generator=g), torch.randn(BATCH, n_out, generator=g)


def _train_step(model, opt, x, y):
    loss = (model(x) - y).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def agreement(n_in: int, n_out: int, steps: int) -> tuple[float, float]:
    """Both optimisers from the same weights on the same batches (the same dropout masks), then
    the two networks' predictions for the batch (eval mode): their largest difference, and the
    predictions' standard deviation to read it against.

    Predictions, not weights: the biases just before a normalisation (the head's first layer,
    before its BatchNorm) get gradients that are zero up to rounding, which Adam scales up to
    full-size steps of either sign in any implementation; they do not change the predictions.
    """
    (ma, oa), (mb, ob) = make(n_in, n_out, False), make(n_in, n_out, True)
    x, y = _batch(n_in, n_out)
    for step in range(steps):
        for model, opt in ((ma, oa), (mb, ob)):
            torch.manual_seed(step)  # the same dropout masks for both
            _train_step(model, opt, x, y)
    with torch.no_grad():
        pa, pb = ma.eval()(x), mb.eval()(x)
    return max_difference(pa, pb), float(pa.std())


def measure(run: Session, name: str, steps: int, repeats: int) -> list:
    n_in, n_out = shape(name)
    x, y = _batch(n_in, n_out)
    rows = []
    nets = {fused: make(n_in, n_out, fused) for fused in (False, True)}
    for model, opt in nets.values():  # gradients in place, and the optimiser state created
        _train_step(model, opt, x, y)

    def opt_only(fused):
        def fn():
            for _ in range(steps):
                nets[fused][1].step()
        return fn

    def whole(fused):
        def fn():
            for _ in range(steps):
                _train_step(*nets[fused], x, y)
        return fn

    for what, fn in (("optimiser step", opt_only), ("training step", whole)):
        cpu: dict = {}
        wall, _ = run.compare(*cpu_timed([("default", fn(False))], cpu), cpu_timed([("fused", fn(True))], cpu),
                              repeats=repeats, warmup=True)
        stats = cpu_stats(cpu, "default", warmup=True)
        rows.append([name, what, stats["default"]["seconds"]["median"] / steps,
                     stats["fused"]["seconds"]["median"] / steps, stats["fused"]["ratio"], wall["fused"]["ratio"]])
    run.values[name] = {"parameters": count_parameters(nets[True][0]), "inputs": n_in, "outputs": n_out}
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="steps per timed call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    a = ap.parse_args(argv)
    run = Session("optimizer", "benchmarks/bench_optimizer.py", argv)
    rows, agree = [], []
    for name in a.shapes:
        rows += measure(run, name, a.steps, a.repeats)
        v = run.values[name]
        agree.append([name, v["parameters"], a.steps, *agreement(v["inputs"], v["outputs"], a.steps)])
    run.table("steps", f"AdamW on the GRU network, batch {BATCH}, one thread: CPU seconds per step, PyTorch's "
              "default (for-loop) AdamW as the peer, and peer / fused (process CPU time; wall time beside)",
              ["shape", "timed", "default s", "fused s", "default / fused (CPU)", "default / fused (wall)"],
              rows, ["{}", "{}", "{:.4f}", "{:.4f}", "{:.2f}×", "{:.2f}×"])
    run.table("agreement", "The two optimisers from the same weights on the same batch: the largest difference "
              "between the two networks' predictions after that many steps, beside the predictions' spread",
              ["shape", "parameters", "steps", "largest difference", "predictions' standard deviation"], agree,
              ["{}", "{:,}", "{}", "{:.1e}", "{:.2f}"])
    run.write()


if __name__ == "__main__":
    main()
