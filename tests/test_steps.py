"""The array steps of the preprocessing against hand computations."""

import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_pscore.errors import InputImageError
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE, is_on_grid
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.preprocess import steps
from bids_pscore.preprocess.steps import (
    FWHM_TO_SIGMA,
    as_image,
    load_t1w,
    n4_correct,
    nonzero_region,
    normalise,
    on_source_grid,
    smooth_in_mask,
)


def ball(shape=(40, 40, 40), radius=12):
    grid = np.indices(shape) - (np.array(shape) // 2)[:, None, None, None]
    return (grid**2).sum(0) <= radius**2


def test_grid_is_spm_tpm_grid():
    assert GRID_SHAPE == (121, 145, 121)
    # voxel (0,0,0) is at (90, -126, -72) mm and the last voxel at (-90, 90, 108) mm
    assert np.allclose(GRID_AFFINE @ [0, 0, 0, 1], [90, -126, -72, 1])
    assert np.allclose(GRID_AFFINE @ [120, 144, 120, 1], [-90, 90, 108, 1])
    assert is_on_grid(GRID_SHAPE, GRID_AFFINE) and not is_on_grid((121, 145, 120), GRID_AFFINE)


def test_fwhm_to_sigma():
    assert FWHM_TO_SIGMA * 8.0 == pytest.approx(3.3972, abs=1e-4)


def test_smoothing_keeps_a_constant_brain_constant_and_nothing_outside():
    mask = ball()
    data = np.where(mask, 0.7, 5.0)  # bright 'skull' outside must not leak in
    out = smooth_in_mask(data, mask, fwhm_mm=8.0, voxel_mm=1.5)
    np.testing.assert_allclose(out[mask], 0.7, rtol=1e-6)
    assert not out[~mask].any()


def test_smoothing_matches_normalised_convolution_by_hand():
    rng = np.random.default_rng(0)
    mask = ball()
    data = rng.uniform(0, 1, mask.shape)
    sigma = 6.0 * FWHM_TO_SIGMA / 1.5
    expected = ndimage.gaussian_filter(data * mask, sigma, mode="constant") / ndimage.gaussian_filter(mask * 1.0, sigma, mode="constant")
    out = smooth_in_mask(data, mask, fwhm_mm=6.0, voxel_mm=1.5)
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-5)
    # smoothing lowers the variance inside
    assert out[mask].std() < 0.5 * data[mask].std()


def test_zero_fwhm_only_masks():
    mask = ball()
    data = np.random.default_rng(1).uniform(0, 1, mask.shape)
    out = smooth_in_mask(data, mask, 0.0)
    np.testing.assert_allclose(out, np.where(mask, data, 0), rtol=1e-6)


def test_normalise_divides_by_percentile_and_clips():
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 2:8] = True
    data = np.zeros(mask.shape)
    data[mask] = np.arange(mask.sum()) + 1.0  # 1 .. 216
    out = normalise(data, mask, 50.0)
    median = np.percentile(np.arange(1, 217), 50)
    assert out.max() == 1.0 and out.min() == 0.0
    np.testing.assert_allclose(out[mask][:100], (np.arange(100) + 1) / median, rtol=1e-6)
    assert not out[~mask].any()
    with pytest.raises(InputImageError):
        normalise(data, np.zeros_like(mask), 99.0)


