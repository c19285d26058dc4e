"""Synthetic T1w cohorts with known regional atrophy, made from what the installed packages carry.

A subject's anatomy is nilearn's MNI152 brain (with the shipped Brainnetome atlas as its label
map) under a smooth random deformation (healthy inter-subject variation, about 10% SD of regional
volume). An AD subject's disease stage grows over its sessions; regions become involved in a fixed
order (default: the patent's amygdala, nucleus accumbens, insula, hippocampus, temporal pole, then
entorhinal and parahippocampal cortex) and lose 5-30% of their volume: each atrophied region
shrinks towards its centre (Jacobian < 1 inside it) and the space it leaves becomes CSF. Each
session is then acquired: CSF, skull and scalp layers, a random pose, a random voxel size and
orientation, a bias field, noise and an intensity scale. The truth (volume loss per session and
region, brain masks, label maps, disease stages, order of involvement) is written under
``derivatives/groundtruth``.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..bids import BIDS_VERSION
from ..fileio import write_json, write_nifti, write_text, write_tsv

# tissue layers outside the brain: (outer distance from the brain in mm, intensity)
LAYERS = ((3.0, 0.12), (8.0, 0.04), (13.0, 0.75))
CSF_INTENSITY = LAYERS[0][1]
PAD_MM = 20
DATASET_NAME = "bids_pscore synthetic heads"
GROUNDTRUTH = Path("derivatives") / "groundtruth"
N_LABELS = 247  # background and the 246 Brainnetome regions

# order of involvement: (name, Brainnetome abbreviations, largest volume loss); both hemispheres
ATROPHY_ORDER = (
    ("amygdala", ("mAmyg", "lAmyg"), 0.30),
    ("nucleus accumbens", ("NAC",), 0.20),
    ("insula", ("G", "vIa", "dIa", "vId/vIg", "dIg", "dId"), 0.20),
    ("hippocampus", ("rHipp", "cHipp"), 0.30),
    ("temporal pole", ("A38m", "A38l"), 0.20),
    ("entorhinal and parahippocampal cortex", ("A28/34", "A35/36r", "A35/36c", "TL", "TH"), 0.20),
)
ONSET_LOSS = 0.05  # a region's loss when it becomes involved
LOSS_PER_STAGE = 0.10  # how much more it loses per unit of disease stage (about a year)
# healthy variation: a displacement field drawn on a coarse lattice, linearly interpolated
VARIATION_SPACING_MM = 12.0
VARIATION_SD_MM = 2.4
HEAD_SCALE = 0.05  # subjects' brains differ in linear size by up to this fraction
# acquisition: voxel sizes (mm) and orientations a scanner may write
VOXEL_SIZES = ((1.0, 1.0, 1.0), (1.2, 1.0, 1.0), (0.9, 0.9, 1.1), (1.1, 1.1, 1.1), (1.0, 1.0, 1.2))
ORIENTATIONS = ("RAS", "LAS", "LPS", "PIR", "ASL", "RSA")


@lru_cache(maxsize=1)
def template_space():
    """The MNI152 brain, its mask and the Brainnetome labels on one 1 mm grid with room for a head."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    from ..atlas import resample_labels, source_image

    template = load_mni152_template(resolution=1)
    brain = np.asarray(template.get_fdata(), np.float32)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).get_fdata() > 0)
    brain, mask = np.pad(brain, PAD_MM), np.pad(mask, PAD_MM)
    lo = np.argwhere(mask).min(axis=0) - PAD_MM
    hi = np.argwhere(mask).max(axis=0) + PAD_MM + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    affine = template.affine.copy()
    affine[:3, 3] += affine[:3, :3] @ (lo - PAD_MM)
    brain, mask = brain[box], mask[box]
    atlas = source_image()
    labels = resample_labels(np.asarray(atlas.dataobj).astype(np.int16), atlas.affine, brain.shape, affine, subsamples=1)
    labels = np.where(mask, labels, 0).astype(np.int16)
    for array in (brain, mask, labels):
        array.flags.writeable = False
    return brain, mask, labels, affine


def region_order():
    """One row per atrophied region: rank of its group, group name, index, label, largest loss."""
    from ..atlas import region_table

    table = region_table()
    rows = []
    for rank, (name, abbreviations, max_loss) in enumerate(ATROPHY_ORDER, start=1):
        for abbreviation in abbreviations:
            for _, region in table[table["abbreviation"] == abbreviation].iterrows():
                rows.append({"rank": rank, "group": name, "onset_stage": float(rank - 1), "index": int(region["index"]),
                             "label": region["label"], "max_loss": max_loss})  # fmt: skip
    return pd.DataFrame(rows)


