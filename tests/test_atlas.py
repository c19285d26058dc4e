"""The shipped Brainnetome atlas, its table, and its label-preserving resampling onto the grid."""

import numpy as np
import pytest

from bids_pscore import atlas
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE

# the regions the patent names (left; right = +1)
PATENT_REGIONS = {"L.mAmyg": 211, "L.lAmyg": 213, "L.NAC": 223, "L.vIa": 165, "L.vId/vIg": 169, "L.TI": 117}


def test_table_and_licence_ship_with_the_package():
    table = atlas.region_table()
    assert len(table) == 246 and list(table.columns[:7]) == ["index", "label", "abbreviation", "name", "hemisphere", "lobe", "gyrus"]
    for label, index in PATENT_REGIONS.items():
        assert table.loc[table["index"] == index, "label"].item() == label
        assert table.loc[table["index"] == index + 1, "label"].item() == "R." + label[2:]
    assert (table["hemisphere"] == np.where(table["index"] % 2, "L", "R")).all()
    notice = (atlas._data_file("LICENSE.md")).read_text()
    assert "non-commercial" in notice and "Fan L" in notice and "sharing alike" in notice


def test_all_regions_survive_on_the_grid_with_their_volume():
    grid = atlas.atlas_on_grid()
    assert grid.shape == GRID_SHAPE and not grid.flags.writeable
    assert set(np.unique(grid)) == set(range(247))
    source = np.rint(np.asarray(atlas.source_image().dataobj)).astype(int)
    source_ml = np.bincount(source.ravel(), minlength=247)[1:] * 1.25**3
    grid_ml = np.bincount(grid.ravel().astype(int), minlength=247)[1:] * 1.5**3
    error = np.abs(grid_ml - source_ml) / source_ml
    assert error.max() <= 0.15
    assert np.percentile(error, 95) <= 0.05


def test_the_shipped_grid_atlas_is_the_vote_from_the_source():
    assert np.array_equal(atlas.atlas_on_grid(), atlas.grid_from_source())


def test_left_regions_lie_left_and_right_regions_right():
    grid = atlas.atlas_on_grid()
    x_mm = GRID_AFFINE[0, 0] * np.arange(GRID_SHAPE[0]) + GRID_AFFINE[0, 3]
    for index in list(PATENT_REGIONS.values()):
        for region, sign in ((index, -1), (index + 1, 1)):
            mean_x = x_mm[np.nonzero(grid == region)[0]].mean()
            assert np.sign(mean_x) == sign, (region, mean_x)


def test_majority_vote_by_hand():
    # a 4 x 1 x 1 atlas of 1 mm voxels [1, 1, 2, 0] onto 2 mm voxels: each holds two source voxels
    labels = np.array([1, 1, 2, 0], np.uint8).reshape(4, 1, 1)
    out = atlas.resample_labels(
        labels, np.diag([1.0, 1, 1, 1]), (2, 1, 1), np.diag([2.0, 1, 1, 1]) + np.array([[0, 0, 0, 0.5], [0] * 4, [0] * 4, [0] * 4]), 4
    )
    # voxel 0 covers source 0 and 1 (both label 1); voxel 1 covers source 2 and 3: a tie, to the lower label
    assert out.ravel().tolist() == [1, 0]
    with pytest.raises(ValueError):
        rotated = np.eye(4)
        rotated[0, 1] = 0.1
        atlas.resample_labels(labels, rotated, (2, 1, 1), np.eye(4))
