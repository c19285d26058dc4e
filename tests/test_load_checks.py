"""Each kind of unusable T1w gets one line that names the file and the fix."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from bids_pscore.errors import InputImageError
from bids_pscore.preprocess.steps import load_t1w

from .helpers import small_image


def save(tmp_path, img, name="sub-01_T1w.nii.gz"):
    path = tmp_path / name
    img.to_filename(path)
    return path


def with_data(data, affine=None):
    return nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None else affine)


def expect_error(path, words):
    with pytest.raises(InputImageError) as err:
        load_t1w(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    return message


def test_four_d_with_several_volumes(tmp_path):
    expect_error(save(tmp_path, with_data(np.ones((8, 8, 8, 3)))), ["3 volumes", "one 3-D volume"])


def test_four_d_with_one_volume_is_squeezed(tmp_path):
    data = np.random.default_rng(0).uniform(1, 2, (8, 9, 10, 1))
    img = load_t1w(save(tmp_path, with_data(data)))
    assert img.shape == (8, 9, 10)
    np.testing.assert_allclose(img.get_fdata(), data[..., 0], rtol=1e-6)


def test_two_d(tmp_path):
    expect_error(save(tmp_path, with_data(np.ones((32, 32, 1)))), ["not a 3-D volume"])


@pytest.mark.parametrize("value,words", [(0.0, ["every voxel is 0"]), (5.0, ["same value"])])
def test_blank_images(tmp_path, value, words):
    expect_error(save(tmp_path, small_image(value=value)), words)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path, bad):
    img = small_image()
    img.dataobj[1, 2, 3] = bad
    expect_error(save(tmp_path, img), ["1 NaN or Inf"])


def test_truncated_and_corrupt(tmp_path):
    good = save(tmp_path, small_image(), "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    expect_error(truncated, ["truncated or corrupt"])
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    expect_error(garbage, ["truncated or corrupt"])


@pytest.mark.parametrize("voxel_mm", [0.2, 4.0])
def test_voxel_size_out_of_range(tmp_path, voxel_mm):
    expect_error(save(tmp_path, small_image(voxel_mm=voxel_mm)), ["voxel size", "[0.3, 3.0] mm"])


def test_missing_affine(tmp_path):
    img = small_image()
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    expect_error(save(tmp_path, img), ["no orientation"])


def test_singular_affine(tmp_path):
    img = with_data(np.random.default_rng(1).uniform(1, 2, (8, 8, 8)))
    img.header.set_qform(None, code=0)
    img.header["sform_code"] = 1
    img.header["srow_z"] = [0.0, 0.0, 0.0, 0.0]  # a third axis of zero length
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(img.dataobj, None, img.header), path)
    expect_error(path, ["singular"])


def test_reoriented_to_ras_without_moving_anything(tmp_path):
    data = np.random.default_rng(2).uniform(1, 2, (6, 7, 8))
    las = np.diag([-1.2, 1.0, 1.1, 1.0])
    las[:3, 3] = [40, -30, -20]
    img = load_t1w(save(tmp_path, with_data(data, las)))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert img.get_data_dtype() == np.float32
    # the same world point holds the same value before and after
    world = las @ [1, 2, 3, 1]
    ijk = np.round(np.linalg.solve(img.affine, world)[:3]).astype(int)
    assert img.get_fdata()[tuple(ijk)] == pytest.approx(data[1, 2, 3], rel=1e-6)


def test_sheared_affine_is_refused_but_an_oblique_one_is_not(tmp_path):
    data = np.random.default_rng(3).uniform(1, 2, (8, 8, 8))
    sheared = np.eye(4)
    sheared[0, 1] = 0.2  # x moves with y: axes at 79 degrees
    message = expect_error(save(tmp_path, with_data(data, sheared)), ["shears the voxel axes by 11.3 degrees", "resample"])
    assert "ANTs" in message
    angle = np.radians(20)  # a rotated (oblique) acquisition keeps its axes perpendicular
    oblique = np.eye(4)
    oblique[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    assert load_t1w(save(tmp_path, with_data(data, oblique), "sub-02_T1w.nii.gz")).shape == (8, 8, 8)


def test_a_shear_from_header_rounding_is_removed_so_that_ants_reads_the_image(tmp_path):
    from bids_pscore.preprocess.steps import n4_correct

    data = np.random.default_rng(4).uniform(1, 2, (20, 20, 20))
    rounded = np.eye(4)
    rounded[0, 1] = 0.005  # 0.3 degrees: ANTs refuses it ("Extracted spacing ... does not match")
    img = load_t1w(save(tmp_path, with_data(data, rounded)))
    directions = img.affine[:3, :3] / np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
    assert np.allclose(directions.T @ directions, np.eye(3), atol=1e-6)
    assert n4_correct(img, shrink_mm=4.0, iterations=[5], mask_fraction=0.1).shape == (20, 20, 20)
