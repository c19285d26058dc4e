"""Preprocessing (SPEC section 2): a nipype workflow over small interfaces."""

import os

# nipype phones home for version checks on import unless told not to; this app runs offline
os.environ.setdefault("NIPYPE_NO_ET", "1")
# ITK fixes its thread count at its first use in a process, and ANTs registration is only
# reproducible for a given seed on one thread; parallelism comes from running T1w side by side
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import logging  # noqa: E402

from ..config import read_worker_verbosity  # noqa: E402
from .workflow import init_participant_wf, init_preproc_wf  # noqa: E402


def nipype_log_level(verbosity):
    """nipype's messages show from -vv on."""
    return "INFO" if verbosity >= 2 else "WARNING"


# MultiProc's workers start with nipype's default logging (INFO: every step of every node); they
# take the run's verbosity from its configuration file (bids_pscore.config.write_config)
_worker_verbosity = read_worker_verbosity(os.environ)
if _worker_verbosity is not None:
    for _name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(_name).setLevel(nipype_log_level(_worker_verbosity))

__all__ = ["init_preproc_wf", "init_participant_wf", "nipype_log_level"]
