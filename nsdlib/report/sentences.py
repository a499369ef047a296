"""Prose read from the tables, so that no chapter types a number or a verdict into its text.

A chapter displays these strings as Markdown (``IPython.display.Markdown``) below the table
they read: whatever a rerun measures, the sentence says it.

- :func:`comparison_sentences`: one bullet per compared pair of
  :func:`nsdlib.report.tables.comparison_differences`: which variant is better on which
  metrics (the difference and its bootstrap interval), where no difference can be seen,
  and whether the paper's Table 4 points the same way.
- :func:`verdict_summary`: one sentence counting the real differences of each comparison.
- :func:`overlap_sentences`: how close the test images are to the training set and whether
  the per-image scores follow it (:func:`nsdlib.pipeline.controls.overlap_dependence`).
- :func:`noise_sentences`: per metric of :func:`nsdlib.report.tables.noise_directions`,
  which way it moves at each noise level, beside the paper's Table 6.
- :func:`region_sentences`: chapter 11's conclusion, read from
  :func:`nsdlib.report.tables.region_contrast`, set beside what mini-NSD's truth says the regions encode.
- :func:`ledger_sentences`: chapter 12's ledger read aloud: each step's share of the loss, and the largest.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..names import DISTANCE_METRICS, HIGHER_IS_BETTER, METRIC_LABELS, PURE_NOISE_AMPLITUDE

__all__ = ["comparison_sentences", "ledger_sentences", "noise_sentences", "overlap_sentences", "protocol_sentence",
           "region_sentences", "verdict_summary"]


def _join(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def protocol_sentence(table) -> str:
    """How the intervals of a table were computed (from its ``attrs``), one sentence."""
    a = table.attrs
    conf = round(100 * a.get("confidence", 0.95))
    return (f"Paired bootstrap over the {a.get('n_images', '?')} test images ({a.get('n_resamples', '?')} resamples, "
            f"seed {a.get('seed', '?')}; the same images drawn for both sides): {conf} % percentile intervals. "
            f"A difference is called real when its interval excludes 0.")


def _difference(row, decimals: int) -> str:
    return (f"{row['difference']:+.{decimals}f}, interval {row['low']:+.{decimals}f} to "
            f"{row['high']:+.{decimals}f}")


def _pair_sentence(pair: str, rows, labels: Mapping[str, str], decimals: int) -> str:
    a, b = rows["a"].iloc[0], rows["b"].iloc[0]
    parts = []
    for side in (a, b):
        won = rows[rows["better"] == side]
        if len(won):
            parts.append(f"{side} is better on " + _join([f"{labels.get(m, m)} ({_difference(r, decimals)})"
                                                          for m, r in won.iterrows()]))
    unseen = [labels.get(m, m) for m, r in rows.iterrows() if r["verdict"] != "real"]
    if unseen:
        parts.append(f"no difference this run can see on {_join(unseen)} (the intervals include 0)")
    text = f"- **{pair}**: " + "; ".join(parts) + "."
    if not np.isfinite(rows["paper: difference"].to_numpy(float)).any():
        return text + " The paper does not report this pair."
    judged = rows[rows["same way as the paper"] != "—"]
    if not len(judged):
        return text + " None of its real differences can be set beside a difference in the paper's Table 4."
    against = [labels.get(m, m) for m, r in judged.iterrows() if r["same way as the paper"] == "no"]
    text += (f" The paper's Table 4 (NSD, subject 1) points the same way on {len(judged) - len(against)} of the "
             f"{len(judged)} real differences it has a difference for")
    return text + (f"; the opposite way on {_join(against)}." if against else ".")


def comparison_sentences(table, labels: Mapping[str, str] = METRIC_LABELS, decimals: int = 3) -> str:
    """Markdown bullets reading :func:`~nsdlib.report.tables.comparison_differences` aloud.

    Parameters
    ----------
    table : pandas.DataFrame
        From ``comparison_differences`` (index comparison, pair, metric).
    labels : dict
        Metric key -> name printed.
    decimals : int
        Decimals of the differences.

    Returns
    -------
    str
        The protocol sentence, then one bullet per pair: the metrics on which each side is
        better (difference a − b and its interval), those with no difference the run can
        see, and how many of the real differences point the same way as the paper's.
    """
    if table.empty:
        return "No pair of the paper's comparisons was scored in this run."
    distances = [labels.get(m, m) for m in DISTANCE_METRICS if m in table.index.get_level_values("metric")]
    sign = (f" {_join(distances)} {'is a distance' if len(distances) == 1 else 'are distances'} (lower is better): "
            "there a negative difference favours the first." if distances else "")
    lines = [protocol_sentence(table) + " Differences are the first variant minus the second." + sign, ""]
    for (_, pair), rows in table.groupby(level=["comparison", "pair"], sort=False):
        lines.append(_pair_sentence(pair, rows.droplevel([0, 1]), labels, decimals))
    return "\n".join(lines)


def verdict_summary(table, source: str) -> str:
    """How many of the compared (pair, metric) differences are real, per comparison, in one sentence.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`~nsdlib.report.tables.comparison_differences`.
    source : str
        Which run produced it (dataset, subject, models).
    """
    if table.empty:
        return f"In this run ({source}) none of the paper's comparisons could be made."
    parts = [f"{comparison}: {int((rows['verdict'] == 'real').sum())} of {len(rows)}"
             for comparison, rows in table.groupby(level="comparison", sort=False)]
    return (f"In this run ({source}), the differences whose interval excludes 0, of those compared "
            f"(pairs × metrics): {_join(parts)}.")


def _moves(rows, column: str) -> str:
    """"down at 8 and 16; up at 256 (pure noise)": the levels grouped by the direction in ``column``."""
    moves: dict[str, list] = {}
    for level, value in rows[column].items():
        moves.setdefault(value, []).append(level)
    return "; ".join(f"{d} at {_join(levels)}" for d, levels in moves.items())


def _metric_sentence(rows, label: str) -> str:
    last = rows.iloc[-1]
    text = (f"- **{label}**: ours {_moves(rows, 'ours: moves')}; the paper {_moves(rows, 'paper: moves')}. "
            f"At {last['noise level'].lower()}: ours {last['ours: change %']:+.1f} % (interval "
            f"{last['low %']:+.1f} to {last['high %']:+.1f} %)")
    if not np.isfinite(last["paper: change %"]):
        return text + "; the paper does not report it."
    agree = {"yes": "the same way", "no": "the opposite way", "—": "no direction to compare"}[
        last["same way as the paper"]]
    return text + f", the paper's {last['paper: change %']:+.1f} % ({agree})."


def noise_sentences(table, labels: Mapping[str, str] = METRIC_LABELS) -> str:
    """Markdown bullets reading :func:`~nsdlib.report.tables.noise_directions` aloud.

    Parameters
    ----------
    table : pandas.DataFrame
        From ``noise_directions`` (index noise, metric).
    labels : dict
        Metric key -> name printed.

    Returns
    -------
    str
        The protocol sentence; one bullet per metric: where ours moves down, up or shows
        no change, its change at the highest level with its interval beside the paper's;
        then how many (level, metric) cells agree with the paper's direction.
    """
    if table.empty:
        return "No noise level was scored beside the noiseless one in this run."
    lines = [protocol_sentence(table).replace("A difference is called real", "A metric is said to move"), ""]
    for metric in dict.fromkeys(table.index.get_level_values("metric")):
        rows = table.xs(metric, level="metric")
        rows = rows.set_axis([f"{lab} (pure noise)" if lab == str(PURE_NOISE_AMPLITUDE) else lab for lab in rows.index])
        lines.append(_metric_sentence(rows, labels.get(metric, metric)))
    agree = table["same way as the paper"]
    lines += ["", f"Over all {len(table)} (level, metric) cells: ours moves the same way as the paper's Table 6 in "
              f"{int((agree == 'yes').sum())}, the opposite way in {int((agree == 'no').sum())}, and shows no change "
              f"in {int((table['ours: moves'] == 'no change seen').sum())}."]
    return "\n".join(lines)


def overlap_sentences(overlap: Mapping, dependence, labels: Mapping[str, str] = METRIC_LABELS, *,
                      alpha: float = 0.05, duplicate: float = 0.99) -> str:
    """How close the test images are to the training set, and whether the scores follow it, read aloud.

    Parameters
    ----------
    overlap : dict
        From :func:`nsdlib.pipeline.controls.overlap` (``cosine``, ``train_cosine``).
    dependence : pandas.DataFrame
        From :func:`nsdlib.pipeline.controls.overlap_dependence` (index metric; ``rho``, ``p``).
    alpha : float
        A correlation is called seen when its p-value is below ``alpha`` (no correction for
        the several metrics: a hint to look, not a finding).
    duplicate : float
        Cosine at or above which a neighbour counts as a near-duplicate.
    """
    test, train = np.asarray(overlap["cosine"], float), np.asarray(overlap["train_cosine"], float)
    mt, mr = round(float(np.median(test)), 3), round(float(np.median(train)), 3)  # compared as printed
    way = ("closer to the training set than" if mt > mr else "farther from the training set than" if mt < mr
           else "as close to the training set as")
    text = (f"The median test image's nearest training image has cosine {mt:.3f}; the median training image's "
            f"nearest other training image, {mr:.3f}: the test images sit {way} the training images sit to each "
            f"other. {int((test >= duplicate).sum())} of {len(test)} test images have "
            f"a training image at cosine {duplicate:g} or more.")
    better, worse, unseen = [], [], []
    for m, r in dependence.iterrows():
        if not np.isfinite(r["rho"]) or not r["p"] < alpha:
            unseen.append(labels.get(m, m))
            continue
        good = (r["rho"] > 0) == HIGHER_IS_BETTER.get(m, True)
        (better if good else worse).append(f"{labels.get(m, m)} (rho {r['rho']:+.2f}, p {r['p']:.2g})")
    parts = []
    if better:
        parts.append("the closer a test image's nearest training image, the better it scores on " + _join(better))
    if worse:
        parts.append("the closer, the worse on " + _join(worse))
    if unseen:
        parts.append(f"no dependence this run can see (p ≥ {alpha:g} or a constant score) on {_join(unseen)}")
    return text + " Per image, against that similarity (Spearman): " + "; ".join(parts) + "."


def _wins(contrast, level: str, region: str) -> list[str]:
    rows = contrast[contrast["level"] == level]
    return [METRIC_LABELS.get(m, m) for m, r in rows.iterrows() if r["better"] == region]


def _counted(items: list[str]) -> str:
    """"2 (PixCorr and SSIM)", "0 (none)"."""
    return f"{len(items)} ({_join(items) if items else 'none'})"


def _split(contrast, early: str, higher: str) -> tuple[list[str], bool]:
    """Bullets of the metrics each region wins per level, and whether the split holds."""
    n_low, n_high = (int((contrast["level"] == lv).sum()) for lv in ("low", "high"))
    low_e, low_h = _wins(contrast, "low", early), _wins(contrast, "low", higher)
    high_e, high_h = _wins(contrast, "high", early), _wins(contrast, "high", higher)
    holds = len(low_e) > n_low / 2 and len(high_h) > n_high / 2
    lines = [f"  - low-level metrics ({n_low}): {early} decodes better on {_counted(low_e)}, {higher} on "
             f"{_counted(low_h)};",
             f"  - high-level metrics ({n_high}): {higher} decodes better on {_counted(high_h)}, {early} on "
             f"{_counted(high_e)};",
             f"  - so the split {'holds' if holds else 'does not hold'}."]
    return lines, holds


def region_sentences(contrasts: Mapping, encoding, early: str, higher: str) -> str:
    """Chapter 11's conclusion: does early-voxel decoding win the low-level metrics and higher-voxel
    decoding the high-level ones, and is that what the simulation's truth says it should do?

    Parameters
    ----------
    contrasts : dict
        What was compared (``"stage 2"``, ``"first guesses"``) -> :func:`nsdlib.report.tables.region_contrast`
        of ``early`` against ``higher``.
    encoding : pandas.DataFrame
        Indexed by region, with the shares of voxels carrying ``"image features"`` and
        ``"semantic features"`` (:func:`nsdlib.pipeline.regions.region_voxels`); NaN without a truth.
    early, higher : str
        The two regions compared.

    Returns
    -------
    str
        Markdown: per contrast, the metrics each region wins per level (the interval of the difference
        excludes 0) and whether the split holds (the early region wins a majority of the low-level
        metrics and the higher one a majority of the high-level ones); then the truth's expectation and,
        per contrast, whether the table agrees with it.
    """
    lines, verdicts = [], {}
    for what, contrast in contrasts.items():
        part, verdicts[what] = _split(contrast, early, higher)
        lines += [f"- **{what}**:", *part]
    e, h = encoding.loc[early], encoding.loc[higher]
    if not np.isfinite(e["image features"]):
        return "\n".join(lines + ["- No simulation's truth to compare with on this dataset."])
    expects = e["image features"] > h["image features"] and h["semantic features"] > e["semantic features"]
    agree = [f"the {w}" for w, holds in verdicts.items() if holds == expects]
    differ = [f"the {w}" for w, holds in verdicts.items() if holds != expects]
    if not differ:
        verdict = "The table agrees with the truth in every contrast."
    elif not agree:
        verdict = f"The table disagrees with the truth in every contrast ({_join(differ)})."
    else:
        verdict = f"The table agrees with the truth for {_join(agree)} and disagrees for {_join(differ)}."
    lines.append(f"- **The simulation's truth**: {100 * e['image features']:.0f} % of the {early} voxels respond to "
                 f"local image features and {100 * e['semantic features']:.0f} % to semantic ones; of the {higher} "
                 f"voxels {100 * h['image features']:.0f} % and {100 * h['semantic features']:.0f} %. It "
                 f"{'predicts' if expects else 'does not predict'} the split. {verdict}")
    return "\n".join(lines)


def ledger_sentences(steps, chain) -> str:
    """The ledger read aloud: each step's mean share of the loss over the metrics, and the largest.

    Parameters
    ----------
    steps : pandas.DataFrame
        :func:`nsdlib.pipeline.ledger.ledger_steps` (index step, metric; ``share``, ``real``).
    chain : sequence of str
        The steps whose shares add up (the ledger's rows 1 to 4), in order.

    Returns
    -------
    str
        Markdown bullets: per step its mean share (over the metrics where the total loss is not 0), on
        how many metrics its change is real, and the metrics on which it is the largest loss; then
        the step with the largest mean share.
    """
    shares = steps["share"].unstack("step")[list(chain)]
    mean = shares.mean()
    largest_by_metric = shares.idxmax(axis=1)
    lines = []
    for step in chain:
        part = steps.xs(step, level="step")
        firsts = [METRIC_LABELS.get(m, m) for m, s in largest_by_metric.items() if s == step]
        lines.append(f"- **{step}**: {100 * mean[step]:.0f} % of the loss on average over the metrics; a change "
                     f"the interval can see on {int(part['real'].sum())} of {len(part)}; the largest step on "
                     f"{_join(firsts) if firsts else 'no metric'}.")
    lines.append(f"\nThe largest loss is **{mean.idxmax()}** ({100 * mean.max():.0f} % of the way from the "
                 "stimulus to the pipeline, averaged over the metrics).")
    return "\n".join(lines)
