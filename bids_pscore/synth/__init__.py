"""Synthetic T1w cohorts with known regional atrophy: heads, the anatomy's changes, and the scanner.

Two kinds of head share one disease model (``disease``: AD subtypes, stages, ageing) and one
dataset writer (``dataset``). A template head is nilearn's MNI152 brain (``templateheads``, with the shipped
Brainnetome atlas as its label map) under a smooth random deformation (healthy inter-subject
variation, about 10% SD of regional volume); a real head is a healthy base scan (``realheads``).
Either way, a session's anatomy is the healthy one with the disease's and ageing's losses: each
region shrinks towards its centre (Jacobian < 1 inside it), the space it leaves becomes CSF, and
the ventricles widen (``session_anatomy``). A template session is then wrapped in CSF, skull and
scalp layers and acquired: a random pose, a random voxel size and orientation, a bias field,
noise and an intensity scale (``acquire``). The truth is written under ``derivatives/groundtruth``.
"""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .disease import ageing

# tissue layers outside the brain: (outer distance from the brain in mm, intensity)
LAYERS = ((3.0, 0.12), (8.0, 0.04), (13.0, 0.75))
CSF_INTENSITY = LAYERS[0][1]
PAD_MM = 20
DATASET_NAME = "bids_pscore synthetic heads"
GROUNDTRUTH = Path("derivatives") / "groundtruth"
N_LABELS = 247  # background and the 246 Brainnetome regions
WORK_MM = 1.0  # the grid of a head's anatomy, on which regions shrink: fine enough that small regions keep their shape
VENTRICLE_DEPTH_MM = 8.0  # ventricles lie this far inside the brain mask at least
VENTRICLE_MIN_ML = 1.0  # connected dark parts smaller than this are sulci or noise, not ventricles

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


@dataclass
class Head:
    """A subject's healthy head as the disease and ageing act on it: its anatomy on a WORK_MM grid,
    its ventricles, and the intensity of the CSF that fills what tissue leaves."""

    anatomy: Anatomy
    ventricles: np.ndarray
    csf_intensity: float


def find_ventricles(image, mask, labels):
    """The ventricles: dark, unlabelled brain voxels deep inside the brain mask, in large pieces.

    Dark: below halfway between the darkest deep brain voxels (1st percentile) and the labelled
    grey matter (median).
    """
    deep = ndimage.distance_transform_edt(mask) > VENTRICLE_DEPTH_MM / WORK_MM
    darkest = float(np.percentile(image[deep], 1))
    grey = float(np.median(image[labels > 0]))
    candidates = deep & (labels == 0) & (image < 0.5 * (darkest + grey))
    pieces, n = ndimage.label(candidates)
    sizes = np.bincount(pieces.ravel(), minlength=n + 1) * WORK_MM**3 / 1000.0
    sizes[0] = 0.0
    ventricles = np.isin(pieces, np.flatnonzero(sizes >= VENTRICLE_MIN_ML))
    if not ventricles.any():
        raise ValueError("no ventricles found: is this a T1w head?")
    return ventricles


def widen_ventricles(image, labels, ventricles, mask, growth, csf_intensity):
    """The ventricles grown by ``growth`` of their volume into the nearest brain voxels (darkest first)."""
    n_new = int(round(growth * ventricles.sum()))
    if n_new <= 0:
        return image, labels
    distance = ndimage.distance_transform_edt(~ventricles)
    candidates = np.flatnonzero((mask & ~ventricles).ravel())
    ranked = candidates[np.lexsort((image.ravel()[candidates], distance.ravel()[candidates]))][:n_new]
    image, labels = image.copy(), labels.copy()
    image.ravel()[ranked] = csf_intensity
    labels.ravel()[ranked] = 0
    return image, labels


def session_anatomy(head, base_age, age, disease):
    """One session's anatomy of a ``Head``: ``disease`` ({index: loss}) and ageing from ``base_age``
    (the age its healthy anatomy shows: the first session's) to ``age``.

    Returns (image, labels, target loss per label 0..246): the disease and ageing losses
    combined as 1 - (1 - disease)(1 - ageing); the ventricles' growth takes more from their
    neighbours, which the label maps count.
    """
    grey_loss, ventricle_growth = ageing(base_age, age)
    target = np.full(N_LABELS, grey_loss)
    target[0] = 0.0
    for index, loss in disease.items():
        target[index] = 1.0 - (1.0 - loss) * (1.0 - grey_loss)
    image, labels = atrophy(head.anatomy, {i: target[i] for i in range(1, N_LABELS)}, head.csf_intensity)
    image, labels = widen_ventricles(image, labels, head.ventricles, head.anatomy.mask, ventricle_growth, head.csf_intensity)
    return image, labels, target


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
