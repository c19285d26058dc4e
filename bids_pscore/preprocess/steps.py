"""The preprocessing steps of SPEC section 2 as plain functions on nibabel images.

The nipype interfaces in ``interfaces.py`` wrap these one to one; tests and benchmarks call
them directly. Images are nibabel images in RAS+ orientation with float32 data.
"""

import functools
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..config import SKULL_STRIP_MODES
from ..errors import InputImageError
from ..grid import GRID_AFFINE, GRID_VOXEL_MM, grid_at
from ..model.preprocessing import PreprocParams

MIN_VOXEL_MM = 0.3
MAX_VOXEL_MM = 3.0
MAX_SHEAR_DEG = 0.5
FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def as_image(data, affine, dtype=np.float32):
    """A NIfTI image in mm with the given data type."""
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


# what reading a truncated or corrupt NIfTI raises (nibabel, gzip, zlib)
NIFTI_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)


def load_t1w(path):
    """Read one T1w, check that it is usable, and return it in RAS+ as float32.

    Raises InputImageError with a one-line message naming the file and the fix.
    """
    path = str(path)
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except (*NIFTI_READ_ERRORS, np.linalg.LinAlgError) as exc:
        raise InputImageError(
            f"{path}: cannot be read as NIfTI ({type(exc).__name__}: {exc}); the file is truncated "
            "or corrupt: convert it again from DICOM or download it again"
        ) from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 4:
        raise InputImageError(
            f"{path}: is 4-D with {data.shape[3]} volumes; a T1w must be one 3-D volume: "
            "split it and keep one volume (or average the repetitions) before running"
        )
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputImageError(f"{path}: has shape {data.shape}, not a 3-D volume; pass the full 3-D T1w, not a single slice")
    header = img.header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        raise InputImageError(
            f"{path}: has no orientation (qform_code and sform_code are both 0); "
            "convert it again from DICOM (e.g. dcm2niix) so that the header holds the scanner affine"
        )
    affine = img.affine
    linear = affine[:3, :3]
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(linear)) < 1e-6:
        raise InputImageError(f"{path}: has a singular or non-finite affine; fix the header's qform/sform (convert it again from DICOM)")
    voxel_mm = np.sqrt((linear**2).sum(axis=0))
    if voxel_mm.min() < MIN_VOXEL_MM or voxel_mm.max() > MAX_VOXEL_MM:
        raise InputImageError(
            f"{path}: voxel size {np.round(voxel_mm, 3).tolist()} mm is outside [{MIN_VOXEL_MM}, "
            f"{MAX_VOXEL_MM}] mm; check the header's pixdim or resample the image to about 1 mm"
        )
    directions = linear / voxel_mm
    shear_deg = np.degrees(np.arcsin(np.clip(np.abs(directions.T @ directions - np.eye(3)).max(), 0, 1)))
    if shear_deg > MAX_SHEAR_DEG:
        # ITK (and so ANTs) keeps voxel axes at right angles: it would fail or silently drop the shear
        raise InputImageError(
            f"{path}: its affine shears the voxel axes by {shear_deg:.1f} degrees, which ANTs cannot represent; "
            "resample it onto a grid with perpendicular axes (e.g. nibabel.processing.resample_to_output, or "
            "FreeSurfer's mri_convert --reslice_like) and run again"
        )
    if shear_deg > 0:  # rounding in the header: the nearest perpendicular axes, as ANTs needs them exactly
        u, _, vt = np.linalg.svd(directions)
        affine = affine.copy()
        affine[:3, :3] = (u @ vt) * voxel_mm
    values = np.asarray(data, dtype=np.float32)
    n_bad = int(values.size - np.count_nonzero(np.isfinite(values)))
    if n_bad:
        raise InputImageError(f"{path}: has {n_bad} NaN or Inf voxels; replace them (e.g. with 0) before running")
    if not np.any(values):
        raise InputImageError(f"{path}: every voxel is 0; this is not a T1w image, check the file")
    if values.min() == values.max():
        raise InputImageError(f"{path}: every voxel has the same value; this is not a T1w image, check the file")
    ras = nib.as_closest_canonical(nib.Nifti1Image(values, affine))
    return as_image(ras.dataobj, ras.affine)


