"""The cached steps the notebooks call: "give me subject 1's stage-1 predictions".

Each function takes a :class:`~nsdlib.config.RunConfig`, asks the run's
:class:`~nsdlib.store.Store` for its artifact and computes it (calling the algorithm
modules) only when it is missing, so every chapter can run alone and a rerun costs nothing.
What a run holds in memory (its subject data, where its models come from, the loaded models)
is kept in one place, the run's context. Each module imports only those listed above it:

- ``dataset``: the run's dataset layout and mini-NSD made on demand
- ``betas``: single-trial betas with ``nsdlib.glm`` written in NSD's layout (chapter 01)
- ``data``: subject preparation (betas, ids, stimuli, captions), from any dataset's files
- ``context``: the run's context (:func:`~nsdlib.pipeline.context.get`), the only per-process cache:
  subject data, model sources (:class:`~nsdlib.pipeline.context.ModelSource`), loaded models
- ``results``: the run's results file, its one writer and one reader
- ``stage1``: VDVAE latents, stage-1 regressors, first guesses (chapters 03-05)
- ``stage2``: CLIP embeddings and their regressions, Versatile Diffusion (chapters 06-07)
- ``evaluation``: noise sensitivity, the metrics, and the rows of the results file (chapters 08-10)
- ``controls``: the retrieval baseline, the shuffled-betas null and the train-test overlap,
  scored beside the pipeline's rows (chapter 09)
- ``decode``: both stages from betas given explicitly (a voxel subset, the simulation's true amplitudes)
- ``regions``: the decoder run from one region's voxels at a time, scored (chapter 11)
- ``ledger``: the ledger of losses on mini-NSD, each input replaced by its truth in turn (chapter 12)
- ``zoo``: the mini model zoo, trained or reused, and its held-out evaluation (chapter 00)
- ``rescore``: reconstructions published elsewhere (files read by ``nsdlib.reconstructions``)
  scored like the run's own, one row of the results file each (``nsdlib score``)

Tables, figures and the explorer that show these results live in :mod:`nsdlib.report`.
"""
