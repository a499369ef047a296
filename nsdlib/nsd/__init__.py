"""The Natural Scenes Dataset: its file layout, access to it, its readers, and subject preparation.

One code path reads the real NSD (a local copy, or the public S3 bucket
``s3://natural-scenes-dataset`` read anonymously) and mini-NSD, which :mod:`nsdlib.mini`
writes in the very same layout (through :class:`NSDLayout`'s names) and formats.

- :mod:`~nsdlib.nsd.layout`: :class:`NSDLayout`, the one spelling of every path of NSD's tree,
  bound to a root; NSD's constants and errors;
- :mod:`~nsdlib.nsd.access`: filesystems (local, S3), resumable downloads, the block cache;
- :mod:`~nsdlib.nsd.fetch`: the files the book needs for one subject, brought to a local root;
- :mod:`~nsdlib.nsd.readers`: design, ROIs, streamed betas, stimuli, captions;
- :mod:`~nsdlib.nsd.rois`: NSD's ROI label files and their codes, voxels selected by region;
- :mod:`~nsdlib.nsd.prepare`: :func:`prepare_subject`, one subject's betas ready for the decoders.

NSD is shared under its Terms and Conditions (https://naturalscenesdataset.org); work that
uses it must cite Allen et al. (2022), Nature Neuroscience 25:116-126.
"""

from .access import download_file
from .fetch import COCO_ANNOTATIONS_URL, fetch_list, fetch_subject
from .layout import (
    BETA_SCALE,
    NSD_SESSIONS,
    PAPER_COUNTS,
    PUBLIC_SESSIONS,
    NSDDataError,
    NSDFileError,
    NSDLayout,
    check_sessions,
    check_subject,
)
from .prepare import NAN_POLICIES, SPLITS, SubjectData, prepare_subject, resolve_sessions, split_images
from .readers import (
    BetaHeader,
    ExpDesign,
    TrialSchedule,
    fortran_index,
    iter_session_betas,
    read_beta_header,
    read_beta_volume,
    read_captions,
    read_expdesign,
    read_roi,
    read_stim_info,
    read_stimuli,
    trial_schedule,
)
from .rois import ROI_FILES, ROI_SETS, parse_roi, roi_files_present, select_voxels

__all__ = [
    "BETA_SCALE",
    "COCO_ANNOTATIONS_URL",
    "NAN_POLICIES",
    "NSD_SESSIONS",
    "PAPER_COUNTS",
    "PUBLIC_SESSIONS",
    "ROI_FILES",
    "ROI_SETS",
    "SPLITS",
    "BetaHeader",
    "ExpDesign",
    "NSDDataError",
    "NSDFileError",
    "NSDLayout",
    "SubjectData",
    "TrialSchedule",
    "check_sessions",
    "check_subject",
    "download_file",
    "fetch_list",
    "fetch_subject",
    "fortran_index",
    "parse_roi",
    "iter_session_betas",
    "prepare_subject",
    "read_beta_header",
    "read_beta_volume",
    "read_captions",
    "read_expdesign",
    "read_roi",
    "read_stim_info",
    "read_stimuli",
    "resolve_sessions",
    "roi_files_present",
    "select_voxels",
    "split_images",
    "trial_schedule",
]
