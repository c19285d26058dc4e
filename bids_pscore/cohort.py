"""Preprocessed grid images of a set of T1w, as training and the normative reference read them: each
T1w's image and brain mask checked against the grid (bids_pscore's, or CAT12's), and the
preprocessing parameters their sidecars record."""

import json

import numpy as np

from . import bids
from .errors import UsageError


def _on_grid(path):
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

    CAT12 images are masked by their non-zero voxels and put on [0, 1] as SPEC 2.7 and ``params`` say.
    """
    from .preprocess.steps import standardise

    for item in t1w_inputs:
        if cat12_prefix:
            image = _on_grid(_cat12_image(item, source_dir, cat12_prefix))
            mask = image > 0
            yield standardise(image, mask, params), mask
        else:
            paths = bids.session_outputs(item.entities, params.template, bids.PREPROCESSING)
            yield _on_grid(source_dir / paths["t1w_grid"]), _on_grid(source_dir / paths["mask_grid"]) > 0


def recorded_params(t1w_inputs, source_dir, template):
    """The preprocessing parameters that the participant level recorded in the sidecars of the
    images under ``source_dir``: the bundle must carry those the model was trained on."""
    from .model.preprocessing import PreprocParams

    found = {}
    for item in t1w_inputs:
        sidecar = source_dir / bids.sidecar_path(bids.output_path(item.entities, "t1w_grid", template))
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
