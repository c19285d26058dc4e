"""Cubes of SPEC section 3: order, bounds, cutting and painting back."""

import numpy as np
import pytest

from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE, N_CUBES, cube_bounds, cube_index_map, cut_cubes, mirror_cubes, paint_cubes


def test_a_volume_of_cube_indices_cuts_into_constant_cubes():
    volume = paint_cubes(np.arange(N_CUBES))
    cubes = cut_cubes(volume)
    assert cubes.shape == (150, 25, 25, 25)
    index = cube_index_map()
    for c in range(1, N_CUBES):  # cube 0's value is the padding's
        assert set(np.unique(cubes[c])) <= {c, 0}
        assert (cubes[c] == c).sum() == (index == c).sum()


def test_cube_order_by_hand():
    # grid voxel (i, j, k) sits at padded (i+2, j+2, k+2); cube = (pi//25)*30 + (pj//25)*5 + pk//25
    index = cube_index_map()
    for ijk in [(0, 0, 0), (22, 22, 22), (23, 0, 0), (0, 23, 0), (0, 0, 23), (60, 72, 60), (120, 144, 120), (98, 123, 98)]:
        padded = np.array(ijk) + 2
        assert index[ijk] == (padded[0] // 25) * 30 + (padded[1] // 25) * 5 + padded[2] // 25
    assert index[23, 0, 0] == 30 and index[0, 23, 0] == 5 and index[0, 0, 23] == 1
    assert np.bincount(index.ravel()).sum() == np.prod(GRID_SHAPE) and len(np.unique(index)) == 150


def test_cut_moves_voxels_to_the_right_place():
    rng = np.random.default_rng(0)
    volume = rng.uniform(size=GRID_SHAPE)
    cubes = cut_cubes(volume)
    # voxel (30, 50, 70): padded (32, 52, 72) -> cube (1, 2, 2) = 30 + 10 + 2 = 42, offset (7, 2, 22)
    assert cubes[42, 7, 2, 22] == volume[30, 50, 70]
    # padding is zero: cube 0 starts with two padded planes on each axis
    assert not cubes[0, :2].any() and not cubes[0, :, :2].any() and not cubes[0, :, :, :2].any()
    # the last cube along y has three padded planes at its end
    assert not cubes[29, :, -3:].any() and cubes[29, :, -4:-3].any()
    # nothing is lost: the sum is kept and a stack of images cuts image by image
    assert cubes.sum() == pytest.approx(volume.sum())
    stacked = cut_cubes(np.stack([volume, 2 * volume]))
    np.testing.assert_array_equal(stacked[1], 2 * cubes)


def test_paint_is_the_inverse_of_cutting_per_cube_values():
    values = np.random.default_rng(1).normal(size=(3, N_CUBES))
    painted = paint_cubes(values)
    assert painted.shape == (3, *GRID_SHAPE)
    index = cube_index_map()
    for c in (0, 31, 149):
        assert np.all(painted[:, index == c] == values[:, [c]])
    # per cube, the mean over its grid voxels gives the values back
    means = np.stack([np.bincount(index.ravel(), weights=p.ravel()) / np.bincount(index.ravel()) for p in painted])
    np.testing.assert_allclose(means, values)


def test_bounds_in_voxels_and_mm():
    rows = cube_bounds()
    assert [r["cube"] for r in rows] == list(range(150))
    first, last = rows[0], rows[149]
    assert (first["i_start"], first["i_stop"], first["j_stop"], first["k_stop"]) == (0, 23, 23, 23)
    assert (last["i_start"], last["i_stop"], last["j_start"], last["j_stop"]) == (98, 121, 123, 145)
    # grid voxel 0 is at x = +90 mm (the grid's x axis runs right to left)
    assert (first["x_min_mm"], first["x_max_mm"], first["y_min_mm"], first["z_min_mm"]) == (57.0, 90.0, -126.0, -72.0)
    assert (last["x_min_mm"], last["y_max_mm"], last["z_max_mm"]) == (-90.0, 90.0, 108.0)
    index = cube_index_map()
    for r in rows[::17]:
        block = index[r["i_start"] : r["i_stop"], r["j_start"] : r["j_stop"], r["k_start"] : r["k_stop"]]
        assert np.all(block == r["cube"]) and block.size == (index == r["cube"]).sum()
        centre = GRID_AFFINE @ [r["i_start"], r["j_start"], r["k_start"], 1]
        assert r["x_min_mm"] <= centre[0] <= r["x_max_mm"]


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError):
        cut_cubes(np.zeros((121, 145, 120)))
    with pytest.raises(ValueError):
        paint_cubes(np.zeros(149))


def test_mirror_cubes_is_the_cubes_of_the_mirrored_brain():
    """The padded grid is symmetric about x = 0 (SPEC 7): mirroring the cubes (cube ix <- mirrored
    cube 4 - ix) equals cutting the left-right mirrored volume, for arrays and tensors alike."""
    import torch

    volume = np.random.default_rng(0).random(GRID_SHAPE).astype(np.float32)
    expected = cut_cubes(np.ascontiguousarray(volume[::-1]))
    assert np.array_equal(mirror_cubes(cut_cubes(volume)), expected)
    assert np.array_equal(mirror_cubes(torch.from_numpy(cut_cubes(volume))).numpy(), expected)
    assert np.array_equal(mirror_cubes(mirror_cubes(cut_cubes(volume))), cut_cubes(volume))
    # voxel i and 120 - i lie at x and -x
    assert (GRID_AFFINE @ [0, 0, 0, 1])[0] == -(GRID_AFFINE @ [GRID_SHAPE[0] - 1, 0, 0, 1])[0]
