"""nsdlib.pipeline.ledger: the ledger of losses, each input of the decoder replaced by its truth in turn.

The true amplitudes are checked on a small mini-NSD whose betas *are* the simulation's amplitudes
(``_mini_worlds.truth_world``: a perfect GLM), and the ledger's arithmetic on reports whose
differences are known.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _mini_worlds import fake_stage2, truth_world

from nsdlib import RunConfig
from nsdlib.metrics import MetricReport
from nsdlib.names import IMAGE_METRICS
from nsdlib.pipeline import context, decode, ledger, results, stage2

torch.set_num_threads(1)  # the test machine is shared


@pytest.fixture(scope="module")
def cfg(request, tmp_path_factory):
    root = truth_world(request, tmp_path_factory)
    context.forget()
    return RunConfig(quick=True, workdir=str(tmp_path_factory.mktemp("work")), nsd_root=str(root), device="cpu")


def _report(values: dict[str, np.ndarray]) -> MetricReport:
    return MetricReport({m: np.asarray(v, float) for m, v in values.items()}, dict.fromkeys(values, "test"),
                        dict.fromkeys(values, "ok"), 32, "columns")


def test_true_betas_are_the_betas_of_a_perfect_glm(cfg):
    sd = context.get(cfg).subject()
    train, test = ledger.true_betas(cfg)
    assert train.shape == sd.train_betas.shape and test.shape == sd.test_betas.shape and train.dtype == np.float32
    # this world's betas files hold the true amplitudes (to 1/300 of a percent): the same z-scores
    np.testing.assert_allclose(train, sd.train_betas, atol=0.02)
    np.testing.assert_allclose(test, sd.test_betas, atol=0.02)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0, ddof=1), 1, atol=1e-4)
    with pytest.raises(ValueError, match="true amplitudes exist on mini-NSD only"):
        ledger.true_betas(cfg.replace(dataset="nsd"))


def test_ledger_steps_add_up_to_the_whole_loss():
    rng = np.random.default_rng(0)
    n = 50
    top = {m: rng.uniform(0.6, 0.9, n) for m in IMAGE_METRICS}
    cuts = {"generators' ceiling": 0.10, "stage-2 regression": 0.05, "stage-1 regression": 0.02, "GLM": 0.03}
    reports, cur = {"stimulus": _report(top)}, dict(top)
    labels = list(ledger.LEDGER_STEPS)
    for label, (_, cut) in zip(labels[1:], cuts.items()):
        # a loss lowers a score that is better high, and raises a distance
        cur = {m: v - cut if m not in ("efficientnet", "swav") else v + cut for m, v in cur.items()}
        reports[label] = _report(cur)
    steps = ledger.ledger_steps(reports, ledger.LEDGER_STEPS, n_resamples=200)
    for step, cut in cuts.items():
        np.testing.assert_allclose(steps.xs(step, level="step")["loss"], cut, atol=1e-12)
        np.testing.assert_allclose(steps.xs(step, level="step")["share"], cut / sum(cuts.values()), rtol=1e-9)
        assert steps.xs(step, level="step")["real"].all()
    np.testing.assert_allclose(steps.xs("GLM", level="step").loc["swav", "change"], 0.03, atol=1e-12)
    np.testing.assert_allclose(steps.groupby(level="metric")["share"].sum(), 1, rtol=1e-12)
    # rows add up: the changes of the steps sum to the last row minus the first
    total = steps.groupby(level="metric")["change"].sum()
    for m in IMAGE_METRICS:
        assert total[m] == pytest.approx(reports[labels[-1]].means[m] - reports["stimulus"].means[m], abs=1e-12)


def test_evaluate_ledger_makes_scores_and_writes_its_rows(cfg, monkeypatch):
    monkeypatch.setattr(stage2, "stage2_images", fake_stage2)  # diffusion's stand-in
    monkeypatch.setattr(decode, "stage2_from", lambda cfg, first, cond, **kw: fake_stage2(cfg, first, **kw))
    led = ledger.evaluate_ledger(cfg, n_resamples=200)
    assert list(led["reports"]) == [*ledger.LEDGER_STEPS, "the run's regressor (gru)"]
    assert set(led["steps"].index.get_level_values("step")) == {*filter(None, ledger.LEDGER_STEPS.values()),
                                                               "the run's regressor (gru)"}
    assert led["reports"]["stimulus"].means["ssim"] == pytest.approx(1.0)
    shares = led["steps"]["share"].dropna().groupby(level="metric").sum()
    np.testing.assert_allclose(shares, 1, rtol=1e-9)
    _, written = results.read_results(cfg)
    assert {f"ledger: {r}" for r in list(ledger.LEDGER_STEPS)[1:4]} <= set(written["regressor"])
    fg = ledger.first_guess_ledger(cfg, n_resamples=200)
    assert list(fg["reports"]) == list(ledger.FIRST_GUESS_STEPS)
    # a perfect GLM costs nothing here beyond rounding: the truth's and the betas' first guesses agree
    assert fg["steps"].xs("GLM", level="step")["change"].abs().max() < 0.05