def test_tissue_standardisation_puts_grey_and_white_matter_medians_at_their_levels():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:9, 1:9, 1:9] = True
    grey, white = np.zeros(mask.shape), np.zeros(mask.shape)
    grey[1:4], white[5:9] = 0.8, 0.95  # the template's tissue: slabs of the brain
    rng = np.random.default_rng(0)
    data = rng.uniform(0.0, 500.0, mask.shape)
    data[1:4] = rng.uniform(300, 340, (3, 10, 10))  # grey matter, median about 320
    data[5:9] = rng.uniform(450, 490, (4, 10, 10))  # white matter, median about 470
    data[4, 4, 4], data[4, 4, 5] = 900.0, 10.0  # beyond the range on either side: clipped
    g, w = np.median(data[1:4][mask[1:4]]), np.median(data[5:9][mask[5:9]])
    intensity_map = steps.tissue_map(data, mask, grey, white, (0.6, 0.9), (0.7, 0.9))
    assert intensity_map == pytest.approx((g - 0.6 * (w - g) / 0.3, (w - g) / 0.3))
    out = steps.apply_intensity_map(data, mask, intensity_map)
    expected = np.clip(0.6 + (data - g) * 0.3 / (w - g), 0, 1)
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-5)
    assert np.median(out[1:4][mask[1:4]]) == pytest.approx(0.6, abs=1e-6) and np.median(out[5:9][mask[5:9]]) == pytest.approx(0.9, abs=1e-6)
    assert not out[~mask].any() and out.min() == 0.0 and out.max() == 1.0
    # the same head with another scanner's scale and contrast: the same image
    other_scanner = 3 * data - 200
    other_map = steps.tissue_map(other_scanner, mask, grey, white, (0.6, 0.9), (0.7, 0.9))
    np.testing.assert_allclose(steps.apply_intensity_map(other_scanner, mask, other_map), out, atol=1e-5)
    # the template's grey matter only where the probability is above 0.7: at 0.7 itself it is not taken
    with pytest.raises(InputImageError, match="misses the template's grey or white matter"):
        steps.tissue_map(data, mask, np.where(grey > 0, 0.7, 0), white, (0.6, 0.9), (0.7, 0.9))
    with pytest.raises(InputImageError, match="not brighter than grey matter"):
        steps.tissue_map(-data, mask, grey, white, (0.6, 0.9), (0.7, 0.9))


def test_standardise_follows_the_parameters():
    mask = np.zeros(GRID_SHAPE, bool)
    mask[20:100, 20:120, 20:100] = True
    data = np.where(mask, np.random.default_rng(1).uniform(1, 100, GRID_SHAPE), 0)
    percentile = PreprocParams(intensity_standardisation="percentile")
    image, intensity_map = steps.standardise(data, mask, percentile)
    np.testing.assert_array_equal(image, normalise(data, mask, percentile.norm_percentile))
    assert intensity_map == (0.0, np.percentile(data[mask], 99))
    tissue = PreprocParams()
    grey, white = steps.tissue_on_grid(tissue.template)
    image, intensity_map = steps.standardise(data, mask, tissue)
    assert intensity_map == steps.tissue_map(data, mask, grey, white, tissue.tissue_levels, tissue.tissue_probabilities)
    np.testing.assert_array_equal(image, steps.apply_intensity_map(data, mask, intensity_map))


def test_nonzero_region_keeps_largest_blob_with_holes_filled():
    data = np.zeros((30, 30, 30))
    data[5:20, 5:20, 5:20] = 1.0
    data[10:12, 10:12, 10:12] = 0.0  # a hole
    data[25:27, 25:27, 25:27] = 1.0  # a speck elsewhere
    region = nonzero_region(data)
    assert region.sum() == 15**3
    assert region[11, 11, 11] and not region[26, 26, 26]


def test_params_round_trip_and_refuse_unknown_keys():
    params = PreprocParams(fwhm_mm=6.0)
    assert PreprocParams.from_dict(params.to_dict()) == params
    with pytest.raises(Exception, match="unknown preprocessing parameters"):
        PreprocParams.from_dict({**params.to_dict(), "typo": 1})
    with pytest.raises(Exception, match="N4 mask fraction"):
        PreprocParams(n4_mask_fraction=1.0)


def test_n4_flattens_a_known_bias_field_beside_a_noisy_background():
    # a uniform ball under a smooth 0.6-1.4 ramp, in a volume whose background is noise: the
    # field is fitted on the ball, and everything but the darkest background is corrected
    rng = np.random.default_rng(0)
    head = ball((48, 48, 48), radius=16)
    ramp = np.linspace(0.6, 1.4, 48)[:, None, None] * np.ones((48, 48, 48))
    data = np.abs(np.where(head, 100.0 * ramp, 0.0) + rng.normal(0.0, 2.0, head.shape)).astype(np.float32)
    out = np.asarray(n4_correct(as_image(data, np.diag([2.0, 2.0, 2.0, 1.0])), 4.0, (50, 50, 30), 0.1).dataobj)
    inner = ndimage.binary_erosion(head, iterations=2)

    def spread(values):
        return values.std() / values.mean()

    assert spread(data[inner]) > 0.1
    assert spread(out[inner]) < 0.3 * spread(data[inner])
    assert (out[~head] == 0).mean() < 0.05  # the background is kept, bar its darkest 1%


