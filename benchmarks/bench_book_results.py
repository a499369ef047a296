"""What the book's own run measured: its tables for RESULTS.md, read from a book build's artifacts.

A ``make book`` (``bench_book.py --make-book DIR``) leaves its artifact store in ``DIR/work``. This
script asks nsdlib for the numbers the chapters show, on that store, with the chapters' default
parameters (mini-NSD, subject 1, mini models, GRU, 15 blocks, seed 0): every call finds its
artifact there and computes nothing (the store's log says so; the script stops if anything was
computed, since the figures would then not be the book run's). What it reads:

- chapter 04: the test latent errors in z units of ridge and GRU at 15 and 31 blocks and of the
  training mean (``stage1.fit_regressor``, ``stage1.baseline_metrics``);
- chapters 05 and 07: the scene score of every stage (``evaluation.scene_scores``);
- chapter 09: the results file (``results.json``: the eight metrics per variant and control,
  which network computed each), the controls' seconds when first computed
  (``controls.evaluate_controls``) and the paired-bootstrap comparisons of the paper's pairs
  (``tables.comparison_differences``);
- chapter 08: the noise rows of the results file, and the seconds its executed notebook printed
  for Table 6 under both noise placements.

Issue #25's bars are data here (:data:`BARS`): each row's "met" is computed from the numbers.
Written to ``benchmarks/results/book_results.json``.

Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_book_results.py --build /tmp/book`` (seconds).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from _protocol import Session

from nsdlib import RunConfig
from nsdlib.pipeline import controls, results, stage1
from nsdlib.pipeline import evaluation as ev
from nsdlib.report import tables
from nsdlib.store import Store

METRICS = ("ssim", "pixcorr", "alexnet2", "alexnet5", "inceptionv3", "clip", "efficientnet", "swav")
METRIC_NAMES = ("SSIM", "PixCorr", "AlexNet(2)", "AlexNet(5)", "Inception", "CLIP", "EffNet", "SwAV")
ATTRIBUTES = ("colour", "shape", "position")
NOISE_TOP = "256"  # the largest amplitude of Table 6
PLACEMENTS = re.compile(r"both placements scored in (\d+) s")

#: Issue #25's bars: (label, what is measured, comparison, threshold). The measured values are
#: looked up in :func:`bar_values`' dictionary by the names in the second field.
BARS = (
    ("GRU-31 test latent MSE (z units) / training mean's", ("latent ratio, gru 31",), "<=", 0.7),
    ("VDVAE ceiling, 31 blocks: main object's colour / position",
     ("VDVAE ceiling, 31 blocks: colour", "VDVAE ceiling, 31 blocks: position"), ">=", 3.0),
    ("GRU-31 first guesses: colour / position",
     ("first guess, gru 31: colour", "first guess, gru 31: position"), ">=", 2.0),
    ("stage 2 from predicted embeddings (GRU-15 first guess): colour", ("stage 2, predicted CLIP: colour",), ">=", 3.0),
    ("stage 2 from predicted embeddings (GRU-15 first guess): shape", ("stage 2, predicted CLIP: shape",), ">=", 2.0),
    ("stage 2 from predicted embeddings: CLIP 2-way (small CLIP)", ("clip, gru 15",), ">=", 0.85),
    ("stage 2 from true embeddings: shape", ("stage 2, true CLIP (ceiling): shape",), ">=", 3.0),
    (f"SSIM at noise amplitude {NOISE_TOP}: change from no noise (GRU-15)", ("ssim change at 256",), "<=", -0.20),
    ("metric columns computed on the default run (of eight)", ("columns computed",), ">=", 8),
)


def config(build: Path) -> RunConfig:
    """The chapters' default run on the build's artifact store."""
    return RunConfig(dataset="mini", subject=1, models="mini", n_layers=15, regressor="gru", seed=0,
                     workdir=str(Path(build) / "work"))


def latent_rows(cfg: RunConfig) -> list:
    """``[[variant, test MSE (z), training mean's, ratio], ...]`` for ridge and GRU at 15 and 31 blocks."""
    rows = []
    for n in (15, 31):
        base = stage1.baseline_metrics(cfg, n)["test_mse_z"]
        for r in ("ridge", "gru"):
            mse = stage1.fit_regressor(cfg, r, n)["metrics"]["test_mse_z"]
            rows.append([f"{r} {n}", mse, base, mse / base])
    return rows


def scene_rows(cfg: RunConfig) -> list:
    """``[[stage, {attribute: (accuracy, chance, ratio)}], ...]`` of chapters 05 and 07, stimulus once."""
    out = {}
    for part in ("stage 1", "stage 2"):
        for rec in ev.scene_scores(cfg, part).to_dict("records"):
            out.setdefault(rec["stage"], {})[rec["attribute"]] = (rec["accuracy"], rec["chance"], rec["ratio"])
    return list(out.items())


def result_rows(doc_rows: list) -> dict:
    """``{(regressor, n_layers, noise): row}`` of a results file's rows."""
    return {(r["regressor"], int(r["n_layers"]), str(r["noise"])): r for r in doc_rows}


def bar_values(latent: list, scenes: list, rows: dict) -> dict:
    """The measured value of every name :data:`BARS` uses."""
    vals = {f"latent ratio, {v}": ratio for v, _, _, ratio in latent}
    vals.update({f"{stage}: {a}": attrs[a][2] for stage, attrs in scenes for a in attrs})
    own = rows[("gru", 15, "none")]
    vals["clip, gru 15"] = own["clip"]
    vals["ssim, gru 15"], vals[f"ssim at {NOISE_TOP}"] = own["ssim"], rows[("gru", 15, NOISE_TOP)]["ssim"]
    vals["ssim change at 256"] = vals[f"ssim at {NOISE_TOP}"] / own["ssim"] - 1
    vals["columns computed"] = sum(own.get(m) is not None for m in METRICS)
    return vals


def bar_met(values, op: str, threshold: float) -> bool:
    """Whether every value meets the bar (``op`` is "<=" or ">=")."""
    if op not in ("<=", ">="):
        raise ValueError(f"a bar compares with '<=' or '>='; found {op!r}")
    return all(v <= threshold if op == "<=" else v >= threshold for v in values)


def _measured(names, vals: dict, latent: list, scenes: dict) -> str:
    if names[0].startswith("latent ratio"):
        row = next(r for r in latent if r[0] == "gru 31")
        others = "; ".join(f"{r[0].replace(' ', '-')} {r[3]:.2f}" for r in latent if r[0] in ("ridge 31", "gru 15"))
        return f"{row[1]:.3f} / {row[2]:.3f} = **{row[3]:.2f}** ({others})"
    if names[0] == "clip, gru 15":
        return f"**{vals[names[0]]:.3f}**"
    if names[0] == "ssim change at 256":
        return f"{vals[f'ssim at {NOISE_TOP}']:.3f} vs {vals['ssim, gru 15']:.3f} ({vals[names[0]]:+.1%})"
    if names[0] == "columns computed":
        return f"{vals[names[0]]} (each names its network in results.json's sources)"
    cells = []
    for name in names:
        stage, attr = name.rsplit(": ", 1)
        acc, _, ratio = scenes[stage][attr]
        cells.append(f"{acc:.2f} (**{ratio:.1f}×**)")
    return " / ".join(cells)


def _bar_text(op: str, threshold: float, names) -> str:
    if names[0].startswith(("VDVAE", "first guess", "stage 2")):
        return f"{op.replace('>=', '≥').replace('<=', '≤')} {threshold:g}× chance" + (" each" if len(names) > 1 else "")
    if names[0] == "ssim change at 256":
        return f"≤ {threshold:+.0%}"
    return f"{op.replace('>=', '≥').replace('<=', '≤')} {threshold:g}"


def bars_table(latent: list, scenes: list, rows: dict) -> tuple[list, dict]:
    """Issue #25's bars: ``[[bar, measured, bar, met], ...]`` and the values they were computed from."""
    vals = bar_values(latent, scenes, rows)
    sc = dict(scenes)
    out = []
    for label, names, op, threshold in BARS:
        met = bar_met([vals[n] for n in names], op, threshold)
        out.append([label, _measured(names, vals, latent, sc), _bar_text(op, threshold, names),
                    "yes" if met else "**no**"])
    return out, vals


def placements_seconds(notebook: Path) -> float | None:
    """The seconds chapter 08 printed for Table 6 under both placements, from its executed notebook."""
    if not notebook.exists():
        return None
    nb = json.loads(notebook.read_text())
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            m = PLACEMENTS.search("".join(out.get("text", "")))
            if m:
                return float(m.group(1))
    return None


def comparison_rows(cfg: RunConfig, shown=("pixcorr", "alexnet2", "alexnet5", "ssim", "clip")) -> list:
    """Chapter 09's paired-bootstrap comparisons of stage 2 (the paper's pairs), for ``shown`` metrics."""
    _, reports = ev.evaluate(cfg, progress=False, write=False)
    finals = {(r, n, "final"): rep for (r, n, lab), rep in reports.items() if lab == "none"}
    diffs = tables.comparison_differences(finals, seed=cfg.seed)
    out = []
    for (comparison, pair, metric), d in diffs.iterrows():
        if metric in shown:
            out.append([comparison, pair, metric, f"{d['difference']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})",
                        d["verdict"], d["better"]])
    return out


def _store_events(cfg: RunConfig) -> list:
    return Store.for_config(cfg).events()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, required=True, help="a book build (bench_book.py --make-book DIR)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    cfg = config(a.build)
    if not Path(cfg.run_dir).is_dir():
        raise SystemExit(f"{cfg.run_dir} not found: {a.build} holds no book build's artifact store")
    before = len(_store_events(cfg))
    run = Session("book_results", "benchmarks/bench_book_results.py",
                  threads="read from the book run's artifacts (nothing timed here)")
    timing = a.build / "book_timing.json"
    run.values["build"] = json.loads(timing.read_text()) if timing.exists() else None
    doc, _ = results.read_results(cfg)
    rows = result_rows(doc["rows"])
    latent = latent_rows(cfg)
    scenes = scene_rows(cfg)
    bars, vals = bars_table(latent, scenes, rows)
    ctrl = controls.evaluate_controls(cfg, progress=False)
    comps = comparison_rows(cfg)
    computed = [e for e in _store_events(cfg)[before:] if e["event"] != "reused"]
    if computed:
        raise SystemExit(f"{len(computed)} artifact(s) were computed, not read ({computed[:3]} ...): the store at "
                         f"{cfg.run_dir} is not this code's book build; build the book again")
    run.values.update({"bars": vals, "sources": doc.get("sources")})
    run.table("bars", "Issue #25's bars, subject 1, default run (GRU, 15 blocks, seed 0), 100 test images",
              ["bar of the issue", "measured", "bar", "met"], bars)
    run.table("scene", "Scene score per stage (chapters 05 and 07): accuracy (× the permutation chance)",
              ["stage", *ATTRIBUTES],
              [[stage, *(f"{attrs[a][0]:.2f} ({attrs[a][2]:.1f}×)" for a in ATTRIBUTES)] for stage, attrs in scenes])
    run.table("latent", "Test latent MSE in z units (chapter 04) against the training mean's",
              ["variant", "test MSE (z)", "training mean's", "ratio"], latent, ["{}", "{:.3f}", "{:.3f}", "{:.2f}"])
    run.table("comparisons", "Stage 2, the paper's pairs (chapter 09): difference a − b, 95 % paired-bootstrap "
              "interval in brackets", ["comparison", "pair", "metric", "difference (interval)", "verdict", "better"],
              comps)
    t4 = [rows[("gru", 15, "none")], rows[("control: retrieval", 0, "none")],
          rows[("control: shuffled betas", 15, "none")]]
    labels = ("GRU-15 (the default)", "control: retrieval (nearest training image by predicted CLIP)",
              "control: shuffled betas")
    run.table("table4", "Chapter 09's Table 4, the default run and the controls (identification as fractions; "
              "EffNet and SwAV are distances, lower is better)", ["row", *METRIC_NAMES],
              [[lab, *(r[m] for m in METRICS)] for lab, r in zip(labels, t4)], ["{}", *["{:.3f}"] * len(METRICS)])
    secs = {k: float(v) for k, v in ctrl["seconds"].items()}
    place = placements_seconds(a.build / "runs" / "mini" / "subj01" / "08_noise_sensitivity.ipynb")
    run.values["seconds"] = {"controls": secs, "placements": place}
    run.table("seconds", "What the controls (chapter 09) and Table 6 under both noise placements (chapter 08) "
              "took when computed on that build's store (the controls: see RESULTS.md on a recomputation)",
              ["step", "seconds"],
              [*([k if k.startswith("control") else f"control: {k}", v] for k, v in secs.items()),
               ["controls in all", sum(secs.values())],
               ["chapter 08: Table 6, both placements (printed by the chapter)", place]], ["{}", "{:.1f}"])
    run.write(a.out)


if __name__ == "__main__":
    main()
