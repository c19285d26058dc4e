"""Cohorts on real heads: disease and ageing applied to healthy T1w heads in their own space.

Each base head is prepared once, by the app's own preprocessing steps: N4, deepbet and the
registration to the template. The Brainnetome atlas reaches the head through the inverse of that
registration, on a 1 mm grid over the head (the base's voxels, resampled), and its ventricles are
found as the dark, deep, unlabelled part of the brain. Each session then shrinks regions by the
disease model of ``disease`` and by ageing, fills what they leave with the head's own CSF
intensity, and widens the ventricles. By default the session is the base scan itself: its grid,
header and stored voxels, changed only where tissue moved (``on_base_scan``), so that a healthy
session at the base's age is the real scan, and AD and healthy sessions differ by the disease
alone. The generator's scanner model (``acquire``: pose, grid, bias field, noise) is an option.
"""

import hashlib
import logging
import tempfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..bids import BIDS_VERSION, dataset_description
from ..errors import UsageError
from ..fileio import atomic_path, write_json, write_nifti, write_text, write_tsv
from . import DATASET_NAME, GROUNDTRUTH, N_LABELS, Anatomy, acquire, atrophy
from .disease import SUBTYPES, ageing, choose_ad, disease_losses, draw_course, subtype_order

log = logging.getLogger(__name__)

WORK_MM = 1.0  # the grid on which regions shrink: finer than the base's voxels, so small regions keep their shape
# scanner grids no finer than the base images they come from (2 mm for IXI)
BASE_VOXEL_SIZES = ((2.0, 2.0, 2.0), (1.8, 1.8, 1.8), (1.8, 1.8, 2.2), (2.0, 2.0, 1.6))
EXTRA_NOISE = 0.01  # on top of the base's own noise, relative to the brain's 99th percentile
VENTRICLE_DEPTH_MM = 8.0  # ventricles lie this far inside the brain mask at least
VENTRICLE_MIN_ML = 1.0  # connected dark parts smaller than this are sulci or noise, not ventricles


@dataclass
class BaseHead:
    """A healthy head prepared for the generator, on a 1 mm grid in its own space."""

    anatomy: Anatomy  # image: the bias-corrected head, its brain's 99th percentile at 1
    ventricles: np.ndarray
    csf_intensity: float


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
    from ..preprocess import steps
    from ..preprocess.params import PreprocParams

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
    return BaseHead(Anatomy(image, brain_mask, labels, affine), ventricles, csf_intensity(image, ventricles))


def _n4(t1w_path):
    """The T1w, bias-corrected with the app's default N4."""
    from ..preprocess import steps
    from ..preprocess.params import PreprocParams

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
    return BaseHead(Anatomy(image, mask, labels, affine), ventricles, csf_intensity(image, ventricles))


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
            return BaseHead(anatomy, saved["ventricles"], csf_intensity(saved["image"], saved["ventricles"]))
    base = prepare_base(t1w_path, seed)
    if path is not None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, image=base.anatomy.image, mask=base.anatomy.mask, labels=base.anatomy.labels,
                                    affine=base.anatomy.affine, ventricles=base.ventricles)  # fmt: skip
    return base


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


def session_anatomy(base, base_age, age, disease):
    """One session's brain: ``disease`` ({index: loss}) and ageing from ``base_age`` to ``age`` on the base head.

    Returns (image, labels, target loss per label 0..246): the disease and ageing losses
    combined as 1 - (1 - disease)(1 - ageing); the ventricles' growth takes more from their
    neighbours, which the label maps count.
    """
    grey_loss, ventricle_growth = ageing(base_age, age)
    target = np.full(N_LABELS, grey_loss)
    target[0] = 0.0
    for index, loss in disease.items():
        target[index] = 1.0 - (1.0 - loss) * (1.0 - grey_loss)
    image, labels = atrophy(base.anatomy, {i: target[i] for i in range(1, N_LABELS)}, base.csf_intensity)
    image, labels = widen_ventricles(image, labels, base.ventricles, base.anatomy.mask, ventricle_growth, base.csf_intensity)
    return image, labels, target


@dataclass(frozen=True)
class SubjectJob:
    """One cohort subject to make: its base head, who it is, and what its course may not draw."""

    out_dir: str
    label: str  # the cohort's subject label; with the seed, it seeds the subject's course and scans
    t1w_path: str
    age: float
    sex: str
    is_ad: bool
    n_sessions: int
    seed: int
    acquisition_seed: int | None = None  # with simulate_scanner: the scans' pose, grid, bias field and noise
    cache_dir: str | None = None  # where prepare_base's result is kept
    prepared: str | None = None  # a preparation save_prepared wrote (the demo heads ship theirs)
    course: dict | None = None  # subtype, stage0 and rate that replace the drawn ones (draw_course)
    simulate_scanner: bool = False  # scan each session anew (acquire) rather than keep the base scan's grid and voxels


