"""bids_pscore: the P-score neurodegeneration biomarker as a BIDS-App."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bids_pscore")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
