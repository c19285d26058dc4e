"""The relevance-weighted voxel map (docs/relevance.md): hand computations, and a classifier whose
evidence is known to lie in one block of its cube."""

import numpy as np
import pytest
import torch

from bids_pscore import cohort, pscore
from bids_pscore.grid import GRID_SHAPE, N_CUBES, cube_bounds, cube_index_map, cut_cubes, paste_cubes
from bids_pscore.model.networks import BaseClassifiers
from bids_pscore.model.relevance import METHODS


def voxel_in(cube, offset):
    r = cube_bounds()[cube]
    return (r["i_start"] + offset[0], r["j_start"] + offset[1], r["k_start"] + offset[2])


def test_paste_cubes_undoes_cut_cubes():
    volumes = np.random.default_rng(0).random((2, *GRID_SHAPE), np.float32)
    assert np.array_equal(paste_cubes(cut_cubes(volumes)), volumes)


def test_relevance_spread_by_hand():
    """cube 31: P_cube 0.4, brain voxels with relevance 3, 1, 0, 0 -> 0.3, 0.1, 0, 0; a voxel
    outside the brain with relevance 100 gets nothing and takes no share. cube 32: P_cube -0.5, no
    relevance on its 2 brain voxels -> the even spread, -0.25 each. Cube 40 is not selected."""
    mask = np.zeros(GRID_SHAPE, bool)
    relevance = np.zeros(GRID_SHAPE)
    for k, r in enumerate([3.0, 1.0, 0.0, 0.0]):
        mask[voxel_in(31, (k, 0, 0))] = True
        relevance[voxel_in(31, (k, 0, 0))] = r
    relevance[voxel_in(31, (0, 7, 0))] = 100.0
    mask[voxel_in(32, (0, 0, 0))] = mask[voxel_in(32, (1, 0, 0))] = True
    mask[voxel_in(40, (0, 0, 0))] = True
    relevance[voxel_in(40, (0, 0, 0))] = 5.0
    p_cube = np.zeros((1, N_CUBES))
    p_cube[0, 31], p_cube[0, 32] = 0.4, -0.5
    out = pscore.relevance_voxel_scores(p_cube, relevance[None], mask[None])[0]
    assert out[voxel_in(31, (0, 0, 0))] == pytest.approx(0.3)
    assert out[voxel_in(31, (1, 0, 0))] == pytest.approx(0.1)
    assert out[voxel_in(31, (2, 0, 0))] == 0.0
    assert out[voxel_in(31, (0, 7, 0))] == 0.0
    assert out[voxel_in(32, (0, 0, 0))] == out[voxel_in(32, (1, 0, 0))] == pytest.approx(-0.25)
    assert out[voxel_in(40, (0, 0, 0))] == 0.0
    assert np.count_nonzero(out) == 4


def test_every_cube_of_the_relevance_map_sums_to_its_score():
    rng = np.random.default_rng(1)
    mask = np.zeros(GRID_SHAPE, bool)
    mask[20:100, 20:125, 15:105] = True
    relevance = rng.random((2, *GRID_SHAPE)) * (rng.random((2, *GRID_SHAPE)) > 0.7)
    p_cube = rng.normal(size=(2, N_CUBES))
    maps = pscore.relevance_voxel_scores(p_cube, relevance, np.stack([mask, mask]))
    cubes = cube_index_map()
    has_brain = pscore.brain_voxels_per_cube(mask) > 0
    for i in range(2):
        sums = np.bincount(cubes.ravel(), weights=maps[i].astype(np.float64).ravel(), minlength=N_CUBES)
        np.testing.assert_allclose(sums[has_brain], p_cube[i, has_brain], atol=1e-6)
        assert np.all(sums[~has_brain] == 0)