def on_source_grid(ras_img, source_path, dtype=np.uint8):
    """An image of ``load_t1w``'s RAS+ grid put back on the voxel grid of the file it was read
    from: same shape, affine and orientation, so that it can multiply the source voxel by voxel.

    ``load_t1w`` only flips and permutes axes, so this is exact (no resampling). The header
    says scanner space (qform and sform code 1), as niworkflows writes native-space outputs.
    """
    source = nib.load(str(source_path))
    to_source = nib.orientations.ornt_transform(nib.orientations.io_orientation(ras_img.affine), nib.orientations.io_orientation(source.affine))
    data = nib.orientations.apply_orientation(np.asarray(ras_img.dataobj), to_source)
    if data.shape != source.shape[:3]:
        raise ValueError(f"{source_path}: the image on its grid has shape {data.shape}, the source {source.shape[:3]}")
    img = as_image(data, source.affine, dtype)
    img.set_qform(source.affine, 1)
    img.set_sform(source.affine, 1)
    return img


def _to_ants(img):
    import ants

    return ants.from_nibabel_nifti(as_image(img.dataobj, img.affine))


def voxel_sizes(img):
    return np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))


def n4_correct(img, shrink_mm, iterations, mask_fraction):
    """N4 bias-field correction (ANTs) on a grid coarsened to about ``shrink_mm``.

    The field is fitted on the head (voxels above ``mask_fraction`` of the way from the 1st to the
    99th intensity percentile) and applied to everything but the darkest background.
    """
    import ants

    data = np.asarray(img.dataobj, dtype=np.float32)
    # N4 works in log space: shift so that the image is positive, and skip the background
    floor, top = (float(v) for v in np.percentile(data, [1, 99]))
    foreground = data > floor
    head = data > floor + mask_fraction * (top - floor)
    shifted = np.where(foreground, data - floor + 1.0, 0.0)
    shrink = max(1, int(round(shrink_mm / float(voxel_sizes(img).min()))))
    corrected = ants.n4_bias_field_correction(
        _to_ants(as_image(shifted, img.affine)),
        mask=_to_ants(as_image(head, img.affine)),
        shrink_factor=shrink,
        convergence={"iters": [int(i) for i in iterations], "tol": 1e-7},
    )
    return as_image(np.where(foreground, corrected.numpy(), 0.0), img.affine)


def nonzero_region(data):
    """The largest connected non-zero region of a volume, with its holes filled."""
    labels, n = ndimage.label(data > 0)
    if n == 0:
        return np.zeros(data.shape, bool)
    largest = np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return ndimage.binary_fill_holes(labels == largest)


def brain_mask(img, stripped_max_volume_ml, network_size, n_threads=1, mode=SKULL_STRIP_MODES[0]):
    """Brain mask in the image's space: deepbet, or the input itself if already skull-stripped.

    deepbet resamples the head's bounding box to ``network_size`` voxels a side for its network
    (256 in deepbet's own ``run``): 192 took half the time at a Dice of 0.986-0.993 with 256's
    mask on six real and generated heads, and 0.937 (256: 0.935) with Colin27's reference brain.

    Returns (mask image, input_was_skull_stripped). ``mode`` (``config.SKULL_STRIP_MODES``): "force"
    runs deepbet on every input, also one already skull-stripped, since another tool's mask moves
    the score (Colin27's BET brain: AD probability 0.39 with its own mask, 0.26 stripped again,
    0.25 for the head); "auto" recognises a skull-stripped input by its non-zero region being
    brain-sized and takes that region as the mask; "skip" takes every input's non-zero region.
    """
    data = np.asarray(img.dataobj, dtype=np.float32)
    if mode != "force":
        region = nonzero_region(data)
        region_ml = region.sum() * float(np.prod(voxel_sizes(img))) / 1000.0
        if mode == "skip" or region_ml < stripped_max_volume_ml:
            return as_image(region, img.affine), True
    import torch
    from deepbet import BrainExtraction

    torch.set_num_threads(n_threads)
    # deepbet's weights ship inside its wheel: nothing is downloaded. Its run() without the file
    # handling, to choose the network's input size; the image is already in RAS+, as run() wants it
    extractor = BrainExtraction(no_gpu=True)
    try:
        probability = extractor.run_model(data.copy(), shape=(int(network_size),) * 3)
        mask = extractor.postprocess(probability > 0.5)
    except ValueError as exc:  # deepbet keeps the largest part of what it found: where it found none, numpy's bare "argmax of an empty sequence"
        if "empty sequence" not in str(exc):
            raise
        raise InputImageError("skull stripping (deepbet) found no brain in the image: it is not a T1w of a head; if it is a brain that was "
                              "already skull-stripped, run with --skull-strip-t1w auto") from None  # fmt: skip
    return as_image(mask, img.affine), False