def stage_losses(stage, order, hemisphere_jitter):
    """Volume loss of each region of ``order`` at a disease stage (0 everywhere for stage None)."""
    if stage is None:
        return np.zeros(len(order))
    since = stage - order["onset_stage"].to_numpy()
    loss = np.minimum(ONSET_LOSS + LOSS_PER_STAGE * since, order["max_loss"].to_numpy()) * hemisphere_jitter
    return np.where(since >= 0, np.clip(loss, 0.0, 0.30), 0.0)


@dataclass
class Anatomy:
    """One subject's healthy anatomy on a 1 mm grid: T1w intensities (the brain alone for the
    template, the whole head for a real base head), brain mask and Brainnetome labels."""

    image: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    affine: np.ndarray


def make_anatomy(rng, variation_sd_mm=VARIATION_SD_MM, max_scale=HEAD_SCALE):
    """The template brain under a smooth random deformation and a global scaling: one subject's healthy anatomy."""
    brain, mask, labels, affine = template_space()
    coarse = [int(np.ceil(n / VARIATION_SPACING_MM)) + 1 for n in brain.shape]
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in brain.shape], indexing="ij"))
    on_lattice = coords / np.float32(VARIATION_SPACING_MM)
    # head size: sampling the template at (x - centre) / s makes the brain s times larger
    centre = np.array(brain.shape, np.float32)[:, None, None, None] / 2
    coords = centre + (coords - centre) / np.float32(1.0 + rng.uniform(-max_scale, max_scale))
    for axis in range(3):
        # linear interpolation of a coarse random lattice: a field smooth at the scale of regions
        field = rng.normal(0.0, variation_sd_mm, coarse).astype(np.float32)
        coords[axis] += ndimage.map_coordinates(field, on_lattice, order=1)
    del on_lattice
    warped_mask = ndimage.map_coordinates(mask.astype(np.float32), coords, order=1) >= 0.5
    return Anatomy(
        image=np.where(warped_mask, ndimage.map_coordinates(brain, coords, order=1), 0.0).astype(np.float32),
        mask=warped_mask,
        labels=np.where(warped_mask, ndimage.map_coordinates(labels, coords, order=0), 0).astype(np.int16),
        affine=affine,
    )


def _shrink_region(inside, loss):
    """Where a region keeps tissue after losing ``loss`` of its volume.

    ``inside`` is the region within its bounding box. The region shrinks towards its centre:
    output voxel x shows the tissue at c + (1 + a)(x - c), so its volume scales by about
    (1 + a)^-3; ``a`` is found by bisection, because a region that is not convex around c loses a
    little more than the formula says. Returns the voxels that show shrunk tissue, the kept voxels
    (those and the few given back to reach the loss) and the source coordinates of every voxel
    of the box.
    """
    local = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in inside.shape], indexing="ij"))
    depth = ndimage.distance_transform_edt(inside)
    centre = np.array(np.unravel_index(np.argmax(depth), inside.shape), np.float32)
    centroid = np.argwhere(inside).mean(axis=0)
    if inside[tuple(np.rint(centroid).astype(int))]:
        centre = centroid.astype(np.float32)
    shape = np.array(inside.shape)[:, None, None, None]

    def kept(a):
        source = centre[:, None, None, None] + (1.0 + a) * (local - centre[:, None, None, None])
        idx = np.rint(source).astype(int)
        valid = ((idx >= 0) & (idx < shape)).all(axis=0)
        hit = np.zeros(inside.shape, bool)
        hit[valid] = inside[tuple(i[valid] for i in idx)]
        return inside & hit, source

    target = 1.0 - loss
    low, high = 0.0, 1.0
    for _ in range(20):
        middle = 0.5 * (low + high)
        if kept(middle)[0].sum() / inside.sum() > target:
            low = middle
        else:
            high = middle
    shrunk, source = kept(high)
    # a thin region's count jumps with a: give back the lost voxels nearest to the kept tissue
    # until the loss is the target (they keep their own intensity)
    keep = shrunk.copy()
    missing = int(round(target * inside.sum())) - int(shrunk.sum())
    if missing > 0:
        lost = np.flatnonzero(inside & ~shrunk)
        distance = ndimage.distance_transform_edt(~shrunk).ravel()[lost]
        keep.ravel()[lost[np.argsort(distance, kind="stable")[:missing]]] = True
    return shrunk, keep, source


