"""Preprocessing (SPEC section 2): a nipype workflow over small interfaces."""

import os

# nipype phones home for version checks on import unless told not to; this app runs offline
os.environ.setdefault("NIPYPE_NO_ET", "1")

from .params import PreprocParams  # noqa: E402
from .workflow import init_participant_wf, init_preproc_wf  # noqa: E402

__all__ = ["PreprocParams", "init_preproc_wf", "init_participant_wf"]
