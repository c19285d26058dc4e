"""Test helpers: generated BIDS trees and images, and where the optional real data lies."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_BRAIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")


def needs(present, missing):
    """Skip a test whose data or tool is missing (``missing`` says which, and how to get it), except in CI
    (CI=true, as CI services set it), where it fails: a test that CI skips in silence proves nothing."""
    if present:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{missing}; CI=true, so the test must run (a CI without ../shared/data deselects its tests: -m 'not shared_data')")
    pytest.skip(missing)


def small_image(shape=(20, 24, 20), voxel_mm=1.0, value=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.uniform(10, 100, shape).astype(np.float32) if value is None else np.full(shape, value, np.float32)
    return nib.Nifti1Image(data, np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0]))


def make_bids(root, files, description=True):
    """A BIDS tree: ``files`` maps relative paths to nibabel images, bytes or text."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if description:
        (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.10.0"}))
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, nib.Nifti1Image):
            content.to_filename(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def half_written(folder):
    """Files of atomic writes that never got their final name (bids_pscore.fileio names them hidden)."""
    return [p for p in Path(folder).rglob(".*") if p.is_file() and p.name != ".bidsignore"]


def killed_while_writing(code, path_part=""):
    """Python source (for ``python -c``) that runs ``code`` and kills its own process with SIGKILL, which
    nothing catches, at the first atomic write whose path holds ``path_part``: its temporary file written
    and synced, the rename not made."""
    return (
        "import os, signal\n"
        "from bids_pscore import fileio\n"
        "def sync_then_die(path, sync_data=fileio.sync_data):\n"
        "    sync_data(path)\n"
        f"    if {path_part!r} in str(path):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "fileio.sync_data = sync_then_die\n"
    ) + code