def atrophy(anatomy, losses, csf_intensity=CSF_INTENSITY):
    """The anatomy with each region of ``losses`` ({index: fraction}) shrunk and surrounded by CSF.

    Returns (image, labels) on the anatomy's grid; the brain mask (intracranial) is unchanged.
    """
    image, labels = anatomy.image.copy(), anatomy.labels.copy()
    boxes = ndimage.find_objects(anatomy.labels)  # one bounding box per label, found in one pass
    for index, loss in losses.items():
        box = boxes[index - 1] if index <= len(boxes) else None
        if loss <= 0 or box is None:
            continue
        inside = anatomy.labels[box] == index
        shrunk, keep, source = _shrink_region(inside, loss)
        shifted = ndimage.map_coordinates(anatomy.image[box], source.reshape(3, -1), order=1, mode="nearest").reshape(keep.shape)
        image[box] = np.where(shrunk, shifted, np.where(keep, image[box], np.where(inside, csf_intensity, image[box])))
        labels[box] = np.where(inside & ~keep, 0, labels[box])
    return image, labels


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


def add_head(brain, mask):
    """Wrap a brain in CSF, skull and scalp layers."""
    distance = ndimage.distance_transform_edt(~mask)
    head = np.where(mask, brain, 0.0).astype(np.float32)
    inner = 0.0
    for outer, value in LAYERS:
        head[(distance > inner) & (distance <= outer)] = value
        inner = outer
    return head


def scanner_grid(shape, affine, pose, voxel_size, orientation):
    """The affine and shape of a scanner's grid with this voxel size and orientation around the posed head."""
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)], float)
    world = (pose @ affine @ corners.T)[:3]
    directions = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
    axes = np.array([directions[c] for c in orientation], float).T  # columns: world direction of each voxel axis
    along = axes.T @ world  # extent of the head along each voxel axis
    out = np.eye(4)
    out[:3, :3] = axes * np.asarray(voxel_size)
    out[:3, 3] = axes @ along.min(axis=1)
    out_shape = tuple(int(np.ceil((hi - lo) / v)) + 1 for lo, hi, v in zip(along.min(axis=1), along.max(axis=1), voxel_size))
    return out, out_shape


def acquire(head, labels, mask, affine, rng, noise=0.02, bias=0.2, voxel_sizes=VOXEL_SIZES):
    """One scan of a head: random pose, voxel size and orientation, bias field, noise and scale.

    Returns the T1w, brain mask and label images in the scanner's space.
    """
    # rigid only: a subject's brain keeps its size from one session to the next
    pose = random_affine(rng, max_scale=0.0)
    voxel_size = voxel_sizes[rng.integers(len(voxel_sizes))]
    orientation = ORIENTATIONS[rng.integers(len(ORIENTATIONS))]
    out_affine, out_shape = scanner_grid(head.shape, affine, pose, voxel_size, orientation)
    to_template = np.linalg.inv(affine) @ np.linalg.inv(pose) @ out_affine

    def resample(data, order):
        return ndimage.affine_transform(data, to_template[:3, :3], to_template[:3, 3], output_shape=out_shape, order=order)

    t1w = resample(head, 1)
    t1w *= bias_field(t1w.shape, rng, bias)
    t1w += rng.normal(0.0, noise, t1w.shape).astype(np.float32)
    t1w = np.abs(t1w)  # magnitude images are positive (Rician-like background)
    scale = rng.uniform(600, 1400)
    images = (
        nib.Nifti1Image(np.round(t1w * scale).astype(np.int16), out_affine),
        nib.Nifti1Image((resample(mask.astype(np.float32), 1) >= 0.5).astype(np.uint8), out_affine),
        nib.Nifti1Image(resample(labels, 0).astype(np.int16), out_affine),
    )
    for img in images:
        img.header.set_xyzt_units("mm")
        img.set_qform(img.affine, 1)
        img.set_sform(img.affine, 1)
    return images


def make_head(rng, noise=0.02, bias=0.2):
    """A healthy T1w head with skull in a random pose; returns (head image, brain mask image)."""
    anatomy = make_anatomy(rng)
    head = add_head(anatomy.image, anatomy.mask)
    t1w, mask, _ = acquire(head, anatomy.labels, anatomy.mask, anatomy.affine, rng, noise, bias)
    return t1w, mask