@pytest.mark.parametrize("axcodes", [("R", "A", "S"), ("L", "P", "S"), ("R", "S", "A"), ("P", "I", "L"), ("A", "L", "I")])
def test_a_mask_made_in_ras_goes_back_onto_the_source_grid_voxel_for_voxel(tmp_path, axcodes):
    import nibabel as nib

    rng = np.random.default_rng(1)
    data = rng.random((11, 13, 17)).astype(np.float32)
    ornt = nib.orientations.axcodes2ornt(axcodes)
    # an affine with these axis directions, 1.2 x 0.9 x 1.5 mm voxels, slightly oblique
    linear = np.zeros((3, 3))
    for axis, (world, flip) in enumerate(ornt.astype(int)):
        linear[world, axis] = flip * (1.2, 0.9, 1.5)[axis]
    tilt = np.array([[1, 0.05, 0], [-0.05, 1, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3], affine[:3, 3] = tilt @ linear, (-7, 12, 30)
    source = tmp_path / "t1w.nii.gz"
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, 1)
    img.to_filename(source)

    ras = load_t1w(source)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    mask_ras = as_image(np.asarray(ras.dataobj) > 0.5, ras.affine, np.uint8)
    back = on_source_grid(mask_ras, source)
    assert back.shape == data.shape and np.allclose(back.affine, affine)
    assert int(back.header["qform_code"]) == int(back.header["sform_code"]) == 1
    np.testing.assert_array_equal(np.asarray(back.dataobj) > 0, data > 0.5)


@pytest.mark.parametrize("voxel_mm, name", [(voxel_mm, name) for voxel_mm, names in steps.SHIPPED_TEMPLATE_MAPS for name in names])
def test_shipped_template_maps_hold_the_bytes_resampling_makes(voxel_mm, name):
    # a run reads these rather than resampling nilearn's template: what the registration aims at
    # and what the quality gate compares with must not move by a bit
    assert steps.shipped_map_path("MNI152NLin2009aSym", voxel_mm, name).is_file()
    shipped = steps.template_map("MNI152NLin2009aSym", voxel_mm, name)
    resampled = steps.resample_template_map("MNI152NLin2009aSym", voxel_mm, name)
    assert shipped.dtype == resampled.dtype == np.float32 and shipped.shape == steps.grid_at(voxel_mm)[0]
    assert shipped.flags.f_contiguous == resampled.flags.f_contiguous and not shipped.flags.writeable
    np.testing.assert_array_equal(shipped, resampled)


def test_a_python_without_lzma_resamples_the_template_maps(monkeypatch):
    shipped = steps.template_map("MNI152NLin2009aSym", 1.5, "mask")
    resampled, resample = [], steps.resample_template_map
    monkeypatch.setattr(steps, "resample_template_map", lambda *args: resampled.append(args) or resample(*args))
    monkeypatch.setitem(sys.modules, "lzma", None)  # what a Python built without liblzma has: import lzma fails
    steps.template_map.cache_clear()
    try:
        np.testing.assert_array_equal(steps.template_map("MNI152NLin2009aSym", 1.5, "mask"), shipped)
        assert resampled == [("MNI152NLin2009aSym", 1.5, "mask")]
    finally:
        steps.template_map.cache_clear()


def test_template_files_are_written_once_and_then_left_alone(tmp_path):
    # jobs sharing a work folder read these; rewriting them would race and void cached steps
    files = steps.write_template_files(tmp_path, "MNI152NLin2009aSym", 3.0)
    template = nib.load(files["template"])
    assert np.array_equal(np.asarray(template.dataobj), np.asarray(steps.template_on_grid("MNI152NLin2009aSym")[0].dataobj))
    assert nib.load(files["coarse_template"]).header.get_zooms()[:3] == (3.0, 3.0, 3.0)
    stamps = {k: os.stat(v).st_mtime_ns for k, v in files.items()}
    assert steps.write_template_files(tmp_path, "MNI152NLin2009aSym", 3.0) == files
    assert {k: os.stat(v).st_mtime_ns for k, v in files.items()} == stamps
    assert not [p for p in Path(files["template"]).parent.iterdir() if p.name.startswith(".")]  # no temporary left
