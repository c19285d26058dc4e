"""Synthetic T1w heads and small BIDS datasets made from what the installed packages carry.

A head is nilearn's MNI152 brain wrapped in CSF, skull and scalp layers, moved to a random
pose inside its voxel grid, with a smooth bias field and noise; its brain mask is known exactly. Used for the
quick-start demo dataset and for tests with ground truth.
"""

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .fileio import write_json, write_nifti, write_text

# tissue layers outside the brain: (outer distance from the brain in mm, intensity)
LAYERS = ((3.0, 0.12), (8.0, 0.04), (13.0, 0.75))
PAD_MM = 20
DATASET_NAME = "bids_pscore synthetic heads"


def _template():
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    brain = load_mni152_template(resolution=1)
    mask = load_mni152_brain_mask(resolution=1)
    return np.asarray(brain.get_fdata(), np.float32), np.asarray(mask.get_fdata() > 0), brain.affine


def random_affine(rng, max_rotation_deg=12.0, max_shift_mm=10.0, max_scale=0.05):
    """A random rigid pose with a small anisotropic scaling, as a 4x4 world-space matrix."""
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    out = np.eye(4)
    out[:3, :3] = rot @ np.diag(1.0 + rng.uniform(-max_scale, max_scale, 3))
    out[:3, 3] = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    return out


def move(data, affine, pose, order=1):
    """Resample a volume so that its content moves by ``pose`` (world mm) on the same voxel grid."""
    # voxel of the output -> world -> inverse pose -> voxel of the input
    vox = np.linalg.inv(affine) @ np.linalg.inv(pose) @ affine
    return ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], order=order, mode="constant", cval=0.0)


def bias_field(shape, rng, strength=0.2):
    """A smooth multiplicative field between about 1 - strength and 1 + strength."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    field = sum(rng.uniform(-1, 1) * g for g in grids) + sum(rng.uniform(-0.5, 0.5) * g * g for g in grids)
    field = field / max(float(np.abs(field).max()), 1e-6)
    return np.exp(strength * field).astype(np.float32)


def make_head(rng, noise=0.02, bias=0.2):
    """A T1w head with skull in a random pose; returns (head image, brain mask image)."""
    brain, mask, affine = _template()
    # the field of view: the brain's bounding box and a margin for the scalp and the pose
    brain, mask = np.pad(brain, PAD_MM), np.pad(mask, PAD_MM)
    lo = np.argwhere(mask).min(axis=0) - PAD_MM
    hi = np.argwhere(mask).max(axis=0) + PAD_MM + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    brain, mask = brain[box], mask[box]
    affine = affine.copy()
    affine[:3, 3] += affine[:3, :3] @ (lo - PAD_MM)
    distance = ndimage.distance_transform_edt(~mask)
    head = np.where(mask, brain, 0.0).astype(np.float32)
    inner = 0.0
    for outer, value in LAYERS:
        head[(distance > inner) & (distance <= outer)] = value
        inner = outer
    pose = random_affine(rng)
    head = move(head, affine, pose)
    mask = move(mask.astype(np.float32), affine, pose) >= 0.5
    head *= bias_field(head.shape, rng, bias)
    head += rng.normal(0.0, noise, head.shape).astype(np.float32)
    head = np.abs(head)  # magnitude images are positive (Rician-like background)
    scale = rng.uniform(600, 1400)
    head_img = nib.Nifti1Image(np.round(head * scale).astype(np.int16), affine)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), affine)
    for img in (head_img, mask_img):
        img.header.set_xyzt_units("mm")
        img.set_qform(img.affine, 1)
        img.set_sform(img.affine, 1)
    return head_img, mask_img


def write_dataset(out_dir, n_subjects=1, n_sessions=1, seed=0):
    """A small BIDS dataset of synthetic heads, with true brain masks in derivatives/groundtruth."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    write_json(out_dir / "dataset_description.json", {
        "Name": DATASET_NAME, "BIDSVersion": "1.10.0", "DatasetType": "raw",
        "License": "CC0", "GeneratedBy": [{"Name": "bids_pscore-synth", "Description": f"seed {seed}"}],
    })  # fmt: skip
    rows = ["participant_id\tage\tsex"]
    for s in range(1, n_subjects + 1):
        sub = f"sub-{s:02d}"
        rows.append(f"{sub}\t{int(rng.integers(55, 85))}\t{rng.choice(['F', 'M'])}")
        for k in range(1, n_sessions + 1):
            ses = f"ses-{k}"
            head, mask = make_head(rng)
            write_nifti(out_dir / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz", head)
            truth = out_dir / "derivatives" / "groundtruth" / sub / ses / "anat" / f"{sub}_{ses}_desc-brain_mask.nii.gz"
            write_nifti(truth, mask)
    write_text(out_dir / "participants.tsv", "\n".join(rows) + "\n")
    write_json(out_dir / "derivatives" / "groundtruth" / "dataset_description.json", {
        "Name": "ground truth of the synthetic heads", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_pscore-synth"}],
    })  # fmt: skip
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bids_pscore-synth", description="Write a small BIDS dataset of synthetic T1w heads.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-subjects", type=int, default=1)
    parser.add_argument("--n-sessions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args(argv)
    description = opts.out_dir / "dataset_description.json"
    ours = description.is_file() and json.loads(description.read_text()).get("Name") == DATASET_NAME
    if opts.out_dir.exists() and any(opts.out_dir.iterdir()) and not ours:
        print(f"bids_pscore-synth: error: {opts.out_dir} holds other files; give a new or empty folder", file=sys.stderr)
        return 2
    write_dataset(opts.out_dir, opts.n_subjects, opts.n_sessions, opts.seed)
    print(f"bids_pscore-synth: wrote {opts.n_subjects} subject(s) x {opts.n_sessions} session(s) to {opts.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