def write_dataset(out_dir, n_subjects=1, n_sessions=1, seed=0, acquisition_seed=None, ad_fraction=0.5):
    """A BIDS dataset of synthetic heads (AD and CN) with its ground truth in derivatives/groundtruth.

    Anatomy, group and disease course come from ``seed``; pose, voxel grid, bias field and noise
    from ``acquisition_seed`` (default: ``seed``), so two datasets that differ only in the latter
    are a test-retest pair of the same brains.
    """
    out_dir = Path(out_dir)
    acquisition_seed = seed if acquisition_seed is None else acquisition_seed
    cohort = np.random.default_rng([seed, 0])
    n_ad = int(round(n_subjects * ad_fraction))
    groups = cohort.permutation(["AD"] * n_ad + ["CN"] * (n_subjects - n_ad))
    order = region_order()
    truth_root = out_dir / GROUNDTRUTH
    write_json(out_dir / "dataset_description.json", {
        "Name": DATASET_NAME, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "CC0",
        "GeneratedBy": [{"Name": "bids_pscore-synth", "Description": f"seed {seed}, acquisition seed {acquisition_seed}"}],
    })  # fmt: skip
    write_text(out_dir / "README", "Synthetic T1w heads made by bids_pscore-synth; AD subjects have regional "
               "atrophy whose truth is in derivatives/groundtruth. Not real data.\n")  # fmt: skip
    participants, truth_sessions, truth_regions = [], [], []
    for s in range(1, n_subjects + 1):
        sub, group = f"sub-{s:02d}", str(groups[s - 1])
        subject = np.random.default_rng([seed, s])
        age = int(subject.integers(55, 85))
        participants.append({"participant_id": sub, "group": group, "age": age, "sex": str(subject.choice(["F", "M"]))})
        anatomy = make_anatomy(subject)
        healthy_volumes = np.bincount(anatomy.labels.ravel(), minlength=N_LABELS)[order["index"]]
        # disease stage at the first session and its growth per year (AD only)
        stage0, rate = (subject.uniform(0.3, 2.5), subject.uniform(0.7, 1.3)) if group == "AD" else (None, 0.0)
        jitter = subject.uniform(0.85, 1.15, len(order))
        visit = datetime(2015, 1, 1, 8, 0) + timedelta(days=int(subject.integers(0, 5 * 365)), minutes=int(subject.integers(0, 600)))
        years, sessions = 0.0, []
        for k in range(1, n_sessions + 1):
            ses = f"ses-{k}"
            stage = None if stage0 is None else stage0 + rate * years
            losses = stage_losses(stage, order, jitter)
            brain, labels = atrophy(anatomy, dict(zip(order["index"], losses)))
            realised = 1.0 - np.bincount(labels.ravel(), minlength=N_LABELS)[order["index"]] / healthy_volumes
            head = add_head(brain, anatomy.mask)
            t1w, mask, dseg = acquire(head, labels, anatomy.mask, anatomy.affine, np.random.default_rng([acquisition_seed, s, k]))
            stem = f"{sub}_{ses}"
            write_nifti(out_dir / sub / ses / "anat" / f"{stem}_T1w.nii.gz", t1w)
            truth_dir = truth_root / sub / ses / "anat"
            write_nifti(truth_dir / f"{stem}_desc-brain_mask.nii.gz", mask)
            write_nifti(truth_dir / f"{stem}_atlas-Brainnetome_dseg.nii.gz", dseg)
            sessions.append({"session_id": ses, "acq_time": visit.strftime("%Y-%m-%dT%H:%M:%S")})
            truth_sessions.append({"participant_id": sub, "session_id": ses, "group": group,
                                   "years_from_first": round(years, 3), "disease_stage": stage})  # fmt: skip
            for (_, region), target, loss, volume in zip(order.iterrows(), losses, realised, healthy_volumes):
                truth_regions.append({"participant_id": sub, "session_id": ses, "index": region["index"], "label": region["label"],
                                      "healthy_volume_mm3": volume, "target_loss": target, "volume_loss": loss})  # fmt: skip
            gap = subject.uniform(0.8, 1.3)
            visit += timedelta(days=int(gap * 365.25))
            years += gap
        write_tsv(out_dir / sub / f"{sub}_sessions.tsv", pd.DataFrame(sessions), "%.6g")
    write_tsv(out_dir / "participants.tsv", pd.DataFrame(participants), "%.6g")
    write_json(out_dir / "participants.json", {
        "group": {"Description": "diagnosis", "Levels": {"AD": "synthetic atrophy", "CN": "synthetic control"}},
        "age": {"Description": "age at the first session", "Units": "year"},
        "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
    })  # fmt: skip
    write_json(truth_root / "dataset_description.json", {
        "Name": "ground truth of the synthetic heads", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_pscore-synth"}],
    })  # fmt: skip
    write_tsv(truth_root / "sessions.tsv", pd.DataFrame(truth_sessions), "%.6g")
    write_tsv(truth_root / "regions.tsv", pd.DataFrame(truth_regions), "%.6g")
    write_tsv(truth_root / "atrophy_order.tsv", order, "%.6g")
    return out_dir
