"""mini-NSD: a simulated Natural Scenes Dataset written in NSD's own file layout.

mini-NSD is a *world for teaching and testing*, not a brain. It draws colour scenes
(objects of six shapes, eight colours, three sizes and nine positions on six textured
backgrounds), describes each with five captions from a small grammar, and simulates four
subjects (1, 2, 5, 7) looking at them. The package, by concern:

- :mod:`~nsdlib.mini.experiment`: sizes and timing (:class:`MiniSpec`), the trial design, the seed;
- :mod:`~nsdlib.mini.world`: scenes, images, captions and the features voxels respond to;
- :mod:`~nsdlib.mini.brain`: anatomy, voxel populations, responses, noise, time series, and
  the ground truth (:func:`truth`);
- :mod:`~nsdlib.mini.writer`: :func:`generate`, which writes every file where the real NSD
  keeps it, in the same formats, through :class:`nsdlib.nsd.NSDLayout`'s names (one loader
  reads both), plus mini-NSD's manifest (``mini_nsd.json``) and its ``ground_truth/`` folder;
- :mod:`~nsdlib.mini.zoo`: the mini model zoo trained on mini-NSD (imported on its own:
  ``from nsdlib.mini import zoo``, as it needs torch);
- :mod:`~nsdlib.mini.scene`: the ruler: the ground-truth scene score (a probe reading each
  image's main object) and the small feature networks that fill the metric columns offline
  (also imported on its own, as it needs torch); :func:`read_scenes` reads the truth it scores
  against.

Files beyond the core of NSD: ``nsddata/ppdata/subjNN/func1pt8mm/roi/`` also holds
``prf-visualrois`` (-1, 0, 1..7 = V1v V1d V2v V2d V3v V3d hV4) and ``streams`` (-1, 0, 1 early,
5 ventral, 6 lateral, 7 parietal); ``nsddata_timeseries`` holds each run's (X, Y, Z, T) int16
time series and its design (one value per volume). mini-NSD writes no betas: the GLM does.

Conventions, as in NSD:

- ``masterordering`` (1, n_trials) is shared by all subjects; trial ``i`` of subject ``s``
  shows the 1-based id ``subjectim[s-1, masterordering[i]-1]`` (0-based ``nsdId`` = that - 1,
  the row of ``imgBrick``). The first ``n_shared`` columns of every ``subjectim`` row are the
  shared images (equal to ``sharedix``, sorted), so ``masterordering <= n_shared`` marks a
  test trial. Rows for subjects 3, 4, 6 and 8 hold valid ids (the shared images, then
  images drawn from the other subjects' training sets) but those subjects have no data.
- The design file of a run holds one integer per volume: 0, or the 1-based index into the
  subject's image list (the ``masterordering`` value) at the volume where a 3-s trial starts.
  Trials are 3 s on and 1 s off (4 volumes at TR = 1 s); each run starts with 4 s of rest,
  has a few blank 4-s slots among the trials and ends with 12 s of rest.
- Time series are int16 raw scanner-like units: ``round(mean * (1 + psc / 100))`` with a
  brain mean near 1000, so one unit is about 0.1 % signal change (well below the noise);
  voxels outside the brain hold a dim (about 40) noisy background.
- Ground-truth voxel order is the C order of ``nsdgeneral == 1`` (``vol[mask]`` in numpy).

The same seed and size give byte-identical files on the same machine and library versions.
"""

from .brain import NOISE, PRF_LABELS, STREAM_LABELS, Truth, truth
from .experiment import (
    GENERATOR_VERSION,
    GROUND_TRUTH,
    MANIFEST,
    STIM_DUR,
    TR,
    TRIAL_DUR,
    MiniRootError,
    MiniSpec,
    read_manifest,
    read_scenes,
    spec_for,
    truth_dir,
)
from .world import (
    BACKGROUNDS,
    COLOURS,
    POSITIONS,
    SEMANTIC_FEATURES,
    SHAPES,
    SIZES,
    TEXTURES,
    Scene,
    SceneObject,
    draw_scene,
    early_features,
    main_object,
    render_scene,
    scene_captions,
    semantic_features,
)
from .writer import ROI_VOLUMES, damaged_files, generate, restore

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "GENERATOR_VERSION",
    "GROUND_TRUTH",
    "MANIFEST",
    "NOISE",
    "POSITIONS",
    "PRF_LABELS",
    "ROI_VOLUMES",
    "SEMANTIC_FEATURES",
    "SHAPES",
    "SIZES",
    "STIM_DUR",
    "STREAM_LABELS",
    "TEXTURES",
    "TR",
    "TRIAL_DUR",
    "MiniRootError",
    "MiniSpec",
    "Scene",
    "SceneObject",
    "Truth",
    "draw_scene",
    "early_features",
    "damaged_files",
    "generate",
    "main_object",
    "read_manifest",
    "read_scenes",
    "render_scene",
    "restore",
    "scene_captions",
    "semantic_features",
    "spec_for",
    "truth",
    "truth_dir",
]