def _subject(job):
    """Prepare one base head and write its sessions; returns its rows for the cohort's tables."""
    from ..atlas import region_table

    out_dir, label, age, is_ad, n_sessions, acquisition_seed = job.out_dir, job.label, job.age, job.is_ad, job.n_sessions, job.acquisition_seed
    subject = np.random.default_rng([job.seed, zlib.crc32(label.encode())])
    base = load_prepared(job.t1w_path, job.prepared) if job.prepared else cached_base(job.t1w_path, job.cache_dir)
    healthy = np.bincount(base.anatomy.labels.ravel(), minlength=N_LABELS)
    subtype, stage0, rate, jitter = draw_course(subject, **(job.course or {})) if is_ad else ("none", None, 0.0, None)
    order = subtype_order(subtype) if is_ad else None
    visit = datetime(2015, 1, 1, 8, 0) + timedelta(days=int(subject.integers(0, 5 * 365)), minutes=int(subject.integers(0, 600)))
    names = region_table().set_index("index")["label"]
    sub, years, sessions, truth_sessions, truth_regions = f"sub-{label}", 0.0, [], [], []
    for k in range(1, n_sessions + 1):
        ses = f"ses-{k}"
        stage = None if stage0 is None else stage0 + rate * years
        disease = dict(zip(order["index"], disease_losses(stage, order, jitter))) if is_ad else {}
        image, labels, target = session_anatomy(base, age, age + years, disease)
        realised = 1.0 - np.bincount(labels.ravel(), minlength=N_LABELS) / np.maximum(healthy, 1)
        if job.simulate_scanner:
            t1w, mask, dseg = acquire(image, labels, base.anatomy.mask, base.anatomy.affine,
                                      np.random.default_rng([acquisition_seed, zlib.crc32(label.encode()), k]),
                                      noise=EXTRA_NOISE, voxel_sizes=BASE_VOXEL_SIZES)  # fmt: skip
        else:
            t1w, mask, dseg = on_base_scan(nib.load(job.t1w_path), base, image, labels)
        stem = f"{sub}_{ses}"
        write_nifti(Path(out_dir) / sub / ses / "anat" / f"{stem}_T1w.nii.gz", t1w)
        truth_dir = Path(out_dir) / GROUNDTRUTH / sub / ses / "anat"
        write_nifti(truth_dir / f"{stem}_desc-brain_mask.nii.gz", mask)
        write_nifti(truth_dir / f"{stem}_atlas-Brainnetome_dseg.nii.gz", dseg)
        sessions.append({"session_id": ses, "acq_time": visit.strftime("%Y-%m-%dT%H:%M:%S"), "age": round(age + years, 2)})
        truth_sessions.append({"participant_id": sub, "session_id": ses, "group": "AD" if is_ad else "CN", "subtype": subtype,
                               "age": round(age + years, 2), "years_from_first": round(years, 3), "disease_stage": stage})  # fmt: skip
        for index in range(1, N_LABELS):
            truth_regions.append({"participant_id": sub, "session_id": ses, "index": index, "label": names[index],
                                  "healthy_volume_mm3": int(healthy[index] * WORK_MM**3),
                                  "disease_loss": disease.get(index, 0.0), "target_loss": target[index],
                                  "volume_loss": realised[index]})  # fmt: skip
        gap = subject.uniform(0.8, 1.3)
        visit += timedelta(days=int(gap * 365.25))
        years += gap
    write_tsv(Path(out_dir) / sub / f"{sub}_sessions.tsv", pd.DataFrame(sessions), "%.6g")
    return truth_sessions, truth_regions


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
    jobs = [SubjectJob(str(out_dir), label, str(path), age, sex, i in ad, n_sessions, seed, acquisition_seed, str(cache_dir) if cache_dir else None,
                       simulate_scanner=simulate_scanner)
            for i, (label, path, age, sex) in enumerate(subjects)]  # fmt: skip
    return write_subjects(out_dir, description, readme, jobs, n_procs)


def write_subjects(out_dir, description, readme, jobs, n_procs=1):
    """A BIDS dataset of the ``jobs``' subjects (``SubjectJob``) with its ground truth in derivatives/groundtruth."""
    out_dir = Path(out_dir)
    write_json(out_dir / "dataset_description.json", description)
    write_text(out_dir / "README", readme)
    if n_procs > 1:
        # spawn: deepbet's torch and ANTs' threads do not survive a fork
        with ProcessPoolExecutor(n_procs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_subject, jobs))
    else:
        results = [_subject(job) for job in jobs]
    participants = [{"participant_id": f"sub-{job.label}", "group": "AD" if job.is_ad else "CN", "age": job.age, "sex": job.sex}
                    for job in jobs]  # fmt: skip
    write_tsv(out_dir / "participants.tsv", pd.DataFrame(participants), "%.6g")
    write_json(out_dir / "participants.json", {
        "group": {"Description": "diagnosis", "Levels": {"AD": "simulated atrophy", "CN": "no simulated atrophy"}},
        "age": {"Description": "age at the first session (the base subject's)", "Units": "year"},
        "sex": {"Description": "sex (the base subject's)"},
    })  # fmt: skip
    truth_root = out_dir / GROUNDTRUTH
    write_json(truth_root / "dataset_description.json", {
        "Name": "ground truth of the simulated atrophy", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_pscore-synth"}],
    })  # fmt: skip
    write_tsv(truth_root / "sessions.tsv", pd.DataFrame([row for rows, _ in results for row in rows]), "%.6g")
    write_tsv(truth_root / "regions.tsv", pd.DataFrame([row for _, rows in results for row in rows]), "%.6g")
    write_tsv(truth_root / "atrophy_order.tsv", pd.concat([subtype_order(s) for s in SUBTYPES], ignore_index=True), "%.6g")
    return out_dir