def test_region_means_of_the_even_map_are_spec_region_scores():
    rng = np.random.default_rng(2)
    atlas = np.zeros(GRID_SHAPE, np.int16)
    atlas[30:90, 30:110, 20:100] = rng.integers(1, pscore.N_REGIONS + 1, (60, 80, 80))
    mask = rng.random(GRID_SHAPE) > 0.2
    p_cube = rng.normal(size=(1, N_CUBES))
    brain, overlap = pscore.brain_overlap(mask, atlas)
    sizes = pscore.region_sizes(atlas)
    expected = pscore.region_scores(p_cube, brain, overlap, sizes)
    found = pscore.region_means(pscore.voxel_scores(p_cube, mask[None]), atlas, sizes)
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-9)


def one_block_classifier():
    """One cube's classifier whose AD margin is minus the darkest 2^3 mean inside the cube's
    first 5^3 block, x[0:5, 0:5, 0:5], and depends on nothing else: each layer keeps one channel
    through a single kernel tap, and the two max-pools widen the 2^3 window to that block."""
    base = BaseClassifiers(n_cubes=1)
    with torch.no_grad():
        for conv in [*base.convs, base.classify]:
            conv.weight.zero_()
            conv.bias.zero_()
        base.convs[0].weight[0, 0, :2, :2, :2] = -1 / 8
        base.convs[0].bias[0] = 10.0
        for conv in base.convs[1:]:
            conv.weight[(0, 0) + (0,) * 3] = 1.0
        base.classify.weight[1, 0] = 1.0
        base.classify.bias[1] = -10.0
    base.set_input_statistics([0.5], [1.0])
    return base.eval()


@pytest.mark.parametrize("method", METHODS)
def test_relevance_finds_the_block_the_classifier_looks_at(method):
    from bids_pscore.model.relevance import relevance_on_grid

    cube = 67  # well inside the grid: no padding in it
    image = np.full(GRID_SHAPE, 0.8, np.float32)
    start = voxel_in(cube, (0, 0, 0))
    block = tuple(slice(s, s + 5) for s in start)
    image[block] = 0.2
    dark_elsewhere = voxel_in(cube, (12, 12, 12))
    image[dark_elsewhere[0] : dark_elsewhere[0] + 5, dark_elsewhere[1] : dark_elsewhere[1] + 5, dark_elsewhere[2] : dark_elsewhere[2] + 5] = 0.3
    relevance = relevance_on_grid(one_block_classifier(), cut_cubes(image)[None], [cube], {"method": method})
    mask = cube_index_map() == cube
    p_cube = np.zeros((1, N_CUBES))
    p_cube[0, cube] = 0.7
    voxel_map = pscore.relevance_voxel_scores(p_cube, relevance, mask[None])[0]
    assert voxel_map[block].sum() >= 0.8 * 0.7
    assert voxel_map[mask].sum() == pytest.approx(0.7)


def test_a_rescore_removes_the_outputs_this_model_does_not_make(tmp_path):
    """Relevance and normative files of an earlier model would be shown as current (--reports-only too)."""
    import dataclasses

    from bids_pscore import qc, scoring
    from bids_pscore.derivatives import layout

    from .helpers import gate_record_of_a_box
    from .test_subject_report import TEMPLATE, preprocessed_session

    item = preprocessed_session(tmp_path, "1")
    bundle, gate_off = cohort.load_model(), qc.parse_bounds("off")  # a box, no head
    scoring.score_sessions([item], tmp_path, bundle, TEMPLATE, gate_off, tmp_path / "logs")
    earlier = list(layout.session_outputs(item.entities, TEMPLATE, layout.RELEVANCE, layout.NORMATIVE).values())
    assert all((tmp_path / rel).is_file() for rel in earlier)

    plain = {k: v for k, v in bundle.metadata.items() if k not in ("relevance", "normative")}
    results, _ = scoring.score_sessions([item], tmp_path, dataclasses.replace(bundle, metadata=plain, normative=None), TEMPLATE, gate_off,
                                            tmp_path / "logs")  # fmt: skip
    left = [rel for rel in earlier for path in (rel, layout.sidecar_path(rel)) if (tmp_path / path).exists()]
    assert not left and all((tmp_path / rel).is_file() for rel in layout.session_outputs(item.entities, TEMPLATE, layout.PSCORE).values())
    assert results[0].qc == gate_record_of_a_box(tmp_path, item)["Measures"]  # the rescore's own gate record, not removed with the rest