# the template's maps: the T1w image (the registration's target), its brain mask, and its grey
# and white matter probabilities (the quality gate's), each with the interpolation that makes it
TEMPLATE_MAPS = {"T1w": "continuous", "mask": "nearest", "GM": "continuous", "WM": "continuous"}
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "data" / "templates"
# what data/templates ships: every map on the grid, and the T1w and mask on the linear stages' grid
SHIPPED_TEMPLATE_MAPS = ((GRID_VOXEL_MM, tuple(TEMPLATE_MAPS)), (PreprocParams().registration_mm, ("T1w", "mask")))


def shipped_map_path(template_name, voxel_mm, name):
    """Where the package ships a template map on the grid at ``voxel_mm`` (data/templates/recipe.py)."""
    return TEMPLATES_DIR / f"{template_name}_res-{voxel_mm:g}mm_{name}.npy.xz"


def resample_template_map(template_name, voxel_mm, name):
    """One template map (TEMPLATE_MAPS) resampled from nilearn's 1 mm MNI152 2009a onto the grid at
    ``voxel_mm``, as float32: the T1w clipped at 0, the mask 0 or 1."""
    from nilearn import datasets
    from nilearn.image import resample_img

    if template_name != "MNI152NLin2009aSym":
        raise ValueError(f"template {template_name!r} is not shipped; use MNI152NLin2009aSym")
    load = {"T1w": datasets.load_mni152_template, "mask": datasets.load_mni152_brain_mask,
            "GM": datasets.load_mni152_gm_template, "WM": datasets.load_mni152_wm_template}[name]  # fmt: skip
    shape, affine = grid_at(voxel_mm)
    data = resample_img(load(resolution=1), target_affine=affine, target_shape=shape, interpolation=TEMPLATE_MAPS[name],
                        force_resample=True, copy_header=True).get_fdata()  # fmt: skip
    if name == "T1w":
        data = np.clip(data, 0, None)
    elif name == "mask":
        data = data > 0
    return np.asarray(data, np.float32)


@functools.lru_cache(maxsize=12)
def template_map(template_name, voxel_mm, name):
    """One template map on the grid at ``voxel_mm`` (a read-only float32 array).

    The grid's maps and the linear stages' 2 mm copy of the T1w ship with the package: the same bytes
    as ``resample_template_map`` (a test checks), read in a tenth of the time that resampling takes
    (about 4 s a run), and kept as the demo model was trained with should nilearn change its files or
    its resampling. Other spacings are resampled, once per process, and so is every map by a Python
    built without its optional lzma module (pyenv without liblzma): the same bytes, 4 s slower.
    """
    try:
        import lzma
    except ImportError:
        lzma = None
    path = shipped_map_path(template_name, voxel_mm, name)
    if lzma is not None and path.is_file():
        with lzma.open(path) as stream:
            # in the Fortran order that resampling makes, so that sums over it run in the same order
            data = np.asfortranarray(np.load(stream))
    else:
        data = resample_template_map(template_name, voxel_mm, name)
    data.flags.writeable = False
    return data


def template_on_grid(template_name, voxel_mm=GRID_VOXEL_MM):
    """The registration template and its brain mask as images on the grid (or a copy at voxel_mm)."""
    _, affine = grid_at(voxel_mm)
    return tuple(as_image(template_map(template_name, float(voxel_mm), name), affine) for name in ("T1w", "mask"))


def tissue_on_grid(template_name, voxel_mm=GRID_VOXEL_MM):
    """The template's grey and white matter probabilities on the grid (read-only arrays)."""
    return tuple(template_map(template_name, float(voxel_mm), name) for name in ("GM", "WM"))


