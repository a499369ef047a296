"""nsdlib.report.tables: our numbers land where the inputs put them, the paper's are the published ones."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from nsdlib import names, nsd, paper, vdvae
from nsdlib.metrics import MetricReport
from nsdlib.protocols import protocol_card
from nsdlib.report import tables as T

METRICS = names.IMAGE_METRICS


def _results(noise=("none",), regressors=(("gru", 15),), start=0.1):
    """Results rows whose metric m of row i is start + i/10 + j/100 (j: the metric's position)."""
    rows = []
    for i, ((reg, n), lab) in enumerate((rn, lab) for rn in regressors for lab in noise):
        rows.append({"regressor": reg, "n_layers": n, "noise": lab,
                     **{m: start + i / 10 + j / 100 for j, m in enumerate(METRICS)},
                     "ssim_2d": 0.5 + i / 10, "latent_mse": np.nan, "latent_mae": np.nan})
    return pd.DataFrame(rows)


def _paper_row(table, **keys):
    return next(r for r in getattr(paper, f"TABLE{table}") if all(r.get(k) == v for k, v in keys.items()))


# ------------------------------------------------------------- full pipeline
def test_noise_table_puts_ours_above_the_papers_at_each_level():
    rows = _results(noise=("none", "8", "64"))
    table = T.noise_table(rows, ours_label="ours (test)")
    assert table.index.get_level_values("noise").tolist()[:4] == ["none", "none", "8", "8"]
    assert table.index.get_level_values("source").tolist()[:2] == ["ours (test)", "paper"]
    assert table.loc[("64", "ours (test)"), "pixcorr"] == pytest.approx(0.1 + 0.2 + 0.01)
    for lab in names.NOISE_LEVELS:  # every published level is there, with its published values
        published = _paper_row(6, noise=lab)
        assert table.loc[(lab, "paper"), list(METRICS)].tolist() == \
            [published[m] for m in METRICS]
    assert table.loc[("256", "paper"), "ssim"] == 0.140
    assert list(table.columns) == ["protocol", *METRICS]
    assert set(table.xs("ours (test)", level="source")["protocol"]) == {"brain-diffuser"}  # rows before protocols
    assert set(table.xs("paper", level="source")["protocol"]) == {paper.PAPER_PROTOCOL}
    assert len(T.noise_table(rows, with_paper=False)) == 3
    rows["protocol"] = "mindeye"
    assert set(T.noise_table(rows, with_paper=False)["protocol"]) == {"mindeye"}


def test_noise_placement_table_shows_each_placement_and_the_paper():
    first = _results(noise=("none", "8", "64")).assign(placement="first-guess", noise_size=32)
    up = _results(noise=("none", "8", "64"), start=0.5).assign(placement="upscaled", noise_size=64)
    up.loc[0, list(METRICS)] = first.loc[0, list(METRICS)]  # the same noiseless images
    table = T.noise_placement_table(pd.concat([first, up], ignore_index=True), ours_label="ours (test)")
    on_fg = "ours (test); noise added on the first guess, 32 px"
    after = "ours (test); noise added after upscaling, 64 px"
    paper_label = "paper (placement not stated)"
    assert table.index.tolist()[:9] == [("none", "ours (test); no noise"), ("none", paper_label),
                                        ("8", on_fg), ("8", after), ("8", paper_label), ("16", paper_label),
                                        ("32", paper_label), ("64", on_fg), ("64", after)]
    assert table.loc[("8", after), "pixcorr"] == pytest.approx(0.5 + 0.1 + 0.01)
    assert table.loc[("64", on_fg), "pixcorr"] == pytest.approx(0.1 + 0.2 + 0.01)
    assert table.loc[("64", paper_label), "ssim"] == _paper_row(6, noise="64")["ssim"]
    assert table.loc[("64", paper_label), "protocol"] == paper.PAPER_PROTOCOL
    assert len(T.noise_placement_table(first, with_paper=False)) == 3
    with pytest.raises(ValueError, match="placement and noise_size"):
        T.noise_placement_table(_results())


def test_noise_change_is_relative_to_no_noise():
    rows = _results(noise=("none", "64"))
    rows.loc[1, "ssim"] = rows.loc[0, "ssim"] / 2  # half the noiseless SSIM: -50 %
    change = T.noise_change(rows)
    assert change.index.tolist() == ["64"]
    assert change.loc["64", ("ours", "ssim")] == pytest.approx(-50)
    t6 = {r["noise"]: r for r in paper.TABLE6}
    assert change.loc["64", ("paper", "pixcorr")] == pytest.approx((t6["64"]["pixcorr"] / t6["none"]["pixcorr"] - 1)
                                                                   * 100)
    assert list(change.columns) == [("ours", "ssim"), ("ours", "pixcorr"), ("paper", "ssim"), ("paper", "pixcorr")]
    with pytest.raises(ValueError, match="needs a 'none' row"):
        T.noise_change(rows[rows["noise"] != "none"])


def test_comparison_table_labels_models_and_keeps_the_published_numbers():
    rows = pd.concat([_results(regressors=(("ridge", 15), ("gru", 31))), _results(noise=("64",))])
    t4 = T.comparison_table(rows, table=4, ours_label="ours", extra_columns=["ssim_2d"])
    ours = t4[t4["source"] == "ours"]
    assert ours["model"].tolist() == ["Ridge", "GRU"] and ours["n_layers"].tolist() == [15, 31]  # noisy row left out
    assert ours["clip"].tolist() == pytest.approx([0.1 + 0.05, 0.2 + 0.05]) and "ssim_2d" in t4
    p4 = t4[t4["source"] == "paper"]
    assert len(p4) == len(paper.TABLE4) == 5 and p4["ssim_2d"].isna().all()
    gru31 = _paper_row(4, regressor="gru", n_layers=31)
    assert p4[(p4["model"] == gru31["label"]) & (p4["n_layers"] == 31)]["swav"].item() == gru31["swav"]
    t5 = T.comparison_table(rows, table=5, ours_label="mean")
    assert (t5["source"] == "paper").sum() == len(paper.TABLE5)
    assert list(t5.columns) == ["source", "protocol", "model", "n_layers", *METRICS]
    others = t5[t5["model"].isin(["Lin et al. [14]", "Takagi et al. [35]", "Gu et al. [9]"])]
    assert len(others) == 3 and set(others["protocol"]) == {paper.OWN_PROTOCOL}
    assert set(t5[t5["source"] == "mean"]["protocol"]) == {"brain-diffuser"}


def test_report_cards_and_the_card_caption():
    card = protocol_card("mindeye", image_set="mini-NSD test set of subject 1", ids=[3, 1, 2],
                         repeats="betas averaged", seed=0)
    caption = T.card_caption("Full pipeline", [card])
    assert caption.startswith("Full pipeline<br>Protocol card 1: protocol: mindeye") and card.ids_digest in caption
    assert "selection: none" in caption and "repeats: betas averaged" in caption
    reports = {"a": SimpleNamespace(card=card), "b": SimpleNamespace(card=None), "c": SimpleNamespace(card=card)}
    assert T.report_cards(reports) == [card] == T.report_cards(list(reports.values()))


def test_latent_table_beside_table_3_or_none():
    rows = _results(regressors=(("ridge", 15), ("gru", 15)))
    assert T.latent_table(rows, ours_label="ours") is None  # stage 1 reported nothing
    rows["latent_mse"], rows["latent_mae"] = [0.5, 0.25], [0.6, 0.3]
    lat = T.latent_table(rows, ours_label="ours")
    assert lat.loc[("ours", "gru", 15), "latent_mse"] == 0.25
    gru = _paper_row(3, regressor="gru")
    assert lat.loc[("paper (Table 3, NSD subject 1)", "GRU", 15), "latent_mae"] == gru["test_mae"]


def test_metric_sources_and_styled():
    rep = SimpleNamespace(sources={"ssim": "columns", "clip": "not available: no CLIP"})
    src = T.metric_sources(rep, names.METRIC_HEADERS)
    assert src.index.tolist() == ["SSIM ↑", "CLIP ↑"] and src.loc["CLIP ↑", "computed with"].startswith("not")
    html = T.styled(pd.DataFrame({"a": [0.12345, np.nan]}), caption="where from").to_html()
    assert "0.123" in html and "n/a" in html and "where from" in html


# ------------------------------------------------------------------ stage 1
def _fits():
    def fit(k, **over):
        m = {c: k + i / 10 for i, c in enumerate(("val_mse", "val_mae", "test_mse", "test_mae"))}
        m.update({f"{c}_raw": 2 * v for c, v in m.items()})
        m.update({f"{s}_{e}_z": k + 0.5 for s in ("val", "test") for e in ("mse", "mae")})
        m.update({"n_params": 1234567, "epochs": 10, "best_epoch": 7, "alpha": None, "seconds": 3.14159, **over})
        return {"metrics": m, "train_loss": [3, 2, 1], "val_loss": [3, 2.5, 2]}

    return {"cnn": fit(1), "transformer": fit(2), "gru": fit(3),
            "ridge": fit(4, n_params=None, epochs=None, best_epoch=None, alpha=12345.6)}


def test_regressor_summary_formats_and_dashes():
    s = T.regressor_summary(_fits())
    assert s.loc["gru", "parameters"] == "1,234,567" and s.loc["gru", "training time (s)"] == "3.1"
    assert s.loc["ridge", "parameters"] == "—" and s.loc["ridge", "ridge alpha"] == "12,346"
    assert s.loc["cnn", "ridge alpha"] == "—" and s.loc["cnn", "best epoch"] == "7"


def test_latent_error_tables_beside_tables_2_and_3():
    fits = _fits()
    t2 = T.latent_error_table([r for reg in ("cnn", "gru") for r in T.latent_rows(fits, reg, "ours")])
    assert t2.index.tolist() == [("Convolutional", "ours"), ("Convolutional", "paper (NSD subj 1)"),
                                 ("GRU", "ours"), ("GRU", "paper (NSD subj 1)")]
    assert t2.loc[("GRU", "ours"), ("test", "MSE ↓")] == pytest.approx(3.2)
    cnn = _paper_row(2, regressor="cnn")
    assert t2.loc[("Convolutional", "paper (NSD subj 1)"), ("validation", "MAE ↓")] == cnn["val_mae"]
    base = {"val_mse": 1 / 3, "val_mae": 0.5, "test_mse": 0.25, "test_mae": 0.125,
            **{f"{s}_{e}_z": 1.0 for s in ("val", "test") for e in ("mse", "mae")}}
    t3 = T.latent_error_table(T.latent_rows(fits, "ridge", "ours") + [T.ridge_raw_row(fits["ridge"], "ours"),
                                                                       T.baseline_row(base, "ours")])
    assert t3.loc[("Ridge [21], before re-standardising", "ours"), ("validation", "MSE ↓")] == pytest.approx(8)
    assert t3.loc[("training mean (no betas)", "ours"), ("validation", "MSE ↓")] == 0.3333  # rounded to 4
    assert t3.loc[("Ridge [21]", "paper (NSD subj 1)"), ("test", "MSE ↓")] == _paper_row(3, regressor="ridge")[
        "test_mse"]
    z = T.z_error_table(fits, base, "ours (z)")
    assert z.index.tolist() == ["Convolutional", "Transformer", "GRU", "Ridge [21]", "training mean (no betas)"]
    assert z.loc["GRU", "test MAE (z)"] == 3.5 and z.index.name == "ours (z)"


# ----------------------------------------------------------- data and models
def test_glm_accuracy_table():
    acc = {"median_r": {m: 0.1 * (i + 1) + 1e-5 for i, m in enumerate("ABCD")}, "rmse": dict.fromkeys("ABCD", 0.5)}
    t = T.glm_accuracy_table(acc)
    assert t["model"].tolist() == list(T.GLM_MODEL_LABELS.values())
    assert t["median r with truth (ours)"].tolist() == [0.1, 0.2, 0.3, 0.4] and (t["paper"] == "not reported").all()


def test_subject_counts_beside_nsds():
    info = {"sessions": 3, "n_trials_train": 90, "n_trials_test": 30, "n_images_train": 30, "n_images_test": 10,
            "n_trials": 120, "repeats_histogram": {"3": 40}, "n_roi_voxels": 1500}
    t = T.subject_counts(info, 1400, 2, "mini-NSD (simulated)")
    ours, theirs = t.columns
    assert ours == "ours: mini-NSD (simulated), subject 2" and theirs == "paper / NSD: subject 2, 37 sessions"
    assert t.loc["trials per image, mean", ours] == 3.0 and t.loc["images shown 1 / 2 / 3 times", ours] == "0 / 0 / 40"
    assert t.loc["voxels used", ours] == 1400 and t.loc["voxels used", theirs] == nsd.PAPER_COUNTS[
        "nsdgeneral_voxels"][2]
    assert t.loc["test images (shared)", theirs] == 982


def test_zscore_summary_and_split_table():
    rng = np.random.default_rng(0)
    raw = {"train": rng.normal(2, 3, (50, 20)), "test": rng.normal(2, 3, (10, 20))}
    d = SimpleNamespace(unscaled=lambda split: raw[split], train_betas=(raw["train"] - 2) / 3,
                        test_betas=(raw["test"] - 2) / 3, train_ids=np.arange(8), test_ids=np.arange(8, 10))
    s = T.zscore_summary(d, np.arange(50))
    assert s.loc["train", "before: mean"] == round(raw["train"].mean(), 3)
    assert s.loc["test", "after: std"] == round(d.test_betas.std(), 3)
    trials = SimpleNamespace(ids=np.array([0, 1, 8, 9, 9, 2]), shared=np.array([0, 0, 1, 1, 1, 0], bool))
    split = T.split_table(d, {"n_trials_train": 3}, trials, (np.array([0, 1, 9]), np.array([8, 2])))
    assert split["shared split (default)"].tolist() == [8, 2, 2, 3]
    assert split["random 90/10 split"].tolist() == [3, 2, 1, 4]


def test_vdvae_tables_have_the_papers_counts():
    layout = T.vdvae_layout(vdvae.IMAGENET64)
    assert layout["decoder blocks"].sum() == vdvae.IMAGENET64.n_dec_blocks == 75
    counts = T.latent_counts(vdvae.IMAGENET64, "pretrained")
    assert counts["ImageNet-64 VDVAE (computed)"].tolist()[:2] == counts["paper"].tolist()[:2] == ["13,344", "91,168"]
    assert counts.loc["latent values, all blocks", "paper"] == "—"


def test_image_scores_of_the_stimuli_themselves_are_perfect():
    rng = np.random.default_rng(1)
    stim = rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    noise = rng.integers(0, 256, stim.shape, dtype=np.uint8)
    t = T.image_scores(stim, {"same": stim, "noise": noise}, title="test", identification=True)
    assert t.index.name == "test" and t.index.tolist() == ["same", "noise"]
    assert t.loc["same"].tolist() == [1.0, 1.0, 1.0]
    assert abs(t.loc["noise", "PixCorr ↑"]) < 0.2
    assert list(T.image_scores(stim, {"same": stim}, title="x").columns) == ["PixCorr ↑", "SSIM (2-D) ↑"]


def test_alpha_table_shows_each_distinct_setting_once(monkeypatch):
    names = {"auto": "paper", "paper": "paper", "brain-diffuser": "brain-diffuser"}
    monkeypatch.setattr(T.stage2, "resolve_alphas", lambda cfg, s="auto": (names[s], None))
    monkeypatch.setattr(T.stage2, "clip_predictions", lambda cfg, alpha: {
        "alpha_text": 1000.0, "alpha_vision": 2e5 if alpha == "auto" else 1e4, "text_identification": 0.6,
        "text_token_r": np.array([0.1, 0.3]), "vision_identification": 0.7, "vision_token_r": np.array([0.5])})
    sty = T.alpha_table(None, ["auto", "paper", "brain-diffuser"], "caption here")
    t = sty.data
    assert t.index.tolist() == ["paper (default)", "brain-diffuser"]
    assert t.loc["paper (default)", "text: mean token r"] == pytest.approx(0.2)
    assert "200,000" in sty.to_html() and "caption here" in sty.to_html()


def test_diffusion_settings_beside_brain_diffusers():
    from diffusers import DDIMScheduler

    config = {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    vd = SimpleNamespace(image_size=64, scheduler_config=config,
                         scheduler=lambda: DDIMScheduler(**config, steps_offset=1, set_alpha_to_one=False))
    run = {"strength": 0.75, "num_steps": 50, "guidance_scale": 7.5, "text_weight": 0.4}
    t = T.diffusion_settings(run, vd)
    assert t.loc["strength", "this run"] == "0.75 (37 of 50 steps)" == t.loc["strength",
                                                                            "paper (Brain-Diffuser's settings)"]
    # trailing steps: 999, 979, ...; the 37 last of 50 start at 999 - 13 * 20 = 739
    assert t.loc["first guess's latent noised at", "this run"] == "t = 739, denoised from t = 739 ('first-step')"
    t_bd = T.diffusion_settings({**run, "noise_at": "brain-diffuser"}, vd)
    assert t_bd.loc["first guess's latent noised at", "this run"] == \
        "t = 759, denoised from t = 739 ('brain-diffuser')"
    assert t.loc["first guess's latent noised at", "paper (Brain-Diffuser's settings)"] == \
        "t = 741, denoised from t = 721"
    assert t.loc["autoencoder's latent of the first guess"].tolist() == ["posterior mean", "a posterior sample"]
    assert t.loc["noise schedule", "this run"] == ("v_prediction, scaled-linear betas rescaled to zero terminal SNR, "
                                                  "trailing steps")
    vd.scheduler_config.update(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=False)
    t = T.diffusion_settings(run, vd)
    assert t.loc["noise schedule", "this run"] == "v_prediction, cosine betas, trailing steps"
    assert t.loc["output size", "this run"] == "64 x 64"


def test_noise_at_table_reads_the_models_scheduler():
    from diffusers import DDIMScheduler

    def scheduler():  # Versatile Diffusion's DDIM settings
        return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                             set_alpha_to_one=False, clip_sample=False)

    vd = SimpleNamespace(scheduler=scheduler)
    run = {"strength": 0.75, "num_steps": 50, "noise_at": "first-step"}
    t = T.noise_at_table(run, vd)
    assert t.index.tolist() == ["'first-step' (this run)", "'brain-diffuser'"]
    assert t["noised at t"].tolist() == [721, 741] and t["denoised from t"].tolist() == [721, 721]
    ab = scheduler().alphas_cumprod.numpy()
    np.testing.assert_allclose(t["first guess's latent x"], np.sqrt(ab[[721, 741]]), rtol=1e-6)
    np.testing.assert_allclose(t["noise x"] ** 2 + t["first guess's latent x"] ** 2, 1, rtol=1e-6)
    assert T.noise_at_table({**run, "strength": 1.0}, vd).index.tolist() == ["'first-step' (this run)"]


# ------------------------------------------------------- is a difference real?
def _report(per_image: dict, unavailable=()):
    status = {m: "unavailable" if m in unavailable else "ok" for m in per_image}
    return MetricReport({m: np.asarray(v, float) for m, v in per_image.items()}, dict.fromkeys(per_image, "test"),
                        status, 32, "columns")


def _base(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return {m: rng.uniform(0.3, 0.7, n) for m in (*METRICS, "ssim_2d")}


def test_comparison_differences_verdicts_and_the_papers_difference():
    base = _base()
    gru = {m: v + (0.05 if m in ("ssim", "efficientnet") else 0.0) for m, v in base.items()}  # shifted on two
    reports = {("gru", 31, "final"): _report(gru), ("ridge", 31, "final"): _report(base),
               ("gru", 31, "first guess"): _report({m: v - 0.1 for m, v in gru.items()}, unavailable=("clip",))}
    table = T.comparison_differences(reports, n_resamples=500)
    assert list(table.columns) == list(T.COMPARISON_COLUMNS)
    assert table.index.get_level_values("comparison").unique().tolist() == ["GRU vs ridge", "stage 2 vs stage 1"]
    row = table.loc[("GRU vs ridge", "GRU-31 stage 2 − Ridge-31 stage 2", "ssim")]
    assert row["difference"] == pytest.approx(0.05) and row["low"] == pytest.approx(0.05)
    assert row["verdict"] == "real" and row["better"] == "GRU-31 stage 2"
    t4 = {(r["label"], r["n_layers"]): r for r in paper.TABLE4}
    assert row["paper: difference"] == pytest.approx(t4[("GRU", 31)]["ssim"] - t4[("Ridge [21]", 31)]["ssim"])
    assert row["same way as the paper"] == "yes"  # the paper's GRU-31 is also ahead on SSIM
    eff = table.loc[("GRU vs ridge", "GRU-31 stage 2 − Ridge-31 stage 2", "efficientnet")]
    assert eff["better"] == "Ridge-31 stage 2"  # a larger distance is worse
    same = table.loc[("GRU vs ridge", "GRU-31 stage 2 − Ridge-31 stage 2", "pixcorr")]
    assert (same["difference"], same["verdict"], same["better"]) == (0.0, "not seen", "—")
    assert same["same way as the paper"] == "—"
    stage = table.loc[("stage 2 vs stage 1", "GRU-31 stage 2 − GRU-31 first guess")]
    assert "clip" not in stage.index and stage["difference"].to_numpy() == pytest.approx(0.1)
    assert stage["paper: difference"].isna().all()  # the paper does not score first guesses
    assert table.attrs == {"n_resamples": 500, "confidence": 0.95, "seed": 0, "n_images": 40}
    assert T.comparison_differences({}).empty


def test_noise_directions_beside_table_6():
    base = _base()
    noisy = {m: v * (0.5 if m == "ssim" else 1.2 if m == "clip" else 1.0) for m, v in base.items()}
    table = T.noise_directions({"none": _report(base), "256": _report(noisy)}, n_resamples=300)
    assert list(table.columns) == list(T.NOISE_DIRECTION_COLUMNS) and len(table) == len(METRICS)
    ssim = table.loc[("256", "ssim")]
    assert ssim["ours: change %"] == pytest.approx(-50) and ssim["high %"] == pytest.approx(-50)
    t6 = {r["noise"]: r for r in paper.TABLE6}
    assert ssim["paper: change %"] == pytest.approx((t6["256"]["ssim"] / t6["none"]["ssim"] - 1) * 100)
    assert (ssim["ours: moves"], ssim["paper: moves"], ssim["same way as the paper"]) == ("down", "down", "yes")
    clip = table.loc[("256", "clip")]  # the paper's CLIP rises with pure noise too
    assert (clip["ours: moves"], clip["paper: moves"], clip["same way as the paper"]) == ("up", "up", "yes")
    flat = table.loc[("256", "pixcorr")]
    assert (flat["ours: moves"], flat["same way as the paper"]) == ("no change seen", "—")
    assert ssim["noise level"] == names.NOISE_LABELS["256"]
    with pytest.raises(ValueError, match="needs a 'none' report"):
        T.noise_directions({"256": _report(noisy)})


def test_scene_score_table_two_columns_per_attribute_in_stage_order():
    scores = pd.DataFrame([
        {"stage": s, "attribute": a, "accuracy": acc, "chance": 0.1, "ratio": acc / 0.1, "n": 100}
        for s, acc0 in (("stimulus", 0.9), ("first guess, gru 31", 0.3)) for a, acc in
        (("colour", acc0), ("shape", acc0 - 0.05), ("position", acc0 + 0.05))])
    sty = T.scene_score_table(scores, source="mini-NSD, subject 1", probe="the probe")
    t = sty.data
    assert t.index.tolist() == ["stimulus", "first guess, gru 31"]
    assert t.columns.tolist() == [(a, c) for a in ("colour", "shape", "position") for c in ("accuracy ↑", "× chance ↑")]
    assert t.loc["first guess, gru 31", ("shape", "× chance ↑")] == pytest.approx(2.5)
    html = sty.to_html()
    assert "2.5×" in html and "0.25" in html and "100 test images" in html and "the probe" in html


def test_control_differences_pipeline_minus_each_control():
    own = _report({"ssim": [0.9, 0.8, 0.85, 0.95], "pixcorr": [0.5, 0.4, 0.6, 0.5]})
    ctrl = {"control: retrieval": _report({"ssim": [0.1, 0.2, 0.15, 0.05], "pixcorr": [0.5, 0.4, 0.6, 0.5]}),
            "control: shuffled betas": _report({"ssim": [0.95, 0.9, 0.9, 1.0], "pixcorr": [0.1, 0.0, 0.2, 0.1]})}
    d = T.control_differences(own, ctrl, ("gru", 15), n_resamples=200, seed=0)
    assert list(d.index.get_level_values("comparison").unique()) == ["pipeline vs control: retrieval",
                                                                     "pipeline vs control: shuffled betas"]
    r = d.loc[("pipeline vs control: retrieval", "GRU-15 stage 2 − control: retrieval")]
    assert r.loc["ssim", "difference"] == pytest.approx(0.75) and r.loc["ssim", "better"] == "GRU-15 stage 2"
    assert r.loc["pixcorr", "difference"] == pytest.approx(0) and r.loc["pixcorr", "verdict"] == "not seen"
    s = d.loc[("pipeline vs control: shuffled betas", "GRU-15 stage 2 − control: shuffled betas")]
    assert s.loc["ssim", "better"] == "control: shuffled betas" and s.loc["pixcorr", "better"] == "GRU-15 stage 2"
    assert d["paper: difference"].isna().all()  # the paper has no controls


def test_overlap_summary_quartiles_and_duplicates():
    ov = {"cosine": np.array([0.5, 0.7, 0.9, 1.0]), "train_cosine": np.array([0.2, 0.4, 0.6])}
    t = T.overlap_summary(ov, duplicate=0.95)
    test, train = t.iloc[0], t.iloc[1]
    assert test["n"] == 4 and test["median"] == pytest.approx(0.8) and test["max"] == 1.0
    assert test["share ≥ 0.95"] == pytest.approx(0.25) and train["share ≥ 0.95"] == 0
    assert train["median"] == pytest.approx(0.4) and train["min"] == pytest.approx(0.2)


# ------------------------------------------------------------- regions and the ledger
def test_region_contrast_orders_levels_and_names_the_better_region():
    base = _base(n=60)
    noise = np.random.default_rng(5).normal(0, 0.01, 60)
    a = {m: v + noise + (0.05 if names.HIGHER_IS_BETTER.get(m, True) else -0.05) for m, v in base.items()}
    table = T.region_contrast({"a": _report(a), "b": _report(base)}, "a", "b", n_resamples=200)
    assert list(table.index) == [*names.METRIC_LEVELS["low"], *names.METRIC_LEVELS["high"]]
    assert (table["level"] == ["low"] * 4 + ["high"] * 4).all()
    assert (table["better"] == "a").all()
    np.testing.assert_allclose(table.loc["swav", "difference"], -0.05 + noise.mean(), atol=1e-12)
    assert (table["low"] < table["difference"]).all() and (table["difference"] <= table["high"]).all()


def test_ledger_table_and_changes():
    reports = {"stimulus": _report(_base(n=20)), "next": _report(_base(n=20, seed=1))}
    t = T.ledger_table(reports, {"stimulus": None, "next": "a step"})
    assert list(t["step"]) == ["—", "a step"] and names.METRIC_HEADERS["ssim"] in t.columns
    idx = pd.MultiIndex.from_product([["a step"], ["ssim", "swav"]], names=["step", "metric"])
    steps = pd.DataFrame({"change": [-0.1, 0.2], "low": [-0.15, 0.1], "high": [-0.05, 0.3], "share": [1.0, np.nan]},
                         index=idx)
    ch = T.ledger_changes(steps)
    assert ch.loc["a step", names.METRIC_HEADERS["ssim"]] == "-0.100 [-0.150, -0.050]"
    assert ch.loc["a step: share of the loss", names.METRIC_HEADERS["ssim"]] == "100 %"
    assert ch.loc["a step: share of the loss", names.METRIC_HEADERS["swav"]] == ""
