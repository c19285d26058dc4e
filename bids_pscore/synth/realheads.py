"""Cohorts on real heads: disease and ageing applied to healthy T1w heads in their own space.

Each base head is prepared once, by the app's own preprocessing steps: N4, deepbet and the
registration to the template. The Brainnetome atlas reaches the head through the inverse of that
registration, on a 1 mm grid over the head (the base's voxels, resampled), and its ventricles are
found as the dark, deep, unlabelled part of the brain (``synth.find_ventricles``). Each session
then shrinks regions by the disease model of ``disease`` and by ageing, fills what they leave
with the head's own CSF intensity, and widens the ventricles (``synth.session_anatomy``, as for
the template heads), and ``dataset`` writes the cohort. What is the real heads' own is how a
session's image is made: by default the base scan itself, its grid, header and stored voxels
changed only where tissue moved (``on_base_scan``), so that a healthy session at the base's age
is the real scan, and AD and healthy sessions differ by the disease alone. The generator's
scanner model (``acquire``: pose, grid, bias field, noise) is an option.
"""

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..bids import BIDS_VERSION, dataset_description
from ..errors import UsageError
from ..fileio import atomic_path
from . import DATASET_NAME, WORK_MM, Anatomy, Head, acquire, find_ventricles
from .dataset import SubjectJob, write_subjects
from .disease import choose_ad

log = logging.getLogger(__name__)

# scanner grids no finer than the base images they come from (2 mm for IXI)
BASE_VOXEL_SIZES = ((2.0, 2.0, 2.0), (1.8, 1.8, 1.8), (1.8, 1.8, 2.2), (2.0, 2.0, 1.6))
EXTRA_NOISE = 0.01  # on top of the base's own noise, relative to the brain's 99th percentile


def _work_grid(img):
    """Shape and affine of a WORK_MM grid with the image's axes over the image's field of view."""
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    shape = tuple(int(np.ceil(n * z / WORK_MM)) for n, z in zip(img.shape, zooms))
    affine = img.affine.copy()
    affine[:3, :3] = img.affine[:3, :3] / zooms * WORK_MM
    # the first fine voxel's centre sits half a voxel in from the coarse grid's first corner
    affine[:3, 3] = img.affine[:3, :3] @ np.full(3, -0.5) + affine[:3, :3] @ np.full(3, 0.5) + img.affine[:3, 3]
    return shape, affine


def _onto(data, affine, shape, target_affine, order):
    vox = np.linalg.inv(affine) @ target_affine
    return ndimage.affine_transform(np.asarray(data, np.float32), vox[:3, :3], vox[:3, 3], output_shape=shape,
                                    order=order, mode="nearest" if order > 1 else "constant")  # fmt: skip


def csf_intensity(image, ventricles):
    """The darkest tenth of the ventricles: their median is partial-volumed on 2 mm heads (0.39 of
    the brain's 99th percentile on IXI012, against 0.28 here and 0.73 for grey matter)."""
    return float(np.percentile(image[ventricles], 10))


def prepare_base(t1w_path, seed=None):
    """A base head on its 1 mm grid with its atlas labels, brain mask and ventricles. ``seed``: the
    registration's (default: the preprocessing's, PreprocParams.registration_seed; ANTs takes 0
    for a seed from the clock, which made every cohort's atlas placement differ run to run)."""
    import ants

    from ..atlas import source_image
    from ..model.preprocessing import PreprocParams
    from ..preprocess import steps

    params = PreprocParams()
    n4 = _n4(t1w_path)
    mask, _ = steps.brain_mask(n4, params.stripped_max_volume_ml, params.skullstrip_network_size)
    inside = np.asarray(mask.dataobj) > 0
    brain = steps.as_image(np.where(inside, n4.dataobj, 0.0), n4.affine)
    template = steps.template_on_grid(params.template)[0]
    coarse = steps.template_on_grid(params.template, params.registration_mm)[0]
    with tempfile.TemporaryDirectory() as tmp:
        iterations = (params.rigid_iterations, params.affine_iterations, params.syn_iterations)
        seed = params.registration_seed if seed is None else seed
        warp, linear = steps.register(brain, coarse, template, iterations, seed, f"{tmp}/base_")
        shape, affine = _work_grid(n4)
        fixed = ants.from_nibabel_nifti(steps.as_image(np.zeros(shape), affine))
        atlas = source_image()
        # template -> subject: the inverse of the linear part, then the inverse warp
        labels = ants.apply_transforms(
            fixed, ants.from_nibabel_nifti(steps.as_image(np.asarray(atlas.dataobj), atlas.affine)),
            [str(linear), str(warp.with_name(warp.name.replace("Warp", "InverseWarp")))], interpolator="nearestNeighbor",
            whichtoinvert=[True, False],
        ).numpy()  # fmt: skip
    brain_mask = _onto(inside, n4.affine, shape, affine, order=1) >= 0.5
    image = _head_image(n4, brain_mask, affine)
    labels = np.where(brain_mask, np.rint(labels), 0).astype(np.int16)
    ventricles = find_ventricles(image, brain_mask, labels)
    return Head(Anatomy(image, brain_mask, labels, affine), ventricles, csf_intensity(image, ventricles))


