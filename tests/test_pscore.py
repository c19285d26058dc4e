"""SPEC section 5 against hand computations, and properties that hold for any input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bids_pscore import pscore
from bids_pscore.grid import GRID_SHAPE, N_CUBES, cube_bounds

N = pscore.N_REGIONS


def voxel_in(cube, offset):
    r = cube_bounds()[cube]
    return (r["i_start"] + offset[0], r["j_start"] + offset[1], r["k_start"] + offset[2])


@pytest.fixture
def tiny():
    """Four cubes, two regions, by hand:

    cube 31: selected, w = 0.5,  p = 0.8 -> P_cube = 0.4,  4 brain voxels -> 0.1 each
    cube 32: selected, w = -2.0, p = 0.25 -> P_cube = -0.5, 2 brain voxels -> -0.25 each
    cube 33: selected, w = 1.0,  p = 0.9 -> P_cube = 0.9,  no brain voxel -> contributes 0
    cube 34: not selected,       p = 0.7 -> P_cube = 0,    3 brain voxels -> 0 each
    region 1: two brain voxels of cube 31 and one non-brain voxel: (0.1 + 0.1 + 0) / 3
    region 2: one brain voxel of cube 31, two of cube 32, one of cube 34: (0.1 - 0.5 + 0) / 4
    """
    mask = np.zeros(GRID_SHAPE, bool)
    atlas = np.zeros(GRID_SHAPE, np.int16)
    for k in range(4):
        mask[voxel_in(31, (k, 0, 0))] = True
    for k in range(2):
        mask[voxel_in(32, (k, 0, 0))] = True
    for k in range(3):
        mask[voxel_in(34, (k, 0, 0))] = True
    atlas[voxel_in(31, (0, 0, 0))] = atlas[voxel_in(31, (1, 0, 0))] = 1
    atlas[voxel_in(31, (0, 5, 0))] = 1  # not brain
    atlas[voxel_in(31, (2, 0, 0))] = 2
    atlas[voxel_in(32, (0, 0, 0))] = atlas[voxel_in(32, (1, 0, 0))] = 2
    atlas[voxel_in(34, (0, 0, 0))] = 2
    p = np.full(N_CUBES, 0.5)
    p[[31, 32, 33, 34]] = [0.8, 0.25, 0.9, 0.7]
    weights = np.zeros(N_CUBES)
    weights[[31, 32, 33, 34]] = [0.5, -2.0, 1.0, 3.0]  # 34's weight must be ignored
    selected = np.zeros(N_CUBES, bool)
    selected[[31, 32, 33]] = True
    return dict(mask=mask, atlas=atlas, p=p, weights=weights, selected=selected)


def test_cube_level(tiny):
    p_cube = pscore.cube_scores(tiny["p"], tiny["weights"], tiny["selected"])
    assert p_cube.shape == (1, 150)
    assert p_cube[0, 31] == pytest.approx(0.4) and p_cube[0, 32] == pytest.approx(-0.5)
    assert p_cube[0, 33] == pytest.approx(0.9) and p_cube[0, 34] == 0.0
    assert np.count_nonzero(p_cube) == 3


def test_voxel_level(tiny):
    p_cube = pscore.cube_scores(tiny["p"], tiny["weights"], tiny["selected"])
    voxels = pscore.voxel_scores(p_cube, tiny["mask"])[0]
    assert voxels[voxel_in(31, (3, 0, 0))] == pytest.approx(0.1)
    assert voxels[voxel_in(32, (1, 0, 0))] == pytest.approx(-0.25)
    assert voxels[voxel_in(34, (2, 0, 0))] == 0.0
    assert np.count_nonzero(voxels) == 6
    # within a cube the voxel scores add up to the cube score; a cube without brain adds nothing
    assert voxels.sum() == pytest.approx(0.4 - 0.5)


def test_region_and_whole_brain_levels(tiny):
    m, n = pscore.brain_overlap(tiny["mask"], tiny["atlas"])
    assert m[0, 31] == 4 and m[0, 32] == 2 and m[0, 33] == 0 and m[0, 34] == 3
    assert n[0, 0, 31] == 2 and n[0, 1, 31] == 1 and n[0, 1, 32] == 2 and n[0, 1, 34] == 1
    sizes = pscore.region_sizes(tiny["atlas"])
    assert sizes[0] == 3 and sizes[1] == 4 and sizes[2:].sum() == 0
    p_cube = pscore.cube_scores(tiny["p"], tiny["weights"], tiny["selected"])
    region = pscore.region_scores(p_cube, m, n, sizes)[0]
    assert region[0] == pytest.approx(0.2 / 3) and region[1] == pytest.approx(-0.1)
    assert not region[2:].any()  # empty regions score 0, not NaN
    # the same from the voxel map, summed by hand
    voxels = pscore.voxel_scores(p_cube, tiny["mask"])[0]
    assert region[1] == pytest.approx(voxels[tiny["atlas"] == 2].sum() / 4)

    reference = pscore.Reference(np.full(N, -0.2), np.full(N, 0.0), lambda_=0.52)
    reference.region_min[0], reference.region_max[0] = -0.1, 0.2
    scores = pscore.score(tiny["p"], tiny["weights"], tiny["selected"], m, n, sizes, reference)
    pn1, pn2, pn_rest = (0.2 / 3 + 0.1) / 0.3, (-0.1 + 0.2) / 0.2, 1.0  # rest: 0 - (-0.2) / 0.2
    assert scores.region_norm[0, 0] == pytest.approx(pn1) and scores.region_norm[0, 1] == pytest.approx(pn2)
    assert np.allclose(scores.region_norm[0, 2:], pn_rest)
    assert scores.whole[0] == pytest.approx(pn1 + pn2 + 244 * pn_rest)
    assert scores.degenerative[0, 0] and not scores.degenerative[0, 1]  # 0.556 > 0.52 > 0.5


def test_normalisation_clips_and_handles_an_empty_range():
    pn = pscore.normalise_regions([[-1.0, 0.5, 3.0, 7.0]], [0.0, 0.0, 0.0, 7.0], [1.0, 1.0, 2.0, 7.0])
    np.testing.assert_allclose(pn, [[0.0, 0.5, 1.0, 0.0]])


def test_reference_statistics_by_hand():
    # four images x three regions; images 0 and 1 are AD, of which only 0 was predicted AD
    p_region = np.array([[0.0, 1.0, 2.0], [1.0, 3.0, 2.0], [2.0, 2.0, 4.0], [4.0, 1.0, 3.0]])
    ref = pscore.reference_statistics(p_region, is_ad=[1, 1, 0, 0], predicted_ad=[1, 0, 1, 0])
    np.testing.assert_array_equal(ref.region_min, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(ref.region_max, [4.0, 3.0, 4.0])
    pn = np.array([0.0, 0.0, 0.0])  # image 0: (0-0)/4, (1-1)/2, (2-2)/2
    assert ref.lambda_ == pytest.approx(pn.mean() + 2 * pn.std())
    ref = pscore.reference_statistics(p_region, is_ad=[1, 1, 0, 0], predicted_ad=[1, 1, 0, 0])
    pn = np.array([0.0, 0.0, 0.0, 0.25, 1.0, 0.0])
    assert ref.lambda_ == pytest.approx(pn.mean() + 2 * pn.std(ddof=0))
    assert pscore.Reference.from_dict(ref.to_dict()).lambda_ == ref.lambda_
    with pytest.raises(ValueError, match="lambda is undefined"):
        pscore.reference_statistics(p_region, [1, 1, 0, 0], [0, 0, 1, 1])


def test_paint_regions():
    atlas = np.zeros(GRID_SHAPE, np.int16)
    atlas[1, 2, 3], atlas[4, 5, 6] = 1, 246
    values = np.arange(1, 247, dtype=float) / 10
    painted = pscore.paint_regions(values, atlas)[0]
    assert painted[1, 2, 3] == pytest.approx(0.1) and painted[4, 5, 6] == pytest.approx(24.6)
    assert np.count_nonzero(painted) == 2


@st.composite
def cohorts(draw):
    n = draw(st.integers(1, 5))
    finite = dict(allow_nan=False, allow_infinity=False)
    p = draw(arrays(np.float64, (n, N_CUBES), elements=st.floats(0, 1, **finite)))
    weights = draw(arrays(np.float64, N_CUBES, elements=st.floats(-3, 3, **finite)))
    selected = draw(arrays(bool, N_CUBES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    overlap = rng.integers(0, 4, (n, N, N_CUBES))
    brain = overlap.sum(axis=1) + rng.integers(0, 3, (n, N_CUBES))
    sizes = overlap.sum(axis=(0, 2)) + rng.integers(0, 3, N)
    lo = rng.normal(0, 0.01, N)
    reference = pscore.Reference(lo, lo + rng.uniform(0, 0.02, N), float(rng.uniform(0, 1)))
    return p, weights, selected, brain, overlap, sizes, reference, rng.permutation(n)


@settings(max_examples=40, deadline=None)
@given(cohorts())
def test_properties(cohort):
    p, weights, selected, brain, overlap, sizes, reference, order = cohort
    scores = pscore.score(p, weights, selected, brain, overlap, sizes, reference)
    assert np.all((scores.region_norm >= 0) & (scores.region_norm <= 1))
    np.testing.assert_allclose(scores.whole, scores.region_norm.sum(axis=1))
    assert np.all(scores.cube[:, ~selected] == 0)
    np.testing.assert_array_equal(scores.degenerative, scores.region_norm > reference.lambda_)
    permuted = pscore.score(p[order], weights, selected, brain[order], overlap[order], sizes, reference)
    np.testing.assert_allclose(permuted.region, scores.region[order])
    np.testing.assert_allclose(permuted.whole, scores.whole[order])
