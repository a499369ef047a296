"""The scene score and the mini feature networks (nsdlib.mini.scene)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nsdlib.features import feature_networks
from nsdlib.metrics import ImageEvaluator
from nsdlib.mini import main_object, read_scenes
from nsdlib.mini.experiment import MiniRootError
from nsdlib.mini.scene import (
    ATTRIBUTES,
    CLASSES,
    FEATURE_LAYERS,
    SCENE_FOLDER,
    SceneCNN,
    SceneNetworks,
    SceneNetworksMissing,
    degrade,
    load_scene_networks,
    permutation_chance,
    save_scene_networks,
    scene_labels,
    scene_networks_present,
    score_scenes,
    train_scene_networks,
)
from nsdlib.names import IMAGE_METRICS


def _random_networks(seed=0) -> SceneNetworks:
    torch.manual_seed(seed)
    return SceneNetworks(SceneCNN(heads={a: len(CLASSES[a]) for a in ATTRIBUTES}).eval(),
                         SceneCNN(widths=(16, 32, 64, 128)).eval(), {"note": "random"})


def test_permutation_chance_by_hand():
    # predictions: 3 of class 0, 1 of class 1; truths: 2 and 2 -> 0.75 * 0.5 + 0.25 * 0.5 = 0.5
    assert permutation_chance([0, 0, 0, 1], [0, 1, 0, 1], 3) == pytest.approx(0.5)
    # a constant prediction scores exactly the share of its class among the truths
    assert permutation_chance([2, 2, 2, 2, 2], [2, 0, 1, 2, 0], 3) == pytest.approx(0.4)


def test_perfect_predictions_score_one_and_shuffled_ones_score_chance():
    rng = np.random.default_rng(0)
    true = {a: rng.integers(0, len(CLASSES[a]), 4000) for a in ATTRIBUTES}
    perfect = score_scenes(true, true)
    for a in ATTRIBUTES:
        assert perfect[a]["accuracy"] == 1.0 and perfect[a]["n"] == 4000
        assert perfect[a]["ratio"] == pytest.approx(1 / perfect[a]["chance"])
    shuffled = score_scenes({a: rng.permutation(v) for a, v in true.items()}, true)
    for a in ATTRIBUTES:
        assert shuffled[a]["accuracy"] == pytest.approx(shuffled[a]["chance"], abs=0.03), a
        assert shuffled[a]["ratio"] == pytest.approx(1.0, abs=0.25), a


def test_score_names_mismatched_labels():
    with pytest.raises(ValueError, match="colour: predicted and true labels.*\\(3,\\) and \\(4,\\)"):
        score_scenes({a: np.zeros(3, int) for a in ATTRIBUTES}, {a: np.zeros(4, int) for a in ATTRIBUTES})


def test_scenes_are_read_and_labelled(mini_small_root):
    scenes = read_scenes(mini_small_root)
    manifest = json.loads((mini_small_root / "mini_nsd.json").read_text())
    assert len(scenes) == manifest["spec"]["n_images"]
    labels = scene_labels(scenes[:5])
    for a in ATTRIBUTES:
        assert [CLASSES[a][k] for k in labels[a]] == [getattr(main_object(s), a) for s in scenes[:5]]


def test_read_scenes_names_the_missing_file(tmp_path):
    with pytest.raises(MiniRootError, match="scenes.json not found.*nsdlib mini generate"):
        read_scenes(tmp_path)


def test_degrade_keeps_shape_and_range():
    x = torch.rand(8, 3, 64, 64)
    y = degrade(x, torch.Generator().manual_seed(0), strength=2.0)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(x, y)


def test_networks_round_trip_through_safetensors(tmp_path):
    nets = _random_networks()
    assert not scene_networks_present(tmp_path)
    folder = save_scene_networks(nets, tmp_path, {"probe_s": 1.0})
    assert sorted(p.name for p in folder.iterdir()) == ["contrastive.safetensors", "probe.safetensors", "scene.json"]
    back = load_scene_networks(tmp_path)
    assert back.info["probe_s"] == 1.0
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    for a in ATTRIBUTES:
        np.testing.assert_array_equal(back.predict(images)[a], nets.predict(images)[a])


def test_missing_networks_name_the_file_and_the_command(tmp_path):
    with pytest.raises(SceneNetworksMissing, match="scene.json not found.*nsdlib mini train-models"):
        load_scene_networks(tmp_path)


def test_loading_refuses_pickle_files(tmp_path):
    nets = _random_networks()
    folder = save_scene_networks(nets, tmp_path)
    torch.save(nets.probe.state_dict(), folder / "probe.pt")
    with pytest.raises(ValueError, match="probe.pt.*never unpickled"):
        load_scene_networks(tmp_path)
    (folder / "probe.pt").unlink()
    # a pickle under the safetensors name is not read either
    torch.save(nets.probe.state_dict(), folder / "probe.safetensors")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_scene_networks(tmp_path)


def test_feature_networks_fill_every_column_for_mini_models(tmp_path):
    save_scene_networks(_random_networks(), tmp_path)
    nets, unavailable = feature_networks("mini", mini_models=tmp_path, clip=lambda im: im.reshape(len(im), -1)[:, :8])
    assert unavailable == {}
    served = {m: n for n in nets for m in n.metrics}
    assert set(FEATURE_LAYERS) <= set(served)
    for m in FEATURE_LAYERS:
        assert "mini" in served[m].description and "trained on mini-NSD" in served[m].description
    rng = np.random.default_rng(1)
    gt = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    rep = ImageEvaluator(gt, networks=nets, progress=False).evaluate(gt)
    means = rep.means
    assert all(np.isfinite(means[m]) for m in IMAGE_METRICS), means
    assert means["alexnet2"] == 1.0 and means["swav"] == pytest.approx(0.0, abs=1e-5)  # an image against itself


def test_feature_networks_without_scene_folder_say_how_to_train(tmp_path):
    _, unavailable = feature_networks("mini", mini_models=tmp_path, metrics=("swav",))
    if unavailable:  # absent unless the real SwAV weights happen to be on this machine
        assert "nsdlib mini train-models" in unavailable["swav"]


@pytest.mark.slow
def test_quick_training_writes_loadable_networks_and_records_accuracy(mini_small_root, tmp_path):
    torch.set_num_threads(1)
    info = train_scene_networks(mini_small_root, tmp_path, recipe="quick", progress=False)
    assert (tmp_path / SCENE_FOLDER / "probe.safetensors").is_file() and info["n_train"] == 64
    for a in ATTRIBUTES:
        v = info["validation"][a]
        assert 0 <= v["accuracy"] <= 1 and 0 < v["chance"] <= 1 and v["n"] == info["n_validation"]
    assert info["probe_s"] > 0 and info["contrastive_s"] > 0
    assert load_scene_networks(tmp_path).info["validation"] == info["validation"]
