"""Test helpers: generated BIDS trees and images, and where the optional real data lies."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_BRAIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")


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
