"""Preprocessing (SPEC section 2): a nipype workflow over small interfaces."""

import os

# nipype phones home for version checks on import unless told not to; this app runs offline
os.environ.setdefault("NIPYPE_NO_ET", "1")
# ITK fixes its thread count at its first use in a process, and ANTs registration is only
# reproducible for a given seed on one thread; parallelism comes from running T1w side by side
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import logging  # noqa: E402

from .params import PreprocParams  # noqa: E402
from .workflow import init_participant_wf, init_preproc_wf  # noqa: E402

# MultiProc workers start with nipype's default logging (INFO, every step of every node); they
# take the run's level from the environment, which the main process sets (app.configure_nipype)
NIPYPE_LOG_LEVEL_VARIABLE = "BIDS_PSCORE_NIPYPE_LOG_LEVEL"
if os.environ.get(NIPYPE_LOG_LEVEL_VARIABLE):
    for _name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(_name).setLevel(os.environ[NIPYPE_LOG_LEVEL_VARIABLE])

__all__ = ["PreprocParams", "init_preproc_wf", "init_participant_wf"]
