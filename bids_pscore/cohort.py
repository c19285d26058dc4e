"""Gated grid images of a set of T1w: the one path from T1w to the images a model sees, which the
participant level, training and the normative reference take alike. Preprocessing (a T1w that fails
is left out), the quality gate under the run's bounds (--qc-thresholds), the grid images read back
(bids_pscore's, or CAT12's) and the preprocessing parameters their sidecars record. Each T1w left
out is said in one wording, naming what it is left out of (scoring, training, the reference)."""

import json
import logging
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import numpy as np

from .derivatives import layout
from .errors import InputImageError, ModelError, UsageError, in_one_line
from .execution import preprocess

log = logging.getLogger(__name__)
DEMO_MODEL = Path(str(files("bids_pscore") / "data" / "demo_model"))

# a preprocessed image that cannot be used is copied anew from the work folder by a rerun
RESCORE_FIX = ("run the participant level again for this T1w (its preprocessed images are copied anew from the work folder; "
               "--clean-workdir makes them anew)")  # fmt: skip


def load_model(path=None, normative=True):
    """The model bundle at ``path``, or the demo model that ships with the package (``normative``:
    with its normative reference)."""
    from .model.bundle import BundleError, load_bundle

    try:
        return load_bundle(path or DEMO_MODEL, normative)
    except BundleError as exc:
        raise ModelError(f"{exc} (--model)") from None


def preprocessing_params(metadata, random_seed=None):
    """The model's preprocessing, with ``--random-seed`` (when given) as the registration seed."""
    from .model.preprocessing import PreprocParams

    params = PreprocParams.from_dict(metadata["preprocessing"])
    if random_seed is not None and random_seed != params.registration_seed:
        log.warning(
            "--random-seed %d registers differently from this model's training images (seed %d); leave it out to preprocess as they were",
            random_seed,
            params.registration_seed,
        )
        params = replace(params, registration_seed=random_seed)
    return params


def preprocessed_t1w(t1w_inputs, bids_dir, source_dir, work_dir, params, execution, log_dir, left_out_of):
    """``t1w_inputs`` preprocessed into ``source_dir`` as ``params`` say (``execution.preprocess``, its
    cache in ``work_dir``). Returns those that went through, in input order, and {label: Outcome} of
    the others, which are said left out of ``left_out_of``."""
    progress = preprocess(t1w_inputs, bids_dir, source_dir, work_dir, params, execution, log_dir)
    return went_through(t1w_inputs, progress, left_out_of)


def went_through(t1w_inputs, progress, left_out_of, later_steps=()):
    """The T1w of a workflow's ``progress`` whose preprocessing went through, in input order, and
    {label: Outcome} of the others, said left out of ``left_out_of``. A T1w that failed in one of
    ``later_steps`` (the nodes after its sink) went through its preprocessing."""
    failed = {o.label: o for o in progress.failed if not (o.status == "failed" and o.failed_step in later_steps)}
    if failed:
        log.warning("left out of %s %d T1w whose preprocessing failed: %s", left_out_of, len(failed), ", ".join(sorted(failed)))
    return [t for t in t1w_inputs if t.label not in failed], failed


def read_preprocessed(path, on_grid=True):
    """The data (float32) of one of a T1w's preprocessed images, checked to lie on the grid unless
    ``on_grid`` is False (the brain mask in the T1w's own space); a damaged file is an
    InputImageError naming it (at the participant level that T1w fails alone)."""
    import nibabel as nib

    from .grid import is_on_grid
    from .preprocess.steps import NIFTI_READ_ERRORS

    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, np.float32)
    except NIFTI_READ_ERRORS as exc:
        raise InputImageError(f"{path}: cannot be read ({in_one_line(exc)}); {RESCORE_FIX}") from None
    if on_grid and not is_on_grid(img.shape, img.affine):
        raise InputImageError(f"{path}: is not on the 121 x 145 x 121, 1.5 mm grid; {RESCORE_FIX}")
    return data


def grid_image(item, source_dir, template):
    """One T1w's preprocessed image and brain mask on the grid (float32, bool) in ``source_dir``: what
    the gate measures, the participant level scores and training and the reference learn from."""
    paths = layout.session_outputs(item.entities, template, layout.PREPROCESSING)
    return read_preprocessed(Path(source_dir) / paths["t1w_grid"]), read_preprocessed(Path(source_dir) / paths["mask_grid"]) > 0


