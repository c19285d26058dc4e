"""The P-score derivatives of one session load back, in pandas and nibabel, to the same numbers."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import atlas, pscore
from bids_pscore.derivatives import dataset_files, layout, session_files
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE, N_CUBES, is_on_grid

TEMPLATE = "MNI152NLin2009aSym"


@pytest.fixture(scope="module")
def session():
    rng = np.random.default_rng(4)
    grid_atlas = atlas.atlas_on_grid()
    mask = np.zeros(GRID_SHAPE, bool)
    mask[20:100, 20:125, 15:105] = True
    m, n = pscore.brain_overlap(mask, grid_atlas)
    sizes = pscore.region_sizes(grid_atlas)
    weights, selected = rng.normal(0, 0.2, N_CUBES), np.zeros(N_CUBES, bool)
    selected[rng.choice(N_CUBES, 35, replace=False)] = True
    p_ad = rng.uniform(0, 1, (1, N_CUBES))
    raw = pscore.region_scores(
        pscore.cube_scores(rng.uniform(0, 1, (20, N_CUBES)), weights, selected), np.repeat(m, 20, 0), np.repeat(n, 20, 0), sizes
    )
    reference = pscore.reference_statistics(raw, [1] * 10 + [0] * 10, [1] * 20)
    scores = pscore.score(p_ad, weights, selected, m, n, sizes, reference)
    return dict(
        scores=scores, weights=weights, selected=selected, reference=reference,
        voxel_map=pscore.voxel_scores(scores.cube, mask)[0],
        region_map=pscore.paint_regions(scores.region_norm, grid_atlas)[0],
    )  # fmt: skip


def write(tmp_path, s):
    entities = {"sub": "01", "ses": "2", "run": "1"}
    card = {"name": "demo", "version": "0.1", "sha256": "ab" * 32}
    return session_files.write_session(
        tmp_path, entities, TEMPLATE, s["scores"], s["voxel_map"], s["region_map"], 0.83, "AD",
        s["weights"], s["selected"], s["reference"].lambda_, card, "sub-01/ses-2/anat/sub-01_ses-2_run-1_T1w.nii.gz",
    )  # fmt: skip


def test_tables_load_back_to_the_same_numbers(tmp_path, session):
    paths = write(tmp_path, session)
    assert paths["cube_table"].name == "sub-01_ses-2_run-1_space-MNI152NLin2009aSym_res-1p5_desc-cubes_pscore.tsv"
    assert paths["region_table"].name == "sub-01_ses-2_run-1_atlas-Brainnetome_desc-regions_pscore.tsv"
    scores = session["scores"]
    cubes = pd.read_csv(paths["cube_table"], sep="\t", na_values="n/a")
    assert len(cubes) == 150 and list(cubes["cube"]) == list(range(150))
    np.testing.assert_allclose(cubes["p_ad"], scores.p_ad[0], rtol=1e-8)
    np.testing.assert_allclose(cubes["p_cube"], scores.cube[0], rtol=1e-8, atol=1e-12)
    assert cubes["weight"].isna().sum() == 115 and cubes["selected"].sum() == 35
    np.testing.assert_allclose(cubes.loc[cubes["selected"], "weight"], session["weights"][session["selected"]], rtol=1e-8)
    assert "n/a" in paths["cube_table"].read_text()
    regions = pd.read_csv(paths["region_table"], sep="\t", na_values="n/a")
    assert len(regions) == 246 and regions.loc[210, "label"] == "L.mAmyg"
    np.testing.assert_allclose(regions["p_region"], scores.region[0], rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(regions["p_region_norm"], scores.region_norm[0], rtol=1e-8, atol=1e-15)
    assert regions["degenerative"].tolist() == scores.degenerative[0].tolist()
    sidecar = json.loads(layout.sidecar_path(paths["region_table"]).read_text())
    assert set(sidecar) == set(regions.columns)
    cube_sidecar = json.loads(layout.sidecar_path(paths["cube_table"]).read_text())
    # the cube table is named res-1p5: its sidecar says what that means
    assert set(cube_sidecar) == set(cubes.columns) | {"SpatialReference", "Resolution"} and "1p5" in cube_sidecar["Resolution"]
    assert cube_sidecar["p_ad"]["Units"] == "probability" and cube_sidecar["x_min_mm"]["Units"] == "mm"


def test_maps_and_summary(tmp_path, session):
    paths = write(tmp_path, session)
    voxel = nib.load(paths["voxel_map"])
    assert is_on_grid(voxel.shape, voxel.affine) and int(voxel.header["sform_code"]) == 4
    np.testing.assert_allclose(voxel.get_fdata(), session["voxel_map"], rtol=1e-6)
    # the voxel map sums to the selected cubes' scores that have brain voxels
    assert voxel.get_fdata().sum() == pytest.approx(session["scores"].cube[0][session["scores"].brain_voxels[0] > 0].sum(), rel=1e-4)
    region = nib.load(paths["region_map"]).get_fdata()
    assert region.min() >= 0 and region.max() <= 1
    summary = json.loads(paths["summary"].read_text())
    assert summary["WholeBrainPScore"] == pytest.approx(session["scores"].whole[0])
    assert summary["NumberOfDegenerativeRegions"] == int(session["scores"].degenerative.sum()) == len(summary["DegenerativeRegions"])
    assert summary["PredictedClass"] == "AD" and summary["ADProbability"] == 0.83
    assert summary["Model"]["SHA256"] == "ab" * 32 and summary["Lambda"] == pytest.approx(session["reference"].lambda_)
    assert summary["Sources"][0].startswith("bids:raw:sub-01/ses-2/anat/")
    assert not list(tmp_path.rglob(".*"))


def test_the_atlas_is_written_on_the_grid_with_its_table_sidecar_and_description(tmp_path):
    grid_atlas = atlas.atlas_on_grid()
    paths = dataset_files.write_atlas(tmp_path, TEMPLATE, grid_atlas)
    assert paths["table"].name == "space-MNI152NLin2009aSym_atlas-Brainnetome_res-1p5_dseg.tsv"
    lut = pd.read_csv(paths["table"], sep="\t")
    assert list(lut.columns[:2]) == ["index", "name"] and lut.loc[lut["index"] == 223, "name"].item() == "L.NAC"
    assert len(lut) == 246
    img = nib.load(paths["image"])
    assert np.array_equal(np.asarray(img.dataobj), grid_atlas) and np.allclose(img.affine, GRID_AFFINE)
    assert int(img.header["qform_code"]) == int(img.header["sform_code"]) == 4
    sidecar = json.loads(paths["sidecar"].read_text())
    assert set(lut.columns) - {"index", "name"} <= set(sidecar) and "1p5" in sidecar["Resolution"]
    description = json.loads(paths["description"].read_text())
    assert description["AtlasName"] == "Brainnetome" and "non-commercial" in description["License"]
