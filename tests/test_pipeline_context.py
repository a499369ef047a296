"""nsdlib.pipeline.context: one run context per config, the only per-process cache."""

import types

import numpy as np
import pytest
import torch

from nsdlib import RunConfig, assets, clip, vdvae
from nsdlib.mini import scene
from nsdlib.mini import zoo as mini_zoo
from nsdlib.pipeline import context, data, dataset, evaluation, stage1, stage2

torch.set_num_threads(1)  # the test machine is shared; one thread avoids oversubscription


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A quick mini run whose subject data is counted and whose mini model zoo is absent."""
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))  # no pretrained assets here
    calls = []

    def subject_data(cfg, **kw):
        calls.append(cfg)
        rng = np.random.default_rng(cfg.subject)
        return types.SimpleNamespace(train_betas=rng.standard_normal((8, 5)).astype(np.float32),
                                     test_betas=rng.standard_normal((3, 5)).astype(np.float32),
                                     train_ids=np.arange(8), test_ids=np.arange(8, 11), n_voxels=5)

    def no_zoo(root, workdir=None, quick=False):
        raise mini_zoo.MiniModelsMissing("no trained mini models here")

    monkeypatch.setattr(data, "subject_data", subject_data)
    monkeypatch.setattr(dataset, "ensure_mini_world", lambda cfg, progress=True: None)
    monkeypatch.setattr(mini_zoo, "locate", no_zoo)
    context.forget()
    yield types.SimpleNamespace(cfg=RunConfig(workdir=str(tmp_path / "work"), quick=True, device="cpu"),
                                calls=calls)
    context.forget()


def test_same_config_same_context_and_subject_read_once(run):
    ctx = context.get(run.cfg)
    assert context.get(run.cfg) is ctx
    assert context.get(RunConfig(**run.cfg.params())) is ctx  # an equal config, another object
    sd = ctx.subject()
    # every stage asks the same context: the subject is read once for the process
    assert stage1._subject(run.cfg) is sd and stage2._subject(run.cfg) is sd
    np.testing.assert_array_equal(evaluation._test_ids(run.cfg), sd.test_ids)
    assert len(run.calls) == 1
    assert ctx.store.root == run.cfg.run_dir


def test_changed_config_reloads_and_drops_the_old_data(run):
    ctx = context.get(run.cfg)
    sd = ctx.subject()
    other = context.get(run.cfg.replace(subject=2))
    assert other is not ctx and other.subject() is not sd
    assert [c.subject for c in run.calls] == [1, 2]
    assert context.get(run.cfg) is not ctx  # the old context was dropped, not kept beside
    assert [c.subject for c in run.calls] == [1, 2]  # nothing read yet for the rebuilt context
    context.get(run.cfg).subject()
    assert len(run.calls) == 3


def test_a_new_regressor_keeps_the_subject_and_the_loaded_models(run):
    ctx = context.get(run.cfg)
    sd, emb = ctx.subject(), ctx.model("clip")
    gru31 = context.get(run.cfg.replace(regressor="ridge", n_layers=31))
    assert gru31 is not ctx and gru31.subject() is sd and gru31.model("clip") is emb
    assert len(run.calls) == 1
    pretrained = context.get(run.cfg.replace(models="pretrained"))
    assert pretrained.subject() is sd and len(run.calls) == 1  # the data does not depend on the models
    with pytest.raises(assets.MissingAssetError, match="nsdlib fetch clip"):
        pretrained.model("clip")  # its own sources: no mini stand-in for a pretrained run


def test_model_sources_have_one_shape_and_say_where_the_model_comes_from(run):
    ctx = context.get(run.cfg)
    sources = {name: ctx.source(name) for name in context.MODEL_NAMES}
    for name, src in sources.items():
        assert isinstance(src, context.ModelSource) and src.name == name
        assert src.kind in ("pretrained", "mini", "random", "missing") and src.description
    for name in ("vdvae", "clip", "vd"):  # no zoo: random stand-ins, said in words
        src = sources[name]
        assert src.kind == "random" and src.path is None and src.fingerprint.startswith("random:")
        assert "RANDOMLY INITIALISED" in src.description and "nsdlib mini train-models" in src.description
    assert sources["vdvae"].config == mini_zoo.mini_vdvae_config()
    assert sources["clip"].config == context.RANDOM_CLIP
    for name in ("torchvision-metrics", "swav"):  # no assets here: the metrics are unavailable
        assert sources[name].kind == "missing" and sources[name].path is None
    assert sources["scene"].kind == "missing" and "nsdlib mini train-models" in sources["scene"].description
    with pytest.raises(ValueError, match="model must be one of vdvae, clip, vd"):
        ctx.source("alexnet")
    # the same shape where a pretrained asset is asked for and missing: it raises with the fetch command
    with pytest.raises(assets.MissingAssetError, match="nsdlib fetch vdvae"):
        context.get(run.cfg.replace(models="pretrained")).source("vdvae")


def test_the_zoos_models_are_found_and_loaded_once(run, tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    torch.manual_seed(3)
    vdvae.save_vdvae(vdvae.VDVAE(vdvae.MINI), zoo / "vdvae.pt")
    clip.random_clip(**{**context.RANDOM_CLIP, "seed": 7}).save_pretrained(zoo / "clip")
    monkeypatch.setattr(mini_zoo, "locate", lambda root, workdir=None, quick=False: zoo)
    ctx = context.get(run.cfg)
    v, c = ctx.source("vdvae"), ctx.source("clip")
    assert (v.kind, v.path, v.label) == ("mini", str(zoo / "vdvae.pt"), "mini-trained")
    assert (c.kind, c.path) == ("mini", str(zoo / "clip")) and c.fingerprint.startswith("mini:")
    assert ctx.source("vd").kind == "random"  # the zoo has no diffusion model: a stand-in
    assert stage1.vdvae_info(run.cfg) is v and stage2.model_sources(run.cfg)["clip"] is c
    model = stage1.vdvae_model(run.cfg)
    assert ctx.model("vdvae") is model and not model.training
    assert stage2.clip_embedder(run.cfg) is ctx.model("clip")
    with pytest.raises(ValueError, match="the context loads 'vdvae', 'clip', 'vd' or 'scene'"):
        ctx.model("swav")
    # no scene networks in this zoo: the metrics' assets stay missing, the scene score names the command
    assert ctx.source("swav").kind == "missing" and ctx.source("scene").kind == "missing"
    with pytest.raises(scene.SceneNetworksMissing, match="nsdlib mini train-models"):
        ctx.model("scene")


def test_the_zoos_scene_networks_stand_in_for_the_metric_assets(run, tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    torch.manual_seed(0)
    heads = {a: len(scene.CLASSES[a]) for a in scene.ATTRIBUTES}
    scene.save_scene_networks(scene.SceneNetworks(scene.SceneCNN(heads=heads), scene.SceneCNN()), zoo)
    monkeypatch.setattr(mini_zoo, "locate", lambda root, workdir=None, quick=False: zoo)
    ctx = context.get(run.cfg)
    for name in ("torchvision-metrics", "swav", "scene"):
        src = ctx.source(name)
        assert (src.kind, src.path) == ("mini", str(zoo / "scene")) and "mini-NSD" in src.description, name
    assert isinstance(ctx.model("scene"), scene.SceneNetworks)
    plan = evaluation.metric_plan(run.cfg, clip="none in this test")
    assert all(plan[m].startswith("mini ") for m in scene.FEATURE_LAYERS), plan
    assert evaluation._mini_models(run.cfg) == zoo
    # a pretrained run never uses them for its metrics
    assert context.get(run.cfg.replace(models="pretrained")).source("swav").kind == "pretrained"


def test_get_needs_a_run_config():
    with pytest.raises(TypeError, match="built from a RunConfig; found dict"):
        context.get({"dataset": "mini"})


def test_pipeline_imports_go_one_way():
    """Each pipeline module imports only those listed before it in the package docstring."""
    import ast
    from pathlib import Path

    import nsdlib.pipeline as pipeline

    order = ["dataset", "betas", "data", "context", "results", "stage1", "stage2", "evaluation"]
    listed = [m for m in order if f"``{m}``" in pipeline.__doc__]
    assert listed == order
    folder = Path(pipeline.__file__).parent
    for i, name in enumerate(order):
        tree = ast.parse((folder / f"{name}.py").read_text())
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                used |= {node.module} if node.module else {a.name for a in node.names}
        assert used <= set(order[:i]), f"pipeline.{name} imports {sorted(used - set(order[:i]))}, listed after it"