def gate_record(item, source_dir, template, bounds):
    """The quality gate's record of one T1w (bids_pscore.qc) under ``bounds`` (the run's
    --qc-thresholds), measured on its preprocessed images in ``source_dir``; nothing is written."""
    import nibabel as nib

    from . import qc
    from .derivatives.sidecars import recorded_intensity_map
    from .preprocess.steps import template_on_grid, tissue_on_grid

    brain, mask = grid_image(item, source_dir, template)
    # the brain's own contrast, as it was before the standardisation (which gives every head the same)
    sidecar = Path(source_dir) / layout.sidecar_path(layout.output_path(item.entities, "t1w_grid", template))
    try:
        subtracted, divided_by = recorded_intensity_map(json.loads(sidecar.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputImageError(f"{sidecar}: cannot be read ({in_one_line(exc)}); {RESCORE_FIX}") from None
    brain = np.where(mask, brain * divided_by + subtracted, 0.0)
    native_path = Path(source_dir) / layout.output_path(item.entities, "mask_native", template)
    native = read_preprocessed(native_path, on_grid=False)
    voxel_ml = float(np.prod(nib.load(native_path).header.get_zooms()[:3])) / 1000
    volume_ml = np.count_nonzero(native) * voxel_ml
    reference, reference_mask = (np.asarray(i.dataobj) for i in template_on_grid(template))
    values = qc.measures(brain, mask, reference, reference_mask > 0, *tissue_on_grid(template), volume_ml)
    return qc.record(values, bounds)


def gate_failures(record):
    """Why the gate stopped a T1w, as every level says it: the measures outside their bounds, and the fix."""
    return "; ".join(record["Failures"]) + " (--qc-thresholds loosens the gate)"


def gated_out(item, record, left_out_of):
    """Whether the gate's ``record`` stops ``item``; if it does, the T1w is said left out of ``left_out_of``."""
    if record["Passed"]:
        return False
    log.warning("%s: left out of %s, it failed the quality gate: %s", item.label, left_out_of, gate_failures(record))
    return True


def passing_quality_gate(t1w_inputs, source_dir, template, bounds, left_out_of):
    """The T1w whose preprocessed images in ``source_dir`` pass the quality gate under ``bounds``, as
    the participant level would score them; each other is said left out of ``left_out_of``. Nothing
    is written: ``source_dir`` may be the user's."""
    return [item for item in t1w_inputs if not gated_out(item, gate_record(item, source_dir, template, bounds), left_out_of)]


def _cat12_on_grid(path):
    """A CAT12 image's data, checked against the grid: CAT12 is run by the user, hence the UsageError."""
    import nibabel as nib

    from .grid import is_on_grid

    try:
        img = nib.load(path)
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        raise UsageError(f"{path}: cannot be read as NIfTI ({exc}); preprocess that T1w again") from None
    if not is_on_grid(img.shape, img.affine):
        raise UsageError(f"{path}: is not on the 121 x 145 x 121, 1.5 mm grid; preprocess it with bids_pscore (or CAT12 with vox=1.5, bb=16)")
    return np.asarray(img.dataobj, np.float32)


def _cat12_image(item, source_dir, prefix):
    stem = item.path.name.split(".nii")[0]
    found = sorted(source_dir.rglob(f"{prefix}{stem}.nii*"))
    if len(found) != 1:
        raise UsageError(
            f"{source_dir}: {'no' if not found else len(found)} file(s) named {prefix}{stem}.nii[.gz] for {item.relpath}; check --cat12-prefix"
        )
    return found[0]


def load_grid_images(t1w_inputs, source_dir, params, cat12_prefix=None):
    """Each T1w's preprocessed image and brain mask on the grid, checked against the grid.

    CAT12 images are masked by their non-zero voxels and divided by ``params``' percentile (SPEC
    2.7): they are tissue maps (smwp1: grey matter), which hold no scanner contrast, and whose white
    matter is darker than their grey, so the T1w's tissue standardisation does not apply.
    """
    from .preprocess.steps import normalise

    for item in t1w_inputs:
        if cat12_prefix:
            image = _cat12_on_grid(_cat12_image(item, source_dir, cat12_prefix))
            mask = image > 0
            yield normalise(image, mask, params.norm_percentile), mask
        else:
            yield grid_image(item, source_dir, params.template)


def recorded_params(t1w_inputs, source_dir, template):
    """The preprocessing parameters that the participant level recorded in the sidecars of the
    images under ``source_dir``: the bundle must carry those the model was trained on."""
    from .model.preprocessing import PreprocParams

    found = {}
    for item in t1w_inputs:
        sidecar = source_dir / layout.sidecar_path(layout.output_path(item.entities, "t1w_grid", template))
        try:
            values = json.loads(sidecar.read_text())["PreprocessingParameters"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(
                f"{sidecar}: missing or without PreprocessingParameters, so how its image was made is unknown; "
                "preprocess it again with bids_pscore participant (or train without --preprocessed)"
            ) from None
        found.setdefault(json.dumps(values, sort_keys=True), sidecar)
    if len(found) > 1:
        first, second = list(found.values())[:2]
        raise UsageError(f"{first} and {second} were preprocessed with different parameters; a model needs images made alike: "
                         "preprocess them again with one bids_pscore version and seed")  # fmt: skip
    return PreprocParams.from_dict(json.loads(next(iter(found))))