def write_template_files(folder, template_name, registration_mm):
    """The template on the grid and on the linear stages' coarser grid, as files in ``folder``:
    {"template": path, "coarse_template": path}.

    Written once per work folder, outside the workflow, and each by a rename, so that jobs
    sharing a work folder never see a half-written file nor run one shared node side by side;
    an existing file is left as it is, which keeps every cached step that read it valid.
    """
    from ..fileio import write_nifti

    folder = Path(folder) / f"{template_name}_grid"
    paths = {"template": folder / "template_grid.nii.gz", "coarse_template": folder / f"template_grid_{registration_mm:g}mm.nii.gz"}
    for key, voxel_mm in (("template", GRID_VOXEL_MM), ("coarse_template", registration_mm)):
        if not paths[key].is_file():
            write_nifti(paths[key], template_on_grid(template_name, voxel_mm)[0])
    return {key: str(path) for key, path in paths.items()}


def _levels(iterations):
    """ANTs' per-level options for a stage: iterations, shrink factors 2^(n-1)..1 and smoothing
    sigmas (voxels) n-1..0 over the n listed levels, without the trailing levels of 0 iterations,
    which would only evaluate the metric once more on a finer grid (about 0.3 s per linear stage
    and 2 s for SyN on the 1.5 mm grid) and leave the transform as it is."""
    n = len(iterations)
    kept = n
    while kept > 1 and int(iterations[kept - 1]) == 0:
        kept -= 1
    join = "x".join
    return (join(str(int(i)) for i in iterations[:kept]), join(str(2 ** (n - 1 - k)) for k in range(kept)),
            join(str(n - 1 - k) for k in range(kept)))  # fmt: skip


def register(brain, coarse_template, template, iterations, seed, out_prefix):
    """Rigid, affine, then SyN registration of a skull-stripped brain to the template, in one
    antsRegistration call.

    The linear stages run against ``coarse_template`` (the grid at 2 mm), SyN against
    ``template`` on the grid, and the brain is first resampled to the grid's 1.5 mm: on a
    1 mm head this halved the time at the same template correlation (0.881 either way).
    ``iterations`` holds the (rigid, affine, syn) iterations per level, coarsest first (shrink
    factors 2^(n-1)..1). One call rather than one per stage spares two image conversions and the
    warped images ANTsPy makes after each (1-2 s). Mattes mutual information throughout (32
    bins; the linear stages on a regular 20% sample). Returns the forward transforms in the
    order antsApplyTransforms takes them: (warp field, affine), ANTs folding the linear stages
    into the affine. ITK must run single-threaded for the result to depend on the seed alone
    (ANTs sums its metric over threads in a varying order: two runs on two threads differed by
    up to 0.7 mm).
    """
    import ants
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    moving = ants.resample_image(_to_ants(brain), (GRID_VOXEL_MM,) * 3, use_voxels=False, interp_type=0)
    coarse, fixed = _to_ants(coarse_template), _to_ants(template)
    # ANTs reads the images from these pointers: the Python objects must live until the call returns
    moving_ref, coarse_ref, fixed_ref = (get_pointer_string(image) for image in (moving, coarse, fixed))
    args = ["--dimensionality", "3", "--float", "1", "--collapse-output-transforms", "1", "--random-seed", str(int(seed)),
            "--output", f"[{out_prefix}]", "--write-composite-transform", "0", "--use-histogram-matching", "0",
            "--initial-moving-transform", f"[{coarse_ref},{moving_ref},1]"]  # fmt: skip
    # (transform, fixed image, metric sampling, convergence threshold and window): ANTsPy's values for each stage
    stages = (("Rigid[0.25]", coarse_ref, ",Regular,0.2", "1e-6,10"), ("Affine[0.25]", coarse_ref, ",Regular,0.2", "1e-6,10"),
              ("SyN[0.2,3,0]", fixed_ref, "", "1e-7,8"))  # fmt: skip
    for (transform, fixed_image, sampling, threshold), stage_iterations in zip(stages, iterations):
        its, shrink, sigmas = _levels(stage_iterations)
        args += ["--transform", transform, "--metric", f"MI[{fixed_image},{moving_ref},1,32{sampling}]",
                 "--convergence", f"[{its},{threshold}]", "--shrink-factors", shrink, "--smoothing-sigmas", sigmas]  # fmt: skip
    if get_lib_fn("antsRegistration")(process_arguments(args)) != 0:
        raise RuntimeError(f"antsRegistration failed for {out_prefix}")
    return Path(f"{out_prefix}1Warp.nii.gz"), Path(f"{out_prefix}0GenericAffine.mat")


