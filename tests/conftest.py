"""Fixtures shared by the tests."""

import os

import pytest

from .helpers import SHARED_DATA


def pytest_configure(config):
    # each of pytest-xdist's workers gets one CPU: torch's own thread pool would otherwise make
    # two workers fight over two CPUs (measured: a third more CPU time for the same suite)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def app_messages():
    """The package's messages as a run of the app shows them (a test calling a function directly
    reads them with capsys); reset for every test, since a command line run with -q changes them."""
    from bids_pscore.cli import configure_logging

    configure_logging("bids_pscore", 0)


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not beside the repository")
    return SHARED_DATA