def _n4(t1w_path):
    """The T1w, bias-corrected with the app's default N4."""
    from ..model.preprocessing import PreprocParams
    from ..preprocess import steps

    params = PreprocParams()
    return steps.n4_correct(steps.load_t1w(t1w_path), params.n4_shrink_mm, params.n4_iterations, params.n4_mask_fraction)


def _head_image(n4, brain_mask, affine):
    """The bias-corrected head on the 1 mm grid of ``brain_mask``, its brain's 99th percentile at 1."""
    image = _onto(n4.dataobj, n4.affine, brain_mask.shape, affine, order=3)
    return np.clip(image / np.percentile(image[brain_mask], 99), 0.0, None).astype(np.float32)


PREPARED_ARRAYS = ("labels", "mask", "ventricles", "affine")


def save_prepared(path, base):
    """What ``prepare_base`` found on a head, without the image (which N4 remakes in seconds): atlas
    labels, brain mask and ventricles on the 1 mm grid, and its affine; about 0.3 MB compressed."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, labels=base.anatomy.labels, mask=base.anatomy.mask, ventricles=base.ventricles, affine=base.anatomy.affine)


def load_prepared(t1w_path, path):
    """A base head from its T1w and the preparation ``save_prepared`` kept (the demo heads ship theirs):
    N4 alone runs again, about 6 s rather than the 36 s of ``prepare_base``."""
    with np.load(path, allow_pickle=False) as saved:
        labels, mask, ventricles, affine = (saved[k] for k in PREPARED_ARRAYS)
    image = _head_image(_n4(t1w_path), mask, affine)
    return Head(Anatomy(image, mask, labels, affine), ventricles, csf_intensity(image, ventricles))


def cached_base(t1w_path, cache_dir, seed=None):
    """``prepare_base``, kept in ``cache_dir`` under a hash of the image, the seed and the code that
    prepares it (a re-scan or a second cohort reuses it; a new commit that leaves that code alone too)."""
    from ..preprocess.workflow import code_fingerprint

    code = code_fingerprint((__file__, Path(__file__).with_name("__init__.py"))).encode()
    digest = hashlib.sha256(Path(t1w_path).read_bytes() + f"{seed} ".encode() + code).hexdigest()[:16]
    path = Path(cache_dir) / f"base-{digest}.npz" if cache_dir else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            anatomy = Anatomy(saved["image"], saved["mask"], saved["labels"], saved["affine"])
            return Head(anatomy, saved["ventricles"], csf_intensity(saved["image"], saved["ventricles"]))
    base = prepare_base(t1w_path, seed)
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, image=base.anatomy.image, mask=base.anatomy.mask, labels=base.anatomy.labels,
                                    affine=base.anatomy.affine, ventricles=base.ventricles)  # fmt: skip
    return base


@dataclass(frozen=True)
class BaseScan:
    """How a real head is made and scanned (``dataset.SubjectJob.head``): prepared from its base T1w
    (``prepare_base``, or what ``save_prepared`` kept), and each session on the base scan itself
    (``on_base_scan``) or, with ``simulate_scanner``, scanned anew (``acquire``)."""

    t1w_path: str
    cache_dir: str | None = None  # where prepare_base's result is kept
    prepared: str | None = None  # a preparation save_prepared wrote (the demo heads ship theirs)
    simulate_scanner: bool = False  # scan each session anew (acquire) rather than keep the base scan's grid and voxels
    origin = " (the base subject's)"  # whose the subject's age and sex are, for participants.json

    def prepare(self, rng):
        """The base head; ``rng`` (the subject's stream) is left alone: the anatomy is the base's."""
        return load_prepared(self.t1w_path, self.prepared) if self.prepared else cached_base(self.t1w_path, self.cache_dir)

    def scan(self, head, image, labels, rng):
        if self.simulate_scanner:
            return acquire(image, labels, head.anatomy.mask, head.anatomy.affine, rng, noise=EXTRA_NOISE, voxel_sizes=BASE_VOXEL_SIZES)
        return on_base_scan(nib.load(self.t1w_path), head, image, labels)


def on_base_scan(scan, base, image, labels):
    """A session as the base ``scan`` itself: the T1w on its grid with its header and stored voxels,
    changed only in the voxels that moved tissue (``image`` against the base's 1 mm image) reaches,
    by the ratio of the two 1 mm images averaged onto them, so that the scan's own bias field and
    noise stay; and the brain mask and labels on that grid. Returns (T1w, mask, labels) images."""
    fine, shape = base.anatomy, scan.shape[:3]

    def onto_scan(data, order):
        return _onto(data, fine.affine, shape, scan.affine, order)

    stored = np.asanyarray(scan.dataobj.get_unscaled()).reshape(shape)
    moved = onto_scan(image != fine.image, 1) > 0
    if moved.any():
        ratio = onto_scan(image, 1)[moved] / np.maximum(onto_scan(fine.image, 1)[moved], 1e-3)
        changed = stored[moved] * ratio
        if np.issubdtype(stored.dtype, np.integer):
            changed = np.clip(np.rint(changed), np.iinfo(stored.dtype).min, np.iinfo(stored.dtype).max)
        stored = stored.copy()
        stored[moved] = changed.astype(stored.dtype)
    t1w = nib.Nifti1Image(stored, scan.affine, scan.header)
    t1w.header.set_slope_inter(scan.dataobj.slope, scan.dataobj.inter)  # the scan's own scaling, so its stored voxels mean what they did
    mask = nib.Nifti1Image((onto_scan(fine.mask, 1) >= 0.5).astype(np.uint8), scan.affine)
    dseg = nib.Nifti1Image(onto_scan(labels, 0).astype(np.int16), scan.affine)
    for img in (mask, dseg):
        img.header.set_xyzt_units("mm")
        img.set_qform(img.affine, 1)
        img.set_sform(img.affine, 1)
    return t1w, mask, dseg


def base_subjects(base_dir, participant_labels=None):
    """(label, first T1w, age, sex) of each subject of a BIDS dataset of healthy heads."""
    from ..bids import find_t1w, load_layout

    t1w = find_t1w(load_layout(base_dir, validate=False), participant_labels)
    table = Path(base_dir) / "participants.tsv"
    participants = pd.read_csv(table, sep="\t", na_values="n/a").set_index("participant_id") if table.is_file() else pd.DataFrame()
    if "age" not in participants:
        raise UsageError(f"{table}: has no 'age' column; ageing and the AD odds need each base subject's age: add it")
    first = {}
    for t in t1w:
        first.setdefault(t.entities["sub"], t.path)
    rows = []
    for label, path in sorted(first.items()):
        row = participants.loc[f"sub-{label}"] if f"sub-{label}" in participants.index else {}
        age = float(row.get("age", np.nan))
        if np.isfinite(age):
            rows.append((label, path, age, row.get("sex", "n/a")))
        else:
            log.warning("sub-%s left out: %s gives no age", label, table)
    if not rows:
        raise UsageError(f"{table}: no selected subject has an age; ageing and the AD odds need it: add it")
    return rows


def write_cohort(out_dir, base_dir, n_sessions=1, seed=0, acquisition_seed=None, ad_fraction=0.5,
                 participant_labels=None, cache_dir=None, n_procs=1, simulate_scanner=False):  # fmt: skip
    """A BIDS dataset with one subject per base subject, AD or CN, and its ground truth.

    Anatomy, age and sex are the base subject's; group, subtype and disease course come from
    ``seed``. Each session keeps the base scan's grid and voxels where no tissue moved; with
    ``simulate_scanner``, it is scanned anew, pose, voxel grid, bias field and noise coming from
    ``acquisition_seed`` (default: ``seed``), so two cohorts that differ only in the latter are a
    test-retest pair.
    """
    out_dir, base_dir = Path(out_dir), Path(base_dir)
    acquisition_seed = seed if acquisition_seed is None else acquisition_seed
    subjects = base_subjects(base_dir, participant_labels)
    ages = np.array([age for _, _, age, _ in subjects])
    ad = set(choose_ad(ages, int(round(len(subjects) * ad_fraction)), np.random.default_rng([seed, 0])).tolist())
    base_description = dataset_description(base_dir)
    scans = f"scanner simulated, acquisition seed {acquisition_seed}" if simulate_scanner else "on the base scans' own grids and voxels"
    base_name = base_description.get("Name", base_dir.name)
    description = {
        "Name": f"{DATASET_NAME}: simulated atrophy on {base_name}",
        "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
        "License": base_description.get("License", "see the base dataset"),
        "HowToAcknowledge": base_description.get("HowToAcknowledge", ""),
        "GeneratedBy": [{"Name": "bids_pscore-synth",
                         "Description": f"simulated atrophy on real heads; seed {seed}, {scans}"}],
        "SourceDatasets": [{"URL": base_dir.resolve().as_uri(), "Name": base_name}],
    }  # fmt: skip
    readme = (f"Real healthy T1w heads from {base_name} with simulated AD-like atrophy and ageing made by bids_pscore-synth; "
              "the truth is in derivatives/groundtruth. The atrophy is not real.\n")  # fmt: skip
    jobs = [SubjectJob(str(out_dir), label, BaseScan(str(path), str(cache_dir) if cache_dir else None, simulate_scanner=simulate_scanner),
                       age, sex, i in ad, n_sessions, seed, acquisition_seed)
            for i, (label, path, age, sex) in enumerate(subjects)]  # fmt: skip
    return write_subjects(out_dir, description, readme, jobs, n_procs)