def apply_to_grid(img, template, transforms, interpolation):
    """Resample a subject-space image onto the reference grid through the transforms."""
    import ants

    moved = ants.apply_transforms(
        fixed=_to_ants(template),
        moving=_to_ants(img),
        transformlist=[str(t) for t in transforms],
        interpolator=interpolation,
    )
    return as_image(moved.numpy(), GRID_AFFINE)


def smooth_in_mask(data, mask, fwhm_mm, voxel_mm=GRID_VOXEL_MM):
    """Gaussian smoothing restricted to the mask (normalised convolution); 0 outside.

    Dividing the smoothed masked image by the smoothed mask keeps the brain's edge from
    being darkened by the zeros around it, and no background enters the brain.
    """
    mask = np.asarray(mask, bool)
    inside = np.where(mask, data, 0.0).astype(np.float64)
    if fwhm_mm <= 0:
        return inside.astype(np.float32)
    sigma = fwhm_mm * FWHM_TO_SIGMA / voxel_mm
    weight = ndimage.gaussian_filter(mask.astype(np.float64), sigma, mode="constant")
    smoothed = ndimage.gaussian_filter(inside, sigma, mode="constant")
    out = np.zeros(data.shape, np.float32)
    out[mask] = smoothed[mask] / np.maximum(weight[mask], 1e-12)
    return out


def standardise(data, mask, params):
    """The smoothed brain on [0, 1] as ``params`` (``PreprocParams``) say (SPEC 2.7), 0 outside, and
    the map that did it, (subtracted, divided_by): the image is (data - subtracted) / divided_by,
    clipped. The map goes into the sidecar, so that the quality gate measures the brain's own
    contrast, which the tissue standardisation sets to the same value for every head."""
    if params.intensity_standardisation == "percentile":
        intensity_map = percentile_map(data, mask, params.norm_percentile)
    else:
        grey, white = tissue_on_grid(params.template)
        intensity_map = tissue_map(data, mask, grey, white, params.tissue_levels, params.tissue_probabilities)
    return apply_intensity_map(data, mask, intensity_map), intensity_map


def tissue_map(data, mask, grey, white, levels, probabilities):
    """The linear map (subtracted, divided_by) that puts the brain's median where the template's grey
    matter probability (``grey``) is above ``probabilities[0]`` at ``levels[0]``, and where its white
    matter's is above ``probabilities[1]`` at ``levels[1]``.

    Two tissues fix both the scale and the contrast, which vary with the scanner; medians over
    the template's tissue keep the anchors robust to a region's atrophy."""
    mask = np.asarray(mask, bool)
    grey_voxels = data[mask & (np.asarray(grey) > probabilities[0])]
    white_voxels = data[mask & (np.asarray(white) > probabilities[1])]
    if not grey_voxels.size or not white_voxels.size:
        raise InputImageError("the brain mask on the grid misses the template's grey or white matter: registration or skull stripping failed")
    grey_level, white_level = float(np.median(grey_voxels)), float(np.median(white_voxels))
    if white_level <= grey_level:
        raise InputImageError(f"white matter ({white_level:.4g}) is not brighter than grey matter ({grey_level:.4g}) after registration: "
                              "not a T1w contrast, or the registration failed; check the image and its registration figure")  # fmt: skip
    divided_by = (white_level - grey_level) / (levels[1] - levels[0])
    return grey_level - levels[0] * divided_by, divided_by


def percentile_map(data, mask, percentile):
    """The map (0, p) that divides the brain by its ``percentile``-th percentile p."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise InputImageError("the brain mask on the grid is empty: registration or skull stripping failed")
    scale = float(np.percentile(data[mask], percentile))
    if scale <= 0:
        raise InputImageError("the brain has no positive intensity after preprocessing; check the T1w")
    return 0.0, scale


def apply_intensity_map(data, mask, intensity_map):
    """(data - subtracted) / divided_by inside ``mask``, clipped to [0, 1]; 0 outside (float32)."""
    subtracted, divided_by = intensity_map
    return np.where(np.asarray(mask, bool), np.clip((data - subtracted) / divided_by, 0.0, 1.0), 0.0).astype(np.float32)


def normalise(data, mask, percentile):
    """Divide by a high percentile of the brain voxels and clip to [0, 1]; 0 outside."""
    return apply_intensity_map(data, mask, percentile_map(data, mask, percentile))
