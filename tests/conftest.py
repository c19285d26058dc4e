"""Fixtures shared by the tests."""

import os

import pytest

from .helpers import COLIN, COLIN_BRAIN, SHARED_DATA, needs


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


def pytest_collection_modifyitems(items):
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shared_data():
    needs(SHARED_DATA.is_dir(), f"{SHARED_DATA} is not beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def colin27():
    """Debian's Colin27 head and its BET brain (mricron-data), as (head, brain)."""
    needs(COLIN.is_file() and COLIN_BRAIN.is_file(), f"{COLIN} is not there: apt-get install mricron-data")
    return COLIN, COLIN_BRAIN
